"""
One try of one candidate stream: an ffmpeg run (and perhaps an ffprobe
beside it) holding a slot of the candidate's source.

An :class:`Attempt` goes through its :class:`Phase` s in order:

- ``LAUNCHING``: ffmpeg runs; the stream is being judged (ffmpeg's own
  stream report, and ffprobe's when the source had room for it);
- ``READY``: judged usable and an access point (PAT, PMT, keyframe) is
  buffered, so the channel can start showing it at once;
- ``LIVE``: the channel's current source; its media goes to the channel;
- ``ENDING``: told to stop; its processes are exiting;
- ``ENDED``: every process has exited and the slot is given back (or
  handed to the channel's next attempt).

It reports to its owner (the :class:`~streamproxy.session.ChannelSession`)
through the few calls of :class:`AttemptOwner`, always passing itself, so
news from an attempt the owner has already given up is easy to ignore.
"""

import enum
from collections import deque

from twisted.internet import defer
from twisted.logger import Logger

from . import media
from .content import CLOCK, ContentMonitor
from .ffmpeg import Encoding, FFmpegProcess, ffmpeg_command, is_hls_url
from .mpegts import PES, VIDEO, CLOCK_HZ, TSReader
from .probe import probe
from .processes import spawn
from .timeline import unwrap

log = Logger()

# Seconds without new media before a live stream counts as stalled.  An HLS
# upstream delivers in bursts, one upstream segment at a time, so it gets
# longer.
STALL_SECONDS_TS = 4.0
STALL_SECONDS_HLS = 12.0

# Seconds without new media after which a stall is suspected: the channel
# may start its next candidate alongside, so it is ready at the verdict.
QUIET_SECONDS_TS = 1.0
QUIET_SECONDS_HLS = 7.0

# With its successor ready alongside, a stream quiet this long is given up
# before the full stall verdict: a viewer's buffer is only a few seconds.
QUICK_STALL_SECONDS_TS = 2.0
QUICK_STALL_SECONDS_HLS = 9.0

# Media arriving slower than this fraction of real time, measured over at
# least MIN_RATE_WINDOW_SECONDS, is a buffering event.
SLOW_RATE = 0.8
MIN_RATE_WINDOW_SECONDS = 2.0

# Media an attempt that is not yet live keeps for its start, seconds: whole
# GOPs, the oldest starting at most this long before the newest keyframe.
BUFFER_SECONDS = 6.0

# Buffering events older than this no longer count towards buffer_threshold.
BUFFER_WINDOW_SECONDS = 60.0

# A black or frozen picture or a silence this close to its limit makes the
# channel start its next candidate alongside, so that it is ready when the
# limit is reached (about a second to start, plus margin).
CONTENT_LEAD_SECONDS = 3.0

# Runs shorter than this measure no bitrate worth keeping, seconds of media.
MIN_MEASURED_SECONDS = 5.0


class Phase(str, enum.Enum):
    """
    Where an attempt is in its life (see the module docstring).
    """

    LAUNCHING = "launching"
    READY = "ready"
    LIVE = "live"
    ENDING = "ending"
    ENDED = "ended"


class AttemptOwner:
    """
    What an :class:`Attempt` tells its owner.  Every call passes the attempt.
    """

    def attempt_ready(self, attempt):
        """
        ``attempt`` was judged usable and has an access point buffered.
        """

    def attempt_media(self, attempt, units):
        """
        ``attempt`` is live and read these :class:`~streamproxy.mpegts.Unit` s.
        """

    def attempt_quiet(self, attempt):
        """
        ``attempt`` is live and has delivered nothing for a while: a stall
        may be coming.
        """

    def attempt_failed(self, attempt, reason):
        """
        ``attempt`` cannot go on, for ``reason``; the owner ends it.
        """

    def attempt_needs_encoding(self, attempt, encoding):
        """
        ``attempt``'s stream must be run again with ``encoding`` (a codec
        HLS cannot carry).
        """

    def attempt_buffering(self, attempt, reason):
        """
        ``attempt`` had a buffering event.
        """

    def attempt_content_fault(self, attempt, fault):
        """
        ``attempt``'s picture or sound has been black, frozen or silent for
        its limit (a :class:`~streamproxy.content.ContentFault`).  The owner
        fails it, or keeps it and calls :meth:`Attempt.tolerate` or
        :meth:`Attempt.snooze`.
        """

    def attempt_content_suspect(self, attempt, kind):
        """
        ``attempt`` is live and a fault of ``kind`` will reach its limit
        soon: the next candidate may be started alongside.
        """

    def attempt_content_clear(self, attempt):
        """
        The fault :meth:`attempt_content_suspect` announced ended before
        its limit.
        """


class Attempt:
    """
    One ffmpeg run on ``candidate`` holding ``slot``.

    ``channel_id`` goes into each of its log events as a field; ``prefix``
    begins the names of the segments cut from its media; ``checks`` (a
    :class:`~streamproxy.content.ContentChecks`, or None) are the content
    checks its ffmpeg runs.
    """

    def __init__(self, owner, number, candidate, slot, encoding, *, settings, slots, reactor,
                 channel_id, prefix="", checks=None):
        self.owner = owner
        self.number = number
        self.candidate = candidate
        self.slot = slot
        self.encoding = encoding
        self.settings = settings
        self.slots = slots
        self.reactor = reactor
        self.channel_id = channel_id
        self.prefix = prefix
        self.checks = checks
        self.content = ContentMonitor(checks) if checks is not None else None
        self.content_fault = None
        self.measured = False
        self._suspect = None
        self.phase = Phase.LAUNCHING
        self.started_at = reactor.seconds()
        self.live_at = None
        self.ended_at = None
        self.facts = None
        self.process = None
        self.probe = None  # the ffprobe process while it runs
        self.reason = None
        self.buffer_events = []
        self.bytes_read = 0
        self.last_media_at = None
        self._reader = TSReader()
        self._gops = deque()
        self._psi = {}
        self._report_ok = False
        self._probe_slot = None
        self._probe_result = None
        self._keep_slot = False
        self._connection_reason = None
        self._timers = []
        self._quiet = None
        self._stall = None
        self._media_clock = None
        self._media_seconds = 0.0
        self._rate_mark = None
        self.ended = defer.Deferred()
        self._slot_free = defer.Deferred()

    # Starting.

    def start(self):
        """
        Spawn ffmpeg (and ffprobe where the source has room for it).  A
        spawn that fails (too many open files, a missing program) fails
        the attempt like any other problem.
        """
        argv = ffmpeg_command(self.settings, self.candidate.url, self.encoding, self.checks)
        self.process = FFmpegProcess(self, self.candidate.label, decoding=self.checks is not None)
        try:
            spawn(self.reactor, self.process, argv, self.settings.segment_dir, extra_fds=(3,))
        except Exception as e:
            self.process = None
            self._fail(f"could not start ffmpeg: {e}")
            return
        self._timers.append(
            self.reactor.callLater(
                self.settings.stream_start_timeout,
                self._fail,
                f"no media within {self.settings.stream_start_timeout:g} s",
            )
        )
        if self.encoding == Encoding():
            self._maybe_probe()

    def _maybe_probe(self):
        """
        Validate with ffprobe alongside ffmpeg when the source has room for
        a second connection; otherwise ffmpeg's own stream report decides.
        """
        self._probe_slot = self.slots.acquire(
            self.candidate.source, f"channel {self.channel_id} probe", account=self.candidate.account
        )
        if self._probe_slot is None:
            return
        try:
            d, self.probe = probe(self.reactor, self.settings, self.candidate.url, self.settings.segment_dir)
        except Exception as e:
            self._probe_slot.release()
            self._probe_slot = None
            self._log_info("ffprobe could not start ({error}); relying on ffmpeg's own stream report", error=e)
            return

        def done(result):
            self._probe_slot.release()
            self.probe = None
            self._on_probe(result)

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("probe of {c}", f, c=self.candidate.label, channel_id=self.channel_id))

    # Findings of the ffmpeg protocol.

    def ffmpeg_report(self, facts):
        if self.phase is not Phase.LAUNCHING:
            return
        self.facts = facts
        reason = media.judge(facts)
        if reason is not None:
            self._fail(reason)
            return
        video, audio = media.needs_transcode(facts)
        wanted = Encoding(self.encoding.transcode_video or video, self.encoding.transcode_audio or audio)
        if wanted != self.encoding:
            self.owner.attempt_needs_encoding(self, wanted)
            return
        self._report_ok = True
        self._maybe_ready()

    def _on_probe(self, result):
        self._probe_result = result
        if self.phase is not Phase.LAUNCHING:
            return
        if result.ok:
            self.facts = self.facts or result.facts
        elif result.connection_problem:
            self._log_info(
                "ffprobe could not reach {candidate} ({reason}); relying on ffmpeg's own stream report",
                candidate=self.candidate.label,
                reason=result.reason,
            )
        else:
            self._fail(f"ffprobe: {result.reason}")
            return
        self._maybe_ready()

    @property
    def validated(self):
        """
        Whether the stream has been judged usable.
        """
        if self._probe_result is not None and self._probe_result.ok:
            return True
        probe_pending = self.probe is not None and self._probe_result is None
        return self._report_ok and not probe_pending

    def ffmpeg_event(self, event):
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        if event.kind in (media.EventKind.HTTP_ERROR, media.EventKind.CONNECTION_FAILED):
            # ffmpeg follows "HTTP error 500 ..." with a vaguer "5XX Server
            # Error reply": the first report is the telling one.
            if self._connection_reason is None:
                self._connection_reason = media.describe_event(event)
        elif event.kind in media.BUFFERING_KINDS and self.phase is Phase.LIVE:
            self._buffer_event(media.describe_event(event))

    def ffmpeg_progress(self, progress):
        pass  # the media itself tells progress; the report stays for status

    def ffmpeg_content(self, event):
        if self.content is None or self.phase in (Phase.ENDING, Phase.ENDED):
            return
        self.content.feed(event)
        if event.kind != CLOCK:
            return
        fault = self.content.fault()
        if fault is not None:
            self.content_fault = fault
            self.owner.attempt_content_fault(self, fault)
            return
        if self.phase is not Phase.LIVE:
            return
        nearing = self.content.nearing(CONTENT_LEAD_SECONDS)
        if nearing is not None and self._suspect is None:
            self._suspect = nearing
            self.owner.attempt_content_suspect(self, nearing)
        elif nearing is None and self._suspect is not None:
            self._suspect = None
            self.owner.attempt_content_clear(self)

    def tolerate(self, kind):
        """
        Stop judging ``kind`` of fault on this stream: it is the channel's
        real content (every candidate shows it).
        """
        if self.content is not None:
            self.content.tolerate(kind)
        self.content_fault = None
        if self._suspect == kind:
            self._suspect = None

    def snooze(self, kind):
        """
        Keep playing despite a fault of ``kind``; it is reported again once
        it has lasted its limit once more.
        """
        if self.content is not None:
            self.content.snooze(kind)
        self.content_fault = None
        self._suspect = None

    def measurement(self, now):
        """
        What this run measured of its stream (a
        :class:`~streamproxy.observations.Measurement`), or None when it
        learned nothing: the picture size and frame rate from the stream
        report, the bitrate once it ran :data:`MIN_MEASURED_SECONDS`.
        """
        from .observations import Measurement, url_digest

        facts = self.facts
        kbps = None
        if self._media_seconds >= MIN_MEASURED_SECONDS:
            kbps = round(self.bytes_read * 8 / 1000 / self._media_seconds)
        if facts is None and kbps is None:
            return None
        return Measurement(
            facts.width if facts else None, facts.height if facts else None, facts.fps if facts else None,
            kbps, now, url_digest(self.candidate.url),
        )

    def ffmpeg_media(self, data):
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        self.bytes_read += len(data)
        units = self._reader.feed(data)
        if not units:
            return
        advanced = False
        for unit in units:
            if unit.kind == PES:
                advanced = True
                if unit.stream == VIDEO and unit.dts is not None:
                    self._clock(unit.dts)
        if advanced:
            self._advanced()
        if self.phase is Phase.LIVE:
            self.owner.attempt_media(self, units)
            return
        self._buffer(units)
        self._maybe_ready()

    def ffmpeg_ended(self, process):
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        facts = process.input_facts()
        verdict = media.judge(facts) if facts is not None else None
        if verdict is not None:
            # ffmpeg gave up on a stream it found unusable (an audio-only
            # stream has no video to map): say what it found.
            self._fail(verdict)
            return
        detail = self._connection_reason or process.last_error()
        if not detail:
            detail = "the upstream ended the stream" if self.live_at is not None else "no output"
        code = process.exit_code if process.exit_code is not None else f"signal {process.exit_signal}"
        self._fail(f"ffmpeg exited ({code}): {detail}")

    # Media bookkeeping.

    def _buffer(self, units):
        # Until it goes live, keep what a viewer is to start with: the
        # GOPs (each opened by the PAT and PMT before its keyframe) of the
        # last BUFFER_SECONDS.  Given at once on going live, they refill
        # the viewers' buffers after a switch.
        for unit in units:
            if unit.kind == PES and unit.stream == VIDEO and unit.key and unit.dts is not None:
                head = [u for u in (self._psi.get("pat"), self._psi.get("pmt")) if u is not None]
                self._gops.append((unit.dts, head + [unit]))
                while len(self._gops) > 1 and (unit.dts - self._gops[1][0]) % (1 << 33) >= BUFFER_SECONDS * CLOCK_HZ:
                    self._gops.popleft()
            elif unit.kind in ("pat", "pmt"):
                self._psi[unit.kind] = unit
                if self._gops:
                    self._gops[-1][1].append(unit)
            elif self._gops:
                self._gops[-1][1].append(unit)

    @property
    def has_access_point(self):
        """
        Whether a keyframe (with its PAT and PMT) is buffered.
        """
        return bool(self._gops)

    def _clock(self, dts):
        if self._media_clock is None:
            self._media_clock = dts
            return
        position = unwrap(dts, self._media_clock)
        if position > self._media_clock:
            self._media_seconds += (position - self._media_clock) / CLOCK_HZ
            self._media_clock = position

    def _advanced(self):
        now = self.reactor.seconds()
        self.last_media_at = now
        if self.phase is Phase.LIVE:
            self._arm_watchdog()

    def _maybe_ready(self):
        if self.phase is Phase.LAUNCHING and self.validated and self.has_access_point:
            self.phase = Phase.READY
            self._cancel_timers()
            self.owner.attempt_ready(self)

    # Going live.

    def go_live(self):
        """
        Make this the channel's source: returns the buffered units from the
        latest access point on; later units go to ``attempt_media``.
        """
        self.phase = Phase.LIVE
        now = self.reactor.seconds()
        self.live_at = now
        self._rate_mark = (now, self._media_seconds)
        units = [unit for _, gop in self._gops for unit in gop]
        self._gops.clear()
        self._arm_watchdog()
        return units

    def _arm_watchdog(self):
        quiet, stall = (QUIET_SECONDS_HLS, STALL_SECONDS_HLS) if self.is_hls else (QUIET_SECONDS_TS, STALL_SECONDS_TS)
        if self._quiet is not None and self._quiet.active():
            self._quiet.reset(quiet)
        else:
            self._quiet = self.reactor.callLater(quiet, self._on_quiet)
        if self._stall is not None and self._stall.active():
            self._stall.reset(stall)
        else:
            self._stall = self.reactor.callLater(stall, self._on_stall)

    @property
    def quick_stall_seconds(self):
        """
        How long a quiet stream lasts once its successor is ready.
        """
        return QUICK_STALL_SECONDS_HLS if self.is_hls else QUICK_STALL_SECONDS_TS

    @property
    def is_hls(self):
        """
        Whether the upstream is an HLS playlist (it delivers in bursts).
        """
        return is_hls_url(self.candidate.url)

    def _on_quiet(self):
        if self.phase is Phase.LIVE:
            self.owner.attempt_quiet(self)

    def _on_stall(self):
        seconds = self.reactor.seconds() - (self.last_media_at or self.started_at)
        self._fail(f"stalled: no new media for {seconds:.0f} s")

    # Health.

    def check(self):
        """
        The periodic health check: media arriving slower than real time is
        a buffering event, and ``buffer_threshold`` events within a minute
        fail the attempt.
        """
        if self.phase is not Phase.LIVE:
            return
        now = self.reactor.seconds()
        since, media_then = self._rate_mark
        if now - since >= MIN_RATE_WINDOW_SECONDS:
            rate = (self._media_seconds - media_then) / (now - since)
            self._rate_mark = (now, self._media_seconds)
            if rate < SLOW_RATE:
                self._buffer_event(f"media at {rate:.2f}x real time")
                if self.phase is not Phase.LIVE:
                    return
        recent = [e for e in self.buffer_events if now - e[0] <= BUFFER_WINDOW_SECONDS]
        if len(recent) >= self.settings.buffer_threshold:
            reasons = ", ".join(sorted({why for _, why in recent}))
            self._fail(f"buffering: {len(recent)} events in a minute ({reasons})")

    def _buffer_event(self, reason):
        now = self.reactor.seconds()
        self.buffer_events = [(when, why) for when, why in self.buffer_events if now - when <= BUFFER_WINDOW_SECONDS]
        self.buffer_events.append((now, reason))
        self._log_info(
            "buffering on {candidate}: {reason} ({count}/{threshold})",
            candidate=self.candidate.label,
            reason=reason,
            count=len(self.buffer_events),
            threshold=self.settings.buffer_threshold,
        )
        self.owner.attempt_buffering(self, reason)

    # Ending.

    def _fail(self, reason):
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return
        self.reason = reason
        self.owner.attempt_failed(self, reason)

    def stop(self, keep_slot=False):
        """
        Stop the processes (TERM, then KILL).  Returns a Deferred firing
        once ffmpeg has exited, when its slot is given back or, with
        ``keep_slot``, handed on: the Deferred fires with the slot then
        (else with None).  :meth:`when_ended` fires once every process,
        ffprobe included, has exited.
        """
        if self.phase is not Phase.ENDED:
            self._keep_slot = self._keep_slot or keep_slot
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return _copy(self._slot_free)
        self.phase = Phase.ENDING
        self._cancel_timers()
        self._gops.clear()
        ffmpeg = self.process.stop() if self.process is not None else defer.succeed(None)
        probe = self.probe.stop() if self.probe is not None else defer.succeed(None)

        def ffmpeg_exited(_):
            # The slot is ffmpeg's connection; a probe still running holds
            # a slot of its own.
            if self._keep_slot:
                self._slot_free.callback(self.slot)
            else:
                self.slot.release()
                self._slot_free.callback(None)

        def all_exited(_):
            self.phase = Phase.ENDED
            self.ended_at = self.reactor.seconds()
            self.ended.callback(None)

        ffmpeg.addCallback(ffmpeg_exited)
        defer.DeferredList([ffmpeg, probe], consumeErrors=True).addCallback(all_exited)
        return _copy(self._slot_free)

    def when_ended(self):
        """
        A Deferred firing once every process of this attempt has exited.
        """
        return _copy(self.ended)

    def _cancel_timers(self):
        for call in self._timers + [self._quiet, self._stall]:
            if call is not None and call.active():
                call.cancel()
        self._timers = []
        self._quiet = self._stall = None

    # Reporting.

    def _log_info(self, text, **fields):
        log.info("channel {channel_id}: " + text, channel_id=self.channel_id, **fields)

    def status(self, now):
        """
        A summary for the status page.
        """
        progress = self.process.last_progress if self.process else None
        live_for = now - self.live_at if self.live_at is not None else None
        return {
            "source": self.candidate.source,
            "quality": self.candidate.quality,
            "rowid": self.candidate.rowid,
            "url": self.candidate.display_url,
            "encoding": self.encoding.label,
            "phase": self.phase.value,
            "since": self.started_at,
            "live_for": round(live_for, 1) if live_for is not None else None,
            "buffer_events": len(self.buffer_events),
            "speed": progress.speed if progress else None,
            "bitrate_kbps": round(self.bytes_read * 8 / 1000 / live_for) if live_for and live_for >= 1 else None,
            "video": self.facts.video_codec if self.facts else None,
            "size": f"{self.facts.width}x{self.facts.height}" if self.facts and self.facts.width else None,
            "checks": list(self.checks.kinds) if self.checks is not None else [],
            "content": self.content.status() if self.content is not None else {},
        }


def _copy(deferred):
    """
    A Deferred firing with ``deferred``'s result, leaving its chain alone.
    """
    copy = defer.Deferred()

    def relay(result):
        copy.callback(result)
        return result

    deferred.addCallback(relay)
    return copy
