"""
One tuned channel: choosing a candidate, running it, and failing over to
the next one without the viewer noticing.

A :class:`ChannelSession` lives from the first request for a channel until
it is stopped (nobody watching, shut down) or, having never played, every
candidate has failed.  Its :class:`ChannelState` s and the moves between
them are listed once, in :data:`TRANSITIONS`.

Each try of a candidate is an :class:`~streamproxy.attempt.Attempt`.  The
live attempt's media goes through the channel's one
:class:`~streamproxy.timeline.Timeline` (continuous timestamps and
counters across every switch) to the :class:`~streamproxy.segmenter.
Segmenter` (HLS segments in the channel's one
:class:`~streamproxy.hls.LivePlaylist`) and to the channel's other outputs.

Where the source has a spare connection, a switch is made before the old
stream is let go: a forced switch starts the next candidate alongside and
splices over once it is ready, and a stream that goes quiet (or whose
picture or sound has been black, frozen or silent for nearly its limit)
gets its successor started while the verdict is still pending.

A black or frozen picture or silence past its limit (``content_checks``)
fails a candidate like a stall, unless every candidate of the channel shows
the same: then it is the channel's real content (a radio station's still
logo) and that kind of fault is not judged on the channel for a while
(:class:`~streamproxy.content.ContentMemory`).

When every candidate fails on a channel that had been playing, its viewers
get the slate (:mod:`streamproxy.slate`) spliced in like any source, in a
loop, until a candidate plays again.
"""

import enum
import os
import shutil

from twisted.internet import defer
from twisted.logger import Logger

from .attempt import Attempt, AttemptOwner, Phase
from .content import SHOWS, WORDS, ContentMemory
from .ffmpeg import Encoding
from .health import HealthListener
from .hls import LivePlaylist, target_duration_for
from .metrics import MetricsListener
from .segmenter import CutPolicy, Segmenter
from .timeline import ACCESS, Timeline

log = Logger()

# An HLS player counts as watching while it polled within this many target
# durations (plus the grace): players reload about once per target duration.
HLS_VIEWER_TARGETS = 3
HLS_VIEWER_GRACE_SECONDS = 5.0

# Pause before trying every candidate again after a whole round failed on
# a channel that had been playing.
ROUND_RETRY_SECONDS = 2.0

# The timeline source number of the slate (attempts count from 1).
SLATE_SOURCE = 0


class ChannelUnavailable(Exception):
    """
    The channel cannot be played now; the message says why (503).
    """


class ChannelState(str, enum.Enum):
    """
    Where a channel is in its life.
    """

    STARTING = "starting"  # nothing shown yet
    LIVE = "live"  # an attempt's media is going out
    SWITCHING = "switching"  # media was shown; the next candidate is starting
    RETRYING = "retrying"  # media was shown; every candidate failed; retrying soon
    FAILED = "failed"  # never played and nothing could be played
    STOPPED = "stopped"  # stopped (unused, by request, shutdown)


S = ChannelState

# The moves a channel may make.  LIVE to LIVE is a splice made before the
# old stream was let go.
TRANSITIONS = {
    S.STARTING: {S.LIVE, S.FAILED, S.STOPPED},
    S.LIVE: {S.LIVE, S.SWITCHING, S.STOPPED},
    S.SWITCHING: {S.LIVE, S.RETRYING, S.STOPPED},
    S.RETRYING: {S.SWITCHING, S.STOPPED},
    S.FAILED: set(),
    S.STOPPED: set(),
}

ENDED_STATES = frozenset({S.FAILED, S.STOPPED})


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


class ChannelOutput:
    """
    Something fed with a channel's output pieces besides its HLS segments
    (the MPEG-TS viewers).
    """

    def channel_piece(self, piece):
        """
        The channel put out ``piece`` (a :class:`~streamproxy.timeline.Piece`).
        """

    def channel_ended(self, reason):
        """
        The channel has ended, for ``reason``.
        """

    def status(self, now):
        """
        What the status page shows of this output.
        """
        return {}


class ChannelSession(AttemptOwner):
    """
    The state of one channel being played.
    """

    def __init__(self, channel_id, candidates, *, settings, slots, ranking, failures,
                 reactor, tag, on_finished=None, health=None, metrics=None, content_memory=None,
                 slate=None):
        self.channel_id = channel_id
        self.candidates = tuple(candidates)
        self.settings = settings
        self.slots = slots
        self.ranking = ranking
        self.failures = failures
        self.reactor = reactor
        self.tag = tag
        self.on_finished = on_finished
        self.health = health if health is not None else HealthListener()
        self.metrics = metrics if metrics is not None else MetricsListener()
        # Kinds of content fault every candidate showed: not judged here.
        self.content_memory = content_memory if content_memory is not None else ContentMemory()
        self.tolerated = set(self.content_memory.tolerated(channel_id, reactor.seconds()))
        self._content_seen = {}
        # A callable giving the slate (None until made, or turned off).
        self._slate = slate if slate is not None else (lambda: None)
        self._slate_call = None
        self._slate_since = None
        self._slate_passes = 0
        self._tune_counted = False
        self.folder = os.path.join(settings.segment_dir, f"ch{channel_id}")
        target = target_duration_for(settings.hls_time)
        self.playlist = LivePlaylist(target, settings.hls_list_size)
        self.timeline = Timeline()
        self.segmenter = Segmenter(
            self.folder, tag, self.playlist, CutPolicy(settings.hls_time, target), self.timeline
        )
        self.state = S.STARTING
        self.reason = None
        self.attempt = None
        self.standby = None
        self._standby_for = None
        self.attempt_count = 0
        self.tried = {}
        self.failovers = []
        self.started_at = reactor.seconds()
        self.live_since = None
        self.last_request = self.started_at
        self.requests = 0
        self.outputs = []
        self.slow_viewers_dropped = 0
        self._hls_viewers = {}
        self._gop = []
        self._waiters = []
        self._kept_slot = None
        self._kept_pending = None
        # (source, account) of the kept slot: a connection of one provider
        # account serves only candidates of that account.
        self._kept_for = None
        self._slot_wait = None
        self._slot_timer = None
        self._quick_check = None
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

    @property
    def ended(self):
        """
        Whether the channel has failed or been stopped.
        """
        return self.state in ENDED_STATES

    def _move(self, state):
        if state not in TRANSITIONS[self.state]:
            raise AssertionError(f"channel {self.channel_id}: no move from {self.state.value} to {state.value}")
        self.state = state

    def _log(self, level, text, **fields):
        getattr(log, level)("channel {channel_id}: " + text, channel_id=self.channel_id, **fields)

    def _count(self, event, *args):
        # Metrics must never disturb the stream either.
        try:
            getattr(self.metrics, event)(*args)
        except Exception:
            log.failure("channel {channel_id}: counting {event}", channel_id=self.channel_id, event=event)

    def _tell(self, event, *args):
        # Health bookkeeping must never disturb the stream.
        try:
            getattr(self.health, event)(*args)
        except Exception:
            log.failure("channel {channel_id}: recording {event}", channel_id=self.channel_id, event=event)

    # Requests.

    def touch(self, client=None):
        """
        Count a request: it keeps the channel from being stopped as unused.
        ``client`` (an address) is remembered as an HLS viewer.
        """
        now = self.reactor.seconds()
        self.last_request = now
        self.requests += 1
        if client is not None:
            first, _ = self._hls_viewers.get(client, (now, now))
            self._hls_viewers[client] = (first, now)

    def viewers(self):
        """
        Who watches: ``{"ts": [...], "hls": [...]}``, each entry with the
        viewer's address and how long it has been connected.  An HLS
        player counts while it polled within three target durations.
        """
        now = self.reactor.seconds()
        recent = HLS_VIEWER_TARGETS * self.playlist.target_duration + HLS_VIEWER_GRACE_SECONDS
        self._hls_viewers = {a: t for a, t in self._hls_viewers.items() if now - t[1] <= recent}
        return {
            "ts": [output.status(now) for output in self.outputs],
            "hls": [
                {"format": "hls", "address": address, "connected_for": round(last - first, 1),
                 "last_request_ago": round(now - last, 1)}
                for address, (first, last) in sorted(self._hls_viewers.items())
            ],
        }

    def count_served(self, kind, count):
        """
        ``count`` bytes of ``kind`` (``ts``, ``hls``) went to a viewer.
        """
        self.metrics.count_served(kind, count)

    def viewer_dropped(self):
        """
        A TS viewer was dropped for reading too slowly.
        """
        self.slow_viewers_dropped += 1

    def idle_seconds(self, now):
        """
        Seconds since the last request, or 0 while a request waits for the
        channel to start or an output (a TS viewer) is connected: those
        are activity too.
        """
        if self._waiters or self.outputs:
            return 0.0
        return now - self.last_request

    def wait_ready(self):
        """
        A Deferred firing with the playlist text once it holds a segment,
        or failing with :class:`ChannelUnavailable`.
        """
        if self.ended:
            return defer.fail(ChannelUnavailable(self.reason or f"channel {self.channel_id} stopped"))
        if len(self.playlist):
            return defer.succeed(self.playlist.render())

        def cancel(d):
            # The client went away before the channel started.
            if d in self._waiters:
                self._waiters.remove(d)
                self.last_request = self.reactor.seconds()

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

    def add_output(self, output):
        """
        Feed ``output`` (a :class:`ChannelOutput`) from now on; returns the
        bytes from the latest access point on, for it to start with (empty
        before the channel has shown anything).
        """
        self.outputs.append(output)
        return b"".join(self._gop)

    def remove_output(self, output):
        """
        Stop feeding ``output``; a channel without outputs and requests
        counts as unused from now on.
        """
        if output in self.outputs:
            self.outputs.remove(output)
            self.last_request = self.reactor.seconds()

    # Choosing a candidate.

    def start(self):
        """
        Begin with the best candidate.
        """
        os.makedirs(self.folder, exist_ok=True)
        self._log("info", "starting ({count} candidate(s))", count=len(self.candidates))
        self._next_candidate()

    def ranked(self):
        """
        The candidates in the order they would be tried now.
        """
        return self.ranking.rank(self.candidates, self.failures.recent(self.reactor.seconds()))

    def _remaining(self):
        return [c for c in self.ranked() if c.rowid not in self.tried]

    def _next_candidate(self):
        if self.ended or self.attempt is not None or self.state is S.RETRYING:
            return
        remaining = self._remaining()
        if not remaining:
            self._round_exhausted()
            return
        for candidate in remaining:
            if self._kept_for == (candidate.source, candidate.account):
                if self._kept_slot is None:
                    return  # the old ffmpeg is exiting; its slot comes next
                slot, self._kept_slot, self._kept_for = self._kept_slot, None, None
            else:
                slot = self.slots.acquire(
                    candidate.source, f"channel {self.channel_id}", account=candidate.account
                )
                if slot is None:
                    continue
            self._cancel_slot_wait()
            self._launch(candidate, slot, Encoding())
            return
        if self._kept_for is not None and self._kept_blocks_own_source(remaining):
            # The kept connection is another account's of a source the
            # remaining candidates need: holding it could be what keeps that
            # source full, so it goes back and they ask for slots of their own.
            self._release_kept_slot()
            self._next_candidate()
            return
        self._wait_for_slot(remaining)

    def _kept_blocks_own_source(self, remaining):
        """
        Whether no candidate in ``remaining`` can use the kept slot (another
        account's) while some of them need a slot of its source.
        """
        source, account = self._kept_for
        pairs = {(c.source, c.account) for c in remaining}
        return (source, account) not in pairs and any(s == source for s, _ in pairs)

    def _wait_for_slot(self, remaining):
        if self._slot_wait is not None:
            return
        sources = sorted({c.source for c in remaining})
        accounts = sorted({c.account for c in remaining if c.account is not None})
        self._log(
            "info",
            "every candidate's source is full ({sources}); waiting for a free slot",
            sources=self._describe_usage(sources, accounts),
        )
        self._slot_wait = self.slots.wait_for_room(
            sources, accounts={(c.source, c.account) for c in remaining}
        )

        def room(_):
            self._slot_wait = None
            self._next_candidate()

        self._slot_wait.addCallbacks(room, lambda f: f.trap(defer.CancelledError))
        self._slot_wait.addErrback(lambda f: log.failure("channel {channel_id}: slot wait", f,
                                                         channel_id=self.channel_id))
        if self._slot_timer is None:
            self._slot_timer = self.reactor.callLater(
                self.settings.stream_start_timeout, self._slot_timeout, sources, accounts
            )

    def _slot_timeout(self, sources, accounts=()):
        self._slot_timer = None
        self._cancel_slot_wait()
        reason = (
            f"no free connection within {self.settings.stream_start_timeout:g} s: "
            f"source(s) full: {self._describe_usage(sources, accounts)}"
        )
        if self.state is S.STARTING:
            self._fail_channel(reason)
        else:
            self._log("warn", "{reason}", reason=reason)
            self._retry_later()

    def _cancel_slot_wait(self):
        if self._slot_wait is not None:
            wait, self._slot_wait = self._slot_wait, None
            wait.cancel()
        if self._slot_timer is not None:
            if self._slot_timer.active():
                self._slot_timer.cancel()
            self._slot_timer = None

    def _describe_usage(self, sources, accounts=()):
        usage = self.slots.usage(sources)
        described = ", ".join(
            f"{source} {used}/{limit if limit is not None else 'unlimited'}"
            for source, (used, limit) in usage.items()
            if source in sources
        )
        # Provider accounts with limits of their own (pooled accounts).
        limited = [
            f"{account} {used}/{limit}"
            for account, (used, limit) in self.slots.account_usage(accounts).items()
            if account in accounts and limit is not None
        ]
        return f"{described}; accounts {', '.join(limited)}" if limited else described

    def _round_exhausted(self):
        if self.state is S.STARTING:
            reasons = "; ".join(f"{label}: {reason}" for label, reason in self.tried.values())
            self._fail_channel(f"every candidate failed ({reasons or 'no candidates'})")
            return
        self._log("warn", "every candidate failed; trying them all again in {delay:g} s", delay=ROUND_RETRY_SECONDS)
        self._retry_later()

    def _retry_later(self):
        self._move(S.RETRYING)
        self.tried = {}
        self._show_slate()
        self._retry_call = self.reactor.callLater(ROUND_RETRY_SECONDS, self._retry_round)

    # The slate.

    def _show_slate(self):
        """
        Put the slate on, in a loop, for the viewers of a channel that had
        been playing, until a candidate plays again.
        """
        slate = self._slate() if self.settings.slate else None
        if slate is None or self._slate_since is not None or self.live_since is None or self.ended:
            return
        self._log("info", "showing the slate (temporarily unavailable) while every candidate is retried")
        self._publish(self.segmenter.flush())
        self._slate_since = self.reactor.seconds()
        self._slate_passes = 0
        self.timeline.splice(SLATE_SOURCE)
        self._slate_pass(slate)

    def _slate_pass(self, slate):
        self._slate_call = None
        if self._slate_since is None or self.ended:
            return
        units = slate.loop(self._slate_passes)
        self._slate_passes += 1
        self._media(units)
        # Passes follow the wall clock, so the slate plays at real time.
        due = self._slate_since + self._slate_passes * slate.seconds
        self._slate_call = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._slate_pass, slate)

    def _hide_slate(self):
        if self._slate_call is not None and self._slate_call.active():
            self._slate_call.cancel()
        self._slate_call = None
        if self._slate_since is not None:
            self._log("info", "the slate was shown for {seconds:.0f} s",
                      seconds=self.reactor.seconds() - self._slate_since)
        self._slate_since = None

    def _retry_round(self):
        self._retry_call = None
        self._move(S.SWITCHING)
        self._next_candidate()

    # Running candidates.

    def _new_attempt(self, candidate, slot, encoding):
        self.attempt_count += 1
        self._log(
            "info", "trying {candidate} ({encoding})", candidate=candidate.label, encoding=encoding.label
        )
        return Attempt(
            self, self.attempt_count, candidate, slot, encoding,
            settings=self.settings, slots=self.slots, reactor=self.reactor,
            channel_id=self.channel_id, prefix=f"{self.tag}{self.attempt_count:02d}",
            checks=self.settings.content_checks.for_channel(self.channel_id, self.tolerated),
        )

    def _launch(self, candidate, slot, encoding):
        self._release_kept_slot()
        self.attempt = self._new_attempt(candidate, slot, encoding)
        self.attempt.start()

    def _start_standby(self, purpose):
        """
        Start the next candidate alongside the live one when its source has
        a connection to spare and no tune is waiting for one.
        """
        if self.standby is not None or self.attempt is None or self.slots.waiting():
            return False
        current = self.attempt.candidate
        others = [c for c in self.ranked() if c.rowid != current.rowid and c.rowid not in self.tried]
        choices = others or ([current] if purpose == "switch" else [])
        for candidate in choices:
            if not self.slots.has_room(candidate.source, account=candidate.account):
                continue
            slot = self.slots.acquire(
                candidate.source, f"channel {self.channel_id} next", account=candidate.account
            )
            if slot is None:
                continue
            self._log(
                "info", "starting {candidate} alongside {current} ({purpose})",
                candidate=candidate.label, current=current.label,
                purpose={"switch": "switch requested", "content": "its picture or sound is failing"}.get(
                    purpose, "no media for a moment"),
            )
            self._standby_for = purpose
            self.standby = self._new_attempt(candidate, slot, Encoding())
            self.standby.start()
            return True
        return False

    def _drop_standby(self, why):
        if self._quick_check is not None and self._quick_check.active():
            self._quick_check.cancel()
        standby, self.standby, self._standby_for = self.standby, None, None
        if standby is not None:
            self._log("info", "dropping {candidate}, started alongside: {why}", candidate=standby.candidate.label, why=why)
            self._end_attempt(standby)

    def release_spare(self, sources):
        """
        Stop the stream started alongside the live one if it holds a
        connection of one of ``sources`` (a tune is waiting for one).
        Returns whether one was stopped.
        """
        if self.standby is None or self.standby.candidate.source not in sources:
            return False
        self._drop_standby("a tune is waiting for its connection")
        return True

    # What attempts tell the session.

    def attempt_ready(self, attempt):
        self._tell("stream_validated", attempt.candidate)
        self._tell("stream_described", attempt.candidate, attempt.facts, attempt.encoding)
        if attempt is self.attempt and attempt.phase is Phase.READY:
            self._go_live(attempt)
        elif attempt is self.standby and self._standby_for == "switch":
            self._splice_to_standby("switched by request")
        elif attempt is self.standby:
            self._switch_if_still_quiet()

    def attempt_media(self, attempt, units):
        if attempt is not self.attempt:
            return
        if self.standby is not None and self._standby_for == "quiet":
            self._drop_standby(f"{attempt.candidate.label} delivers again")
        self._media(units)

    def attempt_quiet(self, attempt):
        if attempt is not self.attempt:
            return
        # Give the viewers what has arrived, and get the next stream going.
        self._publish(self.segmenter.flush())
        if self._start_standby("quiet"):
            wait = attempt.quick_stall_seconds - (self.reactor.seconds() - attempt.last_media_at)
            self._quick_check = self.reactor.callLater(max(0.0, wait), self._switch_if_still_quiet)

    def _switch_if_still_quiet(self):
        """
        With the next stream ready alongside, a stream quiet for its
        quick-stall time is given up without waiting for the full stall
        verdict: the viewers' buffers are short.
        """
        current, standby = self.attempt, self.standby
        if current is None or standby is None or self._standby_for != "quiet":
            return
        quiet = self.reactor.seconds() - (current.last_media_at or current.started_at)
        if standby.phase is Phase.READY and current.phase is Phase.LIVE and quiet >= current.quick_stall_seconds:
            self._attempt_failed(current, f"stalled: no new media for {quiet:.1f} s "
                                          f"({standby.candidate.label} was ready)")

    def attempt_failed(self, attempt, reason):
        if attempt is self.standby:
            self._log("warn", "{candidate} failed: {reason}", candidate=attempt.candidate.label, reason=reason)
            self._penalise(attempt, reason)
            self.tried[attempt.candidate.rowid] = (attempt.candidate.label, reason)
            purpose = self._standby_for
            self._drop_standby("it failed")
            current = self.attempt
            if purpose == "switch" and current is not None and current.phase is Phase.LIVE:
                # The switch goes ahead the slow way: let go, then start.
                self._attempt_failed(current, "switched by request", penalise=False)
            return
        if attempt is not self.attempt:
            return
        self._attempt_failed(attempt, reason)

    def attempt_needs_encoding(self, attempt, encoding):
        if attempt is not self.attempt and attempt is not self.standby:
            return
        facts = attempt.facts
        self._log(
            "info",
            "{candidate} carries {video}/{audio}, which HLS cannot carry as it is; restarting it with {encoding}",
            candidate=attempt.candidate.label,
            video=facts.video_codec if facts else "?",
            audio=",".join(facts.audio_codecs) if facts and facts.audio_codecs else "no audio",
            encoding=encoding.label,
        )
        self._restart(attempt, encoding)

    def attempt_buffering(self, attempt, reason):
        if attempt is self.attempt:
            self._tell("stream_buffering", attempt.candidate)
            self._count("buffering", attempt.candidate.source, reason)

    # Black, frozen, silent.

    def attempt_content_fault(self, attempt, fault):
        if attempt is not self.attempt and attempt is not self.standby:
            return
        candidate = attempt.candidate
        self._count("content_fault", candidate.source, fault.kind)
        self._content_seen.setdefault(fault.kind, set()).add(candidate.rowid)
        if self._every_candidate_shows(fault.kind):
            self._tolerate(fault, attempt)
            return
        if attempt is self.attempt and attempt.phase is Phase.LIVE and not self._can_switch_from(attempt):
            self._log(
                "warn", "{candidate}: {reason}, but no other candidate can be started now (their sources "
                "are full); it stays on and is judged again in {limit:g} s",
                candidate=candidate.label, reason=fault.reason, limit=attempt.checks.limit(fault.kind),
            )
            attempt.snooze(fault.kind)
            return
        self.attempt_failed(attempt, fault.reason)

    def _every_candidate_shows(self, kind):
        """
        Whether every candidate of the channel showed ``kind`` of fault in
        this session or failed recently (for any reason): then nothing
        better can be had, and the fault is the channel's real content.
        """
        seen = self._content_seen.get(kind, set())
        failed = self.failures.recent(self.reactor.seconds())
        return all(c.rowid in seen or c.rowid in failed for c in self.candidates)

    def _tolerate(self, fault, attempt):
        self.tolerated.add(fault.kind)
        self.content_memory.tolerate(self.channel_id, fault.kind, self.reactor.seconds())
        hours = self.content_memory.seconds / 3600
        self._log(
            "warn", "every candidate shows {what} ({reason} on {candidate}): taking it as the channel's "
            "content; {kind} is not judged on this channel for {hours:g} h",
            what=SHOWS[fault.kind], kind=WORDS[fault.kind], reason=fault.reason,
            candidate=attempt.candidate.label, hours=hours,
        )
        for running in (self.attempt, self.standby):
            if running is not None:
                running.tolerate(fault.kind)
        if self._standby_for == "content":
            self._drop_standby(f"{WORDS[fault.kind]} is the channel's content")

    def _can_switch_from(self, attempt):
        """
        Whether another candidate could be started now: its source (and
        account) has a free connection, or it can use this one's.
        """
        if self.standby is not None:
            return True
        current = attempt.candidate
        for candidate in self.ranked():
            if candidate.rowid == current.rowid or candidate.rowid in self.tried:
                continue
            if (candidate.source, candidate.account) == (current.source, current.account):
                return True
            if self.slots.has_room(candidate.source, account=candidate.account):
                return True
        return False

    def attempt_content_suspect(self, attempt, kind):
        if attempt is not self.attempt or self.state is not S.LIVE:
            return
        others = [c for c in self.candidates if c.rowid != attempt.candidate.rowid]
        if not others:
            return
        if self._start_standby("content"):
            self._log("info", "{candidate}: {what} for a while; the next candidate is ready alongside",
                      candidate=attempt.candidate.label, what=WORDS[kind])

    def attempt_content_clear(self, attempt):
        if attempt is self.attempt and self._standby_for == "content":
            self._drop_standby(f"{attempt.candidate.label} looks and sounds right again")

    # Going live and switching.

    def _go_live(self, attempt):
        now = self.reactor.seconds()
        previous = self.state
        self._release_kept_slot()
        self._hide_slate()
        units = attempt.go_live()
        self.timeline.splice(attempt.number)
        self._move(S.LIVE)
        if self.live_since is None:
            self.live_since = now
        self._tell("stream_started", attempt.candidate)
        switch = self.failovers[-1] if previous is not S.STARTING and self.failovers else None
        began = switch["at"] if switch else self.started_at
        self._log("info", "live on {candidate} after {took:.1f} s", candidate=attempt.candidate.label, took=now - began)
        if switch is not None:
            # Wall time from the old stream's last media to the new one's.
            until = switch.get("media_until")
            switch["gap"] = round(now - (switch["at"] if until is None else until), 2)
            self._count("failover_gap", switch["gap"])
        if not self._tune_counted:
            self._tune_counted = True
            self._count("tune_outcome", "live", now - self.started_at)
        self._media(units)

    def _splice_to_standby(self, reason):
        """
        Let the live attempt go and put the ready standby in its place,
        with no gap in between.
        """
        old, new = self.attempt, self.standby
        self.standby, self._standby_for = None, None
        now = self.reactor.seconds()
        self.failovers.append({"at": now, "from": old.candidate.label, "reason": reason, "gap": None,
                               "media_until": old.last_media_at})
        self._count("failover", old.candidate.source, reason)
        self._measure(old)
        self._tell("stream_stopped", old.candidate, now - (old.live_at or now))
        self._log("info", "{old} replaced by {new}: {reason}", old=old.candidate.label, new=new.candidate.label,
                  reason=reason)
        self._publish(self.segmenter.flush())
        self._end_attempt(old)
        self.attempt = new
        self._go_live(new)

    def force_switch(self):
        """
        Move to the next candidate (the same one again when it is the only
        one).  Where its source has a connection to spare it is started
        alongside and the channel switches once it plays; otherwise the
        current stream is let go first.  Returns the label of the stream
        being left, or None when nothing was playing.
        """
        attempt = self.attempt
        if attempt is None or attempt.phase is not Phase.LIVE or self.state is not S.LIVE:
            return None
        if self.standby is not None and self._standby_for == "switch":
            return attempt.candidate.label  # already under way
        self._drop_standby("a switch was requested")
        # A fresh round: every candidate but the one playing may come next.
        self.tried = {}
        if self._start_standby("switch"):
            return attempt.candidate.label
        self._attempt_failed(attempt, "switched by request", penalise=False)
        return attempt.candidate.label

    def _attempt_failed(self, attempt, reason, penalise=True):
        candidate = attempt.candidate
        now = self.reactor.seconds()
        self._log("warn", "{candidate} failed: {reason}", candidate=candidate.label, reason=reason)
        was_live = attempt.phase is Phase.LIVE
        if penalise:
            self._penalise(attempt, reason)
        elif was_live:
            self._measure(attempt)
            self._tell("stream_stopped", candidate, now - attempt.live_at)
        self.tried[candidate.rowid] = (candidate.label, reason)
        kept_for = (candidate.source, candidate.account)
        if not penalise and not any(
            (c.source, c.account) == kept_for or self.slots.has_room(c.source, account=c.account)
            for c in self._remaining()
        ):
            # A switch with nowhere else to go now restarts this stream.
            self.tried = {}
        if was_live:
            self.failovers.append({"at": now, "from": candidate.label, "reason": reason, "gap": None,
                                   "media_until": attempt.last_media_at})
            self._count("failover", candidate.source, reason)
            self._move(S.SWITCHING)
            self._publish(self.segmenter.flush())
        standby, self.standby, self._standby_for = self.standby, None, None
        if standby is not None:
            # Started alongside: it takes over, perhaps at once.
            self._end_attempt(attempt)
            self.attempt = standby
            if standby.phase is Phase.READY:
                self._go_live(standby)
            return
        self._end_attempt(attempt, keep_slot=True)
        self._next_candidate()

    def _measure(self, attempt):
        """
        Report what ``attempt`` measured of its stream (size, frame rate,
        bitrate), before its end is reported: it ranks the candidates.
        """
        if attempt.validated and not attempt.measured:
            attempt.measured = True
            measurement = attempt.measurement(self.reactor.seconds())
            if measurement is not None:
                self._tell("stream_measured", attempt.candidate, measurement)

    def _penalise(self, attempt, reason):
        self._measure(attempt)
        now = self.reactor.seconds()
        self.failures.record(attempt.candidate.rowid, now, reason)
        since = attempt.last_media_at if attempt.live_at is not None else attempt.started_at
        fault = attempt.content_fault
        if fault is not None and fault.reason == reason:
            self._tell("stream_content_fault", attempt.candidate, fault.kind, fault.seconds)
            return
        self._tell("stream_failed", attempt.candidate, reason, now - (since or attempt.started_at))

    def _restart(self, attempt, encoding):
        """
        Run ``attempt``'s candidate again with ``encoding`` on the same slot:
        the new ffmpeg starts once the old one has exited, so the provider
        never sees two connections.
        """
        ended = attempt.stop(keep_slot=True)
        self._endings.append(attempt.when_ended())

        def relaunch(slot):
            if self.ended or (self.standby is not attempt and self.attempt is not attempt):
                slot.release()
                return
            new = self._new_attempt(attempt.candidate, slot, encoding)
            if self.attempt is attempt:
                self.attempt = new
            else:
                self.standby = new
            new.start()

        ended.addCallback(relaunch)
        ended.addErrback(lambda f: log.failure("channel {channel_id}: restart", f, channel_id=self.channel_id))

    def _end_attempt(self, attempt, keep_slot=False):
        """
        Stop ``attempt``.  With ``keep_slot`` its slot is kept for the
        channel's next candidate of that source once its ffmpeg has exited
        (a switching channel never loses its connection to a waiting tune).
        """
        if self.attempt is attempt:
            self.attempt = None
        keep = keep_slot and not self.ended
        if keep:
            self._release_kept_slot()
            self._kept_for = (attempt.candidate.source, attempt.candidate.account)
        ended = attempt.stop(keep_slot=keep)
        self._endings.append(attempt.when_ended())
        if keep:
            self._kept_pending = ended

            def kept(slot):
                if self._kept_pending is not ended:
                    slot.release()
                    return
                self._kept_pending = None
                self._kept_slot = slot
                self._next_candidate()

            ended.addCallback(kept)
        ended.addErrback(lambda f: log.failure("channel {channel_id}: ending an attempt", f,
                                               channel_id=self.channel_id))
        return ended

    def _release_kept_slot(self):
        if self._kept_slot is not None:
            self._kept_slot.release()
        self._kept_slot = None
        self._kept_pending = None  # released by its callback when it fires
        self._kept_for = None

    # Media.

    def _media(self, units):
        push = self.timeline.push
        for unit in units:
            for piece in push(unit):
                self._piece(piece)

    def _piece(self, piece):
        try:
            gone = self.segmenter.feed(piece)
        except OSError as e:
            self._fail_channel(f"cannot write segments in {self.folder}: {e.strerror or e}")
            return
        if piece.mark == ACCESS:
            self._gop = [piece.data]
        elif self._gop:
            self._gop.append(piece.data)
        for output in list(self.outputs):
            try:
                output.channel_piece(piece)
            except Exception:
                log.failure("channel {channel_id}: feeding an output", channel_id=self.channel_id)
        self._publish(gone)

    def _publish(self, gone):
        if gone:
            self._delete_later(gone)
        if self._waiters and len(self.playlist):
            waiters, self._waiters = self._waiters, []
            text = self.playlist.render()
            for d in waiters:
                d.callback(text)

    def _delete_later(self, gone):
        for name, keep in gone:
            path = os.path.join(self.folder, name)
            self._deletions.append(self.reactor.callLater(keep, _remove, path))
        self._deletions = [call for call in self._deletions if call.active()]

    def check(self):
        """
        The periodic health check (every ``buffer_check_interval``).
        """
        if self.attempt is not None:
            self.attempt.check()

    # Ending the channel.

    def _fail_channel(self, reason):
        if self.ended:
            return
        self._log("error", "unavailable: {reason}", reason=reason)
        if self.state is S.STARTING:
            self._tune_counted = True
            self._count("tune_outcome", "no_slot" if reason.startswith("no free connection") else "unavailable")
            self._move(S.FAILED)
        else:
            self._move(S.STOPPED)
        self.reason = reason
        self._shut(ChannelUnavailable(f"channel {self.channel_id}: {reason}"))

    def stop(self, reason="stopped"):
        """
        Stop the channel: every process is ended (TERM, then KILL), its
        slots given back and its folder deleted.  Returns a Deferred that
        fires when all of that is done.
        """
        if not self.ended:
            log.info("channel {channel_id} stopped: {reason}", channel_id=self.channel_id, reason=reason)
            if not self._tune_counted:
                self._tune_counted = True
                self._count("tune_outcome", "abandoned")
            self._move(S.STOPPED)
            self.reason = reason
            self._shut(ChannelUnavailable(f"channel {self.channel_id} stopped: {reason}"))
        d = defer.Deferred()
        self.finished.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _shut(self, error):
        self._cancel_slot_wait()
        self._hide_slate()
        if self._quick_check is not None and self._quick_check.active():
            self._quick_check.cancel()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        for call in self._deletions:
            if call.active():
                call.cancel()
        self._deletions = []
        self._release_kept_slot()
        for attempt in (self.attempt, self.standby):
            if attempt is None:
                continue
            if attempt.phase is Phase.LIVE:
                self._measure(attempt)
                self._tell("stream_stopped", attempt.candidate, self.reactor.seconds() - attempt.live_at)
            self._end_attempt(attempt)
        self.attempt = self.standby = None
        self.segmenter.close()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(error)
        outputs, self.outputs = self.outputs, []
        for output in outputs:
            try:
                output.channel_ended(str(error))
            except Exception:
                log.failure("channel {channel_id}: ending an output", channel_id=self.channel_id)
        done = defer.DeferredList(list(self._endings), consumeErrors=True)

        def cleaned(_):
            shutil.rmtree(self.folder, ignore_errors=True)
            if self.on_finished is not None:
                self.on_finished(self)
            self.finished.callback(self)

        done.addCallback(cleaned)
        done.addErrback(lambda f: log.failure("channel {channel_id}: shutting down", f, channel_id=self.channel_id))

    # Status.

    def status(self):
        """
        What the status page and API show of this channel.
        """
        now = self.reactor.seconds()
        current = self.attempt.status(now) if self.attempt is not None else None
        return {
            "channel_id": self.channel_id,
            "name": self.name,
            "state": self.state.value,
            "reason": self.reason,
            "since": self.started_at,
            "last_request_ago": round(now - self.last_request, 1),
            "requests": self.requests,
            "current": current,
            "standby": self.standby.status(now) if self.standby is not None else None,
            "recent_buffering": [when for when, _ in self.attempt.buffer_events] if self.attempt else [],
            "failovers": len(self.failovers),
            "tried": [{"candidate": label, "reason": reason} for label, reason in self.tried.values()],
            "last_failover": self.failovers[-1] if self.failovers else None,
            "segments": len(self.playlist),
            "media_sequence": self.playlist.media_sequence,
            "target_duration": self.playlist.target_duration,
            "playlist_seconds": round(self.playlist.duration, 1),
            "measured_kbps": self.playlist.bitrate_kbps(),
            "viewers": self.viewers(),
            "slow_viewers_dropped": self.slow_viewers_dropped,
            "slate_for": round(now - self._slate_since, 1) if self._slate_since is not None else None,
            "content_tolerated": sorted(self.tolerated),
        }


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
