"""
How each candidate stream has been doing, kept in its row of the table:
``Stream-status``, ``Last-checked-time``, ``Uptime`` and ``Downtime``.

Sessions report what happens to their streams (validated, live, buffering,
failed, stopped) to a :class:`HealthRecorder`.  It only notes the change in
memory; every few seconds it writes all pending changes in one short
transaction through the store's connection pool, so a burst of events never
delays serving and never keeps the database busy against a refresh.  The
in-memory catalog is not reloaded: the values rank candidates from the next
``/refresh_db_cache`` on.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .observations import CREATE_MEASUREMENTS, UPSERT_MEASUREMENT, Observations, measurement_rows, read_measurements
from .periodic import guarded

log = Logger()

# Seconds between two writes of pending health changes.
FLUSH_INTERVAL_SECONDS = 5.0

ONLINE = "online"
OFFLINE = "offline"
BUFFERING = "buffering"
UNKNOWN = "unknown"
# A stream that played but showed a black or frozen picture, or no sound,
# longer than content_checks allows (see streamproxy.content).
BLACK = "black"
FROZEN = "frozen"
SILENT = "silent"
CONTENT_STATUSES = (BLACK, FROZEN, SILENT)

UPDATE_ROW = (
    'UPDATE LiveStreams SET "Stream-status" = ?, "Last-checked-time" = ?, '
    '"Uptime" = COALESCE("Uptime", 0) + ?, "Downtime" = COALESCE("Downtime", 0) + ? '
    "WHERE rowid = ?"
)


def iso_utc(seconds):
    """
    ``seconds`` since the epoch as ISO 8601 UTC text, e.g. ``2024-05-01T12:00:00Z``.
    """
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PendingUpdate:
    """
    What is to be written to one row at the next flush: the latest status
    and check time, and seconds to add to its Uptime and Downtime.
    """

    status: str
    checked: float
    up: float = 0.0
    down: float = 0.0

    def merge(self, newer):
        """
        This update followed by ``newer``: the newer status, both durations.
        """
        return PendingUpdate(newer.status, newer.checked, self.up + newer.up, self.down + newer.down)


def row_values(rowid, update, carry):
    """
    The parameters of :data:`UPDATE_ROW` for ``update``: whole seconds
    only.  ``carry`` is ``(up, down)`` fractions left from earlier flushes;
    returns ``(parameters, new carry)`` so no second is lost to rounding.
    """
    up = update.up + carry[0]
    down = update.down + carry[1]
    whole_up, whole_down = int(up), int(down)
    return (
        (update.status, iso_utc(update.checked), whole_up, whole_down, rowid),
        (up - whole_up, down - whole_down),
    )


def write_updates(cursor, rows, measurements=()):
    """
    Apply ``rows`` (parameter tuples of :data:`UPDATE_ROW`) and
    ``measurements`` (of :data:`~streamproxy.observations.UPSERT_MEASUREMENT`)
    in the database thread, as one transaction.
    """
    cursor.executemany(UPDATE_ROW, rows)
    if measurements:
        cursor.execute(CREATE_MEASUREMENTS)
        cursor.executemany(UPSERT_MEASUREMENT, measurements)


class HealthListener:
    """
    What a channel tells about its streams' health; every call does
    nothing here.  :class:`HealthRecorder` writes it to the table.
    """

    def stream_validated(self, candidate):
        """
        ``candidate`` carries usable audio and video.
        """

    def stream_started(self, candidate):
        """
        ``candidate``'s media is going out to viewers.
        """

    def stream_buffering(self, candidate):
        """
        ``candidate`` had a buffering event while playing.
        """

    def stream_failed(self, candidate, reason, seconds_failing=0.0):
        """
        ``candidate`` failed for ``reason`` after ``seconds_failing`` of not working.
        """

    def stream_stopped(self, candidate, seconds_live=None):
        """
        ``candidate`` was stopped while working.
        """

    def stream_content_fault(self, candidate, kind, seconds_failing=0.0):
        """
        ``candidate`` showed a fault of ``kind`` (``black``, ``frozen``,
        ``silent``) for ``seconds_failing`` and was given up.
        """

    def stream_checked(self, candidate, status):
        """
        An idle check of ``candidate`` found it ``status``.
        """

    def stream_measured(self, candidate, measurement):
        """
        ``candidate``'s facts were measured (a
        :class:`~streamproxy.observations.Measurement`).
        """

    def stream_described(self, candidate, facts, encoding):
        """
        ``candidate`` was judged usable: its input carries ``facts`` (a
        :class:`~streamproxy.media.StreamFacts`) and it is served with
        ``encoding`` (a :class:`~streamproxy.ffmpeg.Encoding`).
        """


class HealthListeners(HealthListener):
    """
    Several listeners told of every event in turn; one that raises is
    logged and the others are still told.
    """

    def __init__(self, *listeners):
        self.listeners = tuple(listener for listener in listeners if listener is not None)

    def _each(self, event, *args):
        for listener in self.listeners:
            try:
                getattr(listener, event)(*args)
            except Exception:
                log.failure("{listener!r} handling {event}", listener=listener, event=event)

    def stream_validated(self, candidate):
        self._each("stream_validated", candidate)

    def stream_started(self, candidate):
        self._each("stream_started", candidate)

    def stream_buffering(self, candidate):
        self._each("stream_buffering", candidate)

    def stream_failed(self, candidate, reason, seconds_failing=0.0):
        self._each("stream_failed", candidate, reason, seconds_failing)

    def stream_stopped(self, candidate, seconds_live=None):
        self._each("stream_stopped", candidate, seconds_live)

    def stream_described(self, candidate, facts, encoding):
        self._each("stream_described", candidate, facts, encoding)

    def stream_content_fault(self, candidate, kind, seconds_failing=0.0):
        self._each("stream_content_fault", candidate, kind, seconds_failing)

    def stream_checked(self, candidate, status):
        self._each("stream_checked", candidate, status)

    def stream_measured(self, candidate, measurement):
        self._each("stream_measured", candidate, measurement)


class _Run:
    """
    A live stream: its time is counted as Uptime up to ``accrued_to``.
    """

    def __init__(self, started, status):
        self.started = started
        self.accrued_to = started
        self.status = status


class HealthRecorder(Service, HealthListener):
    """
    Collects stream health events and writes them to the table in batches.

    ``store`` provides ``run_interaction(function, *args)``.  The session
    calls ``stream_validated``, ``stream_started``, ``stream_buffering``,
    ``stream_failed`` and ``stream_stopped`` with the candidate concerned.
    Uptime of a stream that is live is added at every flush, so a daemon
    that stops (or dies) loses at most one flush interval of it.
    """

    name = "health"

    def __init__(self, store, reactor=None, interval=FLUSH_INTERVAL_SECONDS, observations=None):
        if reactor is None:
            from twisted.internet import reactor
        self._store = store
        self._reactor = reactor
        self.interval = interval
        self.observations = observations if observations is not None else Observations()
        self.pending = {}
        self.pending_measurements = {}
        self._carry = {}
        self._live = {}
        self._flushing = None
        self._write_error = None
        self._loop = LoopingCall(guarded(self.flush, "Saving stream health"))
        self._loop.clock = reactor

    # Service.

    def startService(self):
        """
        Start the periodic flush and read the measured facts kept from
        earlier runs.
        """
        super().startService()
        self._loop.start(self.interval, now=False)
        d = defer.maybeDeferred(self._store.run_interaction, read_measurements)
        d.addCallback(self.observations.load)
        d.addErrback(lambda f: log.warn("Could not read the measured stream facts: {error}",
                                        error=f.getErrorMessage()))
        # Fires once they are read (or could not be).
        self.measurements_read = d

    def stopService(self):
        """
        Stop the periodic flush and write what is pending; fires when written.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        return self.flush()

    # Events from sessions.

    def stream_validated(self, candidate):
        """
        ``candidate`` carries usable audio and video.
        """
        self._note(candidate.rowid, ONLINE)

    def stream_started(self, candidate):
        """
        ``candidate``'s media is going out: it counts as up from now.
        """
        self._live[candidate.rowid] = _Run(self._reactor.seconds(), ONLINE)
        self._note(candidate.rowid, ONLINE)

    def stream_buffering(self, candidate):
        """
        ``candidate`` had a buffering event while playing; that stays its
        status for the rest of the run.
        """
        run = self._live.get(candidate.rowid)
        if run is not None:
            run.status = BUFFERING
        self._note(candidate.rowid, BUFFERING)

    def stream_failed(self, candidate, reason, seconds_failing=0.0):
        """
        ``candidate`` failed for ``reason``; ``seconds_failing`` is how long it
        was seen not working before being given up (stalled, or trying to start).
        """
        now = self._reactor.seconds()
        seconds_failing = max(0.0, float(seconds_failing or 0.0))
        run = self._live.pop(candidate.rowid, None)
        up = 0.0
        if run is not None:
            # Negative when a flush already counted part of the failing time
            # as up: that part is taken back.
            up = max(now - seconds_failing, run.started) - run.accrued_to
        self._note(candidate.rowid, OFFLINE, up=up, down=seconds_failing)

    def stream_stopped(self, candidate, seconds_live=None):
        """
        ``candidate`` was stopped while working (nobody watching, a switch on
        request, shutdown); its status stays what the run had.
        ``seconds_live`` counts only for a run this recorder did not see start.
        """
        run = self._live.get(candidate.rowid)
        if run is None:
            self._note(candidate.rowid, ONLINE, up=max(0.0, float(seconds_live or 0.0)))
            return
        self._note(candidate.rowid, run.status)
        del self._live[candidate.rowid]

    def stream_content_fault(self, candidate, kind, seconds_failing=0.0):
        """
        ``candidate`` showed a black or frozen picture, or no sound, for
        ``seconds_failing`` and was given up: its status says which
        (``black``, ``frozen``, ``silent``) and those seconds count as
        down, as for :meth:`stream_failed`.
        """
        self.stream_failed(candidate, kind, seconds_failing)
        self._note(candidate.rowid, kind)

    def stream_checked(self, candidate, status):
        """
        An idle check found ``candidate`` ``status`` (``online``,
        ``offline``, ``black``...); only its status and check time change.
        """
        if candidate.rowid in self._live:
            return  # it plays meanwhile: the run tells more
        self._note(candidate.rowid, status)

    def stream_measured(self, candidate, measurement):
        """
        Keep ``measurement`` for ranking and write it at the next flush.
        """
        self.observations.note_measurement(candidate.rowid, measurement)
        self.pending_measurements[candidate.rowid] = measurement

    # Bookkeeping.

    def _note(self, rowid, status, up=0.0, down=0.0):
        now = self._reactor.seconds()
        self.observations.note_status(rowid, status, now)
        run = self._live.get(rowid)
        if run is not None and now > run.accrued_to:
            # A live run's time is counted up to now; the rest from here.
            up += now - run.accrued_to
            run.accrued_to = now
        update = PendingUpdate(status, now, up, down)
        previous = self.pending.get(rowid)
        self.pending[rowid] = previous.merge(update) if previous is not None else update

    def _accrue_live(self):
        for rowid, run in list(self._live.items()):
            self._note(rowid, run.status)

    # Writing.

    def flush(self):
        """
        Write every pending change in one transaction; a Deferred that fires
        when written.  Never fails: a failed write is logged and kept for
        the next flush.
        """
        if self._flushing is not None:
            # Changes noted since that write began go in the next one.
            after = defer.Deferred()
            self._flushing.addBoth(lambda _: self.flush().chainDeferred(after))
            return after
        self._accrue_live()
        if not self.pending and not self.pending_measurements:
            return defer.succeed(None)
        batch, self.pending = self.pending, {}
        measured, self.pending_measurements = self.pending_measurements, {}
        rows = []
        carry = {}
        for rowid, update in sorted(batch.items()):
            values, carry[rowid] = row_values(rowid, update, self._carry.get(rowid, (0.0, 0.0)))
            rows.append(values)
        d = defer.maybeDeferred(self._store.run_interaction, write_updates, rows, measurement_rows(measured))

        def written(_):
            self._carry.update(carry)
            if self._write_error is not None:
                self._write_error = None
                log.info("Stream health is being saved again")

        def failed(failure):
            if failure.getErrorMessage() != self._write_error:
                # Once per kind of problem, not at every flush.
                self._write_error = failure.getErrorMessage()
                log.warn(
                    "Could not save the health of {count} stream(s): {error}; "
                    "keeping it to retry every {interval:g} s",
                    count=len(batch),
                    error=self._write_error,
                    interval=self.interval,
                )
            for rowid, update in batch.items():
                newer = self.pending.get(rowid)
                self.pending[rowid] = update.merge(newer) if newer is not None else update
            for rowid, measurement in measured.items():
                self.pending_measurements.setdefault(rowid, measurement)

        def done(_):
            self._flushing = None

        d.addCallbacks(written, failed)
        d.addBoth(done)
        if not d.called:
            self._flushing = d
        return d
