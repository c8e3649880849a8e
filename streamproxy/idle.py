"""
Idle checks: candidate streams nobody is watching are checked now and then
(every ``idle_check_hours``), so a dead or useless stream is known before a
viewer tunes it.

A check is ffprobe (the stream's codecs and picture size), then ffmpeg
reading :data:`CHECK_SECONDS` of the stream with the content checks (a
black or frozen picture, silence) and counting its bitrate.  The result
goes to the table's health columns (``online``, ``offline``, ``black``,
``frozen``, ``silent``) and the measured facts rank the candidates.

Checks never get in a viewer's way: one runs at a time, only while its
source (and provider account) has two free connections or more, so it
never takes the last one; none starts while a tune waits for a connection;
and when a tune needs the connection a check holds, the check is killed at
once (the channel manager asks, :meth:`IdleChecker.release`).
"""

from collections import deque
from datetime import datetime

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from . import media
from .content import ContentMonitor, idle_verdict
from .ffmpeg import Encoding, FFmpegProcess, ffmpeg_command
from .health import OFFLINE, ONLINE
from .metrics import MetricsListener
from .mpegts import PES, VIDEO, CLOCK_HZ, TSReader
from .observations import Measurement, url_digest
from .periodic import periodic
from .probe import probe
from .processes import spawn
from .timeline import unwrap

log = Logger()

# Seconds of picture and sound an idle check reads after ffprobe.
CHECK_SECONDS = 8.0

# Seconds between two looks for a stream to check (one check at a time).
TICK_SECONDS = 15.0

# No check in the first minutes after the daemon starts: it has tunes to
# serve, and a restart should not set every provider's streams probing.
START_DELAY_SECONDS = 600.0

# Free connections a source (and account) must have for a check to start:
# the check takes one and never the last.
SPARE_SLOTS = 2

# A check that has not finished after this long is stopped, seconds.
CHECK_TIMEOUT_SECONDS = 60.0

# Results kept for the status page.
KEEP_RESULTS = 10

# The list of streams due is worked out again at most this often (a table
# may hold tens of thousands), seconds; sooner when the table is reloaded.
DUE_LIST_SECONDS = 300.0

# A stream delivering less than this many seconds of media failed the check.
MIN_MEDIA_SECONDS = 2.0

STOPPED = "stopped"


def parse_checked(text):
    """
    ``Last-checked-time`` text (ISO 8601, as the table holds it) as epoch
    seconds, or None.
    """
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.timestamp()


def due_candidates(candidates, now, period, last_checked, running):
    """
    The candidates due for a check, most overdue first: not of a running
    channel, and not checked (by a run or a check) within ``period``
    seconds of ``now``.  ``last_checked(candidate)`` gives epoch seconds or
    None (never: first of all).
    """
    due = []
    for candidate in candidates:
        if candidate.channel_id in running:
            continue
        last = last_checked(candidate)
        if last is not None and now - last < period:
            continue
        due.append((last is not None, last or 0.0, candidate.rowid, candidate))
    due.sort(key=lambda entry: entry[:3])
    return [entry[3] for entry in due]


class IdleCheck:
    """
    One check of ``candidate`` on ``slot``: ffprobe, then ffmpeg for
    :data:`CHECK_SECONDS`.  ``done(check)`` is called once when it is over;
    then :attr:`status` is the health status found (or ``stopped``),
    :attr:`reason` says why it is not ``online`` and :attr:`measurement`
    holds what was measured.
    """

    def __init__(self, candidate, slot, *, settings, reactor, done):
        self.candidate = candidate
        self.slot = slot
        self.settings = settings
        self.reactor = reactor
        self.done = done
        self.started_at = reactor.seconds()
        self.phase = "ffprobe"
        self.status = None
        self.reason = None
        self.measurement = None
        self.checks = settings.content_checks.for_channel(candidate.channel_id)
        self.content = ContentMonitor(self.checks) if self.checks is not None else None
        self._probe = None
        self._ffmpeg = None
        self._facts = None
        self._bytes = 0
        self._reader = TSReader()
        self._media_seconds = 0.0
        self._last_dts = None
        self._connection_reason = None
        self._timer = None
        self._stopping = False
        # Fires once the check is over and its processes have exited.
        self.finished = defer.Deferred()

    def start(self):
        """
        Run ffprobe; the rest follows from its verdict.
        """
        self._timer = self.reactor.callLater(CHECK_TIMEOUT_SECONDS, self.stop, "it took too long")
        try:
            d, self._probe = probe(self.reactor, self.settings, self.candidate.url, self.settings.segment_dir)
        except Exception as e:
            self._finish(OFFLINE, f"ffprobe could not start: {e}")
            return
        d.addCallback(self._probed)
        d.addErrback(lambda f: log.failure("idle check of {c}", f, c=self.candidate.label))

    def _probed(self, result):
        self._probe = None
        if self._stopping or self.status is not None:
            self._finish(STOPPED, self.reason)
            return
        if not result.ok:
            self._finish(OFFLINE, f"ffprobe: {result.reason}")
            return
        self._facts = result.facts
        self.phase = "content"
        argv = ffmpeg_command(self.settings, self.candidate.url, Encoding(), self.checks, seconds=CHECK_SECONDS)
        self._ffmpeg = FFmpegProcess(self, f"{self.candidate.label} (idle check)", decoding=self.checks is not None)
        try:
            spawn(self.reactor, self._ffmpeg, argv, self.settings.segment_dir, extra_fds=(3,))
        except Exception as e:
            self._ffmpeg = None
            self._finish(OFFLINE, f"could not start ffmpeg: {e}")

    # What ffmpeg finds (FFmpegProcess's observer).

    def ffmpeg_report(self, facts):
        if facts.width is not None:
            self._facts = facts

    def ffmpeg_event(self, event):
        if event.kind in (media.EventKind.HTTP_ERROR, media.EventKind.CONNECTION_FAILED):
            if self._connection_reason is None:
                self._connection_reason = media.describe_event(event)

    def ffmpeg_progress(self, progress):
        pass

    def ffmpeg_content(self, event):
        if self.content is not None:
            self.content.feed(event)

    def ffmpeg_media(self, data):
        self._bytes += len(data)
        for unit in self._reader.feed(data):
            if unit.kind == PES and unit.stream == VIDEO and unit.dts is not None:
                if self._last_dts is not None:
                    position = unwrap(unit.dts, self._last_dts)
                    if position > self._last_dts:
                        self._media_seconds += (position - self._last_dts) / CLOCK_HZ
                    self._last_dts = position
                else:
                    self._last_dts = unit.dts

    def ffmpeg_ended(self, process):
        self._ffmpeg = None
        if self._stopping:
            self._finish(STOPPED, self.reason)
            return
        if self._media_seconds < MIN_MEDIA_SECONDS:
            detail = self._connection_reason or process.last_error() or "no media"
            self._finish(OFFLINE, f"{self._media_seconds:.0f} s of media in {CHECK_SECONDS:g} s ({detail})")
            return
        kbps = round(self._bytes * 8 / 1000 / self._media_seconds)
        facts = self._facts
        self.measurement = Measurement(
            facts.width if facts else None, facts.height if facts else None, facts.fps if facts else None,
            kbps, self.reactor.seconds(), url_digest(self.candidate.url),
        )
        fault = idle_verdict(self.checks, self.content, self._media_seconds) if self.content else None
        if fault is not None:
            self._finish(fault.kind, fault.reason)
            return
        self._finish(ONLINE, None)

    # Ending.

    def stop(self, why):
        """
        End the check now (a tune needs its connection, or it took too
        long): its processes are killed, not asked.
        """
        if self.status is not None or self._stopping:
            return
        self._stopping = True
        self.reason = why
        running = [p for p in (self._probe, self._ffmpeg) if p is not None]
        if not running:
            self._finish(STOPPED, why)
            return
        for process in running:
            process.signal("KILL")

    def _finish(self, status, reason):
        if self.status is not None:
            return
        self.status = status
        self.reason = reason
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.slot.release()
        self.done(self)
        self.finished.callback(self)

    def describe(self):
        """
        What the status page shows of this check.
        """
        return {
            "candidate": self.candidate.label,
            "source": self.candidate.source,
            "channel_id": self.candidate.channel_id,
            "since": self.started_at,
            "phase": self.phase,
            "status": self.status,
            "reason": self.reason,
            "measured": self.measurement.describe() if self.measurement is not None else None,
        }


class IdleChecker(MultiService):
    """
    Checks the candidates nobody watches, one at a time, every
    ``settings.idle_check_hours``.

    ``store`` gives the catalog; ``slots`` the connections; ``running()``
    the ids of the channels playing now (their candidates are left alone);
    ``health`` is told each result (``stream_checked``,
    ``stream_measured``) and ``observations`` (its
    :class:`~streamproxy.observations.Observations`) say when each stream
    was last seen.
    """

    name = "idle-checks"

    def __init__(self, settings, store, slots, running, health, observations, reactor=None, metrics=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.store = store
        self.slots = slots
        self.running_channels = running
        self.health = health
        self.observations = observations
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else MetricsListener()
        self.period = settings.idle_check_hours * 3600.0
        self.check = None
        self.results = deque(maxlen=KEEP_RESULTS)
        self.count = 0
        self.started_at = None
        self._table_times = (None, {})
        self._due = (None, None, [])  # (catalog, when worked out, candidates due)
        periodic(TICK_SECONDS, self.tick, "the idle checks", reactor).setServiceParent(self)

    def startService(self):
        """
        Start looking for streams to check (the first after
        :data:`START_DELAY_SECONDS`).
        """
        self.started_at = self.reactor.seconds()
        super().startService()

    def stopService(self):
        """
        Stop looking, and stop a check under way; fires once its processes
        have exited.
        """
        d = super().stopService()
        check = self.check
        if check is None:
            return d
        check.stop("the daemon is shutting down")
        ended = defer.Deferred()
        check.finished.addBoth(lambda result: (ended.callback(None), result)[1])
        return defer.DeferredList([d, ended], consumeErrors=True)

    def last_checked(self, candidate):
        """
        When ``candidate`` was last seen working or failing (a run, a check,
        or the table's ``Last-checked-time``), epoch seconds, or None.
        """
        catalog = self.store.catalog
        if self._table_times[0] is not catalog:
            self._table_times = (catalog, {c.rowid: parse_checked(c.last_checked) for c in catalog.candidates})
        table = self._table_times[1].get(candidate.rowid)
        seen = self.observations.seen_at(candidate.rowid)
        if seen is None:
            return table
        return seen if table is None else max(seen, table)

    def tick(self):
        """
        Start the next check if one is due and nothing is in the way.
        """
        now = self.reactor.seconds()
        if self.check is not None or self.period <= 0:
            return
        if self.started_at is not None and now - self.started_at < START_DELAY_SECONDS:
            return
        if self.slots.waiting():
            return
        running = self.running_channels()
        for candidate in self._due_now(now):
            if candidate.channel_id in running:
                continue
            last = self.last_checked(candidate)
            if last is not None and now - last < self.period:
                continue  # it ran meanwhile
            if not self.slots.has_room(candidate.source, extra=SPARE_SLOTS, account=candidate.account):
                continue
            slot = self.slots.acquire(candidate.source, "idle check", account=candidate.account)
            if slot is None:
                continue
            self._due[2].remove(candidate)
            self._start(candidate, slot)
            return

    def _due_now(self, now):
        """
        The streams due, most overdue first, from a list worked out at most
        every :data:`DUE_LIST_SECONDS` (each is dropped from it when its
        check starts).
        """
        catalog, when, due = self._due
        if catalog is not self.store.catalog or when is None or now - when >= DUE_LIST_SECONDS:
            due = due_candidates(self.store.catalog.candidates, now, self.period, self.last_checked, set())
            self._due = (self.store.catalog, now, due)
        return list(due)

    def _start(self, candidate, slot):
        log.info("Idle check of {candidate} (channel {channel_id})", candidate=candidate.label,
                 channel_id=candidate.channel_id)
        self.check = IdleCheck(candidate, slot, settings=self.settings, reactor=self.reactor, done=self._done)
        self.check.start()

    def release(self, sources):
        """
        Stop the check under way if it holds a connection of one of
        ``sources`` (a tune waits for one); returns whether it did.
        """
        check = self.check
        if check is None or check.candidate.source not in sources or check.status is not None:
            return False
        log.info("Idle check of {candidate} stopped: a tune needs its connection", candidate=check.candidate.label)
        check.stop("a tune needed its connection")
        return True

    def _done(self, check):
        if self.check is check:
            self.check = None
        self.count += 1
        self.results.appendleft(check.describe())
        self.metrics.idle_check(check.candidate.source, check.status)
        if check.status == STOPPED:
            return
        try:
            if check.measurement is not None:
                self.health.stream_measured(check.candidate, check.measurement)
            self.health.stream_checked(check.candidate, check.status)
        except Exception:
            log.failure("Recording the idle check of {candidate}", candidate=check.candidate.label)
        log.info(
            "Idle check of {candidate}: {status}{reason}{measured}",
            candidate=check.candidate.label, status=check.status,
            reason=f" ({check.reason})" if check.reason else "",
            measured=f"; {check.measurement.describe()}" if check.measurement is not None else "",
            channel_id=check.candidate.channel_id,
        )

    def status(self):
        """
        What the status page shows: whether checks run and how often, the
        check under way and the last results.
        """
        return {
            "enabled": self.period > 0,
            "hours": self.settings.idle_check_hours,
            "checking": self.check.describe() if self.check is not None else None,
            "checked": self.count,
            "recent": list(self.results),
        }
