"""Pure parsing of what ffmpeg and ffprobe print about a stream.

Nothing here does I/O or touches the reactor: the process protocols feed
bytes and lines in, and get plain data back.  Every sample the parsers were
written against was captured from ffmpeg 5.1 (see tests/test_media.py).

Loglevel notes (measured on ffmpeg 5.1):

* The input stream report (``Input #0 ...`` / ``Stream #0:0 ...``), the
  ``frame=`` stats line and the hls muxer's ``Opening '...' for writing``
  lines are all printed at ``info``, the default level.  With
  ``-loglevel warning`` none of them appear, so the stderr parsers need
  ``-loglevel info`` (``verbose`` adds noise but parses the same).
* ``-loglevel level+info`` prefixes lines with ``[info]`` (after the
  ``[hls @ 0x...]`` context when there is one); both forms are accepted.
* Identical consecutive messages are collapsed into
  ``    Last message repeated N times`` unless ``-loglevel repeat+info`` is
  used, so event counts taken from stderr are lower bounds.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from fractions import Fraction

from .urls import mask_text

__all__ = [
    "BUFFERING_KINDS",
    "COPYABLE_AUDIO",
    "COPYABLE_VIDEO",
    "Event",
    "EventKind",
    "LineBuffer",
    "MediaError",
    "Progress",
    "ProgressParser",
    "StreamFacts",
    "StreamReportParser",
    "classify_stderr_line",
    "facts_from_ffprobe_json",
    "judge",
    "mask_url",
    "needs_transcode",
]


class MediaError(ValueError):
    """Tool output that cannot be understood at all."""


# ---------------------------------------------------------------------------
# Stream facts


# Codec names as both ffmpeg and ffprobe spell them.  HLS (MPEG-TS segments)
# carries these as they are; anything else (mpeg2video, mp2, aac_latm, opus,
# dts, ...) must be re-encoded.  HEVC in TS segments is not what Apple's spec
# asks for (it wants fMP4), but the players we feed accept it.
COPYABLE_VIDEO = frozenset({"h264", "hevc"})
COPYABLE_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3"})

# What ffmpeg prints when it could not identify a stream's codec.
_UNKNOWN_CODECS = frozenset({"", "none", "unknown"})

# A timebase guess such as 90000/1 shows up as a "frame rate" when no frame
# could be decoded; nothing broadcast runs faster than this.
_MAX_FPS = 300.0


@dataclass(frozen=True)
class StreamFacts:
    """What we learned about one input.

    ``video_codec`` describes the first video stream: ``None`` means there
    is no video stream at all, ``"none"`` means there is one but its codec
    was not identified.  Cover art (attached pictures) is not video; it is
    listed in ``other_codecs`` with data and subtitle streams.
    """

    video_codec: str | None = None
    audio_codecs: tuple[str, ...] = ()
    other_codecs: tuple[str, ...] = ()
    width: int | None = None
    height: int | None = None
    fps: float | None = None

    @property
    def has_video(self) -> bool:
        """True when the input has a video stream, whatever its codec."""
        return self.video_codec is not None

    @property
    def has_audio(self) -> bool:
        """True when the input has at least one audio stream."""
        return bool(self.audio_codecs)


class _FactsBuilder:
    """Collects streams in order; the first video stream wins."""

    def __init__(self) -> None:
        self.video: tuple[str, int | None, int | None, float | None] | None = None
        self.audio: list[str] = []
        self.other: list[str] = []

    def add_video(self, codec, width, height, fps) -> None:
        if self.video is None:
            self.video = (codec, width, height, fps)
        else:
            self.other.append(codec)

    def build(self) -> StreamFacts:
        codec, width, height, fps = self.video or (None, None, None, None)
        return StreamFacts(
            video_codec=codec,
            audio_codecs=tuple(self.audio),
            other_codecs=tuple(self.other),
            width=width,
            height=height,
            fps=fps,
        )


def _codec(name) -> str:
    """Normalise a codec name; a missing one becomes ``"none"``."""
    if not isinstance(name, str) or not name.strip():
        return "none"
    return name.strip().lower()


def _positive_int(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _plausible_fps(value: float | None) -> float | None:
    if value is None or not 0 < value <= _MAX_FPS:
        return None
    return value


def _ratio(text) -> float | None:
    """``"30000/1001"`` -> 29.97...; ``"0/0"`` and junk -> None."""
    if not isinstance(text, str):
        return None
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        return None


def facts_from_ffprobe_json(text: str) -> StreamFacts:
    """Parse ``ffprobe -v error -print_format json -show_streams`` output.

    ffprobe prints an empty object (``{}``) when it cannot open the input,
    which yields facts with no streams.  Raises MediaError when the text is
    not JSON or not shaped like ffprobe output.
    """
    try:
        document = json.loads(text)
    except (TypeError, ValueError) as error:
        raise MediaError(f"ffprobe output is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise MediaError("ffprobe output is not a JSON object")
    streams = document.get("streams", [])
    if not isinstance(streams, list):
        raise MediaError("ffprobe 'streams' is not a list")

    builder = _FactsBuilder()
    for stream in streams:
        if not isinstance(stream, dict):
            raise MediaError("ffprobe stream entry is not an object")
        kind = stream.get("codec_type")
        codec = _codec(stream.get("codec_name"))
        disposition = stream.get("disposition")
        cover_art = isinstance(disposition, dict) and disposition.get("attached_pic") == 1
        if kind == "video" and not cover_art:
            # avg_frame_rate is what was measured; r_frame_rate is a guess
            # that degrades to the timebase (90000/1) on undecodable input.
            fps = _plausible_fps(_ratio(stream.get("avg_frame_rate")))
            if fps is None:
                fps = _plausible_fps(_ratio(stream.get("r_frame_rate")))
            builder.add_video(
                codec,
                _positive_int(stream.get("width")),
                _positive_int(stream.get("height")),
                fps,
            )
        elif kind == "audio":
            builder.audio.append(codec)
        else:
            builder.other.append(codec)
    return builder.build()


# ---------------------------------------------------------------------------
# Verdicts


def judge(facts: StreamFacts) -> str | None:
    """Return None when the input is usable, else a short human reason.

    A stream with video but no audio is accepted: it plays, just silently.
    """
    if not facts.has_video:
        if facts.has_audio:
            return "audio only (no video stream)"
        if facts.other_codecs:
            return "no audio or video streams (data only)"
        return "no streams"
    if facts.video_codec in _UNKNOWN_CODECS:
        return "unknown video codec"
    if facts.width is None or facts.height is None:
        return "video size unknown (no decodable picture)"
    return None


def needs_transcode(facts: StreamFacts) -> tuple[bool, bool]:
    """Return ``(video, audio)``: which kinds must be re-encoded for HLS.

    Audio needs it as soon as any audio stream is not HLS-compatible, since
    the remux keeps every audio track.
    """
    video = facts.has_video and facts.video_codec not in COPYABLE_VIDEO
    audio = any(codec not in COPYABLE_AUDIO for codec in facts.audio_codecs)
    return video, audio


# ---------------------------------------------------------------------------
# Line handling shared by the stderr parsers

_LEVELS = "quiet|panic|fatal|error|warning|info|verbose|debug|trace"
# "[hls @ 0x55...] [info] Opening ..." -> context "hls", message "Opening ..."
_PREFIX_RE = re.compile(
    r"^(?:\[(?P<context>[^\]@]+?) @ 0x[0-9a-fA-F]+\] )?"
    rf"(?:\[(?:{_LEVELS})\] )?"
)


def _split_prefix(line: str) -> tuple[str | None, str]:
    """Split off ffmpeg's ``[component @ 0x...]`` and ``[level]`` prefixes."""
    match = _PREFIX_RE.match(line)
    return match.group("context"), line[match.end():]


class LineBuffer:
    """Turn a byte stream into complete text lines.

    ffmpeg ends its stats line with ``\\r`` and often prints the next log
    message right after it, so ``\\r`` ends a line just like ``\\n``.
    Blank lines are dropped, trailing whitespace is stripped (the stats
    line is padded), leading whitespace is kept (the stream report is
    indented).  Invalid UTF-8 (e.g. Latin-1 service names) is replaced
    rather than rejected.
    """

    def __init__(self, max_line_bytes: int = 65536) -> None:
        self._pending = b""
        self._max = max_line_bytes

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return the lines they completed."""
        parts = re.split(rb"[\r\n]", self._pending + data)
        self._pending = parts.pop()
        if len(self._pending) > self._max:
            # Never let a stream with no line ends grow without bound.
            parts.append(self._pending)
            self._pending = b""
        return self._decode(parts)

    def flush(self) -> list[str]:
        """Return the unterminated last line, if any (call at EOF)."""
        rest, self._pending = self._pending, b""
        return self._decode([rest])

    @staticmethod
    def _decode(parts: list[bytes]) -> list[str]:
        lines = (part.decode("utf-8", "replace").rstrip() for part in parts)
        return [line for line in lines if line]


# ---------------------------------------------------------------------------
# ffmpeg's stream report

_INPUT_RE = re.compile(r"^Input #(\d+), ")
_STREAM_RE = re.compile(
    r"^\s*Stream #(?P<file>\d+):\d+(?:\[0x[0-9a-fA-F]+\])?(?:\([^)]*\))?: "
    r"(?P<kind>\w+): (?P<rest>.*)$"
)
_SIZE_RE = re.compile(r"^(\d+)x(\d+)\b")
_RATE_RE = re.compile(r"^(\d+(?:\.\d+)?)(k?) (fps|tbr)$")


def _top_level_fields(text: str) -> list[str]:
    """Split on commas that are not inside (...) or [...]."""
    fields, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            fields.append(text[start:index].strip())
            start = index + 1
    fields.append(text[start:].strip())
    return fields


def _codec_token(description: str) -> str:
    """``"h264 (High) ([27]...)"`` -> ``"h264"``."""
    return _codec(re.split(r"[\s(,]", description, maxsplit=1)[0])


def _parse_video_fields(rest: str) -> tuple[int | None, int | None, float | None]:
    width = height = fps = tbr = None
    for field in _top_level_fields(rest)[1:]:
        size = _SIZE_RE.match(field)
        if size and width is None:
            width, height = _positive_int(size.group(1)), _positive_int(size.group(2))
            continue
        rate = _RATE_RE.match(field)
        if rate:
            value = float(rate.group(1)) * (1000 if rate.group(2) else 1)
            if rate.group(3) == "fps":
                fps = value
            else:
                tbr = value
    if width is None or height is None:
        width = height = None
    fps = _plausible_fps(fps)
    return width, height, fps if fps is not None else _plausible_fps(tbr)


class StreamReportParser:
    """Incrementally read the input report ffmpeg prints at start.

    Feed it stderr lines (at ``-loglevel info``).  Only the streams of the
    chosen input count: the ``Output #0`` section repeats similar
    ``Stream #0:0`` lines that must not be mistaken for input streams.
    The input report is complete at the first of ``Output #``,
    ``Stream mapping:``, ``Press [q]``, the next ``Input #`` or a stats
    line.  Measured on 5.1: with ``-c copy`` ``Output #0`` comes first, but
    when transcoding ``Stream mapping:`` comes *before* ``Output #0``, and
    when the output cannot be set up ``Output #0`` never appears at all.
    """

    def __init__(self, input_index: int = 0) -> None:
        self._index = input_index
        self._builder = _FactsBuilder()
        self._in_section = False
        self._seen_input = False
        self._complete = False

    @property
    def complete(self) -> bool:
        """True once the whole input report has been read."""
        return self._complete

    @property
    def facts(self) -> StreamFacts:
        """What is known so far (final once ``complete``)."""
        return self._builder.build()

    def feed_line(self, line: str) -> StreamFacts | None:
        """Read one line; return the facts on the line that completes them."""
        if self._complete:
            return None
        message = _split_prefix(line)[1]

        started = _INPUT_RE.match(message)
        if started:
            if self._seen_input:
                return self._finish()
            self._in_section = int(started.group(1)) == self._index
            self._seen_input = self._in_section
            return None

        if self._seen_input and message.startswith(
            ("Output #", "Stream mapping:", "Press [q]", "frame=", "size=")
        ):
            return self._finish()

        if self._in_section:
            stream = _STREAM_RE.match(message)
            if stream and int(stream.group("file")) == self._index:
                self._add_stream(stream.group("kind"), stream.group("rest"))
        return None

    def _finish(self) -> StreamFacts:
        self._complete = True
        self._in_section = False
        return self.facts

    def _add_stream(self, kind: str, rest: str) -> None:
        codec = _codec_token(rest)
        if kind == "Video" and not rest.endswith("(attached pic)"):
            self._builder.add_video(codec, *_parse_video_fields(rest))
        elif kind == "Audio":
            self._builder.audio.append(codec)
        else:
            self._builder.other.append(codec)


# ---------------------------------------------------------------------------
# stderr events


class EventKind(enum.Enum):
    """The kinds of ffmpeg stderr lines the proxy reacts to."""

    HTTP_ERROR = "http_error"  # detail: status code, None for "4XX"/"5XX"
    CONNECTION_FAILED = "connection_failed"  # detail: reason text
    RECONNECT = "reconnect"  # detail: the error that caused it, or None
    READ_TIMEOUT = "read_timeout"  # detail: reason text
    IO_ERROR = "io_error"  # detail: reason text
    CORRUPT = "corrupt"  # detail: None
    PLAYLIST_RELOAD_FAILED = "playlist_reload_failed"  # detail: None
    SEGMENT_FAILED = "segment_failed"  # detail: segments skipped, or None
    SEGMENT_OPENED = "segment_opened"  # detail: path being written


# Events that mean the viewer is (or is about to be) waiting for data.
BUFFERING_KINDS = frozenset(
    {
        EventKind.RECONNECT,
        EventKind.READ_TIMEOUT,
        EventKind.IO_ERROR,
        EventKind.PLAYLIST_RELOAD_FAILED,
        EventKind.SEGMENT_FAILED,
    }
)


@dataclass(frozen=True)
class Event:
    """One classified stderr line.

    ``fatal`` is set on ffmpeg's own ``<input>: <error>`` line, printed
    when it gives up on the input (at open or mid-stream), and on the
    ``Error opening input:`` / ``Error during demuxing:`` lines newer
    ffmpeg prints instead.  Measured on 5.1: after a mid-stream failure
    ffmpeg still exits with status 0, so this flag, not the exit status,
    tells a dead source from a finished one.  ``line`` is the whole
    stripped line with credentials masked, safe to log.
    """

    kind: EventKind
    detail: int | str | None = None
    fatal: bool = False
    line: str = ""


# ffmpeg.c's report on an input: "<url or path>: <error text>".
_INPUT_FAILURE_RE = re.compile(r"^(?P<source>\S+): (?P<reason>.+)$")
# FFmpeg 6.1+ spell the same report like this, from an "[in#0 @ ...]"
# context (taken from its source; not measurable with the 5.1 here).
_NEWER_FAILURE_RE = re.compile(r"^Error (?:opening input|during demuxing): (?P<reason>.+)$")

_SEGMENT_OPENED_RE = re.compile(r"^Opening '(?P<path>.+)' for writing$")
_RECONNECT_RE = re.compile(
    r"^Will reconnect at \d+ in \d+ second\(s\)(?:, error=(?P<error>.+?))?\.?$"
)
_HTTP_ERROR_RE = re.compile(r"^HTTP error (?P<status>\d{3})\b")
_SERVER_RETURNED_RE = re.compile(r"^Server returned (?P<status>\d{3}|\dXX)\b")
_CONNECT_RE = re.compile(
    r"^(?:Connection to \S+ failed(?: \((?P<next>[^)]*)\), trying next address|: (?P<reason>.+))"
    r"|Failed to resolve hostname \S+: (?P<dns>.+))$"
)
_SKIPPED_RE = re.compile(r"^skipping (?P<count>\d+) segments ahead, expired from playlist")

_CONNECT_REASONS = ("Connection refused", "Network is unreachable", "No route to host")
_TIMEOUT_REASONS = ("Connection timed out", "Operation timed out")
_IO_REASONS = ("Input/output error", "End of file", "Connection reset by peer", "Broken pipe")
_CORRUPT_PREFIXES = (
    "Packet corrupt",
    "Non-monotonous DTS",  # ffmpeg <= 5.x
    "Non-monotonic DTS",  # newer ffmpeg
    "PES packet size mismatch",
    "corrupt input packet in stream",
    "AAC bitstream not in ADTS format",
    "Invalid data found when processing input",
)


def _classify_message(message: str) -> tuple[EventKind, int | str | None] | None:
    """Classify a message with its ffmpeg prefixes already removed."""
    match = _SEGMENT_OPENED_RE.match(message)
    if match:
        return EventKind.SEGMENT_OPENED, match.group("path")
    # Before the I/O checks: its error= text names the same I/O errors.
    match = _RECONNECT_RE.match(message)
    if match:
        return EventKind.RECONNECT, match.group("error")
    if message.startswith("Failed to reload playlist"):
        return EventKind.PLAYLIST_RELOAD_FAILED, None
    if message.startswith("Failed to open segment"):
        return EventKind.SEGMENT_FAILED, None
    match = _SKIPPED_RE.match(message)
    if match:
        return EventKind.SEGMENT_FAILED, int(match.group("count"))
    match = _HTTP_ERROR_RE.match(message) or _SERVER_RETURNED_RE.match(message)
    if match:
        status = match.group("status")
        return EventKind.HTTP_ERROR, int(status) if status.isdigit() else None
    match = _CONNECT_RE.match(message)
    if match:
        return EventKind.CONNECTION_FAILED, match.group("reason") or match.group("next") or match.group("dns")
    if message.startswith(_CONNECT_REASONS):
        return EventKind.CONNECTION_FAILED, message
    if message.startswith(_TIMEOUT_REASONS):
        return EventKind.READ_TIMEOUT, message
    if message.startswith(_IO_REASONS):
        return EventKind.IO_ERROR, message
    if message.startswith("Stream ends prematurely"):
        return EventKind.IO_ERROR, "Stream ends prematurely"
    if message.startswith(_CORRUPT_PREFIXES):
        return EventKind.CORRUPT, None
    return None


def classify_stderr_line(line: str) -> Event | None:
    """Classify one ffmpeg stderr line; None when it is not interesting.

    Lines from a component (``[http @ 0x...] HTTP error 404 Not Found``)
    are never fatal: ffmpeg may retry.  ffmpeg's final
    ``<input>: <error>`` line is fatal, except for the per-packet
    ``corrupt input packet`` warning and the ``Immediate exit requested``
    it prints when we stop it.  ``<input>: Connection timed out`` is
    reported as READ_TIMEOUT even when it ends a failed connect, since the
    line alone cannot tell; a connect failure is always preceded by a
    CONNECTION_FAILED line from ``[tcp @ ...]``.
    """
    line = line.strip()
    context, message = _split_prefix(line)
    fatal, classified = False, None
    # Newer ffmpeg logs its input report from an "[in#0/mpegts @ ...]"
    # context; 5.1 logs it with no context at all.
    failure = _NEWER_FAILURE_RE.match(message)
    if failure is None and context is None:
        failure = _INPUT_FAILURE_RE.match(message)
    if failure:
        reason = failure.group("reason")
        classified = _classify_message(reason)
        fatal = not reason.startswith("corrupt input packet")
    if classified is None:
        # Not ffmpeg's input report after all (or a reason we do not know,
        # such as "Immediate exit requested" when we stop it): a message
        # that merely contains ": ".
        classified, fatal = _classify_message(message), False
    if classified is None:
        return None
    kind, detail = classified
    return Event(kind, detail, fatal, mask_url(line))


def describe_event(event: Event) -> str:
    """A short sentence for logs and failure reasons ("HTTP 404", ...).

    Built from the classified detail, never from the raw line, so it holds
    no URL and so no credentials.
    """
    detail = event.detail
    if event.kind is EventKind.HTTP_ERROR:
        return f"HTTP {detail}" if detail else "HTTP error"
    if event.kind is EventKind.CONNECTION_FAILED:
        return f"connection failed: {detail}" if detail else "connection failed"
    if event.kind is EventKind.RECONNECT:
        return f"reconnect ({detail})" if detail else "reconnect"
    if event.kind is EventKind.PLAYLIST_RELOAD_FAILED:
        return "upstream playlist reload failed"
    if event.kind is EventKind.SEGMENT_FAILED:
        return f"upstream segments skipped ({detail})" if detail else "upstream segment failed"
    if event.kind is EventKind.CORRUPT:
        return "corrupt input"
    if isinstance(detail, str) and detail:
        return mask_url(detail)
    return event.kind.value.replace("_", " ")


# ---------------------------------------------------------------------------
# Credential masking


def mask_url(text: str) -> str:
    """Mask credentials in every URL found in ``text``.

    The stream URLs the daemon holds are replaced by their display form
    (exact match), every other URL is masked by heuristics; see
    :func:`streamproxy.urls.mask_text`.
    """
    return mask_text(text)


# ---------------------------------------------------------------------------
# -progress output


@dataclass(frozen=True)
class Progress:
    """One block of ``ffmpeg -progress`` output; None where ffmpeg said N/A.

    Measured on 5.1 with the hls muxer: ``bitrate`` and ``total_size`` are
    always N/A (the muxer writes through its own files), ``out_time_us``
    stays 0 until the encoder emits its first packet and can be negative
    with ``-copyts``.
    """

    frame: int | None = None
    fps: float | None = None
    bitrate_kbps: float | None = None
    total_size: int | None = None
    out_time_us: int | None = None
    speed: float | None = None
    ended: bool = False


def _number(text: str | None, kind, suffix: str = ""):
    """``kind(text)`` without ``suffix`` and padding; None for N/A or junk."""
    if text is None:
        return None
    text = text.strip()
    if suffix and text.endswith(suffix):
        text = text[: -len(suffix)].strip()
    try:
        return kind(text)
    except ValueError:  # "N/A" and anything else unexpected
        return None


class ProgressParser:
    """Incremental parser for ``ffmpeg -progress pipe:N`` output.

    The output is ``key=value`` lines in blocks that end with
    ``progress=continue`` or, once, ``progress=end``.  Keys we do not use
    (``stream_0_0_q``, ``dup_frames``, ...) are ignored.
    """

    def __init__(self) -> None:
        self._lines = LineBuffer()
        self._block: dict[str, str] = {}

    def feed(self, data: bytes) -> list[Progress]:
        """Add bytes; return the blocks they completed, oldest first."""
        completed = []
        for line in self._lines.feed(data):
            key, equals, value = line.partition("=")
            if not equals:
                continue
            key = key.strip()
            if key == "progress":
                completed.append(self._build(value.strip() == "end"))
                self._block = {}
            else:
                self._block[key] = value
        return completed

    def _build(self, ended: bool) -> Progress:
        block = self._block
        return Progress(
            frame=_number(block.get("frame"), int),
            fps=_number(block.get("fps"), float),
            bitrate_kbps=_number(block.get("bitrate"), float, "kbits/s"),
            total_size=_number(block.get("total_size"), int),
            out_time_us=_number(block.get("out_time_us"), int),
            speed=_number(block.get("speed"), float, "x"),
            ended=ended,
        )
