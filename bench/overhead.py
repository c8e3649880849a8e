"""
The daemon's own CPU cost while serving one channel to simulated viewers.

The daemon runs as users run it (``twistd -n streamproxy --config ...`` in a
separate process, this checkout first on PYTHONPATH); the fake provider
(tests/upstream.py) and the viewers run here, in the bench process, so their
CPU is not counted.  A viewer behaves like an HLS player: it fetches
/channel/1/stream.m3u8 every second over a keep-alive connection and
downloads every segment it has not downloaded yet.

CPU comes from /proc/<pid>/stat (utime + stime, all threads, children not
included) read at the start and end of each window:

- idle: the daemon running, no channel tuned;
- one copy-remux channel with 0 viewers (its own upkeep), 1 viewer, then
  10 viewers.

ffmpeg's own CPU over the same windows is shown for reference.

    python bench/overhead.py [--seconds 30] [--viewers 10]   (from the repo root)
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

TARGET_PERCENT = 1.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the 10-viewer window")
    parser.add_argument("--viewers", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between a viewer's playlist fetches")
    parser.add_argument("--profile", metavar="FILE",
                        help="investigation only: run the daemon under cProfile (twistd "
                             "--profile; inflates its CPU figures), save the stats to FILE and "
                             "print where its time went")
    return parser.parse_args()


class Daemon:
    """
    ``twistd -n streamproxy`` as a child of the bench; dies with it.
    """

    def __init__(self, reactor, config_path, folder, log_path, profile=None):
        from twisted.internet import defer, protocol

        from streamproxy.processes import command_line

        self.ended = defer.Deferred()
        self.log = open(log_path, "wb")
        outer = self

        class Proto(protocol.ProcessProtocol):
            def childDataReceived(self, fd, data):
                outer.log.write(data)

            def processEnded(self, reason):
                outer.log.close()
                outer.ended.callback(getattr(reason.value, "exitCode", None))

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_common.ROOT, env.get("PYTHONPATH")]))
        argv = command_line([sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                             "-n", "--pidfile=",
                             *([f"--profile={profile}", "--savestats"] if profile else []),
                             "streamproxy", "--config", config_path])
        self.transport = reactor.spawnProcess(Proto(), argv[0], argv, env=env, path=folder,
                                              childFDs={0: "w", 1: "r", 2: "r"})
        self.pid = self.transport.pid

    def answering(self, reactor, base, within=20.0):
        """
        A Deferred firing once the daemon answers ``base``/api/status
        (failing after ``within`` seconds or if it exits first).
        """
        import treq
        from twisted.internet import defer, task

        @defer.inlineCallbacks
        def wait():
            end = time.monotonic() + within
            while True:
                try:
                    response = yield treq.get(f"{base}/api/status", persistent=False)
                    yield response.content()
                    return
                except Exception:
                    if time.monotonic() > end or self.ended.called:
                        raise RuntimeError(f"the daemon did not answer within {within:g} s")
                    yield task.deferLater(reactor, 0.1, lambda: None)

        return wait()

    def stop(self, reactor):
        """
        TERM, then KILL after 15 s; fires with the exit code.
        """
        if not self.ended.called:
            self.transport.signalProcess("TERM")
            killer = reactor.callLater(15, self._kill)
            self.ended.addBoth(lambda r: (killer.active() and killer.cancel(), r)[1])
        return self.ended

    def _kill(self):
        try:
            self.transport.signalProcess("KILL")
        except Exception:
            pass


class Viewer:
    """
    An HLS player: playlist every ``interval`` s, every new segment once.
    """

    def __init__(self, reactor, url, interval):
        import treq
        from twisted.web.client import Agent, HTTPConnectionPool

        self.reactor = reactor
        self.url = url
        self.base = url.rsplit("/", 1)[0]
        self.interval = interval
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.client = treq.client.HTTPClient(Agent(reactor, pool=self.pool))
        self.done = set()
        self.running = False
        self.playlists = 0
        self.segments = 0
        self.bytes = 0
        self.errors = 0
        self.finished = None

    def start(self, delay=0.0):
        from twisted.internet import defer, task

        self.running = True

        @defer.inlineCallbacks
        def loop():
            yield task.deferLater(self.reactor, delay, lambda: None)
            while self.running:
                started = self.reactor.seconds()
                try:
                    yield self.poll()
                except Exception:
                    self.errors += 1
                wait = max(0.0, self.interval - (self.reactor.seconds() - started))
                yield task.deferLater(self.reactor, wait, lambda: None)

        self.finished = loop()
        return self.finished

    def poll(self):
        from twisted.internet import defer

        @defer.inlineCallbacks
        def go():
            response = yield self.client.get(self.url)
            text = yield response.text()
            self.playlists += 1
            if response.code != 200:
                self.errors += 1
                return
            for name in [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]:
                if name in self.done:
                    continue
                response = yield self.client.get(f"{self.base}/{name}")
                body = yield response.content()
                self.done.add(name)
                if response.code == 200:
                    self.segments += 1
                    self.bytes += len(body)
                else:
                    self.errors += 1

        return go()

    def stop(self):
        self.running = False
        d = self.finished
        d.addCallback(lambda _: self.pool.closeCachedConnections())
        return d


def cpu_snapshot(daemon_pid):
    """
    ``(monotonic time, daemon CPU s, {ffmpeg pid: CPU s})``.
    """
    ffmpegs = {pid: _common.cpu_seconds(pid) for pid in _common.children(daemon_pid)
               if _common.process_name(pid) == "ffmpeg"}
    return time.monotonic(), _common.cpu_split(daemon_pid), ffmpegs


def usage(before, after):
    """
    ``(seconds, daemon % of a core, ffmpeg % of a core, daemon user %, daemon
    system %)`` between two snapshots.
    """
    t0, (u0, s0), f0 = before
    t1, (u1, s1), f1 = after
    wall = t1 - t0
    ffmpeg = sum(f1[p] - f0[p] for p in f1 if p in f0 and f1[p] is not None and f0[p] is not None)
    user, system = 100.0 * (u1 - u0) / wall, 100.0 * (s1 - s0) / wall
    return wall, user + system, 100.0 * ffmpeg / wall, user, system


def main():
    args = parse_args()
    _common.header(
        "overhead: the daemon's own CPU with simulated HLS viewers on one copy-remux channel",
        ["daemon = twistd -n streamproxy in its own process; upstream + viewers run in the bench "
         "process (not counted)",
         f"viewer = playlist every {args.interval:g} s (keep-alive) + every new segment; "
         f"CPU from /proc/<pid>/stat utime+stime",
         f"target: daemon under {TARGET_PERCENT:g}% of one core at {args.viewers} viewers"],
        [f"clock ticks: {_common.CLOCK_TICKS}/s, so one window's resolution is "
         f"{100.0 / _common.CLOCK_TICKS / args.seconds:.3f}% of a core"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("overhead")
    out = {}

    show_daemon_log = _common.log_tail_printer(out, 20)

    try:
        _common.react(lambda reactor: run(reactor, args, scratch, out), events, show_daemon_log)
    finally:
        scratch.cleanup()
    if args.profile and os.path.exists(args.profile):
        import pstats

        print(f"\n--- daemon profile ({args.profile}), whole run, top functions by own time ---")
        pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)


def run(reactor, args, scratch, out):
    import treq
    from twisted.internet import defer, task

    from tests.helpers import make_database, row
    from tests.upstream import Upstream

    def sleep(seconds):
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def go():
        upstream = Upstream()
        upstream.add_stream("live", burst=1.0)
        upstream.start(reactor)
        folder = scratch.sub("daemon")
        make_database(os.path.join(folder, "streams.db"),
                      [row(1, upstream.live_url("live"), uniform_name="Bench One")])
        config, port = _common.daemon_config(folder)
        out["log"] = os.path.join(folder, "daemon.log")
        profile = os.path.abspath(args.profile) if args.profile else None
        daemon = Daemon(reactor, config, folder, out["log"], profile)
        base = f"http://127.0.0.1:{port}"
        viewers = []
        ffmpeg_pids = set()
        try:
            yield daemon.answering(reactor, base)
            yield sleep(2.0)  # let start-up work (imports, table load) settle
            idle_seconds = 5.0
            before = cpu_snapshot(daemon.pid)
            yield sleep(idle_seconds)
            wall, daemon_pct = usage(before, cpu_snapshot(daemon.pid))[:2]
            print(f"idle daemon (no channel, {wall:.0f} s): {daemon_pct:.2f}% of one core")
            sys.stdout.flush()

            url = f"{base}/channel/1/stream.m3u8"
            t0 = time.monotonic()
            response = yield treq.get(url, persistent=False)
            yield response.content()
            if response.code != 200:
                raise RuntimeError(f"tune failed: {response.code}")
            print(f"(channel tuned in {time.monotonic() - t0:.2f} s)")

            # 0 viewers: the channel's own upkeep (reading ffmpeg's progress,
            # stderr and playlist); kept well inside inactivity_timeout.
            upkeep = 0.0
            windows = ((0, 10.0), (1, min(15.0, args.seconds)), (args.viewers, args.seconds))
            for count, seconds in windows:
                while len(viewers) < count:
                    viewer = Viewer(reactor, url, args.interval)
                    viewer.start(delay=(len(viewers) % 10) * args.interval / 10)
                    viewers.append(viewer)
                if count:
                    yield sleep(3.0)  # every viewer past its start-up downloads
                counts = [(v.playlists, v.segments, v.bytes, v.errors) for v in viewers]
                before = cpu_snapshot(daemon.pid)
                ffmpeg_pids.update(before[2])
                yield sleep(seconds)
                after = cpu_snapshot(daemon.pid)
                wall, daemon_pct, ffmpeg_pct, user_pct, system_pct = usage(before, after)
                playlists = sum(v.playlists for v in viewers) - sum(c[0] for c in counts)
                segments = sum(v.segments for v in viewers) - sum(c[1] for c in counts)
                sent = sum(v.bytes for v in viewers) - sum(c[2] for c in counts)
                errors = sum(v.errors for v in viewers) - sum(c[3] for c in counts)
                verdict = ""
                if count == args.viewers:
                    verdict = (" -> OK" if daemon_pct < TARGET_PERCENT else " -> MISSED") + \
                              f" (target < {TARGET_PERCENT:g}%)"
                print(f"{count} viewer(s), {wall:.0f} s: daemon {daemon_pct:.2f}% of one core{verdict}; "
                      f"ffmpeg {ffmpeg_pct:.2f}% (reference) | served {playlists} playlists, "
                      f"{segments} segments, {sent / 1e6:.1f} MB, {errors} errors")
                requests = playlists + segments
                if not count:
                    upkeep = daemon_pct
                elif requests:
                    extra = 10 * (daemon_pct - upkeep) * wall / requests
                    print(f"   daemon user {user_pct:.2f}% + system {system_pct:.2f}%; "
                          f"~{extra:.2f} ms of CPU per request above the channel's upkeep")
                if len(after[2]) != 1:
                    print(f"   note: {len(after[2])} ffmpeg processes under the daemon at the end")
                sys.stdout.flush()
        finally:
            yield defer.DeferredList([v.stop() for v in viewers], consumeErrors=True)
            code = yield daemon.stop(reactor)
            yield upstream.stop()
            left = [pid for pid in ffmpeg_pids if _common.alive(pid)]
            print(f"(daemon stopped with exit code {code}; ffmpeg left running: {len(left)})")
            for pid in left:
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass

    return go()


if __name__ == "__main__":
    main()
