"""
One tuned channel: choosing a candidate, running ffmpeg on it, watching it,
and failing over to the next candidate without the viewer re-tuning.

A :class:`ChannelSession` lives from the first request for a channel until
it is stopped (nobody watching, shut down) or every candidate has failed.
Each try of one candidate is an :class:`Attempt`; its segments are appended
to the channel's one :class:`~streamproxy.hls.LivePlaylist`.
"""

import os
import shutil

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from . import media
from .ffmpeg import Encoding, FFmpegProcess, ffmpeg_command, is_hls_url
from .hls import LivePlaylist, parse_media_playlist
from .probe import probe
from .processes import spawn

log = Logger()

# Seconds without new media (output time not advancing) before a live
# stream counts as stalled.  An HLS upstream delivers in bursts, one
# upstream segment at a time, so it gets longer.
STALL_SECONDS_TS = 4.0
STALL_SECONDS_HLS = 12.0

# Output advancing slower than this fraction of real time between two
# health checks is a buffering event.
SLOW_RATE = 0.8

# Shortest span of progress reports a rate is measured over, seconds.
MIN_RATE_WINDOW_SECONDS = 2.0

# Buffering events older than this no longer count towards buffer_threshold.
BUFFER_WINDOW_SECONDS = 60.0

# Seconds between two looks at ffmpeg's playlist (a stat; the file is read
# only when it changed).  ffmpeg's "Opening ... for writing" lines prompt an
# earlier look, CUE_DELAY_SECONDS later: the line comes just before the new
# playlist is renamed into place.
SEGMENT_POLL_SECONDS = 0.25
CUE_DELAY_SECONDS = 0.05

# Pause before trying every candidate again after a whole round failed on
# a channel that had been playing.
ROUND_RETRY_SECONDS = 2.0

# Segments that left the playlist are deleted this many target durations
# later, so a client that just read the playlist can still fetch them.
DELETE_AFTER_TARGETS = 2


class ChannelUnavailable(Exception):
    """
    The channel cannot be played now; the message says why (503).
    """


class FailureMemory:
    """
    Candidates that failed recently, by row id, so that a dead stream is not
    retried first on every tune.  A failure is remembered for
    ``penalty_seconds``.
    """

    def __init__(self, penalty_seconds=600.0):
        self.penalty_seconds = penalty_seconds
        self._failed = {}

    def record(self, rowid, now, reason):
        """
        Remember that ``rowid`` failed at ``now`` for ``reason``.
        """
        self._failed[rowid] = (now, reason)

    def recent(self, now):
        """
        The row ids that failed within the penalty period.
        """
        expired = [k for k, (when, _) in self._failed.items() if now - when > self.penalty_seconds]
        for key in expired:
            del self._failed[key]
        return frozenset(self._failed)

    def reason(self, rowid):
        """
        The last failure reason of ``rowid``, or None.
        """
        entry = self._failed.get(rowid)
        return entry[1] if entry else None


class Attempt:
    """
    One ffmpeg run on one candidate, holding that source's slot.

    It relays the process protocol's findings to the session with itself as
    the first argument, so that late news from an attempt that has already
    been replaced is recognised and ignored.
    """

    def __init__(self, session, number, candidate, slot, encoding):
        self.session = session
        self.number = number
        self.candidate = candidate
        self.slot = slot
        self.encoding = encoding
        self.prefix = f"{session.tag}{number:02d}"
        self.process = None
        self.probe = None
        self.probe_slot = None
        self.probe_verdict = None
        self.report_verdict = None
        self.facts = None
        self.validated = False
        self.started_at = session.reactor.seconds()
        self.first_segment_at = None
        self.last_index = -1
        self.buffer_events = []
        self.out_time_us = None
        self.last_advance = self.started_at
        self.progress_at = None
        self.checked_at = None
        self.checked_out_time = None
        self.connection_reason = None
        self.ending = False
        self.hand_over_slot = False
        self.timers = []
        self.stall_timer = None
        self.poll = None
        self.read_pending = False
        self.playlist_mtime = None

    # Observer interface of FFmpegProcess.
    def ffmpeg_report(self, facts):
        self.session._on_report(self, facts)

    def ffmpeg_event(self, event):
        self.session._on_event(self, event)

    def ffmpeg_progress(self, progress):
        self.session._on_progress(self, progress)

    def ffmpeg_segment(self):
        self.session._schedule_read(self)

    def ffmpeg_ended(self, process):
        self.session._on_ffmpeg_ended(self)

    @property
    def live(self):
        """
        Whether this attempt has delivered a segment to the playlist.
        """
        return self.first_segment_at is not None

    def cancel_timers(self):
        """
        Cancel every timer of this attempt.
        """
        for call in self.timers + [self.stall_timer]:
            if call is not None and call.active():
                call.cancel()
        self.timers = []
        self.stall_timer = None
        if self.poll is not None and self.poll.running:
            self.poll.stop()
        self.poll = None

    def status(self, now):
        """
        A summary for the status page.
        """
        progress = self.process.last_progress if self.process else None
        return {
            "source": self.candidate.source,
            "quality": self.candidate.quality,
            "rowid": self.candidate.rowid,
            "url": media.mask_url(self.candidate.url),
            "encoding": self.encoding.label,
            "since": self.started_at,
            "live_for": round(now - self.first_segment_at, 1) if self.live else None,
            "buffer_events": len(self.buffer_events),
            "speed": progress.speed if progress else None,
            "bitrate_kbps": progress.bitrate_kbps if progress else None,
            "video": self.facts.video_codec if self.facts else None,
        }


class ChannelSession:
    """
    The state of one channel being played.

    ``state`` is one of ``starting`` (no media yet), ``live``,
    ``switching`` (media was playing, the next candidate is starting),
    ``failed`` and ``stopped``.
    """

    def __init__(self, channel_id, candidates, *, settings, slots, ranking, failures,
                 reactor, tag, on_finished=None, health=None):
        self.channel_id = channel_id
        self.candidates = tuple(candidates)
        self.settings = settings
        self.slots = slots
        self.ranking = ranking
        self.failures = failures
        self.reactor = reactor
        self.tag = tag
        self.on_finished = on_finished
        # Told of each stream's validation, start, buffering, failure and
        # stop (streamproxy.health.HealthRecorder), when given.
        self.health = health
        self.folder = os.path.join(settings.segment_dir, f"ch{channel_id}")
        self.playlist = LivePlaylist(settings.hls_time, settings.hls_list_size)
        self.state = "starting"
        self.reason = None
        self.attempt = None
        self.attempt_count = 0
        self.tried = {}
        self.round_had_media = False
        self.failovers = []
        self.started_at = reactor.seconds()
        self.last_request = self.started_at
        self.requests = 0
        self._waiters = []
        self._slot_wait = None
        self._slot_timer = None
        self._retry_call = None
        self._deletions = []
        self._endings = []
        self.finished = defer.Deferred()

    @property
    def name(self):
        """
        The channel's display name.
        """
        return self.candidates[0].display_name if self.candidates else f"Channel {self.channel_id}"

    def _log_prefix(self):
        return f"channel {self.channel_id}"

    # Requests.

    def touch(self):
        """
        Count a request: it keeps the channel from being stopped as unused.
        """
        self.last_request = self.reactor.seconds()
        self.requests += 1

    def wait_ready(self):
        """
        A Deferred firing with the playlist text once it holds a segment,
        or failing with :class:`ChannelUnavailable`.
        """
        if len(self.playlist) and self.state not in ("failed", "stopped"):
            return defer.succeed(self.playlist.render())
        if self.state in ("failed", "stopped"):
            return defer.fail(ChannelUnavailable(self.reason or f"channel {self.channel_id} stopped"))
        def cancel(d):
            # The client went away before the channel started.
            if d in self._waiters:
                self._waiters.remove(d)

        d = defer.Deferred(cancel)
        self._waiters.append(d)
        return d

    def segment_path(self, name):
        """
        The file of segment ``name`` if it is one of this channel's.
        """
        if not name.startswith(self.tag):
            return None
        path = os.path.join(self.folder, name)
        return path if os.path.isfile(path) else None

    # Choosing a candidate.

    def start(self):
        """
        Begin with the best candidate.
        """
        os.makedirs(self.folder, exist_ok=True)
        log.info(
            "{prefix}: starting ({count} candidate(s))",
            prefix=self._log_prefix(),
            count=len(self.candidates),
        )
        self._next_candidate()

    def ranked(self):
        """
        The candidates in the order they would be tried now.
        """
        return self.ranking.rank(self.candidates, self.failures.recent(self.reactor.seconds()))

    def _next_candidate(self):
        if self.state in ("failed", "stopped") or self.attempt is not None:
            return
        remaining = [c for c in self.ranked() if c.rowid not in self.tried]
        if not remaining:
            self._round_exhausted()
            return
        for candidate in remaining:
            slot = self.slots.acquire(
                candidate.source, f"channel {self.channel_id}", account=candidate.account
            )
            if slot is not None:
                self._cancel_slot_wait()
                self._launch(candidate, slot, Encoding())
                return
        self._wait_for_slot(remaining)

    def _wait_for_slot(self, remaining):
        if self._slot_wait is not None:
            return
        sources = sorted({c.source for c in remaining})
        log.info(
            "{prefix}: every candidate's source is full ({sources}); waiting for a free slot",
            prefix=self._log_prefix(),
            sources=self._describe_usage(sources),
        )
        self._slot_wait = self.slots.wait_for_room(
            sources, accounts={(c.source, c.account) for c in remaining}
        )

        def room(_):
            self._slot_wait = None
            self._next_candidate()

        self._slot_wait.addCallbacks(room, lambda f: f.trap(defer.CancelledError))
        if self._slot_timer is None:
            self._slot_timer = self.reactor.callLater(
                self.settings.stream_start_timeout, self._slot_timeout, sources
            )

    def _slot_timeout(self, sources):
        self._slot_timer = None
        self._cancel_slot_wait()
        self._fail_channel(
            f"no free connection within {self.settings.stream_start_timeout:g} s: "
            f"source(s) full: {self._describe_usage(sources)}"
        )

    def _cancel_slot_wait(self):
        if self._slot_wait is not None:
            wait, self._slot_wait = self._slot_wait, None
            wait.cancel()
        if self._slot_timer is not None:
            if self._slot_timer.active():
                self._slot_timer.cancel()
            self._slot_timer = None

    def _describe_usage(self, sources):
        usage = self.slots.usage(sources)
        return ", ".join(
            f"{source} {used}/{limit if limit is not None else 'unlimited'}"
            for source, (used, limit) in usage.items()
            if source in sources
        )

    def _round_exhausted(self):
        if self.round_had_media and self.state != "stopped":
            log.warn(
                "{prefix}: every candidate failed; trying them all again in {delay:g} s",
                prefix=self._log_prefix(),
                delay=ROUND_RETRY_SECONDS,
            )
            self.tried = {}
            self.round_had_media = False
            self._retry_call = self.reactor.callLater(ROUND_RETRY_SECONDS, self._retry_round)
            return
        reasons = "; ".join(f"{label}: {reason}" for label, reason in self.tried.values())
        self._fail_channel(f"every candidate failed ({reasons or 'no candidates'})")

    def _retry_round(self):
        self._retry_call = None
        self._next_candidate()

    # Running one candidate.

    def _launch(self, candidate, slot, encoding):
        self.attempt_count += 1
        attempt = Attempt(self, self.attempt_count, candidate, slot, encoding)
        self.attempt = attempt
        log.info(
            "{prefix}: trying {candidate} ({encoding})",
            prefix=self._log_prefix(),
            candidate=candidate.label,
            encoding=encoding.label,
        )
        argv = ffmpeg_command(self.settings, candidate.url, self.folder, attempt.prefix, encoding)
        attempt.process = FFmpegProcess(attempt, candidate.label)
        spawn(self.reactor, attempt.process, argv, self.settings.segment_dir, extra_fds=(3,))
        attempt.timers.append(
            self.reactor.callLater(
                self.settings.stream_start_timeout,
                self._attempt_failed,
                attempt,
                f"no first segment within {self.settings.stream_start_timeout:g} s",
            )
        )
        attempt.poll = LoopingCall(self._read_segments, attempt)
        attempt.poll.clock = self.reactor
        attempt.poll.start(SEGMENT_POLL_SECONDS, now=False)
        if encoding == Encoding():
            self._maybe_probe(attempt)

    def _maybe_probe(self, attempt):
        """
        Validate with ffprobe alongside ffmpeg when the source has room for
        a second connection; otherwise ffmpeg's own stream report decides.
        """
        source = attempt.candidate.source
        attempt.probe_slot = self.slots.acquire(
            source, f"channel {self.channel_id} probe", account=attempt.candidate.account
        )
        if attempt.probe_slot is None:
            return
        d, attempt.probe = probe(
            self.reactor, self.settings, attempt.candidate.url, self.settings.segment_dir
        )

        def done(result):
            attempt.probe_slot.release()
            attempt.probe = None
            self._on_probe(attempt, result)

        d.addCallback(done)
        d.addErrback(lambda f: log.failure("probe of {c}", f, c=attempt.candidate.label))

    def _on_probe(self, attempt, result):
        attempt.probe_verdict = result
        if attempt is not self.attempt or attempt.ending:
            return
        if result.ok:
            attempt.facts = attempt.facts or result.facts
            self._validated(attempt)
        elif result.connection_problem:
            log.info(
                "{prefix}: ffprobe could not reach {candidate} ({reason}); "
                "relying on ffmpeg's own stream report",
                prefix=self._log_prefix(),
                candidate=attempt.candidate.label,
                reason=result.reason,
            )
            if attempt.report_verdict == "ok":
                self._validated(attempt)
        else:
            self._attempt_failed(attempt, f"ffprobe: {result.reason}")

    def _on_report(self, attempt, facts):
        if attempt is not self.attempt or attempt.ending:
            return
        attempt.facts = facts
        reason = media.judge(facts)
        if reason is not None:
            self._attempt_failed(attempt, reason)
            return
        video, audio = media.needs_transcode(facts)
        wanted = Encoding(attempt.encoding.transcode_video or video,
                          attempt.encoding.transcode_audio or audio)
        if wanted != attempt.encoding:
            log.info(
                "{prefix}: {candidate} carries {video}/{audio}, which HLS cannot carry as it is; "
                "restarting it with {encoding}",
                prefix=self._log_prefix(),
                candidate=attempt.candidate.label,
                video=facts.video_codec,
                audio=",".join(facts.audio_codecs) or "no audio",
                encoding=wanted.label,
            )
            self._restart_with(attempt, wanted)
            return
        attempt.report_verdict = "ok"
        probe_pending = attempt.probe is not None and attempt.probe_verdict is None
        probe_unreachable = attempt.probe_verdict is not None and attempt.probe_verdict.connection_problem
        if not probe_pending and (attempt.probe_verdict is None or probe_unreachable):
            self._validated(attempt)

    def _validated(self, attempt):
        if attempt.validated:
            return
        attempt.validated = True
        self._report("stream_validated", attempt.candidate)
        self._read_segments(attempt)

    def _on_event(self, attempt, event):
        if attempt is not self.attempt:
            return
        if event.kind in (media.EventKind.HTTP_ERROR, media.EventKind.CONNECTION_FAILED):
            # ffmpeg follows "HTTP error 500 ..." with a vaguer "5XX Server
            # Error reply": the first report is the telling one.
            if attempt.connection_reason is None:
                attempt.connection_reason = media.describe_event(event)
        elif event.kind in media.BUFFERING_KINDS and attempt.live:
            self._buffer_event(attempt, media.describe_event(event))

    def _buffer_event(self, attempt, reason):
        now = self.reactor.seconds()
        attempt.buffer_events = [
            (when, why) for when, why in attempt.buffer_events if now - when <= BUFFER_WINDOW_SECONDS
        ]
        attempt.buffer_events.append((now, reason))
        self._report("stream_buffering", attempt.candidate)
        log.info(
            "{prefix}: buffering on {candidate}: {reason} ({count}/{threshold})",
            prefix=self._log_prefix(),
            candidate=attempt.candidate.label,
            reason=reason,
            count=len(attempt.buffer_events),
            threshold=self.settings.buffer_threshold,
        )

    def _on_progress(self, attempt, progress):
        if attempt is not self.attempt or progress.out_time_us is None:
            return
        now = self.reactor.seconds()
        attempt.progress_at = now
        if attempt.out_time_us is None or progress.out_time_us > attempt.out_time_us:
            attempt.out_time_us = progress.out_time_us
            attempt.last_advance = now
            if attempt.stall_timer is not None and attempt.stall_timer.active():
                attempt.stall_timer.reset(self._stall_seconds(attempt))

    def _stall_seconds(self, attempt):
        return STALL_SECONDS_HLS if is_hls_url(attempt.candidate.url) else STALL_SECONDS_TS

    def _on_stall(self, attempt):
        seconds = self.reactor.seconds() - attempt.last_advance
        self._attempt_failed(attempt, f"stalled: no new media for {seconds:.0f} s")

    def _schedule_read(self, attempt):
        # Several cues can arrive in one burst of output; read once.  An
        # ending ffmpeg still announces its last files: nothing to read then.
        if attempt is not self.attempt or attempt.ending:
            return
        if not attempt.read_pending:
            attempt.read_pending = True
            attempt.timers.append(
                self.reactor.callLater(CUE_DELAY_SECONDS, self._read_segments, attempt)
            )

    def _read_segments(self, attempt):
        attempt.read_pending = False
        if attempt is not self.attempt or not attempt.validated or attempt.ending:
            return
        path = os.path.join(self.folder, f"{attempt.prefix}.m3u8")
        try:
            changed = os.stat(path).st_mtime_ns
            if changed == attempt.playlist_mtime:
                return
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            return
        attempt.playlist_mtime = changed
        added = False
        for uri, duration in parse_media_playlist(text):
            name = os.path.basename(uri)
            index = _segment_index(name)
            if index is None or index <= attempt.last_index:
                continue
            attempt.last_index = index
            self._delete_later(self.playlist.add(name, duration))
            added = True
        if added and not attempt.live:
            self._went_live(attempt)

    def _went_live(self, attempt):
        now = self.reactor.seconds()
        attempt.first_segment_at = now
        for call in attempt.timers:
            if call.active():
                call.cancel()
        attempt.timers = []
        attempt.stall_timer = self.reactor.callLater(
            self._stall_seconds(attempt), self._on_stall, attempt
        )
        self.round_had_media = True
        self._report("stream_started", attempt.candidate)
        previous = self.state
        self.state = "live"
        took = now - (self.failovers[-1]["at"] if previous == "switching" and self.failovers else self.started_at)
        log.info(
            "{prefix}: live on {candidate} after {took:.1f} s",
            prefix=self._log_prefix(),
            candidate=attempt.candidate.label,
            took=took,
        )
        waiters, self._waiters = self._waiters, []
        text = self.playlist.render()
        for d in waiters:
            d.callback(text)

    def check(self):
        """
        The periodic health check (every ``buffer_check_interval``): output
        slower than real time counts as a buffering event, and
        ``buffer_threshold`` events in a minute fail the stream over.
        """
        attempt = self.attempt
        if attempt is None or not attempt.live or attempt.ending:
            return
        now = self.reactor.seconds()
        # The rate is measured between progress reports (ffmpeg sends one
        # every half second or so), not between checks, which would read a
        # healthy stream as slow whenever a report is late.
        if attempt.checked_at is None or attempt.checked_out_time is None:
            attempt.checked_at, attempt.checked_out_time = attempt.progress_at, attempt.out_time_us
        elif attempt.progress_at is not None and attempt.progress_at - attempt.checked_at >= MIN_RATE_WINDOW_SECONDS:
            elapsed = attempt.progress_at - attempt.checked_at
            rate = (attempt.out_time_us - attempt.checked_out_time) / 1e6 / elapsed
            if rate < SLOW_RATE:
                self._buffer_event(attempt, f"output at {rate:.2f}x real time")
            attempt.checked_at, attempt.checked_out_time = attempt.progress_at, attempt.out_time_us
        recent = [e for e in attempt.buffer_events if now - e[0] <= BUFFER_WINDOW_SECONDS]
        if len(recent) >= self.settings.buffer_threshold:
            reasons = ", ".join(sorted({why for _, why in recent}))
            self._attempt_failed(attempt, f"buffering: {len(recent)} events in a minute ({reasons})")

    # Ending attempts.

    def force_switch(self):
        """
        End the current stream and move to the next candidate (the same one
        again when it is the only one).  Returns the label of the stream
        left, or None when nothing was playing.
        """
        attempt = self.attempt
        if attempt is None or attempt.ending:
            return None
        self._attempt_failed(attempt, "switched by request", penalise=False)
        return attempt.candidate.label

    def _on_ffmpeg_ended(self, attempt):
        if attempt is self.attempt and not attempt.ending:
            process = attempt.process
            facts = process.input_facts()
            verdict = media.judge(facts) if facts is not None else None
            if verdict is not None:
                # ffmpeg gave up on a stream it found unusable (an
                # audio-only stream has no video to map): say what it found.
                self._attempt_failed(attempt, verdict)
                return
            detail = attempt.connection_reason or process.last_error()
            if not detail:
                detail = "the upstream ended the stream" if attempt.live else "no output"
            code = process.exit_code if process.exit_code is not None else f"signal {process.exit_signal}"
            self._attempt_failed(attempt, f"ffmpeg exited ({code}): {detail}")

    def _attempt_failed(self, attempt, reason, penalise=True):
        if attempt is not self.attempt or attempt.ending or self.state in ("failed", "stopped"):
            return
        candidate = attempt.candidate
        now = self.reactor.seconds()
        log.warn(
            "{prefix}: {candidate} failed: {reason}",
            prefix=self._log_prefix(),
            candidate=candidate.label,
            reason=reason,
        )
        if penalise:
            self.failures.record(candidate.rowid, now, reason)
            since = attempt.last_advance if attempt.live else attempt.started_at
            self._report("stream_failed", candidate, reason, now - since)
        elif attempt.live:
            self._report("stream_stopped", candidate, now - attempt.first_segment_at)
        self.tried[candidate.rowid] = (candidate.label, reason)
        if attempt.live or self.state == "switching":
            self.failovers.append({"at": now, "from": candidate.label, "reason": reason})
            self.state = "switching"
        self._end_attempt(attempt)
        self.playlist.mark_discontinuity()
        self._next_candidate()

    def _restart_with(self, attempt, encoding):
        """
        Replace ``attempt`` by a run of the same candidate with ``encoding``,
        keeping its slot: the new ffmpeg starts once the old one has exited,
        so the provider never sees two connections.
        """
        candidate, slot = attempt.candidate, attempt.slot
        attempt.hand_over_slot = True
        ended = self._end_attempt(attempt)

        def relaunch(_):
            if self.state in ("failed", "stopped"):
                slot.release()
                return
            self._launch(candidate, slot, encoding)

        ended.addCallback(relaunch)

    def _end_attempt(self, attempt):
        """
        Stop ``attempt``'s processes; its slot is given back once they have
        exited.  Returns a Deferred firing then.
        """
        attempt.ending = True
        attempt.cancel_timers()
        if self.attempt is attempt:
            self.attempt = None
        if attempt.process is not None:
            ffmpeg_stopped = attempt.process.stop()
        else:
            ffmpeg_stopped = defer.succeed(None)

        def exited(_):
            # The slot belongs to ffmpeg's connection; a probe still
            # running holds a slot of its own, given back when it ends.
            if not attempt.hand_over_slot:
                attempt.slot.release()
            # ffmpeg's own playlist, unfinished files, and the segment it
            # completed on its way out, none of which the viewer will see.
            published = set(self.playlist.names())
            for name in os.listdir(self.folder) if os.path.isdir(self.folder) else ():
                if name.startswith(attempt.prefix) and name not in published:
                    _remove(os.path.join(self.folder, name))

        ffmpeg_stopped.addCallback(exited)
        stops = [ffmpeg_stopped]
        if attempt.probe is not None:
            stops.append(attempt.probe.stop())
        d = defer.DeferredList(stops, consumeErrors=True)
        self._endings.append(d)
        return d

    def _delete_later(self, names):
        if not names:
            return
        delay = self.playlist.target_duration * DELETE_AFTER_TARGETS
        paths = [os.path.join(self.folder, name) for name in names]
        call = self.reactor.callLater(delay, lambda: [_remove(p) for p in paths])
        self._deletions = [c for c in self._deletions if c.active()] + [call]

    # Ending the channel.

    def _fail_channel(self, reason):
        if self.state in ("failed", "stopped"):
            return
        log.error("{prefix}: unavailable: {reason}", prefix=self._log_prefix(), reason=reason)
        self.state = "failed"
        self.reason = reason
        self._shut(ChannelUnavailable(f"channel {self.channel_id}: {reason}"))

    def stop(self, reason="stopped"):
        """
        Stop the channel: every process is ended (TERM, then KILL), its
        slot given back and its folder deleted.  Returns a Deferred that
        fires when all of that is done.
        """
        if self.state not in ("failed", "stopped"):
            log.info("{prefix} stopped: {reason}", prefix=self._log_prefix(), reason=reason)
            self.state = "stopped"
            self.reason = reason
            self._shut(ChannelUnavailable(f"channel {self.channel_id} stopped: {reason}"))
        return self._finished_copy()

    def _report(self, event, *args):
        # Health bookkeeping must never disturb the stream.
        if self.health is None:
            return
        try:
            getattr(self.health, event)(*args)
        except Exception:
            log.failure("{prefix}: recording {event}", prefix=self._log_prefix(), event=event)

    def _finished_copy(self):
        d = defer.Deferred()
        self.finished.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _shut(self, error):
        self._cancel_slot_wait()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        for call in self._deletions:
            if call.active():
                call.cancel()
        self._deletions = []
        if self.attempt is not None:
            if self.attempt.live and not self.attempt.ending:
                self._report(
                    "stream_stopped",
                    self.attempt.candidate,
                    self.reactor.seconds() - self.attempt.first_segment_at,
                )
            self._end_attempt(self.attempt)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error)
        done = defer.DeferredList(list(self._endings), consumeErrors=True)

        def cleaned(_):
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.on_finished is not None:
                self.on_finished(self)
            self.finished.callback(self)

        done.addCallback(cleaned)

    # Status.

    def status(self):
        """
        A summary for the status page and API.
        """
        now = self.reactor.seconds()
        return {
            "channel_id": self.channel_id,
            "name": self.name,
            "state": self.state,
            "reason": self.reason,
            "since": self.started_at,
            "last_request_ago": round(now - self.last_request, 1),
            "requests": self.requests,
            "current": self.attempt.status(now) if self.attempt else None,
            "failovers": len(self.failovers),
            "tried": [
                {"candidate": label, "reason": reason} for label, reason in self.tried.values()
            ],
            "last_failover": self.failovers[-1] if self.failovers else None,
            "segments": len(self.playlist),
            "media_sequence": self.playlist.media_sequence,
        }


def _segment_index(name):
    stem = name[:-3] if name.endswith(".ts") else name
    _, _, number = stem.rpartition("_")
    return int(number) if number.isdigit() else None


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
