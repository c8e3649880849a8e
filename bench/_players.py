"""
The players of bench/playback.py and how each one's own reports become
figures: tune time, stalled stretches after the first picture, clock jumps,
how much media it had buffered, and the problems it logged.

Every player has the same shape: ``prepare()`` (a Deferred that fires when
it is ready to be told a URL, with a deadline), ``go(url)``, ``stop()`` (a
Deferred that always fires) and ``result(end)`` (a :class:`Result`).  All
times are epoch seconds (``time.time()``, which is also the daemon's and
Chromium's clock).

The analysis functions at the top are plain functions over lists of
``(time, value)``.

Run on its own it does nothing (``make bench`` runs every bench/*.py).
"""

import json
import os
import re
import sys
import time
from dataclasses import dataclass, field

import _procs

MPV = "/usr/bin/mpv"
FFMPEG = "/usr/bin/ffmpeg"
HERE = os.path.dirname(os.path.abspath(__file__))

# A position that has not advanced for longer than this, while it should,
# is a stall (seconds); shorter gaps are sampling noise.
FROZEN_SECONDS = 0.5
# Position changes against the wall clock counted as a jump (seconds).
JUMP_BACK_SECONDS = 0.5
JUMP_FORWARD_SECONDS = 1.0
MPV_POLL_SECONDS = 0.1
FFMPEG_STATS_PERIOD = 0.2
READY_DEADLINE = {"mpv": 10.0, "hlsjs": 90.0, "ffmpeg": 1.0}


# --- analysis -----------------------------------------------------------------

def union(intervals):
    """Sorted, merged ``[(start, end)]``."""
    merged = []
    for s, e in sorted(i for i in intervals if i[1] > i[0]):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def clip(intervals, start, end):
    """``intervals`` cut to ``[start, end]``."""
    return [(max(s, start), min(e, end)) for s, e in intervals if min(e, end) > max(s, start)]


def total(intervals):
    return sum(e - s for s, e in intervals)


def flag_intervals(transitions, end):
    """
    Where a boolean was true, from ``[(t, bool)]`` (in time order); one
    still true at the end closes at ``end``.
    """
    out, since = [], None
    for t, value in transitions:
        if value and since is None:
            since = t
        elif not value and since is not None:
            out.append((since, t))
            since = None
    if since is not None:
        out.append((since, end))
    return out


def frozen_intervals(samples, start, end, threshold=FROZEN_SECONDS):
    """
    Stretches after ``start`` in which the position of ``[(t, position)]``
    did not advance for more than ``threshold`` s: from its last advance to
    its next one (or ``end``).
    """
    out = []
    last_pos, last_move = None, None
    for t, pos in samples:
        if pos is None:
            continue
        if last_pos is None:
            last_pos, last_move = pos, t
            continue
        if pos > last_pos + 1e-3:
            if t - last_move > threshold:
                out.append((last_move, t))
            last_move = t
        last_pos = pos
    if last_move is not None and end - last_move > threshold:
        out.append((last_move, end))
    return clip(out, start, end)


def jumps(samples, back=JUMP_BACK_SECONDS, forward=JUMP_FORWARD_SECONDS):
    """
    ``[(t, seconds)]``: where the position moved against the wall clock by
    more than ``forward`` (skipped ahead, positive) or went back by more
    than ``back`` (negative).
    """
    out, previous = [], None
    for t, pos in samples:
        if pos is None:
            continue
        if previous is not None:
            dt, dp = t - previous[0], pos - previous[1]
            if dp < -back:
                out.append((t, dp))
            elif dp - dt > forward:
                out.append((t, dp - dt))
        previous = (t, pos)
    return out


def playhead(progress, end, threshold=FROZEN_SECONDS):
    """
    A player fed by a client that only reports how much media it has
    (ffmpeg's ``out_time``): it starts showing media time 0 at the first
    report with media, plays at real time while media is there, waits when
    it runs dry.  Returns ``(first picture time, stalls, [(t, seconds
    buffered)])``; stalls of at most ``threshold`` s are sampling noise
    and left out.
    """
    started = [(t, m) for t, m in progress if m is not None and m > 0]
    if not started:
        return None, [], []
    t0 = started[0][0]
    head, available, previous = 0.0, started[0][1], t0
    stall_from, stalls, ahead = None, [], [(t0, available)]
    for t, media in started[1:] + [(end, None)]:
        if stall_from is None:
            room = available - head
            if t - previous <= room:
                head += t - previous
            else:
                head, stall_from = available, previous + room
        if media is not None and media > available:
            available = media
        if stall_from is not None and (available > head or media is None):
            stalls.append((stall_from, t))
            stall_from = None
        ahead.append((t, available - head))
        previous = t
    return t0, [s for s in stalls if s[1] - s[0] > threshold], ahead


@dataclass
class Result:
    """What one player experienced; see :func:`_players` docstring."""

    name: str
    requested: float | None = None
    first_picture: float | None = None
    stalls: list = field(default_factory=list)  # [(start, end)] after the first picture
    extra: list = field(default_factory=list)  # [(label, [(start, end)])] shown, not counted
    jumps: list = field(default_factory=list)  # [(t, seconds)]
    ahead: list = field(default_factory=list)  # [(t, seconds buffered)]
    errors: list = field(default_factory=list)  # [(t, text)] count against the player
    warnings: list = field(default_factory=list)  # [(t, text)] shown only
    gave_up: tuple | None = None  # (t, why) when the player stopped playing for good
    notes: list = field(default_factory=list)

    @property
    def tune(self):
        if self.requested is None or self.first_picture is None:
            return None
        return self.first_picture - self.requested


def _deadline(reactor, seconds, what):
    """A Deferred that fails with TimeoutError(what) after ``seconds``."""
    from twisted.internet import task

    def fail():
        raise TimeoutError(what)

    return task.deferLater(reactor, seconds, fail)


def _first(reactor, d, seconds, what):
    """``d``'s result, or TimeoutError after ``seconds``."""
    from twisted.internet import defer

    timer = _deadline(reactor, seconds, what)
    race = defer.DeferredList([d, timer], fireOnOneCallback=True, fireOnOneErrback=True, consumeErrors=True)

    def settle(result):
        if not timer.called:
            timer.cancel()
        value, index = result
        return value

    def failed(f):
        if not timer.called:
            timer.cancel()
        f.trap(defer.FirstError)
        return f.value.subFailure

    race.addCallbacks(settle, failed)
    return race


# --- mpv ------------------------------------------------------------------------

# mpv lines that are how it reports a stall (measured as paused-for-cache),
# shown but not counted as errors.
MPV_STALL_SYMPTOMS = ("Audio device underrun detected",)


class Mpv:
    """
    mpv 0.35 with ``--vo=null --ao=null`` (video and audio are decoded and
    timed, nothing is shown), idle until :meth:`go` sends ``loadfile``.
    Measured through JSON IPC: ``paused-for-cache``, ``core-idle`` and
    ``seeking`` observed (exact transition times), ``time-pos`` and
    ``demuxer-cache-duration`` polled every 100 ms.  Warnings and errors
    come from its terminal output at ``--msg-level=all=warn``.
    """

    name = "mpv"

    def __init__(self, reactor, folder, say):
        self.reactor = reactor
        self.folder = folder
        self.say = say
        self.child = None
        self.ipc = None
        self.requested = None
        self.positions = []  # (t, time-pos or None)
        self.cache = []  # (t, demuxer-cache-duration)
        self.flags = {"paused-for-cache": [], "core-idle": [], "seeking": []}
        self.events = []  # (t, event dict)
        self.lines = []  # (t, text)
        self._poll = None
        self._ids = 0
        self._pending = {}

    def prepare(self):
        from twisted.internet import defer, task
        from twisted.internet.endpoints import UNIXClientEndpoint
        from twisted.internet.protocol import Factory
        from twisted.protocols.basic import LineOnlyReceiver

        socket_path = os.path.join(self.folder, "mpv.sock")
        argv = [MPV, "--idle=yes", "--no-config", f"--input-ipc-server={socket_path}",
                "--vo=null", "--ao=null", "--no-input-terminal", "--msg-level=all=warn",
                "--msg-module", "--term-osd=no"]
        self.child = _procs.Child(self.reactor, "mpv", argv, self._line,
                                  log_path=os.path.join(self.folder, "mpv.log"))
        outer = self

        class IPC(LineOnlyReceiver):
            delimiter = b"\n"
            MAX_LENGTH = 1 << 20

            def lineReceived(self, line):
                outer._message(time.time(), line)

        @defer.inlineCallbacks
        def connect():
            deadline = time.time() + READY_DEADLINE["mpv"]
            while True:
                if not self.child.running:
                    raise RuntimeError(f"mpv exited at start: {self.child.exit}; "
                                       f"{self.lines[-1][1] if self.lines else 'no output'}")
                if os.path.exists(socket_path):
                    try:
                        proto = yield UNIXClientEndpoint(self.reactor, socket_path).connect(
                            Factory.forProtocol(IPC))
                        break
                    except Exception:
                        pass
                if time.time() > deadline:
                    raise TimeoutError(f"mpv's IPC socket did not open within {READY_DEADLINE['mpv']:g} s")
                yield task.deferLater(self.reactor, 0.05, lambda: None)
            self.ipc = proto
            for number, name in enumerate(self.flags, 1):
                self._send(["observe_property", number, name])

        return connect()

    def _send(self, command, what=None):
        self._ids += 1
        self._pending[self._ids] = what
        if self.ipc is not None and self.ipc.transport is not None:
            self.ipc.sendLine(json.dumps({"command": command, "request_id": self._ids}).encode())

    def _message(self, t, line):
        try:
            message = json.loads(line)
        except ValueError:
            return
        if "request_id" in message:
            what = self._pending.pop(message["request_id"], None)
            value = message.get("data") if message.get("error") == "success" else None
            if what == "time-pos":
                self.positions.append((t, value))
            elif what == "demuxer-cache-duration":
                self.cache.append((t, value))
            return
        event = message.get("event")
        if event == "property-change" and message.get("name") in self.flags:
            name = message["name"]
            value = bool(message.get("data"))
            history = self.flags[name]
            if not history or history[-1][1] != value:
                history.append((t, value))
                if name == "paused-for-cache" and self.requested is not None:
                    self.say(f"mpv: {'paused for cache' if value else 'cache pause over'}")
        elif event is not None:
            self.events.append((t, message))
            if event == "end-file":
                self.say(f"mpv: end-file ({message.get('reason')}"
                         f"{', ' + message['file_error'] if message.get('file_error') else ''})")

    def _line(self, fd, t, text):
        if text.strip():
            self.lines.append((t, text.strip()))

    def go(self, url):
        from twisted.internet import task

        self.requested = time.time()
        self._send(["loadfile", url])
        self._poll = task.LoopingCall(self._tick)
        self._poll.clock = self.reactor
        self._poll.start(MPV_POLL_SECONDS, now=False)

    def _tick(self):
        self._send(["get_property", "time-pos"], "time-pos")
        self._send(["get_property", "demuxer-cache-duration"], "demuxer-cache-duration")

    def stop(self):
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        if self.child is None:
            from twisted.internet import defer
            return defer.succeed(None)
        self._send(["quit"])
        return self.child.stop(grace=3.0, first="TERM") if self.child.running else self.child.ended

    def result(self, end):
        r = Result(self.name, requested=self.requested)
        positions = [p for p in self.positions if p[0] <= end]
        events = [e for e in self.events if e[0] <= end]
        lines = [line for line in self.lines if line[0] <= end]
        cache = [c for c in self.cache if c[0] <= end]
        first = next((t for t, pos in positions if pos is not None and t >= (self.requested or 0)), None)
        r.first_picture = first
        gave_up = next(((t, f"end-file: {e.get('reason')} {e.get('file_error', '')}".strip())
                        for t, e in events if e.get("event") == "end-file"), None)
        if gave_up is None and self.child is not None and self.child.ended_at is not None \
                and self.child.ended_at < end - 1:
            gave_up = (self.child.ended_at, f"mpv {_procs.describe_exit(self.child.exit)}")
        r.gave_up = gave_up
        for t, text in lines:
            if any(b in text for b in MPV_STALL_SYMPTOMS):
                r.warnings.append((t, text))
            else:
                r.errors.append((t, text))
        if gave_up is not None:
            r.errors.append(gave_up)
        if first is None:
            return r
        paused = clip(flag_intervals(self.flags["paused-for-cache"], end), first, end)
        if gave_up is not None:
            paused = union(paused + [(gave_up[0], end)])
        r.stalls = paused
        frozen = frozen_intervals(positions, first, gave_up[0] if gave_up else end)
        outside = []
        for s, e in frozen:
            rest = [(s, e)]
            for ps, pe in paused:
                rest = [piece for a, b in rest for piece in ((a, min(b, ps)), (max(a, pe), b)) if piece[1] > piece[0]]
            outside += [p for p in rest if p[1] - p[0] > FROZEN_SECONDS]
        if outside:
            r.extra.append(("time-pos frozen without a cache pause", outside))
        r.jumps = jumps([(t, p) for t, p in positions if t >= first])
        r.ahead = [(t, c) for t, c in cache if c is not None and t >= first]
        return r


# --- ffmpeg as a client -----------------------------------------------------------------

FFMPEG_BENIGN = ()


class FfmpegClient:
    """
    ``ffmpeg -i <playlist> -c copy -f mpegts out.ts``, as fast as the
    playlist lets it, with ``-progress pipe:1`` every 0.2 s.  ffmpeg has no
    picture, so a viewer is modelled on its ``out_time`` (see
    :func:`playhead`).  Warnings and errors from ``-loglevel
    level+warning`` on stderr.
    """

    name = "ffmpeg"

    def __init__(self, reactor, folder, say):
        self.reactor = reactor
        self.folder = folder
        self.say = say
        self.child = None
        self.requested = None
        self.progress = []  # (t, out_time seconds or None)
        self.lines = []
        self._block = {}

    def prepare(self):
        from twisted.internet import defer
        return defer.succeed(None)

    def go(self, url):
        argv = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "level+warning", "-nostats",
                "-stats_period", str(FFMPEG_STATS_PERIOD), "-progress", "pipe:1",
                "-i", url, "-c", "copy", "-f", "mpegts", "-y", os.path.join(self.folder, "ffmpeg-out.ts")]
        self.requested = time.time()
        self.child = _procs.Child(self.reactor, "ffmpeg", argv, self._line,
                                  log_path=os.path.join(self.folder, "ffmpeg.log"))

        def ended(exit):
            if not self._stopping:
                self.say(f"ffmpeg client {_procs.describe_exit(exit)}")
            return exit

        self.child.ended.addCallback(ended)

    _stopping = False

    def _line(self, fd, t, text):
        if fd == 1:
            key, _, value = text.partition("=")
            if key == "progress":
                us = self._block.get("out_time_us", "N/A")
                self.progress.append((t, int(us) / 1e6 if us.lstrip("-").isdigit() else None))
                self._block = {}
            else:
                self._block[key] = value.strip()
        elif text.strip():
            self.lines.append((t, text.strip()))

    def stop(self):
        from twisted.internet import defer

        self._stopping = True
        if self.child is None:
            return defer.succeed(None)
        return self.child.stop(grace=3.0, first="INT")

    def result(self, end):
        r = Result(self.name, requested=self.requested)
        progress = [p for p in self.progress if p[0] <= end]
        lines = [line for line in self.lines if line[0] <= end]
        gave_up = None
        if self.child is not None and self.child.ended_at is not None and self.child.ended_at < end - 1:
            gave_up = (self.child.ended_at, f"ffmpeg {_procs.describe_exit(self.child.exit)}")
        r.gave_up = gave_up
        for t, text in lines:
            (r.warnings if any(b in text for b in FFMPEG_BENIGN) else r.errors).append((t, text))
        if gave_up is not None:
            r.errors.append(gave_up)
        first, stalls, ahead = playhead(progress, end)
        r.first_picture = first
        r.stalls = clip(stalls, first, end) if first else []
        r.ahead = ahead
        r.jumps = jumps([(t, m) for t, m in progress if m is not None], forward=1e9)  # it reads ahead, so only backward jumps mean anything
        if first is not None:
            r.notes.append("first picture = first progress report with media written")
        return r


# --- hls.js in Chromium ---------------------------------------------------------------------

# hls.js errors that are how it reports a stall it is handling; the stall
# itself is measured, so they are shown but not counted as errors.
HLSJS_STALL_DETAILS = ("bufferStalledError", "bufferNudgeOnStall", "bufferSeekOverHole")


class HlsJs:
    """
    hls.js (from bench/.node) in Debian's Chromium, headless, through
    Playwright in a child process (bench/_hlsjs_driver.py).  The page
    records the media element's events, a 10 Hz sample of ``currentTime``
    and the buffer ahead, the first presented frame, and hls.js errors.
    """

    name = "hlsjs"

    def __init__(self, reactor, folder, say, page_url):
        self.reactor = reactor
        self.folder = folder
        self.say = say
        self.page_url = page_url
        self.child = None
        self.events = []  # dicts from the page: t, type, data
        self.info = None
        self.stderr = []
        self._ready = None
        self._said = 0

    def prepare(self):
        from twisted.internet import defer

        self._ready = defer.Deferred()
        argv = [sys.executable, os.path.join(HERE, "_hlsjs_driver.py"), "--page", self.page_url]
        self.child = _procs.Child(self.reactor, "hlsjs", argv, self._line, stdin=True,
                                  log_path=os.path.join(self.folder, "events.jsonl"))

        def ended(exit):
            if not self._ready.called:
                tail = " | ".join(text for _, text in self.stderr[-3:])
                self._ready.errback(RuntimeError(f"the Chromium driver exited {exit}: {tail or 'no output'}"))
            return exit

        self.child.ended.addCallback(ended)
        return _first(self.reactor, self._ready, READY_DEADLINE["hlsjs"],
                      f"Chromium with hls.js was not ready within {READY_DEADLINE['hlsjs']:g} s")

    def _line(self, fd, t, text):
        if fd == 2:
            if text.strip():
                self.stderr.append((t, text.strip()))
            return
        try:
            event = json.loads(text)
        except ValueError:
            self.stderr.append((t, text))
            return
        if event.get("type") == "ready":
            self.info = event.get("data") or {}
            if not self._ready.called:
                self._ready.callback(self.info)
            return
        self.events.append(event)
        kind, data = event.get("type"), event.get("data")
        if kind in ("waiting", "playing") and self._first_picture() is not None:
            self.say(f"hls.js: {kind} at currentTime {data.get('ct', 0):.2f}")
        elif kind == "hls-error" and self._said < 12:
            self._said += 1
            self.say(f"hls.js: {'FATAL ' if data.get('fatal') else ''}error {data.get('type')}/{data.get('details')}")
        elif kind in ("video-error", "pageerror", "crash") and self._said < 12:
            self._said += 1
            self.say(f"hls.js: {kind} {short(json.dumps(data))}")

    def _first_picture(self):
        for e in self.events:
            if e["type"] in ("frame", "playing"):
                return e["t"]
        return None

    def go(self, url):
        self.child.write(f"go {url}\n".encode())

    def stop(self):
        from twisted.internet import defer

        if self.child is None:
            return defer.succeed(None)
        self.child.write(b"stop\n")
        d = _first(self.reactor, self.child.ended, 15, "driver did not stop")
        d.addErrback(lambda f: self.child.stop(grace=3.0))
        return d

    def result(self, end):
        r = Result(self.name)
        events = [e for e in self.events if e["t"] <= end]
        r.requested = next((e["t"] for e in events if e["type"] == "load"), None)
        frame = next((e["t"] for e in events if e["type"] == "frame"), None)
        playing = next((e["t"] for e in events if e["type"] == "playing"), None)
        r.first_picture = frame or playing
        if frame is None and playing is not None:
            r.notes.append("no requestVideoFrameCallback: first picture = first 'playing' event")
        if self.info is not None and not self.info.get("h264_aac"):
            r.notes.append("this Chromium's MediaSource does not take H.264/AAC: hls.js cannot play the stream")
        for e in events:
            kind, data, t = e["type"], e.get("data") or {}, e["t"]
            if kind == "hls-error":
                text = (f"hls.js {'FATAL ' if data.get('fatal') else ''}{data.get('type')}/"
                        f"{data.get('details')}" + (f" ({data.get('reason')})" if data.get("reason") else "")
                        + (f" {data.get('url')}" if data.get("url") else "")
                        + (f" HTTP {data.get('code')}" if data.get("code") else ""))
                stall_kind = data.get("details") in HLSJS_STALL_DETAILS and not data.get("fatal")
                (r.warnings if stall_kind else r.errors).append((t, text))
            elif kind in ("video-error", "pageerror", "crash"):
                r.errors.append((t, f"{kind}: {json.dumps(data)}"))
            elif kind == "console":
                (r.errors if data.get("level") == "error" else r.warnings).append(
                    (t, f"console {data.get('level')}: {data.get('text')}"))
            elif kind in ("recovery", "play-rejected"):
                r.warnings.append((t, f"{kind}: {data}"))
        if self.child is not None and self.child.ended_at is not None and self.child.ended_at < end - 1:
            r.gave_up = (self.child.ended_at, f"Chromium driver {_procs.describe_exit(self.child.exit)}")
            r.errors.append(r.gave_up)
        if r.first_picture is None:
            return r
        first = r.first_picture
        stop_at = r.gave_up[0] if r.gave_up else end
        samples = [(e["t"], e["data"]) for e in events if e["type"] == "sample"]
        positions = [(t, d["ct"]) for t, d in samples if not d.get("paused")]
        waiting = []
        for i, e in enumerate(events):
            if e["type"] != "waiting":
                continue
            ct = (e.get("data") or {}).get("ct", 0)
            over = next((x["t"] for x in events[i + 1:]
                         if x["type"] == "playing" or (x["type"] == "sample" and x["data"]["ct"] > ct + 1e-3)),
                        stop_at)
            waiting.append((e["t"], over))
        frozen = frozen_intervals([(t, p) for t, p in positions if t >= first], first, stop_at)
        r.stalls = clip(union(waiting + frozen + ([(r.gave_up[0], end)] if r.gave_up else [])), first, end)
        r.jumps = jumps([(t, p) for t, p in positions if t >= first])
        r.ahead = [(t, d.get("ahead") or 0.0) for t, d in samples if t >= first]
        levels = [e["data"] for e in events if e["type"] == "level"]
        if levels:
            tds = sorted({lv["td"] for lv in levels})
            r.notes.append(f"hls.js saw target durations {tds}, last level {levels[-1]['n']} fragments, "
                           f"{levels[-1]['total']:.1f} s, discontinuity counter {levels[-1]['end_cc']}")
        return r


def make_player(name, reactor, folder, say, page_url=None):
    """The player called ``name`` (mpv, hlsjs, ffmpeg)."""
    if name == "mpv":
        return Mpv(reactor, folder, say)
    if name == "ffmpeg":
        return FfmpegClient(reactor, folder, say)
    if name == "hlsjs":
        return HlsJs(reactor, folder, say, page_url)
    raise ValueError(f"unknown player {name!r} (choose from mpv, hlsjs, ffmpeg)")


def short(text, width=150):
    text = re.sub(r"\s+", " ", str(text))
    return text if len(text) <= width else text[:width - 1] + "…"


if __name__ == "__main__":
    print("bench/_players.py: a helper module of bench/playback.py; nothing to run on its own.")
