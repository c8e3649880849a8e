"""
Tune time: from the request for a channel until a viewer has a playable
playlist AND its first segment downloaded.

Against the local fake provider (``tests/upstream.py``: live-paced MPEG-TS,
H.264 with a keyframe every 2 s, AAC audio) in two variants: one that sends
1 s of media at once on connect (as some providers do) and one that does not.
For each variant, in the same run:

- the original design (the Flask proxy this project replaces): ffprobe with
  default probing, THEN ``ffmpeg -i URL -c copy -f hls -hls_time 6
  -hls_list_size 3`` with default probing; tuned when ffmpeg's own playlist
  lists a first segment and that segment can be read.  Its playlist is
  polled every 20 ms, which can only favour it.
- streamproxy: the real service tree in this process on a free port of
  127.0.0.1; a real HTTP GET of /channel/1/stream.m3u8, then a GET of the
  first segment it lists.  Between runs the channel is stopped (POST
  /stop/1) and the bench waits until it and its upstream connection are gone.

    python bench/tune_time.py [--runs 5] [--original-runs 2]   (from the repo root)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

TARGET_SECONDS = 2.0
TARGET_RATIO = 0.25
RUN_TIMEOUT = 40.0
POLL = 0.02

VARIANTS = (
    ("upstream bursts 1 s on connect", "burst1", 1.0),
    ("upstream without burst", "burst0", 0.0),
)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--runs", type=int, default=5, help="streamproxy tunes per variant")
    parser.add_argument("--original-runs", type=int, default=2,
                        help="original-design tunes per variant (each takes 10-20 s)")
    return parser.parse_args()


# --- the original design ----------------------------------------------------

def original_commands(url, folder):
    """
    What the Flask proxy ran: a default ffprobe, then a default ffmpeg.
    """
    ffprobe = [_common.FFPROBE, "-v", "error", "-print_format", "json",
               "-show_format", "-show_streams", url]
    ffmpeg = [_common.FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", url,
              "-c", "copy", "-f", "hls", "-hls_time", "6", "-hls_list_size", "3",
              "-hls_flags", "delete_segments",
              "-hls_segment_filename", os.path.join(folder, "out_%03d.ts"),
              os.path.join(folder, "out.m3u8")]
    return ffprobe, ffmpeg


def first_listed_segment(playlist_path):
    """
    The first segment file ffmpeg's playlist lists, or None.
    """
    try:
        with open(playlist_path) as f:
            text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            return os.path.join(os.path.dirname(playlist_path), line)
    return None


def keyframe_floor(media, burst, after_seconds):
    """
    The earliest time after connecting at which the first segment can be
    complete: when the upstream has sent the last byte of the first video
    keyframe at least ``after_seconds`` after the stream's first one (the
    demuxer hands a packet on only when the next one of its stream starts).
    Pacing is by average byte rate, so this depends on where the keyframes
    sit in the file.
    """
    import subprocess

    out = subprocess.run(
        [_common.FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time,pos,flags", "-of", "csv=p=0", media.path],
        capture_output=True, text=True, timeout=60, check=True).stdout
    packets = []
    for line in out.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and fields[1].isdigit():
            packets.append((float(fields[0]), int(fields[1]), "K" in fields[2]))
    first = next(p for p in packets if p[2])[0]
    for i, (pts, pos, key) in enumerate(packets):
        if key and pts >= first + after_seconds - 1e-6:
            end = packets[i + 1][1] if i + 1 < len(packets) else pos
            return max(0.0, end / media.byte_rate - burst)
    return None


# --- streamproxy instrumentation ---------------------------------------------

MARKS = {}


def instrument_sessions():
    """
    Record when a channel reaches each step (bench-process only; the
    methods are wrapped, not changed).
    """
    from streamproxy import attempt as attempt_module
    from streamproxy import session as session_module

    def wrap(cls, name, mark, condition=None):
        original = getattr(cls, name)

        def wrapper(self, *args, **kwargs):
            if condition is None or condition(self, *args):
                MARKS.setdefault(mark, self.reactor.seconds())
            return original(self, *args, **kwargs)

        setattr(cls, name, wrapper)

    session, attempt = session_module.ChannelSession, attempt_module.Attempt
    wrap(session, "_launch", "ffmpeg spawned")
    wrap(attempt, "ffmpeg_report", "ffmpeg stream report")
    wrap(attempt, "_on_probe", "ffprobe verdict")
    wrap(attempt, "ffmpeg_media", "first media from ffmpeg")
    wrap(session, "_go_live", "validated, keyframe in: live")
    wrap(session, "_publish", "first segment cut", lambda self, gone: len(self.playlist) > 0)


def main():
    args = parse_args()
    _common.header(
        "tune_time: request -> playable playlist + first segment downloaded",
        ["local upstream (tests/upstream.py): live-paced MPEG-TS, H.264 320x180 25 fps, "
         "keyframe every 2 s, AAC",
         "original = serial default ffprobe, then default ffmpeg -c copy -f hls -hls_time 6 "
         "(first segment listed + readable)",
         "streamproxy = in-process build_services tree, real HTTP GET playlist + first segment",
         f"targets: streamproxy < {TARGET_SECONDS:g} s and < {TARGET_RATIO:g} x original "
         f"on the same upstream"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("tune")

    results = {}
    try:
        _common.react(lambda reactor: run_all(reactor, args, scratch, results), events)
    finally:
        scratch.cleanup()
    report(results)


def run_all(reactor, args, scratch, results):
    from twisted.internet import defer

    from tests.upstream import Upstream

    @defer.inlineCallbacks
    def go():
        upstream = Upstream()
        for _, name, burst in VARIANTS:
            upstream.add_stream(name, burst=burst)
        upstream.start(reactor)
        instrument_sessions()
        floors = {}
        try:
            for label, name, burst in VARIANTS:
                stream = upstream.streams[name]
                floor = keyframe_floor(stream.media, burst, 1.0)
                floor_original = keyframe_floor(stream.media, burst, 6.0)
                floors[label] = (floor, floor_original)
                print(f"\n-- {label} (burst={burst:g} s): {upstream.live_url(name)}")
                print(f"   floor (bytes of the keyframe ending a first segment have arrived, "
                      f"from connect): {floor:.2f} s for a segment cut at the keyframe "
                      f"after 1 s, {floor_original:.2f} s after 6 s")
                sys.stdout.flush()
                original = []
                for i in range(args.original_runs):
                    took = yield original_tune(reactor, upstream, name, scratch, i)
                    original.append(took)
                    print(f"   original run {i + 1}: {took['total']:.2f} s "
                          f"(ffprobe {took['ffprobe']:.2f} s, then ffmpeg to first segment "
                          f"{took['ffmpeg']:.2f} s)")
                    sys.stdout.flush()
                proxy = yield streamproxy_tunes(reactor, upstream, name, scratch, args.runs)
                results[label] = (original, proxy, floors[label])
        finally:
            yield upstream.stop()

    return go()


class Child:
    """
    A child process whose exit can be waited for; killed with its parent.
    """

    def __init__(self, reactor, argv, log_path):
        from twisted.internet import defer, protocol

        from streamproxy.processes import command_line

        self.ended = defer.Deferred()
        self.exit = None
        self._log = open(log_path, "wb")
        outer = self

        class Proto(protocol.ProcessProtocol):
            def childDataReceived(self, fd, data):
                outer._log.write(data)

            def processEnded(self, reason):
                outer._log.close()
                outer.exit = getattr(reason.value, "exitCode", None)
                outer.ended.callback(outer.exit)

        self.proto = Proto()
        argv = command_line(argv)  # setpriv --pdeathsig KILL: dies with the bench
        self.transport = reactor.spawnProcess(self.proto, argv[0], argv, env=dict(os.environ),
                                              childFDs={0: "w", 1: "r", 2: "r"})

    def kill(self):
        from twisted.internet import defer

        if self.ended.called:
            return defer.succeed(None)
        for sig in ("TERM",):
            try:
                self.transport.signalProcess(sig)
            except Exception:
                pass
        from twisted.internet import reactor

        killer = reactor.callLater(3, self._hard_kill)
        d = defer.Deferred()

        def done(result):
            if killer.active():
                killer.cancel()
            d.callback(None)
            return result

        self.ended.addBoth(done)
        return d

    def _hard_kill(self):
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            pass


def sleep(reactor, seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)


def original_tune(reactor, upstream, name, scratch, index):
    """
    One tune the original way; fires with ``{"total", "ffprobe", "ffmpeg"}``.
    """
    from twisted.internet import defer

    @defer.inlineCallbacks
    def go():
        folder = scratch.sub(f"original-{name}-{index}")
        ffprobe_argv, ffmpeg_argv = original_commands(upstream.live_url(name), folder)
        t0 = time.monotonic()
        probe = Child(reactor, ffprobe_argv, os.path.join(folder, "ffprobe.log"))
        timeout = reactor.callLater(RUN_TIMEOUT, probe.kill)
        code = yield probe.ended
        if timeout.active():
            timeout.cancel()
        if code != 0:
            raise RuntimeError(f"original design: ffprobe exited {code}")
        t_probe = time.monotonic()
        ffmpeg = Child(reactor, ffmpeg_argv, os.path.join(folder, "ffmpeg.log"))
        playlist = os.path.join(folder, "out.m3u8")
        try:
            while True:
                if time.monotonic() - t0 > RUN_TIMEOUT:
                    raise RuntimeError("original design: no segment within "
                                       f"{RUN_TIMEOUT:g} s")
                if ffmpeg.ended.called:
                    raise RuntimeError(f"original design: ffmpeg exited {ffmpeg.exit}")
                segment = first_listed_segment(playlist)
                if segment is not None:
                    with open(segment, "rb") as f:  # "readable": the viewer can fetch it
                        data = f.read()
                    if data[:1] == b"\x47":
                        break
                yield sleep(reactor, POLL)
            t_end = time.monotonic()
        finally:
            yield ffmpeg.kill()
            yield wait_upstream_idle(reactor, upstream, name)
        return {"total": t_end - t0, "ffprobe": t_probe - t0, "ffmpeg": t_end - t_probe}

    return go()


def wait_upstream_idle(reactor, upstream, name, timeout=10.0):
    """
    Wait until the upstream has no live connection on stream ``name``.
    """
    from twisted.internet import defer

    @defer.inlineCallbacks
    def go():
        end = time.monotonic() + timeout
        while upstream.streams[name].open and time.monotonic() < end:
            yield sleep(reactor, 0.05)

    return go()


# --- streamproxy --------------------------------------------------------------

def streamproxy_tunes(reactor, upstream, name, scratch, runs):
    """
    Start a service tree whose channel 1 is ``name``; tune it ``runs`` times.
    Fires with a list of per-run dicts.
    """
    import treq
    from twisted.internet import defer

    from streamproxy.tap import build_services
    from tests.helpers import make_database, row

    @defer.inlineCallbacks
    def go():
        base = scratch.sub(f"proxy-{name}")
        db = make_database(os.path.join(base, "streams.db"),
                           [row(1, upstream.live_url(name), uniform_name="Bench One")])
        port = _common.free_port()
        config = _common.make_config(scratch, port, db, segment_dir=os.path.join(base, "segments"))
        root, parts = build_services(config, reactor)
        root.startService()
        channels = parts["channels"]
        results = []
        try:
            while not len(parts["store"].catalog):
                yield sleep(reactor, 0.01)
            url = f"http://127.0.0.1:{port}/channel/1/stream.m3u8"
            for i in range(runs):
                MARKS.clear()
                t0 = reactor.seconds()
                response = yield treq.get(url, persistent=False)
                text = yield response.text()
                t_playlist = reactor.seconds()
                if response.code != 200:
                    raise RuntimeError(f"GET {url}: {response.code} {text.strip()}")
                segment = next(line for line in text.splitlines()
                               if line and not line.startswith("#"))
                response = yield treq.get(f"http://127.0.0.1:{port}/channel/1/{segment}",
                                          persistent=False)
                body = yield response.content()
                t_end = reactor.seconds()
                if response.code != 200 or body[:1] != b"\x47":
                    raise RuntimeError(f"segment {segment}: {response.code}, {len(body)} bytes")
                for n, started in enumerate(sorted(
                        c.started for c in upstream.streams[name].connections), 1):
                    MARKS[f"upstream connection {n}"] = started
                marks = {k: v - t0 for k, v in MARKS.items()}
                results.append({"total": t_end - t0, "playlist": t_playlist - t0,
                                "segment_bytes": len(body), "marks": marks})
                steps = ", ".join(f"{k} {v:.2f}" for k, v in sorted(marks.items(), key=lambda kv: kv[1]))
                print(f"   streamproxy run {i + 1}: {t_end - t0:.2f} s (playlist answered "
                      f"{t_playlist - t0:.2f} s, segment {len(body) // 1024} KiB) | {steps}")
                sys.stdout.flush()
                stop = yield treq.post(f"http://127.0.0.1:{port}/stop/1", persistent=False)
                yield stop.content()
                end = time.monotonic() + 15
                while channels.session("1") is not None and time.monotonic() < end:
                    yield sleep(reactor, 0.05)
                if channels.session("1") is not None:
                    raise RuntimeError("channel 1 did not stop within 15 s")
                yield wait_upstream_idle(reactor, upstream, name)
                yield sleep(reactor, 0.3)
        finally:
            yield root.stopService()
        return results

    return go()


# --- report -------------------------------------------------------------------

def report(results):
    print("\n== tune time summary ==")
    ok = True
    for label, (original, proxy, (floor, floor_original)) in results.items():
        orig_totals = [r["total"] for r in original]
        proxy_totals = [r["total"] for r in proxy]
        orig_med = _common.summary(orig_totals)[0]
        proxy_med = _common.summary(proxy_totals)[0]
        ratio = proxy_med / orig_med
        print(f"[{label}] original design: {_common.fmt_stats(orig_totals)}; "
              f"ffprobe {_common.summary([r['ffprobe'] for r in original])[0]:.2f} s + ffmpeg "
              f"{_common.summary([r['ffmpeg'] for r in original])[0]:.2f} s")
        print(f"[{label}] streamproxy:     {_common.fmt_stats(proxy_totals)}; "
              f"playlist answered at median "
              f"{_common.summary([r['playlist'] for r in proxy])[0]:.2f} s")
        steps = {}
        for r in proxy:
            for k, v in r["marks"].items():
                steps.setdefault(k, []).append(v)
        ordered = sorted(steps.items(), key=lambda kv: _common.summary(kv[1])[0])
        print(f"[{label}]   streamproxy steps (median s after the request): "
              + ", ".join(f"{k} {_common.summary(v)[0]:.2f}" for k, v in ordered))
        print(f"[{label}]   floor set by the upstream (last byte of the keyframe that ends "
              f"the first segment, from connect): {floor:.2f} s for streamproxy's 1 s first "
              f"segment, {floor_original:.2f} s for a 6 s one")
        under = proxy_med < TARGET_SECONDS
        quarter = ratio < TARGET_RATIO
        ok = ok and under and quarter
        print(f"[{label}] ratio streamproxy/original: {ratio:.2f} (target < {TARGET_RATIO:g}: "
              f"{'OK' if quarter else 'MISSED'}); under {TARGET_SECONDS:g} s: "
              f"{'OK' if under else 'MISSED'}")
    print(f"overall: {'all targets met' if ok else 'some targets MISSED (see above)'}")


if __name__ == "__main__":
    main()
