"""
Content checks: what they cost, and how soon a black, frozen or silent
stream is left.

The daemon runs as users run it (``twistd -n streamproxy`` in its own
process); the fake provider (tests/upstream.py) and the viewers run here.

1. CPU.  Two channels play the same 720p 5 Mbit/s stream (two upstream
   connections, one MPEG-TS viewer each): channel 1 with the content checks
   (keyframes through blackdetect and freezedetect, the first audio track
   through silencedetect, inside the ingest ffmpeg), channel 2 listed in
   ``content_checks.skip_channels``, so its ffmpeg is the plain copy.  Over
   the same window the bench also runs the alternative of a separate
   checker: an ffmpeg fed channel 2's output on a pipe, decoding keyframes
   only (B), and one decoding every frame (C).  CPU of each process from
   /proc/<pid>/stat, in one run, so every figure saw the same machine load.

2. Fault to switch.  Three channels, each with a stream that turns black,
   frozen or silent CONTENT_FAULT_AT seconds into its media and a good
   second candidate; default limits (10, 10 and 20 s).  From the moment
   the fault reaches the daemon (the upstream sends that media second at
   real time after its burst) to the failover the daemon reports.

    python bench/content_checks.py [--seconds 40]   (from the repo root)
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import _common  # noqa: E402  (bench/ is on the path as the script's folder)
from overhead import Daemon  # noqa: E402

TARGET_PERCENT = 3.0
BURST = 1.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=40.0, help="length of the CPU window")
    return parser.parse_args()


def main():
    args = parse_args()
    _common.header(
        "content_checks: CPU of the checks per 720p stream, and the time from a fault to the switch",
        ["daemon = twistd -n streamproxy in its own process; upstream, viewers and the separate "
         "checkers run in the bench process",
         "CPU: channel 1 checked in its ingest ffmpeg, channel 2 the same stream unchecked; B/C = a "
         "separate ffmpeg fed channel 2's output, keyframes only / every frame",
         f"target: under {TARGET_PERCENT:g}% of one core extra per 720p stream"],
        [f"clock ticks: {_common.CLOCK_TICKS}/s ({100.0 / _common.CLOCK_TICKS / args.seconds:.3f}% of a "
         f"core per tick over the window); load average at start: {os.getloadavg()[0]:.2f}"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("content")
    out = {}

    show_daemon_log = _common.log_tail_printer(out, 25)

    try:
        _common.react(lambda reactor: run(reactor, args, scratch, out), events, show_daemon_log)
    finally:
        scratch.cleanup()


def ffmpeg_of(daemon_pid, marker):
    """
    The pid of the daemon's ffmpeg whose command line holds ``marker``.
    """
    for pid in _common.children(daemon_pid):
        if _common.process_name(pid) != "ffmpeg":
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    return pid
        except OSError:
            continue
    return None


def checker_argv(keyframes_only):
    """
    A separate checker reading MPEG-TS on its standard input, with the same
    detectors as the daemon's check branch.
    """
    from streamproxy.content import ContentChecks, input_options, output_options

    checks = ContentChecks()
    return [_common.FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "repeat+level+info",
            *(input_options(checks) if keyframes_only else []),
            "-f", "mpegts", "-i", "pipe:0", *output_options(checks)]


def run(reactor, args, scratch, out):
    import treq
    from twisted.internet import defer, task

    from _procs import Child
    from tests.helpers import make_database, row
    from tests.upstream import CONTENT_FAULT_AT, Upstream

    def sleep(seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def go():
        upstream = Upstream()
        for name in ("hd1", "hd2"):
            upstream.add_stream(name, media="hd", burst=BURST)
        faults = {"11": ("black", "black_later"), "12": ("frozen", "frozen_later"), "13": ("silent", "silent_later")}
        for channel, (kind, media) in faults.items():
            upstream.add_stream(f"{kind}", media=media, burst=BURST, duration=60)
            upstream.add_stream(f"ok{channel}", burst=BURST)
        upstream.start(reactor)
        folder = scratch.sub("daemon")
        rows = [row(1, upstream.live_url("hd1"), source="hd"), row(2, upstream.live_url("hd2"), source="hd")]
        for channel, (kind, _) in faults.items():
            rows.append(row(int(channel), upstream.live_url(kind), source="fault"))
            rows.append(row(int(channel), upstream.live_url(f"ok{channel}"), source="backup"))
        make_database(os.path.join(folder, "streams.db"), rows)
        config, port = _common.daemon_config(
            folder, "source_priority: [fault, backup]\nidle_check_hours: 0\ncontent_checks: {skip_channels: [2]}\n"
        )
        out["log"] = os.path.join(folder, "daemon.log")
        daemon = Daemon(reactor, config, folder, out["log"])
        base = f"http://127.0.0.1:{port}"
        viewers = []
        checkers = []
        try:
            yield daemon.answering(reactor, base)
            yield sleep(2.0)

            # 1. CPU.
            sinks = {}

            def viewer(channel, sink=None):
                d = treq.get(f"{base}/channel/{channel}/stream.ts", unbuffered=True, persistent=False)

                def got(response):
                    viewers.append(response)
                    return treq.collect(response, sink or (lambda data: None))

                d.addCallback(got)
                d.addErrback(lambda f: None)
                return d

            for keyframes_only, name in ((True, "B"), (False, "C")):
                child = Child(reactor, name, checker_argv(keyframes_only), lambda fd, t, text: None, stdin=True)
                checkers.append(child)
            sinks["2"] = lambda data: [c.write(data) for c in checkers]
            viewer("1")
            viewer("2", sinks["2"])
            yield sleep(6.0)
            pids = {"checked": ffmpeg_of(daemon.pid, "hd1.ts"), "plain": ffmpeg_of(daemon.pid, "hd2.ts"),
                    "B": checkers[0].pid, "C": checkers[1].pid}
            if None in pids.values():
                raise RuntimeError(f"a process to measure is missing: {pids}")
            before = {name: _common.cpu_seconds(pid) for name, pid in pids.items()}
            t0 = time.monotonic()
            load0 = os.getloadavg()[0]
            yield sleep(args.seconds)
            wall = time.monotonic() - t0
            after = {name: _common.cpu_seconds(pid) for name, pid in pids.items()}
            pct = {name: 100.0 * (after[name] - before[name]) / wall for name in pids}
            extra = pct["checked"] - pct["plain"]
            print(f"\nCPU over {wall:.0f} s (load average {load0:.2f} -> {os.getloadavg()[0]:.2f}), % of one core:")
            print(f"  ingest ffmpeg, copy only (channel 2):                     {pct['plain']:.2f}%")
            print(f"  ingest ffmpeg, copy + checks inside (channel 1):          {pct['checked']:.2f}%")
            print(f"  -> the checks inside the ingest: {extra:+.2f}% of a core per 720p stream -> "
                  f"{'OK' if extra < TARGET_PERCENT else 'MISSED'} (target < {TARGET_PERCENT:g}%)")
            print(f"  alternative B, separate checker fed the output, keyframes: {pct['B']:.2f}% "
                  f"(plus a second process, ~20 MiB, and the daemon writing the stream to it)")
            print(f"  alternative C, separate checker decoding every frame:     {pct['C']:.2f}%")
            sys.stdout.flush()
            for child in checkers:
                child.transport.closeStdin()
            yield defer.DeferredList([c.stop(grace=2) for c in checkers], consumeErrors=True)

            # 2. Fault to switch.
            print(f"\nFault to switch (fault {CONTENT_FAULT_AT:g} s into the media; default limits):")
            sys.stdout.flush()
            for channel in faults:
                viewer(channel)
            yield sleep(4.0)
            fault_at = {}
            for channel, (kind, _) in faults.items():
                senders = list(upstream.streams[kind].connections)
                if not senders:
                    raise RuntimeError(f"channel {channel}: nothing reads the {kind} stream")
                # The ingest's connection: the one that stayed (ffprobe's is gone).
                started = min(s.started for s in senders)
                fault_at[channel] = started + CONTENT_FAULT_AT - BURST
            results = {}
            deadline = time.time() + 60
            while len(results) < len(faults) and time.time() < deadline:
                response = yield treq.get(f"{base}/api/status", persistent=False)
                status = json.loads((yield response.content()))
                for entry in status["channels"]:
                    channel = entry["channel_id"]
                    last = entry.get("last_failover")
                    if channel in faults and channel not in results and last and last.get("gap") is not None:
                        results[channel] = (last["at"] - fault_at[channel], last["reason"], last["gap"],
                                            (entry.get("current") or {}).get("source"))
                yield sleep(0.5)
            for channel, (kind, _) in faults.items():
                if channel not in results:
                    print(f"  {kind}: no switch within 60 s -> MISSED")
                    continue
                seconds, reason, gap, source = results[channel]
                print(f"  {kind:6s}: switched {seconds:.1f} s after the fault started ({reason!r}); "
                      f"viewers' gap {gap:.2f} s; now on {source}")
            sys.stdout.flush()
        finally:
            for child in checkers:
                if child.running:
                    yield child.stop(grace=1)
            code = yield daemon.stop(reactor)
            yield upstream.stop()
            print(f"(daemon stopped with exit code {code})")

    return go()


if __name__ == "__main__":
    main()
