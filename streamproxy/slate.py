"""
The slate: a short still picture saying "temporarily unavailable", with
silence, that a channel shows its viewers while every candidate fails and
it retries, instead of nothing.

It is made once, at start, by ffmpeg (H.264 and AAC in MPEG-TS, one
second, one keyframe) and kept in memory as MPEG-TS units.  A channel
splices it into its :class:`~streamproxy.timeline.Timeline` like any
source and plays it in a loop: each pass is the same units with their
timestamps moved on by the slate's length (:meth:`Slate.loop`), so the
loop is one continuous source with no splice between passes, and the
viewers' clocks (a recording's too) run on.
"""

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from . import mpegts
from .mpegts import AUDIO, PES, VIDEO, TSReader
from .processes import ChildProtocol, spawn

log = Logger()

SLATE_SECONDS = 1
SLATE_FPS = 25
SLATE_SIZE = "1280x720"
SLATE_TEXT = "Temporarily unavailable"
SLATE_COLOUR = "0x141c24"

# How long making the slate may take before it is given up, seconds.
RENDER_TIMEOUT_SECONDS = 30.0


def slate_command(settings, text=True):
    """
    The argv that writes the slate as MPEG-TS to standard output: a still
    picture (with ``SLATE_TEXT`` drawn on it when ``text``, which needs a
    font) and silence.
    """
    video = f"color=c={SLATE_COLOUR}:s={SLATE_SIZE}:r={SLATE_FPS}:d={SLATE_SECONDS}"
    if text:
        video += (
            f",drawtext=text='{SLATE_TEXT}':fontcolor=white:fontsize=56:"
            "x=(w-text_w)/2:y=(h-text_h)/2"
        )
    return [
        settings.ffmpeg_path, "-nostdin", "-hide_banner", "-loglevel", "error",
        "-f", "lavfi", "-i", video,
        "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo",
        "-map", "0:v", "-map", "1:a", "-t", str(SLATE_SECONDS),
        "-c:v", "libx264", "-preset", "veryfast", "-tune", "stillimage", "-pix_fmt", "yuv420p",
        "-g", str(SLATE_FPS * SLATE_SECONDS), "-bf", "0",
        "-c:a", "aac", "-b:a", "64k", "-ac", "2",
        "-f", "mpegts", "-pes_payload_size", "0", "pipe:1",
    ]


class SlateError(ValueError):
    """
    What ffmpeg made is not a usable slate; the message says why.
    """


def shift_unit(unit, ticks):
    """
    A copy of ``unit`` with its PES timestamps and PCRs ``ticks`` (90 kHz)
    later.
    """
    data = bytearray(unit.data)
    if unit.kind == PES and data[1] & 0x40:
        start = mpegts.payload_offset(data)
        if start is not None:
            pts, dts, at = mpegts.pes_timestamps(data, start)
            if at is not None:
                mpegts.write_timestamp(data, at, pts + ticks)
                if data[start + 7] >> 6 == 3:
                    mpegts.write_timestamp(data, at + 5, dts + ticks)
    for offset in range(0, len(data) - mpegts.PACKET_SIZE + 1, mpegts.PACKET_SIZE):
        pcr = mpegts.pcr_offset(data, offset)
        if pcr is not None:
            mpegts.write_pcr_base(data, pcr, mpegts.read_pcr_base(data, pcr) + ticks)

    def moved(value):
        return None if value is None else (value + ticks) % mpegts.TIMESTAMP_MODULO

    return mpegts.Unit(data, unit.pid, unit.kind, unit.stream, moved(unit.pts), moved(unit.dts), unit.key)


class Slate:
    """
    The slate's units and length, from the MPEG-TS bytes ffmpeg made.

    :raises SlateError: when they hold no video keyframe to start on.
    """

    def __init__(self, data):
        reader = TSReader()
        units = reader.feed(data) + reader.flush()
        video = [u for u in units if u.kind == PES and u.stream == VIDEO and u.dts is not None]
        if not video or not video[0].key:
            raise SlateError("no video keyframe")
        first = video[0].dts
        frame = (video[1].dts - first) if len(video) > 1 else mpegts.CLOCK_HZ // SLATE_FPS
        # One pass lasts from its first frame to the next pass's first.
        self.ticks = (video[-1].dts - first) % mpegts.TIMESTAMP_MODULO + frame
        self.seconds = self.ticks / mpegts.CLOCK_HZ
        self.units = _audio_within(units, self.ticks)
        self.size = len(data)

    def loop(self, number):
        """
        The units of pass ``number`` (0, 1, 2...), ``number`` slate lengths
        later than pass 0, ready to push (fresh copies: the timeline
        rewrites what it is given).
        """
        ticks = number * self.ticks
        return [shift_unit(unit, ticks) for unit in self.units]


def _audio_within(units, ticks):
    """
    ``units`` without the audio frames that would overlap the next pass:
    AAC frames do not divide a second, and a clock must never go back.
    """
    audio = [u for u in units if u.kind == PES and u.stream == AUDIO and u.pts is not None]
    if len(audio) < 2:
        return units
    first, step = audio[0].pts, audio[1].pts - audio[0].pts
    late = {id(u) for u in audio if (u.pts - first) % mpegts.TIMESTAMP_MODULO + step > ticks}
    return [u for u in units if id(u) not in late]


class _Collect(ChildProtocol):
    def __init__(self):
        super().__init__()
        self.out = []
        self.err = []

    def childDataReceived(self, fd, data):
        (self.out if fd == 1 else self.err).append(data)


def render_slate(reactor, settings, running=None, stopped=lambda: False):
    """
    Make the slate with ffmpeg; a Deferred firing with a :class:`Slate`, or
    with None (logged) when it could not be made.  Without a usable font
    the picture carries no text.  ``running``, a list, holds the ffmpeg
    process while it runs (to stop it at shutdown); once ``stopped()`` is
    true no further try is made.
    """
    running = running if running is not None else []

    @defer.inlineCallbacks
    def attempt(text):
        child = _Collect()
        spawn(reactor, child, slate_command(settings, text), settings.segment_dir)
        running.append(child)
        child.ended.addBoth(lambda result: (running.remove(child) if child in running else None, result)[1])
        timer = reactor.callLater(RENDER_TIMEOUT_SECONDS, child.stop, 1.0)
        yield child.ended
        if timer.active():
            timer.cancel()
        errors = b"".join(child.err).decode("utf-8", "replace").strip().splitlines()
        try:
            return Slate(b"".join(child.out))
        except SlateError as e:
            raise SlateError(errors[-1] if errors else str(e))

    @defer.inlineCallbacks
    def run():
        problem = None
        for text in (True, False):
            if stopped():
                return None
            try:
                slate = yield attempt(text)
            except (SlateError, OSError) as e:
                problem = str(e)
                continue
            if not text:
                log.warn("The slate has no text (drawing text failed: {problem})", problem=problem)
            log.info("Slate ready: {seconds:g} s, {size} bytes", seconds=slate.seconds, size=slate.size)
            return slate
        log.warn("Could not make the slate ({problem}); a channel whose every candidate fails shows "
                 "nothing while it retries", problem=problem)
        return None

    return run()


class SlateService(Service):
    """
    Makes the slate once when the daemon starts; :attr:`slate` is the
    :class:`Slate` once made (None before, or if it could not be made).
    Start it after the channel manager, whose start-up sweep would take the
    ffmpeg making it for a leftover.
    """

    name = "slate"

    def __init__(self, settings, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.reactor = reactor
        self.slate = None
        self._making = None
        self._running = []

    def startService(self):
        """
        Start making the slate (in the background: nothing waits for it).
        """
        super().startService()
        self._making = render_slate(self.reactor, self.settings, self._running, lambda: not self.running)
        self._making.addCallback(self._made)
        self._making.addErrback(lambda f: log.failure("Making the slate", f))

    def stopService(self):
        """
        Stop a slate still being made; fires once its ffmpeg has exited.
        """
        super().stopService()
        return defer.DeferredList([child.stop() for child in list(self._running)], consumeErrors=True)

    def _made(self, slate):
        self.slate = slate

    @property
    def making(self):
        """
        Whether the slate is still being made.
        """
        return self._making is not None and not self._making.called

    def current(self):
        """
        The slate, or None.
        """
        return self.slate
