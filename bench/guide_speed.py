"""
How fast, and in how much memory, a big XMLTV guide is read and served.

A source of 2,000 channels x 7 days (a programme an hour, title,
description and category: 336,000 programmes, about 126 MB of XML) is
generated as a gzip file.  A child process (so its memory is the guide's
alone) then

1. reads it with ``parse_guide_file`` (gzip, ``iterparse`` with clearing,
   programmes compressed per channel): time and the process's peak RSS;
2. fetches and reads it again the way the daemon does: the real
   ``GuideService`` with the real HTTP client, from a web server on
   127.0.0.1, the download written to a temporary file and read in a
   thread;
3. serves ``/xmltv/<name>.xml`` through the real Klein app over a loopback
   socket: a playlist of 500 channels and one of all 2,000, the first
   request (the guide is built in a thread and gzipped), then 20 from the
   cache asking for gzip (as Channels DVR and Plex do) and 5 from a client
   that does not take gzip (unpacked step by step as it reads); the client
   counts the bytes and keeps none, so the peak memory is the server's.

    python bench/guide_speed.py        (from the repository root)

Targets: reading under 30 s and under 150 MB peak; serving 500 channels
from the cache under 100 ms.
"""

import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

CHANNELS = 2000
DAYS = 7
MINUTES = 60
PLAYLIST_CHANNELS = 500
RUNS = 20

TARGET_PARSE_SECONDS = 30.0
TARGET_PEAK_MB = 150.0
TARGET_SERVE_MS = 100.0


def rss_mb():
    """
    The resident memory of this process now, MB.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb():
    """
    The peak resident memory of this process so far, MB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Counting:
    """
    A binary file wrapper counting the bytes written through it.
    """

    def __init__(self, file):
        self.file = file
        self.count = 0

    def write(self, data):
        self.count += len(data)
        return self.file.write(data)


def generate(path):
    """
    Write the generated source to ``path`` (gzip); ``(programmes, XML
    bytes, seconds)``.
    """
    from tests import guidegen

    start = time.perf_counter()
    with gzip.open(path, "wb", compresslevel=1) as raw:
        out = Counting(raw)
        count = guidegen.write_guide(out, channels=CHANNELS, days=DAYS, minutes=MINUTES)
    return count, out.count, time.perf_counter() - start


def child(folder, name):
    """
    The measurements, in a process of their own; prints one JSON line.
    """
    import gc

    from twisted.internet import defer, protocol, task
    from twisted.web.client import Agent
    from twisted.web.http_headers import Headers
    from twisted.web.server import Site
    from twisted.web.static import File

    from streamproxy.channels import Catalog, Ranking
    from streamproxy.config import Config
    from streamproxy.guide import GuideService
    from streamproxy.tap import _http_client
    from streamproxy.urls import KnownUrls
    from streamproxy.web import ProxySite, StreamProxyWeb
    from streamproxy.xmltv import parse_guide_file
    from tests import guidegen
    from tests.helpers import candidate

    figures = {"baseline_mb": round(rss_mb(), 1)}
    path = os.path.join(folder, name)

    start = time.perf_counter()
    guide = parse_guide_file(path)
    figures["parse_s"] = round(time.perf_counter() - start, 2)
    figures["programmes"] = guide.programmes
    figures["kept_mb"] = round(guide.stored_bytes() / (1024 * 1024), 1)
    figures["peak_after_parse_mb"] = round(peak_mb(), 1)
    del guide
    gc.collect()

    events = _common.quiet_twisted_logs()

    async def main(reactor):
        server = reactor.listenTCP(0, Site(File(folder)), interface="127.0.0.1")
        url = f"http://127.0.0.1:{server.getHost().port}/{name}"
        service = GuideService([url], 12, _http_client(reactor), reactor=reactor, known_urls=KnownUrls())
        start = time.perf_counter()
        await service.refresh()
        figures["service_fetch_and_parse_s"] = round(time.perf_counter() - start, 2)
        status = service.status()["sources"][0]
        if status["state"] != "ok":
            raise RuntimeError(f"the guide service failed: {status['error']}")
        figures["peak_after_service_mb"] = round(peak_mb(), 1)

        candidates = []
        for number in range(1, CHANNELS + 1):
            for playlist in (("main", "all") if number <= PLAYLIST_CHANNELS else ("all",)):
                candidates.append(candidate(len(candidates) + 1, str(number), m3u=playlist,
                                            uniform_name=f"Channel {number}", guide_id=guidegen.channel_id(number),
                                            logo=f"http://logos.example/{number}.png"))

        class Store:
            loaded = True
            load_error = None
            catalog = Catalog.build(candidates)

        web = StreamProxyWeb(Config(), Store(), Ranking(), channels=None, reactor=reactor, own_names=["x"],
                             guide=service)
        agent = Agent(reactor)
        site = reactor.listenTCP(0, ProxySite(web.resource()), interface="127.0.0.1")
        base = f"http://127.0.0.1:{site.getHost().port}"

        def counted(response):
            # The body's size, not the body: the client keeps nothing, so
            # the peak memory is the server's.
            finished = defer.Deferred()

            class Count(protocol.Protocol):
                size = 0

                def dataReceived(self, data):
                    self.size += len(data)

                def connectionLost(self, reason):
                    finished.callback(self.size)

            response.deliverBody(Count())
            return finished

        async def over_loopback(playlist, accept=b"gzip"):
            began = time.perf_counter()
            response = await agent.request(b"GET", f"{base}/xmltv/{playlist}.xml".encode(),
                                           Headers({b"accept-encoding": [accept]}))
            size = await counted(response)
            if response.code != 200:
                raise RuntimeError(f"/xmltv/{playlist}.xml answered {response.code}")
            return (time.perf_counter() - began) * 1000, size

        for playlist in ("main", "all"):
            first, _ = await over_loopback(playlist)
            figures[f"{playlist}_first_ms"] = round(first)
            wire = [(await over_loopback(playlist)) for _ in range(RUNS)]
            figures[f"{playlist}_cached_ms"] = round(statistics.median([w[0] for w in wire]), 2)
            figures[f"{playlist}_gzip_mb"] = round(wire[0][1] / (1024 * 1024), 2)
            plain = [(await over_loopback(playlist, b"identity")) for _ in range(5)]
            figures[f"{playlist}_plain_ms"] = round(statistics.median([p[0] for p in plain]), 1)
            figures[f"{playlist}_xml_mb"] = round(plain[0][1] / (1024 * 1024), 1)
        figures["peak_end_mb"] = round(peak_mb(), 1)
        await site.stopListening()
        await server.stopListening()

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit as e:
        if e.code:
            for event in [e for e in events if e.get("log_failure") is not None][-3:]:
                print(event["log_failure"].getTraceback(), file=sys.stderr)
            raise
        print(json.dumps(figures))
        sys.stdout.flush()


def verdict(ok):
    return "OK" if ok else "MISSED"


def main():
    _common.header(
        "guide_speed: reading a big XMLTV guide, serving playlists' guides",
        [f"a source of {CHANNELS:,} channels x {DAYS} days, a programme every {MINUTES} min (gzip file)",
         "read alone, then fetched over HTTP and read by the GuideService, in a child process",
         f"/xmltv/<name>.xml over loopback for {PLAYLIST_CHANNELS} and {CHANNELS} channels: first request, "
         f"then {RUNS} from the cache (gzip) and 5 plain",
         f"targets: read < {TARGET_PARSE_SECONDS:.0f} s and peak < {TARGET_PEAK_MB:.0f} MB; "
         f"{PLAYLIST_CHANNELS} channels from the cache < {TARGET_SERVE_MS:.0f} ms"],
    )
    scratch = _common.Scratch("guide")
    try:
        name = "guide.xml.gz"
        count, size, seconds = generate(os.path.join(scratch.path, name))
        packed = os.path.getsize(os.path.join(scratch.path, name))
        print(f"source: {count:,} programmes, {size / 1e6:.0f} MB of XML ({packed / 1e6:.0f} MB gzip), "
              f"generated in {seconds:.1f} s")
        sys.stdout.flush()
        result = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", scratch.path, name],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            print(result.stdout + result.stderr, file=sys.stderr)
            raise SystemExit(1)
        f = json.loads(result.stdout.strip().splitlines()[-1])
        peak = max(f["peak_after_parse_mb"], f["peak_after_service_mb"])
        print(f"read (parse_guide_file): {f['parse_s']:.1f} s for {f['programmes']:,} programmes, "
              f"{f['kept_mb']:.1f} MB kept; peak RSS {f['peak_after_parse_mb']:.0f} MB "
              f"(process baseline {f['baseline_mb']:.0f} MB)  "
              f"[{verdict(f['parse_s'] < TARGET_PARSE_SECONDS and f['peak_after_parse_mb'] < TARGET_PEAK_MB)}]")
        print(f"fetch over HTTP + read (GuideService): {f['service_fetch_and_parse_s']:.1f} s; "
              f"peak RSS {f['peak_after_service_mb']:.0f} MB  "
              f"[{verdict(f['service_fetch_and_parse_s'] < TARGET_PARSE_SECONDS and peak < TARGET_PEAK_MB)}]")
        for playlist, channels in (("main", PLAYLIST_CHANNELS), ("all", CHANNELS)):
            target = f"  [{verdict(f[f'{playlist}_cached_ms'] < TARGET_SERVE_MS)}]" if playlist == "main" else ""
            print(f"/xmltv/{playlist}.xml ({channels} channels, {f[f'{playlist}_xml_mb']:.0f} MB XML, "
                  f"{f[f'{playlist}_gzip_mb']:.1f} MB gzip): first request {f[f'{playlist}_first_ms']} ms "
                  f"(built in a thread); from the cache median {f[f'{playlist}_cached_ms']:.1f} ms (gzip), "
                  f"{f[f'{playlist}_plain_ms']:.0f} ms (plain, unpacked as it is sent){target}")
        print(f"peak RSS of the child at the end (guide kept, both playlists' guides cached): "
              f"{f['peak_end_mb']:.0f} MB")
    finally:
        scratch.cleanup()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        main()
