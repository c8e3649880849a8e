"""
Running ffmpeg: the command line (pure) and the process protocol that
watches it.

ffmpeg reads the upstream and writes MPEG-TS to its standard output, which
the daemon splices, cuts into HLS segments and fans out itself.  The
protocol hands that media on and turns the rest of ffmpeg's output into
facts the channel acts on: the input stream report (for validation and the
copy-or-transcode decision), buffering events from stderr, and progress
from a pipe of its own (``-progress pipe:3``).
"""

import re
from dataclasses import dataclass

from twisted.logger import Logger

from . import content, media
from .processes import ChildProtocol
from .urls import protocol_whitelist_options

log = Logger()

PROGRESS_FD = 3

# Probing: ffmpeg's defaults read ~5 s of a live MPEG-TS before it starts;
# these read about one second, enough to see the codecs of the first keyframe.
PROBE_SIZE = 1_000_000
ANALYZE_DURATION_US = 1_000_000

# ffmpeg gives up on a read that blocks this long; our own stall watchdog
# normally acts well before, this only bounds a child we forgot.
READ_TIMEOUT_US = 15_000_000

# How often ffmpeg reports progress, seconds.
STATS_PERIOD = 0.5

# Keyframe interval of a transcoded stream, seconds: short, so a viewer
# joining a running channel sees a picture quickly.
TRANSCODE_KEYFRAME_SECONDS = 2


def is_hls_url(url):
    """
    Whether ``url`` looks like an HLS playlist rather than a raw stream.
    """
    path = url.split("?", 1)[0].lower()
    return path.endswith((".m3u8", ".m3u"))


@dataclass(frozen=True)
class Encoding:
    """
    How an attempt carries the media: copied as it is, or transcoded.
    """

    transcode_video: bool = False
    transcode_audio: bool = False

    @property
    def label(self):
        """
        "copy", "transcode video", "transcode audio" or "transcode".
        """
        if self.transcode_video and self.transcode_audio:
            return "transcode"
        if self.transcode_video:
            return "transcode video"
        if self.transcode_audio:
            return "transcode audio"
        return "copy"


def ffmpeg_command(settings, url, encoding=Encoding(), checks=None, seconds=None):
    """
    The argv that remuxes ``url`` to MPEG-TS on standard output, with
    progress reports on file descriptor :data:`PROGRESS_FD`.

    ``settings`` is the daemon's :class:`streamproxy.config.Config`;
    ``checks`` (a :class:`~streamproxy.content.ContentChecks`, or None for
    none) adds the content checks as a second output that writes nothing
    (see :mod:`streamproxy.content`); ``seconds`` stops after that much of
    the input (an idle check).
    """
    argv = [
        settings.ffmpeg_path,
        "-nostdin",
        "-hide_banner",
        # At "info" the input's stream report appears; "repeat" keeps
        # repeated messages from being collapsed.
        "-loglevel",
        "repeat+level+info",
        "-probesize",
        str(PROBE_SIZE),
        "-analyzeduration",
        str(ANALYZE_DURATION_US),
        "-rw_timeout",
        str(READ_TIMEOUT_US),
        # Only the network protocols of allowed_url_schemes, for the input
        # and everything it opens (HLS segments, redirects): never file:.
        *protocol_whitelist_options(settings.allowed_url_schemes),
        *content.input_options(checks, decoding_all=encoding.transcode_video),
        *(["-t", f"{seconds:g}"] if seconds is not None else []),
        "-i",
        url,
        # The content checks' output (nothing to write) comes first, so the
        # MPEG-TS output stays the command's last word.
        *content.output_options(checks, decoding_all=encoding.transcode_video),
        "-map",
        "0:v:0",
        "-map",
        "0:a?",
        "-sn",
        "-dn",
    ]
    if encoding.transcode_video:
        keyframes = min(TRANSCODE_KEYFRAME_SECONDS, settings.hls_time)
        argv += [
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            settings.target_video_bitrate,
            "-maxrate",
            settings.target_video_bitrate,
            "-bufsize",
            settings.target_video_bitrate,
            "-force_key_frames",
            f"expr:gte(t,n_forced*{keyframes:g})",
        ]
    else:
        argv += ["-c:v", "copy"]
    if encoding.transcode_audio:
        argv += ["-c:a", "aac", "-b:a", settings.target_audio_bitrate]
    else:
        argv += ["-c:a", "copy"]
    argv += [
        "-f",
        "mpegts",
        # One audio frame per PES (not ~0.3 s of them): at a splice, audio
        # that would overlap the previous stream is dropped whole PES by
        # whole PES, so this keeps the cut (and the gap) within one frame.
        "-pes_payload_size",
        "0",
        # Write each packet as it is muxed: the daemon cuts and fans out
        # the stream, and a buffered pipe would delay it.
        "-flush_packets",
        "1",
        "-progress",
        f"pipe:{PROGRESS_FD}",
        "-stats_period",
        str(STATS_PERIOD),
        "pipe:1",
    ]
    return argv


class FFmpegProcess(ChildProtocol):
    """
    One ffmpeg run for one attempt.

    ``observer`` receives the protocol's findings through these methods:
    ``ffmpeg_report(facts)`` once the input streams are known,
    ``ffmpeg_event(event)`` for each classified stderr line,
    ``ffmpeg_progress(progress)`` for each progress block,
    ``ffmpeg_content(event)`` for each finding of the content checks (a
    :class:`~streamproxy.content.ContentEvent`),
    ``ffmpeg_media(data)`` for the MPEG-TS it writes, and
    ``ffmpeg_ended(process)`` when the process has exited.
    """

    # Lines kept for the failure reason and the log viewer.
    KEEP_LINES = 20

    def __init__(self, observer, label, decoding=False):
        super().__init__()
        self.observer = observer
        self.label = label
        # With content checks ffmpeg decodes the stream: decoders' complaints
        # about a broken packet are logged but are not why it failed.
        self.decoding = decoding
        self.facts = None
        self.last_progress = None
        self.recent_lines = []
        self.fatal_event = None
        self._last_logged = None
        self._lines = media.LineBuffer()
        self._report = media.StreamReportParser()
        self._progress = media.ProgressParser()

    def childDataReceived(self, fd, data):
        if fd == 2:
            for line in self._lines.feed(data):
                self._stderr_line(line)
        elif fd == 1:
            self.observer.ffmpeg_media(data)
        elif fd == PROGRESS_FD:
            for progress in self._progress.feed(data):
                self.last_progress = progress
                self.observer.ffmpeg_progress(progress)

    def _stderr_line(self, line):
        if self.facts is None:
            facts = self._report.feed_line(line)
            if facts is not None:
                self.facts = facts
                self.observer.ffmpeg_report(facts)
        found = content.parse_line(line)
        if found is not None:
            self.observer.ffmpeg_content(found)
            return
        if content.is_check_line(line):
            return
        event = media.classify_stderr_line(line)
        if event is not None:
            if event.fatal:
                self.fatal_event = event
            self.observer.ffmpeg_event(event)
        level = _level(line)
        if level in ("warning", "error", "fatal", "panic"):
            masked = media.mask_url(line)
            if not (self.decoding and content.is_decoding_complaint(line)):
                self.recent_lines.append(masked)
                del self.recent_lines[: -self.KEEP_LINES]
            if masked != self._last_logged:
                self._last_logged = masked
                log.info("ffmpeg {label}: {line}", label=self.label, line=masked)

    def processEnded(self, reason):
        for line in self._lines.flush():
            self._stderr_line(line)
        super().processEnded(reason)
        self.observer.ffmpeg_ended(self)

    def input_facts(self):
        """
        What ffmpeg reported about its input, even when it gave up before
        the report was complete (None if it reported no input at all).
        """
        if self.facts is not None:
            return self.facts
        partial = self._report.facts
        return partial if partial.has_video or partial.has_audio else None

    def last_error(self):
        """
        Why ffmpeg gave up, as a short masked sentence (empty if unknown).
        """
        if self.fatal_event is not None:
            return media.describe_event(self.fatal_event)
        for line in reversed(self.recent_lines):
            if _level(line) in ("error", "fatal", "panic"):
                return _message(line)
        return _message(self.recent_lines[-1]) if self.recent_lines else ""


_LEVEL = re.compile(r"^(?:\[[^\]]* @ [^\]]*\] )?\[(\w+)\] ")


def _level(line):
    """
    The ``[level]`` tag ffmpeg puts on a line with ``-loglevel level+...``.
    """
    match = _LEVEL.match(line)
    return match.group(1) if match else None


def _message(line):
    return line.rsplit("] ", 1)[-1].strip()
