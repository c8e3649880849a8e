"""
Playback as real players see it: mpv, hls.js (in Chromium) and ffmpeg watch
channel 1 together for about three minutes, through one stall failover and
two forced switches. The script prints, per player, the tune time, the
stalled seconds after the first picture, and the errors the player logged.
For each switch it prints the gap the daemon reports and what each player
went through around it. It also prints what the polled playlist did over
the run.

Set-up. The fake provider (tests/upstream.py) serves live-paced MPEG-TS
(H.264 320x180 25 fps, a keyframe every 2 s, AAC). Each connection gets
1 s of media at once (``--burst``). There is one stream per candidate:
channel 1 has candidates on prov_a, prov_b and prov_c, in that order of
``source_priority``. The daemon uses its default ``hls_time`` (1) and
``hls_list_size`` (3) unless you say otherwise (``--hls-time``, ``--hls-list-size``,
``--set key=value`` for any other config key).

Timeline (scaled to ``--duration``, 180 s by default):

- 0 s: every player asks for /channel/1/stream.m3u8 at the same moment, on
  a cold channel.
- 40 s: the upstream stream that is playing (``/api/status``
  channels[0].current.source) is set to ``Fault.stall()``. It is cleared
  once the daemon plays another source.
- 90 s and 140 s: ``POST /force_switch/1``.
- 180 s: the players stop.

A playlist watcher polls the playlist every 0.5 s, and ``/api/status`` is
polled every 0.5 s too.

Processes.

- The daemon runs as users run it, as ``twistd -n streamproxy --config
  <tmp>/config.yaml`` in a process of its own, with this checkout first
  on PYTHONPATH. This has three advantages:
  - Its reactor (segment cutting, stall verdicts, playlist answers) is
    never held up by the bench's own work, and the bench's reactor (the
    upstream's pacing, the timing of the players' reports) is never held
    up by the daemon's.
  - A crash shows up as an exit code, and its log is there to quote.
  - Nothing inside it is instrumented, so the figures come only from the
    players and ``/api/status``.
- The upstream stays in the bench process so the bench can inject the
  fault.
- The players run as separate processes:
  - mpv, with JSON IPC;
  - ffmpeg;
  - Playwright's sync API with Chromium, in bench/_hlsjs_driver.py,
    which streams the page's events as JSON lines.
- There are only 2 cores, so everything runs at once: one run, with every
  player on the same channel.
- Each child runs under ``setpriv --pdeathsig KILL``. The bench also makes
  itself a child subreaper, so orphans (Chromium's helpers, an ffmpeg the
  daemon failed to stop) come back to it. At the end it kills every
  descendant that is still alive, and says which ones were left after the
  orderly stop, including after Ctrl-C or an error.
- Every wait has a deadline. A daemon that exits, answers 503 or hangs is
  reported, not waited on.

What is measured, each from the player's own reports:

- mpv (``--vo=null --ao=null``: decodes and times audio and video,
  shows nothing). Stalled = wall time with ``paused-for-cache`` true after
  the first ``time-pos``. Errors = every line it prints at
  ``--msg-level=all=warn``. ``time-pos`` frozen without a cache pause is
  shown, but not counted as a stall.
- hls.js 1.x, with its defaults, in a muted autoplay ``<video>``.
  Stalled = from a ``waiting`` event to the next ``playing`` or advance of
  ``currentTime``, together with ``currentTime`` standing still for more
  than 0.5 s while not paused. The first picture is the first
  ``requestVideoFrameCallback``. Errors = hls.js ERROR events, media
  element errors and console errors. The non-fatal errors through which
  hls.js reports a stall it is handling (bufferStalledError, nudges) are
  shown, not counted.
- ffmpeg (``-c copy -f mpegts``, ``-progress`` every 0.2 s). ffmpeg
  downloads ahead, so a viewer is modelled from its ``out_time``: play at
  real time from the first report with media, and wait when it runs dry.
  Stretches over 0.5 s count. ``out_time`` moves in steps of a segment,
  at ffmpeg's own playlist reload pace (about once per target duration),
  so this viewer is a strict one. Errors = every stderr line at
  ``-loglevel warning``.
- "Buffered ahead" (lowest per phase): mpv's ``demuxer-cache-duration``,
  hls.js's buffered end minus ``currentTime``, ffmpeg's modelled buffer.
- Tune = from the player's own request (``loadfile``,
  ``hls.loadSource``, the ffmpeg spawn) to its first picture. Target:
  under 2 s. Stalls: at most 2 s in total per player. No player error.

Usage (from the repository root; a first run installs hls.js with npm into
bench/.node/)::

    .venv/bin/python bench/playback.py [--duration 180] [--hls-time 1]
        [--players mpv,hlsjs,ffmpeg] [--set buffer_check_interval=2] [--keep]
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402  (bench/ is on the path as the script's folder)
import _players  # noqa: E402
import _playlist_watch  # noqa: E402
import _procs  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NODE_DIR = os.path.join(HERE, ".node")
HLSJS = os.path.join(NODE_DIR, "node_modules", "hls.js", "dist", "hls.min.js")
CHROMIUM = "/usr/bin/chromium"

TARGET_STALL_SECONDS = 2.0
TARGET_TUNE_SECONDS = 2.0
# Event times on the reference 180 s timeline (scaled to --duration).
REFERENCE_SECONDS = 180.0
STALL_AT, SWITCH_AT = 40.0, (90.0, 140.0)
POLL_SECONDS = 0.5
DAEMON_READY_SECONDS = 30.0
DAEMON_STOP_GRACE = 15.0
FIRST_PICTURE_DEADLINE = 30.0
# Seconds children get to exit on their own Ctrl-C before they are stopped.
INTERRUPT_GRACE = 3.0
# Seconds after an event during which what happens is attributed to it in
# the per-event lines (capped by the next event).
EVENT_WINDOW_SECONDS = 40.0
SOURCES = ("prov_a", "prov_b", "prov_c")


def parse_args(argv=None):
    from streamproxy.config import Config

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--duration", type=float, default=REFERENCE_SECONDS,
                        help="seconds of playback; events scale with it (default 180)")
    parser.add_argument("--hls-time", type=float, default=float(Config.hls_time),
                        help=f"daemon hls_time (default: the daemon's, {Config.hls_time:g})")
    parser.add_argument("--hls-list-size", type=int, default=3, help="daemon hls_list_size (default 3)")
    parser.add_argument("--players", default="mpv,hlsjs,ffmpeg",
                        help="comma-separated, from mpv, hlsjs, ffmpeg (default: all three)")
    parser.add_argument("--candidates", type=int, default=3, choices=(2, 3),
                        help="candidates of channel 1, on as many sources (default 3)")
    parser.add_argument("--burst", type=float, default=1.0,
                        help="seconds of media the upstream sends at once on connect (default 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other daemon config key (value read as YAML); repeatable")
    parser.add_argument("--keep", action="store_true",
                        help="keep the scratch folder (daemon log, mpv/ffmpeg output) and print its path")
    args = parser.parse_args(argv)
    args.players = [p.strip() for p in args.players.split(",") if p.strip()]
    for name in args.players:
        if name not in ("mpv", "hlsjs", "ffmpeg"):
            parser.error(f"--players: unknown player {name!r} (choose from mpv, hlsjs, ffmpeg)")
    if args.duration < 30:
        parser.error("--duration: at least 30 s (the events need room)")
    return args


def ensure_hlsjs():
    """
    hls.js 1.x in bench/.node (npm, once); returns its version.
    """
    if not os.path.exists(HLSJS):
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("playback: hls.js is not installed and npm is missing "
                             "(apt-get install npm, or drop hlsjs from --players)")
        print(f"installing hls.js@1 into {NODE_DIR} with npm ...", flush=True)
        os.makedirs(NODE_DIR, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", NODE_DIR, "--no-audit", "--no-fund",
                               "--no-save", "hls.js@1"], capture_output=True, text=True, timeout=300)
        if done.returncode != 0 or not os.path.exists(HLSJS):
            raise SystemExit(f"playback: npm could not install hls.js: {done.stderr.strip()[-500:]}")
    with open(os.path.join(NODE_DIR, "node_modules", "hls.js", "package.json")) as f:
        return json.load(f)["version"]


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "missing"
    return out.splitlines()[0] if out else "unknown"


class Run:
    """Everything one run collected, for the report."""

    def __init__(self, args):
        self.args = args
        self.scale = args.duration / REFERENCE_SECONDS
        self.t0 = None
        self.end = None
        self.events = []  # (t, label, detail)
        self.players = []
        self.dropped = []  # (player name, why)
        self.results = {}
        self.statuses = []  # (t, channel entry or None)
        self.status_failures = []  # (t, text)
        self.failovers = {}  # at -> dict (latest seen)
        self.failover_count = 0
        self.switch_answers = []  # (t, code, text)
        self.daemon = None
        self.daemon_lines = []  # (t, text)
        self.daemon_exit = None
        self.aborted = None
        self.watcher = None
        self.leftovers = {}
        self.notes = []
        self.config = None

    def say(self, text):
        stamp = f"+{time.time() - self.t0:6.1f} s" if self.t0 is not None else "  setup "
        print(f"[{stamp}] {text}", flush=True)

    def abort(self, why):
        if self.aborted is None:
            self.aborted = why
            self.say(f"ABORT: {why}")


# --- the run --------------------------------------------------------------------

def run(reactor, run_state, scratch):
    import treq
    import yaml
    from twisted.internet import defer, task
    from twisted.web import resource, server, static

    from _hlsjs_driver import PAGE_HTML
    from tests.helpers import make_database, row
    from tests.upstream import Fault, Upstream, make_media

    r, args = run_state, run_state.args

    def sleep(seconds):
        return task.deferLater(reactor, max(0.0, seconds), lambda: None)

    @defer.inlineCallbacks
    def sleep_until(when):
        while time.time() < when and r.aborted is None:
            yield sleep(min(0.2, when - time.time()))

    @defer.inlineCallbacks
    def get_json(url, timeout=5.0):
        response = yield treq.get(url, persistent=False, timeout=timeout)
        body = yield response.json() if response.code == 200 else response.text()
        return response.code, body

    @defer.inlineCallbacks
    def go():
        length = int(math.ceil((args.duration + 120) / 60.0) * 60)
        r.say(f"preparing the upstream media ({length} s, cached after the first run) ...")
        make_media("av", length)
        upstream = Upstream()
        names = [s.split("_")[1] for s in SOURCES[:args.candidates]]
        for name in names:
            upstream.add_stream(name, burst=args.burst, duration=length)
        upstream.start(reactor)
        stream_of = dict(zip(SOURCES, names))

        root = resource.Resource()
        root.putChild(b"", static.Data(PAGE_HTML.encode(), "text/html; charset=utf-8"))
        root.putChild(b"favicon.ico", static.Data(b"", "image/x-icon"))  # no 404 in the console
        if os.path.exists(HLSJS):
            with open(HLSJS, "rb") as f:
                root.putChild(b"hls.min.js", static.Data(f.read(), "text/javascript"))
        page_site = server.Site(root)
        page_site.log = lambda request: None
        page_port = reactor.listenTCP(0, page_site, interface="127.0.0.1")
        page_url = f"http://127.0.0.1:{page_port.getHost().port}/"

        folder = scratch.sub("daemon")
        make_database(os.path.join(folder, "streams.db"), [
            row(1, upstream.live_url(name), source=source, quality="1", uniform_name="Playback Bench")
            for source, name in stream_of.items()])
        port = _common.free_port()
        config = {
            "port": port, "interface": "127.0.0.1", "db_path": "streams.db",
            "segment_dir": os.path.join(folder, "segments"),
            "ffmpeg_path": _common.FFMPEG, "ffprobe_path": _common.FFPROBE,
            "hls_time": args.hls_time, "hls_list_size": args.hls_list_size,
            "source_priority": list(SOURCES[:args.candidates]),
        }
        for item in args.set:
            key, _, value = item.partition("=")
            config[key.strip()] = yaml.safe_load(value)
        config_path = os.path.join(folder, "config.yaml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        r.config = config
        base = f"http://127.0.0.1:{port}"
        stream_url = f"{base}/channel/1/stream.m3u8"
        def daemon_line(fd, t, text):
            r.daemon_lines.append((t, text))

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_common.ROOT, env.get("PYTHONPATH")]))
        r.daemon = _procs.Child(reactor, "daemon", [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "streamproxy", "--config", config_path], daemon_line, env=env, path=folder,
            log_path=os.path.join(folder, "daemon.log"))

        def daemon_ended(exit):
            r.daemon_exit = exit
            if not stopping:
                r.abort(f"the daemon {_procs.describe_exit(exit)} (last log line: "
                        f"{r.daemon_lines[-1][1] if r.daemon_lines else 'none'})")
            return exit

        stopping = False
        r.daemon.ended.addCallback(daemon_ended)
        players = []
        pollers = []
        try:
            # The daemon answers.
            deadline = time.time() + DAEMON_READY_SECONDS
            while True:
                try:
                    code, _ = yield get_json(f"{base}/api/status", timeout=2)
                    if code == 200:
                        break
                except Exception:
                    pass
                if r.aborted:
                    return
                if time.time() > deadline:
                    r.abort(f"the daemon did not answer /api/status within {DAEMON_READY_SECONDS:g} s")
                    return
                yield sleep(0.1)
            r.say(f"daemon up on {base} (pid {r.daemon.pid}); upstream {upstream.url('/')}; "
                  f"player page {page_url}")
            shown = {k: v for k, v in config.items() if k not in ("db_path", "segment_dir", "ffmpeg_path",
                                                                   "ffprobe_path", "interface", "port")}
            r.say(f"daemon config: {shown}")

            # The players, ready to be told the URL.
            for name in args.players:
                player = _players.make_player(name, reactor, scratch.sub(name), r.say, page_url)
                players.append(player)
            r.players = players
            prepared = yield defer.DeferredList([p.prepare() for p in players], consumeErrors=True)
            for player, (ok, value) in zip(list(players), prepared):
                if not ok:
                    r.dropped.append((player.name, f"{type(value.value).__name__}: {value.value}"))
                    r.say(f"{player.name} could not start: {value.value}")
                    players.remove(player)
                    yield player.stop()
                elif player.name == "hlsjs":
                    r.say(f"hls.js {value.get('hlsjs')} in Chromium {value.get('chromium')}: MSE takes "
                          f"H.264/AAC: {'yes' if value.get('h264_aac') else 'NO'}")
            if not players:
                r.abort("no player could start")
                return
            if r.aborted:
                return

            # Go: every player on the cold channel at once.
            r.t0 = time.time()
            r.events.append((r.t0, "tune", "every player requests the playlist of the cold channel"))
            r.say(f"GO: {', '.join(p.name for p in players)} -> {stream_url}")
            for player in players:
                player.go(stream_url)
            r.watcher = _playlist_watch.PlaylistWatcher(reactor, stream_url, POLL_SECONDS)
            r.watcher.start(r.t0)
            status_loop = poll_status(base)
            pollers.append(status_loop)
            reactor.callLater(FIRST_PICTURE_DEADLINE, check_pictures)

            stall_at = r.t0 + STALL_AT * r.scale
            switches = [r.t0 + s * r.scale for s in SWITCH_AT]
            end_at = r.t0 + args.duration

            yield sleep_until(stall_at)
            if r.aborted is None:
                yield stall(stream_of, upstream, Fault)
            for number, when in enumerate(switches, 1):
                yield sleep_until(when)
                if r.aborted is None:
                    yield force_switch(base, number)
            yield sleep_until(end_at)
        finally:
            r.end = r.end or time.time()
            stopping = True
            if r.t0 is not None:
                r.say("stopping the players")
            yield defer.DeferredList([p.stop() for p in players], consumeErrors=True)
            if r.watcher is not None:
                yield r.watcher.stop()
            status_running[0] = False
            yield defer.DeferredList(pollers, consumeErrors=True)
            exit = yield r.daemon.stop(grace=DAEMON_STOP_GRACE)
            r.daemon_exit = exit
            yield upstream.stop()
            yield page_port.stopListening()

    status_running = [True]

    @defer.inlineCallbacks
    def poll_status(base):
        last_shown = None
        while status_running[0]:
            begun = time.time()
            try:
                code, body = yield get_json(f"{base}/api/status", timeout=5)
            except Exception as e:
                r.status_failures.append((begun, f"{type(e).__name__}: {e}"))
                code, body = None, None
            if code == 200:
                entry = next((c for c in body.get("channels", ()) if str(c.get("channel_id")) == "1"), None)
                r.statuses.append((time.time(), entry))
                if entry is not None:
                    r.failover_count = max(r.failover_count, entry.get("failovers") or 0)
                    last = entry.get("last_failover")
                    if last and last.get("at") is not None:
                        known = r.failovers.get(last["at"])
                        if known != last:
                            if known is None or known.get("gap") != last.get("gap"):
                                r.say(f"daemon: failover from {last.get('from')} ({last.get('reason')}), "
                                      f"gap {last.get('gap')}")
                            r.failovers[last["at"]] = dict(last)
                    current = entry.get("current") or {}
                    shown = (entry.get("state"), current.get("source"), current.get("phase"))
                else:
                    shown = ("not running", None, None)
                if shown != last_shown:
                    r.say(f"daemon: channel 1 {shown[0]}"
                          + (f" on {shown[1]} ({shown[2]})" if shown[1] else "")
                          + (f": {entry.get('reason')}" if entry and entry.get("reason") else ""))
                    last_shown = shown
            elif code is not None:
                r.status_failures.append((begun, f"/api/status answered {code}: {str(body)[:160]}"))
            yield sleep(POLL_SECONDS - (time.time() - begun))

    def current_source():
        """The source the latest status shows live, and when it was read."""
        if not r.statuses:
            return None, None
        t, entry = r.statuses[-1]
        if entry and entry.get("state") == "live" and (entry.get("current") or {}).get("source"):
            return entry["current"]["source"], t
        return None, t

    @defer.inlineCallbacks
    def stall(stream_of, upstream, Fault):
        deadline = time.time() + 10
        source = None
        while time.time() < deadline and r.aborted is None:
            source, seen = current_source()
            if source and seen > time.time() - 1.5:
                break
            yield sleep(0.2)
        if not source:
            r.events.append((time.time(), "stall", "SKIPPED: the daemon reported no live source within 10 s"))
            r.say("stall skipped: no live source reported")
            return
        name = stream_of.get(source)
        if name is None:
            r.events.append((time.time(), "stall", f"SKIPPED: unknown source {source!r}"))
            return
        upstream.set_fault(name, Fault.stall())
        t = time.time()
        r.events.append((t, "stall", f"{source}'s upstream stalled (Fault.stall)"))
        r.say(f"STALL: {source}'s upstream stream /live/{name}.ts stalled")

        @defer.inlineCallbacks
        def clear():
            end = t + 45
            while time.time() < end and r.aborted is None:
                now_source, seen = current_source()
                if now_source and now_source != source and seen > t:
                    break
                yield sleep(0.5)
            upstream.set_fault(name, None)
            r.say(f"upstream {source} healthy again (the daemon plays "
                  f"{current_source()[0] or 'nothing'})")

        clear()

    @defer.inlineCallbacks
    def force_switch(base, number):
        t = time.time()
        label = f"switch {number}"
        try:
            response = yield treq.post(f"{base}/force_switch/1", persistent=False, timeout=10)
            text = (yield response.text()).strip()
            code = response.code
        except Exception as e:
            code, text = None, f"{type(e).__name__}: {e}"
        r.switch_answers.append((t, code, text))
        before = current_source()[0]
        r.events.append((t, label, f"POST /force_switch/1 (playing {before}) -> {code} {_players.short(text, 90)}"))
        r.say(f"FORCE SWITCH {number}: {code} {_players.short(text, 120)}")

    def check_pictures():
        for player in r.players:
            try:
                first = player.result(time.time()).first_picture
            except Exception:
                first = None
            if first is None:
                r.say(f"{player.name}: no picture {FIRST_PICTURE_DEADLINE:g} s after the request")

    return go()


# --- report ---------------------------------------------------------------------

def rel(r, t):
    return f"{t - r.t0:+.1f} s"


def secs(value):
    """A duration: two decimals below a second, one above."""
    return f"{value:.2f} s" if value < 1 else f"{value:.1f} s"


def event_windows(r):
    """``[(label, start, end, detail)]`` of the run's events."""
    events = sorted(r.events)
    out = []
    for i, (t, label, detail) in enumerate(events):
        nxt = events[i + 1][0] if i + 1 < len(events) else r.end
        out.append((label, t, min(nxt, t + EVENT_WINDOW_SECONDS, r.end), detail))
    return out


def which_event(r, t):
    label, start = "tune", r.t0
    for lab, s, _, _ in event_windows(r):
        if s <= t:
            label, start = lab, s
    return label, t - start


def daemon_problems(r):
    levels = {}
    shown = []
    for t, text in r.daemon_lines:
        m = re.search(r"#(warn|error|critical)\]", text)
        level = m.group(1) if m else ("error" if ("Traceback" in text or "Unhandled" in text) else None)
        if level:
            levels[level] = levels.get(level, 0) + 1
            if level != "warn" or len(shown) < 12:
                shown.append((t, level, text))
    return levels, shown


def report(r):
    P = print
    P("\n== playback results ==")
    if r.t0 is None:
        P(f"the run did not start: {r.aborted or 'unknown reason'}")
        for _, text in r.daemon_lines[-25:]:
            P(f"   daemon| {text}")
        return
    P(f"played {r.end - r.t0:.1f} s; hls_time {r.args.hls_time:g}, hls_list_size {r.args.hls_list_size}, "
      f"{r.args.candidates} candidates, upstream burst {r.args.burst:g} s"
      + (f"; extra config {r.args.set}" if r.args.set else ""))
    if r.aborted:
        P(f"RUN ABORTED: {r.aborted}")
    for name, why in r.dropped:
        P(f"player {name} did not run: {why}")

    P("\n-- events and the daemon's failovers (/api/status channels[0].last_failover) --")
    failovers = sorted(r.failovers.values(), key=lambda f: f["at"])
    claimed = set()
    for label, start, end, detail in event_windows(r):
        P(f"{rel(r, start):>9}  {label}: {detail}")
        for f in failovers:
            if start - 0.5 <= f["at"] < end and f["at"] not in claimed:
                claimed.add(f["at"])
                gap = f.get("gap")
                P(f"{'':>9}    daemon failover at {rel(r, f['at'])} ({f['at'] - start:+.1f} s after the "
                  f"{label}): from {f.get('from')}, reason '{f.get('reason')}', gap "
                  f"{'%.2f s' % gap if isinstance(gap, (int, float)) else gap}")
    for f in failovers:
        if f["at"] not in claimed:
            P(f"{rel(r, f['at']):>9}  UNPLANNED failover from {f.get('from')}: '{f.get('reason')}', gap {f.get('gap')}")
    P(f"{'':>9}  the daemon counted {r.failover_count} failover(s); the status poll saw {len(failovers)}")
    states = []
    for t, entry in r.statuses:
        state = entry.get("state") if entry else "not running"
        if not states or states[-1][1] != state:
            states.append((t, state))
    P("channel states: " + ", ".join(f"{s} {rel(r, t)}" for t, s in states))
    if r.status_failures:
        P(f"{len(r.status_failures)} /api/status poll(s) failed; first: "
          f"{rel(r, r.status_failures[0][0])} {r.status_failures[0][1]}")

    P("\n-- per player --")
    windows = event_windows(r)
    for name, res in r.results.items():
        tune = res.tune
        P(f"[{name}] tune {('%.2f s' % tune) if tune is not None else 'NO PICTURE'}"
          f" (request {rel(r, res.requested) if res.requested else '?'} -> first picture "
          f"{rel(r, res.first_picture) if res.first_picture else 'never'})")
        stalls = res.stalls
        P(f"[{name}] stalled {_players.total(stalls):.1f} s after the first picture, in {len(stalls)} stretch(es)"
          + ("" if not stalls else ": " + "; ".join(
              f"{secs(e - s)} at {lab}{off:+.1f} s" for s, e in stalls for lab, off in [which_event(r, s)])))
        for label, intervals in res.extra:
            P(f"[{name}]   also {label}: {_players.total(intervals):.1f} s ("
              + "; ".join(f"{secs(e - s)} at {lab}{off:+.1f} s" for s, e in intervals
                          for lab, off in [which_event(r, s)]) + ")")
        if res.jumps:
            P(f"[{name}]   clock jumps: " + "; ".join(
                f"{'back' if d < 0 else 'ahead'} {abs(d):.1f} s at {lab}{off:+.1f} s"
                for t, d in res.jumps[:8] for lab, off in [which_event(r, t)]))
        if res.ahead:
            lows = []
            for label, start, end, _ in windows:
                inside = [a for t, a in res.ahead if start <= t < end]
                if inside:
                    lows.append(f"{label} {min(inside):.1f}")
            P(f"[{name}]   buffered ahead, lowest per phase (s): " + ", ".join(lows))
        if res.gave_up:
            P(f"[{name}]   GAVE UP at {rel(r, res.gave_up[0])}: {res.gave_up[1]}")
        P(f"[{name}]   errors {len(res.errors)}, warnings {len(res.warnings)}")
        for t, text in res.errors[:5]:
            P(f"[{name}]     error {rel(r, t)}: {_players.short(text)}")
        for t, text in res.warnings[:3]:
            P(f"[{name}]     warning {rel(r, t)}: {_players.short(text)}")
        for note in res.notes:
            P(f"[{name}]   note: {note}")

    P("\n-- per event, what each player went through --")
    for label, start, end, _ in windows:
        if label == "tune":
            continue
        P(f"{label} at {rel(r, start)} (window to {rel(r, end)}; times below are from the {label}):")
        for name, res in r.results.items():
            inside = clip_total(res.stalls, start, end)
            ahead = [a for t, a in res.ahead if start <= t < end]
            js = [d for t, d in res.jumps if start <= t < end]
            errs = [text for t, text in res.errors if start <= t < end]
            pieces = _players.clip(res.stalls, start, end)
            P(f"   {name:6} stalled {inside:.1f} s"
              + (" (" + ", ".join([f"{s - start:+.1f}..{e - start:+.1f} s" for s, e in pieces if e - s >= 0.05]
                                  + ([f"{sum(1 for s, e in pieces if e - s < 0.05)} shorter than 0.05 s"]
                                     if any(e - s < 0.05 for s, e in pieces) else [])) + ")"
                 if pieces else "")
              + (f", buffer low {min(ahead):.1f} s" if ahead else "")
              + (f", clock jumps {', '.join('%+.1f s' % d for d in js)}" if js else "")
              + (f", {len(errs)} error(s): {_players.short(errs[0], 100)}" if errs else ""))

    P("\n-- the playlist as polled every 0.5 s --")
    if r.watcher is not None:
        for line in _playlist_watch.summarize(r.watcher, r.t0):
            P(f"   {line}")

    P("\n-- the daemon --")
    levels, shown = daemon_problems(r)
    exit = r.daemon_exit
    clean = any("Server Shut Down" in text for _, text in r.daemon_lines)
    P(f"{_procs.describe_exit(exit)} ({'clean shutdown logged' if clean else 'NO clean shutdown in its log'}); "
      f"log lines: {len(r.daemon_lines)}; "
      + (", ".join(f"{k} {v}" for k, v in sorted(levels.items())) or "no warnings or errors"))
    for t, level, text in shown[:12]:
        when = rel(r, t) if t >= r.t0 else "setup"
        P(f"   {when:>9} {level}: {_players.short(text, 170)}")
    if r.leftovers:
        P("processes still running after the orderly stop (now killed): "
          + "; ".join(f"{pid} {_players.short(cmd, 80)}" for pid, cmd in r.leftovers.items()))
    else:
        P("no process left running after the orderly stop")
    for note in r.notes:
        P(f"note: {note}")

    P("\n== verdict (targets: stalls <= 2 s in total, no player error, tune < 2 s) ==")
    for name, why in r.dropped:
        P(f"{name:6} NOT RUN: {why}")
    for name, res in r.results.items():
        stalled = _players.total(res.stalls)
        problems = []
        if res.first_picture is None:
            problems.append("no picture")
        if stalled > TARGET_STALL_SECONDS:
            problems.append(f"stalled {stalled:.1f} s")
        if res.errors:
            problems.append(f"{len(res.errors)} error(s)")
        if res.tune is not None and res.tune >= TARGET_TUNE_SECONDS:
            problems.append(f"tune {res.tune:.2f} s")
        figures = (f"stalled {stalled:.1f} s, {len(res.errors)} error(s), tune "
                   + (f"{res.tune:.2f} s" if res.tune is not None else "n/a"))
        P(f"{name:6} {'OK    ' if not problems else 'MISSED'} {figures}"
          + (f"  <- {', '.join(problems)}" if problems else "")
          + ("  (run aborted)" if r.aborted else ""))


def clip_total(intervals, start, end):
    return _players.total(_players.clip(intervals, start, end))


def main(argv=None):
    args = parse_args(argv)
    for path, what in (("/usr/bin/mpv", "mpv"), (CHROMIUM, "hlsjs")):
        if what in args.players and not os.access(path, os.X_OK):
            raise SystemExit(f"playback: {path} is missing (apt-get install {os.path.basename(path)}, "
                             f"or drop {what} from --players)")
    run_state = Run(args)
    versions = [f"mpv: {tool_version(['/usr/bin/mpv', '--version'])}"]
    if "hlsjs" in args.players:
        versions.append(f"hls.js {ensure_hlsjs()} (bench/.node) in {tool_version([CHROMIUM, '--version'])} "
                        f"via Playwright")
    scale = args.duration / REFERENCE_SECONDS
    _common.header(
        "playback: real players through a stall failover and two forced switches",
        [f"players: {', '.join(args.players)}, all at once on channel 1 (cold), for {args.duration:g} s",
         f"events: stall of the playing upstream at {STALL_AT * scale:.0f} s, force switches at "
         + " and ".join(f"{s * scale:.0f} s" for s in SWITCH_AT),
         f"daemon: twistd -n streamproxy (own process), hls_time {args.hls_time:g}, hls_list_size "
         f"{args.hls_list_size}; upstream: tests/upstream.py, 2 s GOP, burst {args.burst:g} s",
         f"targets: stalled <= {TARGET_STALL_SECONDS:g} s per player, no player error, "
         f"tune < {TARGET_TUNE_SECONDS:g} s"],
        versions)
    if not _procs.become_subreaper():
        run_state.notes.append("could not become a child subreaper: orphans of Chromium or of the "
                               "daemon would escape the final sweep")
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("playback")
    started = time.monotonic()

    from twisted.internet import reactor

    def emergency_stop():
        """Before the reactor stops (also on Ctrl-C): stop every child."""
        from twisted.internet import defer

        children = [p.child for p in run_state.players if getattr(p, "child", None) is not None]
        if run_state.daemon is not None:
            children.append(run_state.daemon)
        if run_state.end is None:
            run_state.end = time.time()
        if not any(c.running for c in children):
            return None
        if (run_state.aborted or "").startswith("interrupted"):
            # Ctrl-C reached them too: give them a moment to stop on their
            # own (a TERM on top makes twistd log a ReactorNotRunning).
            from twisted.internet import task

            d = task.deferLater(reactor, INTERRUPT_GRACE, lambda: None)
        else:
            d = defer.succeed(None)
        d.addCallback(lambda _: defer.DeferredList([c.stop(grace=3.0) for c in children if c.running],
                                                   consumeErrors=True))
        return d

    reactor.addSystemEventTrigger("before", "shutdown", emergency_stop)
    outcome = []

    def finished(result):
        outcome.append(result)
        if reactor.running:
            reactor.stop()

    def watchdog():
        run_state.abort(f"watchdog: the run did not finish within {args.duration + 240:g} s")
        reactor.callLater(60, lambda: reactor.running and reactor.stop())

    reactor.callLater(args.duration + 240, watchdog)
    def note_interrupts():
        # Ctrl-C reaches the children too (one process group); say so
        # before their exits are taken for failures.
        import signal

        twisted_handler = signal.getsignal(signal.SIGINT)

        def interrupted(signum, frame):
            run_state.abort("interrupted (Ctrl-C)")
            if callable(twisted_handler):
                twisted_handler(signum, frame)

        signal.signal(signal.SIGINT, interrupted)

    reactor.callWhenRunning(note_interrupts)
    reactor.callWhenRunning(lambda: run(reactor, run_state, scratch).addBoth(finished))
    try:
        reactor.run()
    finally:
        time.sleep(1.0)  # let Chromium's and the daemon's children finish exiting
        run_state.leftovers = _procs.descendants()
        _procs.sweep()
        for player in run_state.players:
            try:
                run_state.results[player.name] = player.result(run_state.end or time.time())
            except Exception as e:  # a bug of ours must not hide the others' figures
                run_state.notes.append(f"{player.name}: analysis failed: {e!r}")
        for event in [e for e in events if e.get("log_failure") is not None][-3:]:
            run_state.notes.append("the bench logged a failure: "
                                   + event["log_failure"].getTraceback().strip().splitlines()[-1])
        if outcome and hasattr(outcome[0], "getTraceback"):
            run_state.notes.append("the bench itself failed:\n" + outcome[0].getTraceback())
        elif not outcome:
            run_state.abort("interrupted")
        try:
            report(run_state)
        finally:
            if args.keep:
                print(f"\nscratch folder kept: {scratch.path}")
            else:
                scratch.cleanup()
            print(f"(bench took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
