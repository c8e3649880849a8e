"""
MPEG-TS fan-out: time to first byte (cold and warm) and the daemon's cost
per viewer of one 5 Mbit/s channel.

The daemon runs as users run it (``twistd -n streamproxy`` in its own
process, so its CPU and memory are its own, read from /proc); the upstream
(a 720p 5 Mbit/s stream, live-paced, 1 s burst) and the viewers (raw
HTTP/1.0 clients reading ``/channel/1/stream.ts`` and counting bytes) run
in the bench process.

Prints:
- cold: first byte of a tune of a channel that is not running;
- warm: first byte for a viewer joining the running channel (several);
- at 1, 10 and 50 viewers: the daemon's CPU (% of one core) over a window,
  its CPU per viewer above the one-viewer figure, and memory per viewer
  (RSS growth from 1 to N viewers); every viewer's receive rate against
  the stream's, so a viewer left behind shows.

Targets (issue 9): cold under 1.5 s, warm under 0.3 s, the daemon under
10 % of one core at 50 viewers.
"""

import argparse
import os
import sys
import time

import _common  # bench/ is on the path as the script's folder
from overhead import Daemon, cpu_snapshot, usage

COLD_TARGET = 1.5
WARM_TARGET = 0.3
CPU_TARGET_PERCENT = 10.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="1,10,50", help="viewer counts to measure at")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each CPU window")
    parser.add_argument("--media", default="hd", help="upstream media kind (tests/upstream.py)")
    return parser.parse_args()


def rss_kib(pid):
    """
    Resident memory of ``pid`` in KiB, from /proc/<pid>/status.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    args = parse_args()
    counts = [int(n) for n in args.viewers.split(",")]
    _common.header(
        "ts_fanout: MPEG-TS viewers of one channel",
        ["daemon = twistd -n streamproxy in its own process; upstream and viewers in the bench "
         "process (not counted)",
         f"targets: cold first byte < {COLD_TARGET:g} s, warm < {WARM_TARGET:g} s, "
         f"daemon < {CPU_TARGET_PERCENT:g}% of one core at {max(counts)} viewers"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("ts-fanout")
    out = {}
    try:
        _common.react(lambda reactor: run(reactor, args, counts, scratch, out), events)
    finally:
        scratch.cleanup()


def run(reactor, args, counts, scratch, out):
    import treq
    from twisted.internet import defer, endpoints, protocol, task

    from tests.helpers import make_database, row
    from tests.upstream import Upstream

    def sleep(seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    class TSViewer(protocol.Protocol):
        def __init__(self):
            self.sent_at = None
            self.first_byte = None
            self.bytes = 0
            self.head = b""
            self.body_started = False
            self.closed = defer.Deferred()

        def connectionMade(self):
            self.sent_at = time.monotonic()
            self.transport.write(b"GET /channel/1/stream.ts HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")

        def dataReceived(self, data):
            if not self.body_started:
                self.head += data
                if b"\r\n\r\n" not in self.head:
                    return
                self.head, _, data = self.head.partition(b"\r\n\r\n")
                self.body_started = True
            if data and self.first_byte is None:
                self.first_byte = time.monotonic() - self.sent_at
            self.bytes += len(data)

        def connectionLost(self, reason):
            self.closed.callback(None)

    @defer.inlineCallbacks
    def connect(port):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        viewer = yield endpoints.connectProtocol(endpoint, TSViewer())
        return viewer

    @defer.inlineCallbacks
    def first_byte(viewer, deadline=20):
        end = time.monotonic() + deadline
        while viewer.first_byte is None:
            if time.monotonic() > end:
                raise RuntimeError(f"no byte within {deadline} s")
            yield sleep(0.005)
        return viewer.first_byte

    @defer.inlineCallbacks
    def go():
        upstream = Upstream()
        stream = upstream.add_stream("live", media=args.media, burst=1.0)
        upstream.start(reactor)
        rate = stream.media.byte_rate
        print(f"upstream: {args.media} media at {rate * 8 / 1e6:.2f} Mbit/s, 2 s keyframes, 1 s burst")
        folder = scratch.sub("daemon")
        make_database(os.path.join(folder, "streams.db"),
                      [row(1, upstream.live_url("live"), uniform_name="Bench One")])
        config, port = _common.daemon_config(folder, "inactivity_timeout: 60\n")
        out["log"] = os.path.join(folder, "daemon.log")
        daemon = Daemon(reactor, config, folder, out["log"])
        viewers = []
        try:
            yield daemon.answering(reactor, f"http://127.0.0.1:{port}")
            yield sleep(2.0)

            cold = yield connect(port)
            viewers.append(cold)
            took = yield first_byte(cold)
            verdict = "OK" if took < COLD_TARGET else "MISSED"
            print(f"cold tune: first byte after {took:.2f} s -> {verdict} (target < {COLD_TARGET:g} s)")
            yield sleep(3.0)
            warm = []
            for _ in range(5):
                viewer = yield connect(port)
                warm.append((yield first_byte(viewer)))
                viewer.transport.loseConnection()
                yield viewer.closed
                yield sleep(0.7)
            verdict = "OK" if max(warm) < WARM_TARGET else "MISSED"
            print(f"warm join: first byte {_common.fmt_stats(warm, digits=3)} -> {verdict} "
                  f"(target < {WARM_TARGET:g} s)")
            sys.stdout.flush()

            base_cpu = base_rss = None
            for count in counts:
                while len(viewers) < count:
                    viewers.append((yield connect(port)))
                yield sleep(3.0)
                received = [v.bytes for v in viewers]
                before = cpu_snapshot(daemon.pid)
                yield sleep(args.seconds)
                after = cpu_snapshot(daemon.pid)
                wall, daemon_pct, ffmpeg_pct, user_pct, system_pct = usage(before, after)
                rss = rss_kib(daemon.pid)
                rates = [(v.bytes - b) / wall / rate for v, b in zip(viewers, received)]
                line = (f"{count:3d} viewer(s), {wall:.0f} s: daemon {daemon_pct:5.2f}% of one core "
                        f"(user {user_pct:.2f}%, system {system_pct:.2f}%), ffmpeg {ffmpeg_pct:.2f}%; "
                        f"RSS {rss / 1024:.1f} MiB; each viewer received {min(rates):.2f}-{max(rates):.2f}x "
                        f"the stream rate")
                if base_cpu is None:
                    base_cpu, base_rss, base_count = daemon_pct, rss, count
                elif count > base_count:
                    per_cpu = (daemon_pct - base_cpu) / (count - base_count)
                    per_rss = (rss - base_rss) / (count - base_count)
                    line += f"\n      per extra viewer: {per_cpu:.3f}% of a core, {per_rss:.0f} KiB"
                if count == max(counts):
                    line += (" -> OK" if daemon_pct < CPU_TARGET_PERCENT else " -> MISSED") + \
                            f" (target < {CPU_TARGET_PERCENT:g}% at {count})"
                print(line)
                sys.stdout.flush()
            response = yield treq.get(f"http://127.0.0.1:{port}/api/status", persistent=False)
            status = yield response.json()
            channel = status["channels"][0]
            print(f"status page: {len(channel['viewers']['ts'])} TS viewers listed, "
                  f"{channel['slow_viewers_dropped']} dropped as slow; upstream requests: {stream.requests}")
        finally:
            for viewer in viewers:
                if viewer.transport is not None:
                    viewer.transport.abortConnection()
            code = yield daemon.stop(reactor)
            yield upstream.stop()
            print(f"(daemon stopped with exit code {code})")

    return go()


if __name__ == "__main__":
    main()
