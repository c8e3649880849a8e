"""
Content checks: a stream that is up but useless (a black picture, a frozen
one, no sound) counts as failing.

The checks run inside the ffmpeg that already reads the stream, as a second
output that writes nothing (``-f null``): its video branch decodes only
keyframes (``-skip_frame nokey`` on the video decoder; the ``-c copy``
output never decodes, so it is untouched) through ``blackdetect`` and
``freezedetect``, and its audio branch decodes the first audio track
through ``silencedetect``.  What they find comes on stderr, which the
ffmpeg protocol already reads line by line: this module turns those lines
into :class:`ContentEvent` s and a :class:`ContentMonitor` turns the events
into a verdict.  Measured with ``bench/content_checks.py`` on a 720p
5 Mbit/s stream: a fraction of a percent of a core more than the copy
alone, where decoding every frame would cost several percent.

Everything here is pure: lines in, facts out, time passed in.
"""

import re
from dataclasses import dataclass, field, replace

BLACK = "black"
FROZEN = "frozen"
SILENT = "silent"
KINDS = (BLACK, FROZEN, SILENT)

# How a fault is worded in logs, failure reasons and the status page.
WORDS = {BLACK: "black picture", FROZEN: "frozen picture", SILENT: "no sound"}
SHOWS = {BLACK: "a black picture", FROZEN: "a frozen picture", SILENT: "no sound"}

# The contexts of ffmpeg's decoders: with the checks on, their complaints
# about a broken packet come from the check branch, which decodes, and say
# nothing about why the stream failed (see FFmpegProcess).
DECODERS = frozenset({
    "h264", "hevc", "mpeg2video", "mpeg1video", "mpeg4", "vc1", "av1", "vp9",
    "aac", "aac_latm", "ac3", "eac3", "mp3", "mp3float", "mp2", "mp2float", "opus", "dca", "truehd",
})

# A pixel darker than this share of the range is black, and a picture whose
# pixels are this share black is a black picture (blackdetect's defaults).
BLACK_PIXEL_SHARE = 0.10
BLACK_PICTURE_SHARE = 0.98

# Two keyframes whose mean difference is below this (dB of the pixel
# range) are the same picture.  Measured on the test streams 2 s apart: a
# held frame encoded again and again differs by -59 dB (the first keyframes,
# while the encoder's rate control settles) to -95 dB, moving test pictures
# by -26 to -39 dB; ffmpeg's default of -60 dB would take a provider's
# noisy still for moving.
FREEZE_NOISE_DB = -50

# Audio below this level is silence (silencedetect's default).
SILENCE_NOISE_DB = -60

# How soon ffmpeg reports a picture or silence that started (its own
# minimum, seconds); the durations that count are measured here, from the
# start time it reports.
REPORT_AFTER_SECONDS = 1

# Steps of the keyframe clock larger than this are jumps (an upstream that
# restarts its timestamps), not time that passed.
MAX_CLOCK_STEP_SECONDS = 15.0

# A start reported more than this before the latest keyframe is taken as
# that long before it.
MAX_REPORT_DELAY_SECONDS = 60.0

# The key the check branch adds to every keyframe, so that ffmpeg prints
# each keyframe's time (the clock durations are measured with) even when
# no detector has anything to say about it.
TICK_KEY = "streamproxy.tick"


@dataclass(frozen=True)
class ContentChecks:
    """
    The ``content_checks:`` block: how long a black picture, a frozen
    picture and silence may last, in seconds (0 turns that check off), and
    the channels never checked (``skip_channels``: channels that really are
    black or silent, such as radio stations with a still logo).
    """

    black_seconds: float = 10
    freeze_seconds: float = 10
    silence_seconds: float = 20
    skip_channels: tuple = ()

    def limit(self, kind):
        """
        The seconds ``kind`` may last (0: not checked).
        """
        return {BLACK: self.black_seconds, FROZEN: self.freeze_seconds, SILENT: self.silence_seconds}[kind]

    @property
    def kinds(self):
        """
        The kinds checked.
        """
        return tuple(kind for kind in KINDS if self.limit(kind) > 0)

    def without(self, *kinds):
        """
        These checks with ``kinds`` turned off.
        """
        values = {}
        for kind in kinds:
            values[{BLACK: "black_seconds", FROZEN: "freeze_seconds", SILENT: "silence_seconds"}[kind]] = 0
        return replace(self, **values)

    def for_channel(self, channel_id, tolerated=()):
        """
        The checks that apply to ``channel_id``, without the ``tolerated``
        kinds; None when nothing is left to check.
        """
        if channel_id in self.skip_channels:
            return None
        checks = self.without(*tolerated) if tolerated else self
        return checks if checks.kinds else None


def describe(kind, seconds):
    """
    ``black picture for 10 s`` and the like.
    """
    return f"{WORDS[kind]} for {seconds:.0f} s"


def input_options(checks, decoding_all=False):
    """
    The options before ``-i`` the checks need: the video decoder decodes
    keyframes only, on one thread (frame threads would hold each keyframe
    back until the next ones arrive, seconds later).  When the video is
    transcoded (``decoding_all``) its decoder serves the encoder too and is
    left alone.
    """
    if checks is None or decoding_all:
        return []
    return ["-skip_frame:v:0", "nokey", "-threads:v:0", "1"]


def output_options(checks, decoding_all=False):
    """
    The second output that runs the checks and writes nothing (empty when
    ``checks`` is None).  The video branch always runs: its keyframes are
    the clock the durations are measured with.

    What leaves the detectors is made tiny (16x16 pictures, 8 kHz mono
    bytes): ffmpeg holds an output's packets until every one of its
    streams has started, so a stream whose audio never decodes would
    otherwise pile up whole decoded keyframes in memory.
    """
    if checks is None:
        return []
    video = []
    if decoding_all:
        video.append("select=key")
    if checks.black_seconds > 0:
        video.append(f"blackdetect=d=0:pix_th={BLACK_PIXEL_SHARE:g}:pic_th={BLACK_PICTURE_SHARE:g}")
    if checks.freeze_seconds > 0:
        video.append(f"freezedetect=n={FREEZE_NOISE_DB}dB:d={REPORT_AFTER_SECONDS}")
    video += [f"metadata=mode=add:key={TICK_KEY}:value=1", "metadata=mode=print", "scale=16:16:flags=neighbor"]
    argv = ["-map", "0:v:0", "-vf", ",".join(video), "-c:v", "wrapped_avframe"]
    if checks.silence_seconds > 0:
        argv += [
            "-map", "0:a:0?",
            "-af", f"silencedetect=n={SILENCE_NOISE_DB}dB:d={REPORT_AFTER_SECONDS},"
                   "aresample=8000,aformat=sample_fmts=u8:channel_layouts=mono",
            "-c:a", "pcm_u8",
        ]
    return argv + ["-f", "null", "-"]


# ---------------------------------------------------------------------------
# What ffmpeg prints

CLOCK = "clock"


@dataclass(frozen=True)
class ContentEvent:
    """
    One finding of the check branch: ``kind`` is :data:`CLOCK` (a keyframe
    at ``at``), or a fault kind that ``started`` at ``at`` (True) or ended
    (False).  Times are seconds of ffmpeg's input clock.
    """

    kind: str
    started: bool = False
    at: float = 0.0


_CONTEXT = re.compile(r"^\[(?P<context>[^\]@]+?) @ 0x[0-9a-fA-F]+\] (?:\[\w+\] )?(?P<message>.*)$")
_FRAME = re.compile(r"^frame:\d+\s+pts:\S+\s+pts_time:(?P<time>-?[0-9.]+)")
_METADATA = re.compile(r"^lavfi\.(?P<key>[a-z_.]+)=(?P<value>-?[0-9.]+)")
_SILENCE = re.compile(r"^silence_(?P<edge>start|end): (?P<time>-?[0-9.]+)")

_KEYS = {
    "black_start": (BLACK, True),
    "black_end": (BLACK, False),
    "freezedetect.freeze_start": (FROZEN, True),
    "freezedetect.freeze_end": (FROZEN, False),
}


def parse_line(line):
    """
    The :class:`ContentEvent` a stderr line of the check branch reports,
    or None for any other line.

    Read are the ``metadata=mode=print`` filter's lines (each keyframe's
    time, then ``lavfi.black_start=``, ``lavfi.black_end=``,
    ``lavfi.freezedetect.freeze_start=`` / ``freeze_end=`` set on it) and
    ``silencedetect``'s ``silence_start:`` / ``silence_end:``.  The
    detectors' own lines about pictures are not read: the metadata lines
    say the same, in order with the keyframes.
    """
    match = _CONTEXT.match(line.strip())
    if match is None:
        return None
    context, message = match.group("context"), match.group("message")
    try:
        if context.startswith("Parsed_metadata"):
            frame = _FRAME.match(message)
            if frame:
                return ContentEvent(CLOCK, at=float(frame.group("time")))
            meta = _METADATA.match(message)
            if meta and meta.group("key") in _KEYS:
                kind, started = _KEYS[meta.group("key")]
                return ContentEvent(kind, started, float(meta.group("value")))
        elif context == "silencedetect":
            silence = _SILENCE.match(message)
            if silence:
                return ContentEvent(SILENT, silence.group("edge") == "start", float(silence.group("time")))
    except ValueError:
        return None
    return None


def is_decoding_complaint(line):
    """
    Whether ``line`` is a decoder's complaint (``[aac @ 0x...] [error] ...``)
    or ffmpeg's ``Error while decoding stream ...``.
    """
    match = _CONTEXT.match(line.strip())
    if match is not None:
        return match.group("context") in DECODERS
    return "Error while decoding stream" in line


def is_check_line(line):
    """
    Whether ``line`` comes from the check branch's filters (to be kept out
    of the log, whatever it says).
    """
    match = _CONTEXT.match(line.strip())
    if match is None:
        return False
    context = match.group("context")
    return context.startswith(("Parsed_metadata", "Parsed_blackdetect", "Parsed_freezedetect")) or context in (
        "blackdetect", "freezedetect", "silencedetect",
    )


# ---------------------------------------------------------------------------
# The verdict


@dataclass(frozen=True)
class ContentFault:
    """
    A fault that lasted past its limit: ``kind`` for ``seconds``.
    """

    kind: str
    seconds: float

    @property
    def reason(self):
        """
        The failure reason, e.g. ``black picture for 10 s``.
        """
        return describe(self.kind, self.seconds)


@dataclass
class ContentMonitor:
    """
    How long each kind of fault has lasted in one stream.

    Durations are measured on the stream's own clock, its keyframes' times,
    so media that arrives in a burst counts as the seconds it holds and a
    stalled stream never turns black.  Jumps of the clock (an upstream that
    restarts its timestamps) count as no time.
    """

    checks: ContentChecks
    now: float = 0.0
    tolerated: set = field(default_factory=set)
    _since: dict = field(default_factory=dict)
    _clock: float | None = None
    _reported: set = field(default_factory=set)

    def feed(self, event):
        """
        Take one :class:`ContentEvent` into account.
        """
        if event.kind == CLOCK:
            if self._clock is not None:
                step = event.at - self._clock
                if 0 < step <= MAX_CLOCK_STEP_SECONDS:
                    self.now += step
            self._clock = event.at
            return
        if event.started:
            # Where the start lies from the latest keyframe: usually before
            # it (reported late), silence a little after (audio runs ahead).
            offset = 0.0
            if self._clock is not None:
                offset = min(max(event.at - self._clock, -MAX_REPORT_DELAY_SECONDS), MAX_CLOCK_STEP_SECONDS)
            self._since.setdefault(event.kind, self.now + offset)
        else:
            self._since.pop(event.kind, None)
            self._reported.discard(event.kind)

    def lasting(self):
        """
        ``{kind: seconds}`` of every fault under way that is checked.
        A black picture is not also counted as a frozen one.
        """
        found = {}
        for kind, since in self._since.items():
            if self.checks.limit(kind) <= 0:
                continue
            if kind == FROZEN and BLACK in self._since:
                continue
            found[kind] = max(0.0, self.now - since)
        return found

    def fault(self):
        """
        The first fault (black, frozen, silent) that has lasted its limit
        and was not reported yet, as a :class:`ContentFault`, or None.  A
        reported fault is reported again only after it ended and came back
        (or :meth:`snooze`).
        """
        lasting = self.lasting()
        for kind in KINDS:
            if kind in self.tolerated or kind in self._reported or kind not in lasting:
                continue
            if lasting[kind] >= self.checks.limit(kind):
                self._reported.add(kind)
                return ContentFault(kind, lasting[kind])
        return None

    def nearing(self, lead):
        """
        A kind of fault under way that will reach its limit within ``lead``
        seconds (or has), or None.
        """
        for kind, seconds in self.lasting().items():
            if kind not in self.tolerated and seconds >= self.checks.limit(kind) - lead:
                return kind
        return None

    def snooze(self, kind):
        """
        Report ``kind`` again once it has lasted its limit once more.
        """
        if kind in self._since:
            self._since[kind] = self.now
        self._reported.discard(kind)

    def tolerate(self, kind):
        """
        Stop judging ``kind`` (it is the channel's real content).
        """
        self.tolerated.add(kind)

    def status(self):
        """
        ``{kind: seconds}`` of the faults under way (for the status page).
        """
        return {kind: round(seconds, 1) for kind, seconds in self.lasting().items() if kind not in self.tolerated}


def idle_verdict(checks, monitor, sampled, share=0.75):
    """
    The fault an idle check of ``sampled`` seconds found, or None: a kind
    that lasted at least ``share`` of the sample and was still under way at
    its end (a short sample cannot wait for the full limits).
    """
    if checks is None:
        return None
    lasting = monitor.lasting()
    for kind in KINDS:
        if kind in lasting and lasting[kind] >= share * sampled:
            return ContentFault(kind, lasting[kind])
    return None


# A kind of fault that every candidate of a channel showed is taken as the
# channel's content and not judged on it for this long, seconds.
TOLERATE_SECONDS = 6 * 3600.0


class ContentMemory:
    """
    The kinds of fault each channel is excused from: every candidate of
    the channel showed them, so they are what the channel really carries
    (a radio station's still logo, a night test card).  Remembered for
    ``seconds``, across tunes of the channel.
    """

    def __init__(self, seconds=TOLERATE_SECONDS):
        self.seconds = seconds
        self._since = {}

    def tolerate(self, channel_id, kind, now):
        """
        Excuse ``channel_id`` from ``kind`` from ``now`` on.
        """
        self._since[(channel_id, kind)] = now

    def tolerated(self, channel_id, now):
        """
        The kinds ``channel_id`` is excused from at ``now``.
        """
        expired = [key for key, since in self._since.items() if now - since > self.seconds]
        for key in expired:
            del self._since[key]
        return {kind for (channel, kind) in self._since if channel == channel_id}

    def status(self, now):
        """
        ``[{"channel_id", "kind", "until"}]`` for the status page.
        """
        self.tolerated(None, now)
        return [
            {"channel_id": channel, "kind": kind, "until": since + self.seconds}
            for (channel, kind), since in sorted(self._since.items())
        ]
