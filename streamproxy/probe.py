"""
Validating a candidate stream with ffprobe.

:func:`probe` runs ffprobe as a process protocol with a timeout (a probe that
outlives it is killed) and fires with a :class:`ProbeResult`: the stream
facts, or the reason the candidate fails.
"""

from dataclasses import dataclass

from twisted.logger import Logger

from . import media
from .ffmpeg import ANALYZE_DURATION_US, PROBE_SIZE
from .processes import ChildProtocol, spawn
from .urls import protocol_whitelist_options

log = Logger()


@dataclass(frozen=True)
class ProbeResult:
    """
    What one probe found.  ``reason`` is None when the stream is usable.

    ``connection_problem`` tells a failure to reach the stream (HTTP error,
    refused, timeout) from a stream that was reached but is unusable.
    """

    facts: object = None
    reason: str | None = None
    connection_problem: bool = False

    @property
    def ok(self):
        """
        Whether the stream passed.
        """
        return self.reason is None


def ffprobe_command(settings, url):
    """
    The argv of a quick probe of ``url`` printing its streams as JSON.
    """
    return [
        settings.ffprobe_path,
        "-v",
        "error",
        "-probesize",
        str(PROBE_SIZE),
        "-analyzeduration",
        str(ANALYZE_DURATION_US),
        "-rw_timeout",
        str(int(settings.ffprobe_timeout * 1_000_000)),
        "-print_format",
        "json",
        "-show_streams",
        # Only the network protocols of allowed_url_schemes (never file:).
        *protocol_whitelist_options(settings.allowed_url_schemes),
        url,
    ]


class ProbeProcess(ChildProtocol):
    """
    Collects ffprobe's JSON (stdout) and errors (stderr).
    """

    def __init__(self):
        super().__init__()
        self.out = []
        self.err = media.LineBuffer()
        self.error_lines = []

    def outReceived(self, data):
        self.out.append(data)

    def errReceived(self, data):
        self.error_lines.extend(self.err.feed(data))

    def verdict(self, timed_out):
        """
        Turn what ffprobe printed into a :class:`ProbeResult`.
        """
        self.error_lines.extend(self.err.flush())
        for line in self.error_lines:
            event = media.classify_stderr_line(line)
            if event is not None and event.kind in (
                media.EventKind.HTTP_ERROR,
                media.EventKind.CONNECTION_FAILED,
            ):
                return ProbeResult(reason=media.describe_event(event), connection_problem=True)
        if timed_out:
            return ProbeResult(reason="ffprobe timed out", connection_problem=True)
        text = b"".join(self.out).decode("utf-8", "replace")
        try:
            facts = media.facts_from_ffprobe_json(text)
        except media.MediaError:
            detail = self.error_lines[-1] if self.error_lines else "no output"
            return ProbeResult(reason=f"ffprobe failed: {media.mask_url(detail)}")
        reason = media.judge(facts)
        return ProbeResult(facts=facts, reason=reason)


def probe(reactor, settings, url, segment_dir):
    """
    Probe ``url``; returns ``(deferred, process)``.  The Deferred fires with a
    :class:`ProbeResult` (never errbacks); cancel the attempt with
    ``process.stop()``.
    """
    child = ProbeProcess()
    spawn(reactor, child, ffprobe_command(settings, url), segment_dir)
    timed_out = []

    def on_timeout():
        timed_out.append(True)
        child.stop(grace=1.0)

    timer = reactor.callLater(settings.ffprobe_timeout, on_timeout)

    def finished(_):
        if timer.active():
            timer.cancel()
        return child.verdict(bool(timed_out))

    d = child.ended.addCallback(finished)
    return d, child
