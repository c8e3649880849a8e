"""
Tests of stream health bookkeeping: the recorder's batching against a real
temporary SQLite database, and the session's reports to it.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamproxy.health import HealthListener, FLUSH_INTERVAL_SECONDS, HealthRecorder, PendingUpdate, iso_utc, row_values
from streamproxy.store import ChannelStore, StoreError

from .helpers import candidate, make_database, row
from .test_session import Harness

# 2024-05-01T12:00:00Z
START = 1714564800.0


class PureTests(SynchronousTestCase):
    """
    The pure helpers: time format, merging, whole seconds.
    """

    def test_iso_utc(self):
        """
        Times are written as ISO 8601 in UTC, to the second.
        """
        self.assertEqual(iso_utc(START), "2024-05-01T12:00:00Z")
        self.assertEqual(iso_utc(START + 61.9), "2024-05-01T12:01:01Z")

    def test_merge(self):
        """
        A newer update's status and time win; durations add up.
        """
        merged = PendingUpdate("online", 1.0, up=3.0).merge(PendingUpdate("offline", 2.0, down=4.0))
        self.assertEqual(merged, PendingUpdate("offline", 2.0, 3.0, 4.0))

    def test_fractions_carry_over(self):
        """
        Only whole seconds are written; the fractions wait for the next write.
        """
        values, carry = row_values(9, PendingUpdate("online", START, up=2.7, down=0.4), (0.0, 0.0))
        self.assertEqual(values, ("online", "2024-05-01T12:00:00Z", 2, 0, 9))
        values, carry = row_values(9, PendingUpdate("online", START, up=0.5, down=0.7), carry)
        self.assertEqual(values[2:4], (1, 1))
        self.assertAlmostEqual(carry[0], 0.2)
        self.assertAlmostEqual(carry[1], 0.1)


class CountingStore:
    """
    Wraps a store, counting transactions; can be told to fail them.
    """

    def __init__(self, store):
        self.store = store
        self.transactions = 0
        self.broken = None

    def run_interaction(self, function, *args, **kwargs):
        """
        Count the transaction and run it (or fail it when broken).
        """
        self.transactions += 1
        if self.broken is not None:
            return defer.fail(StoreError(self.broken))
        return self.store.run_interaction(function, *args, **kwargs)


class RecorderTests(TestCase):
    """
    The recorder writing to a real database through the store's pool.
    """

    def setUp(self):
        self.path = make_database(
            os.path.abspath(self.mktemp()),
            [
                row(1, "http://127.0.0.1:1/1.ts", uptime=100, downtime=10),
                row(2, "http://127.0.0.1:1/2.ts"),
                row(3, "http://127.0.0.1:1/3.ts", stream_status="online"),
            ],
        )
        self.store = ChannelStore(self.path)
        self.store.startService()
        self.addCleanup(self.store.stopService)
        self.counting = CountingStore(self.store)
        self.clock = Clock()
        self.clock.advance(START)
        # Not started: the tests flush by hand (test_periodic_flush excepted),
        # so Clock jumps do not run the loop at odd times.
        self.recorder = HealthRecorder(self.counting, reactor=self.clock)
        self.addCleanup(self.stop_recorder)
        self.lines = []

        def observe(event):
            """
            Keep the formatted log lines of the recorder.
            """
            if event.get("log_namespace") == "streamproxy.health":
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def stop_recorder(self):
        """
        Stop the recorder, or flush it when it was never started.
        """
        if self.recorder.running:
            return self.recorder.stopService()
        return self.recorder.flush()

    def rows(self):
        """
        The health columns of every row, by rowid, read directly.
        """
        connection = sqlite3.connect(self.path)
        try:
            return {
                r[0]: r[1:]
                for r in connection.execute(
                    'SELECT rowid, "Stream-status", "Last-checked-time", "Uptime", "Downtime" FROM LiveStreams'
                )
            }
        finally:
            connection.close()

    def flush(self):
        """
        Let the flush interval pass; a Deferred firing once written.
        """
        self.clock.advance(FLUSH_INTERVAL_SECONDS)
        return self.recorder.flush()

    @defer.inlineCallbacks
    def test_nothing_is_written_before_the_flush(self):
        """
        Events only touch memory; the row changes at the flush.
        """
        self.recorder.stream_started(candidate(1))
        self.assertEqual(self.rows()[1], (None, None, 100, 10))
        self.assertEqual(self.counting.transactions, 0)
        yield self.flush()
        self.assertEqual(self.rows()[1], ("online", iso_utc(START + 5), 105, 10))

    @defer.inlineCallbacks
    def test_live_then_stopped(self):
        """
        A stream live for 12.4 s and stopped adds 12 s of Uptime and stays online.
        """
        self.recorder.stream_validated(candidate(2))
        self.clock.advance(0.5)
        self.recorder.stream_started(candidate(2))
        self.clock.advance(12.4)
        self.recorder.stream_stopped(candidate(2), 12.4)
        yield self.recorder.flush()
        self.assertEqual(self.rows()[2], ("online", iso_utc(START + 12.9), 12, 0))

    @defer.inlineCallbacks
    def test_live_time_is_written_while_live(self):
        """
        A stream that keeps playing has its Uptime and check time written at
        every flush, not only when it ends.
        """
        self.recorder.stream_started(candidate(2))
        yield self.flush()
        self.assertEqual(self.rows()[2], ("online", iso_utc(START + 5), 5, 0))
        yield self.flush()
        self.assertEqual(self.rows()[2], ("online", iso_utc(START + 10), 10, 0))

    @defer.inlineCallbacks
    def test_failure_to_start(self):
        """
        A stream that failed to start after 15 s is offline with 15 s of Downtime.
        """
        self.clock.advance(15)
        self.recorder.stream_failed(candidate(3), "no first segment within 15 s", 15.0)
        yield self.recorder.flush()
        self.assertEqual(self.rows()[3], ("offline", iso_utc(START + 15), 0, 15))

    @defer.inlineCallbacks
    def test_stall_after_playing(self):
        """
        A stream that played 60 s and then stalled for 4 s: 60 s up, 4 s down.
        """
        self.recorder.stream_started(candidate(1))
        self.clock.advance(64)
        self.recorder.stream_failed(candidate(1), "stalled: no new media for 4 s", 4.0)
        yield self.recorder.flush()
        self.assertEqual(self.rows()[1], ("offline", iso_utc(START + 64), 160, 14))

    @defer.inlineCallbacks
    def test_buffering(self):
        """
        Buffering marks the stream buffering for the rest of its run, also
        when it then stops normally.
        """
        self.recorder.stream_started(candidate(3))
        self.clock.advance(2)
        self.recorder.stream_buffering(candidate(3))
        yield self.flush()
        self.assertEqual(self.rows()[3], ("buffering", iso_utc(START + 7), 7, 0))
        self.clock.advance(3)
        self.recorder.stream_stopped(candidate(3), 10)
        yield self.recorder.flush()
        self.assertEqual(self.rows()[3], ("buffering", iso_utc(START + 10), 10, 0))

    @defer.inlineCallbacks
    def test_burst_is_one_transaction(self):
        """
        A burst of events on many rows is written in one transaction, and
        a refresh of the catalog runs alongside without trouble.
        """
        for _ in range(300):
            for rowid in (1, 2, 3):
                self.recorder.stream_validated(candidate(rowid))
                self.recorder.stream_failed(candidate(rowid), "no first segment", 0.5)
        refresh = self.store.refresh()
        yield self.flush()
        catalog = yield refresh
        self.assertEqual(len(catalog.candidates), 3)
        self.assertEqual(self.counting.transactions, 1)
        self.assertEqual(self.rows()[1], ("offline", iso_utc(START), 100, 160))
        self.assertEqual(self.rows()[2], ("offline", iso_utc(START), 0, 150))
        catalog = yield self.store.refresh()
        self.assertEqual({c.rowid: c.status for c in catalog.candidates}, {1: "offline", 2: "offline", 3: "offline"})

    @defer.inlineCallbacks
    def test_failed_write_is_kept_and_logged_once(self):
        """
        When the database cannot be written, the changes are kept and
        written later; the problem is logged once, the recovery once.
        """
        self.counting.broken = "streams.db: the database is locked by another program"
        self.recorder.stream_failed(candidate(2), "gone", 3.0)
        yield self.flush()
        self.clock.advance(1)
        self.recorder.stream_failed(candidate(2), "gone", 2.0)
        yield self.flush()
        yield self.flush()
        self.assertEqual(self.rows()[2], (None, None, None, None))
        self.assertEqual(len([l for l in self.lines if "Could not save" in l]), 1, self.lines)
        self.counting.broken = None
        yield self.flush()
        self.assertEqual(self.rows()[2], ("offline", iso_utc(START + 6), 0, 5))
        self.assertEqual(len([l for l in self.lines if "saved again" in l]), 1, self.lines)

    @defer.inlineCallbacks
    def test_periodic_flush(self):
        """
        Once started (which reads the measured stream facts kept from
        earlier runs, one transaction), the recorder writes by itself every
        flush interval, and a flush asked for while one is being written
        follows it.
        """
        self.recorder.startService()
        self.assertEqual(self.counting.transactions, 1)
        self.recorder.stream_started(candidate(2))
        self.clock.advance(FLUSH_INTERVAL_SECONDS - 1)
        self.assertEqual(self.counting.transactions, 1)
        self.clock.advance(1)
        self.assertEqual(self.counting.transactions, 2)
        self.recorder.stream_failed(candidate(2), "stalled", 1.0)
        yield self.recorder.flush()
        self.assertEqual(self.counting.transactions, 3)
        self.assertEqual(self.rows()[2], ("offline", iso_utc(START + 5), 4, 1))

    @defer.inlineCallbacks
    def test_stop_writes_what_is_pending(self):
        """
        Stopping the recorder writes pending changes and the live time so far.
        """
        self.recorder.startService()
        self.recorder.stream_started(candidate(2))
        self.clock.advance(3)
        yield self.recorder.stopService()
        self.assertEqual(self.rows()[2], ("online", iso_utc(START + 3), 3, 0))


class FakeHealth:
    """
    Records what a session reports.
    """

    def __init__(self, clock):
        self.clock = clock
        self.calls = []

    def __getattr__(self, name):
        if not name.startswith("stream_"):
            raise AttributeError(name)
        if name == "stream_described":
            # The codecs a stream is served with: not health (see test_codec_memory).
            return lambda candidate, facts, encoding: None

        def record(candidate, *args):
            """
            Note the report with the time and rounded seconds.
            """
            self.calls.append((round(self.clock.seconds(), 1), name, candidate.rowid) + tuple(
                round(a, 1) if isinstance(a, float) else a for a in args
            ))

        return record


class SessionReportTests(Harness):
    """
    What a channel session reports about its streams.
    """

    def setUp(self):
        self.manager = self.make(
            [
                candidate(1, "7", source="a", url="http://127.0.0.1:1/a7.ts"),
                candidate(2, "7", source="b", url="http://127.0.0.1:2/b7.ts"),
            ],
            source_limits={"a": 1, "b": 1},
        )
        self.health = FakeHealth(self.reactor)
        self.manager.health = self.health

    def names(self):
        """
        The reports so far as ``(event, rowid)``.
        """
        return [call[1:3] for call in self.health.calls]

    def test_start_stall_failover_stop(self):
        """
        Validated and started when live; a stall reports a failure with the
        seconds without media; the next stream starts; stopping the channel
        reports the live stream stopped with its live time.
        """
        self.tune("7")
        first = self.ffmpegs()[0]
        self.go_live(first)
        self.assertEqual(self.names(), [("stream_validated", 1), ("stream_started", 1)])
        self.reactor.advance(10)
        self.assertEqual(self.health.calls[-1][1:3], ("stream_failed", 1))
        self.assertIn("stalled", self.health.calls[-1][3])
        self.assertGreaterEqual(self.health.calls[-1][4], 4.0)
        second = self.ffmpegs()[0]
        self.go_live(second)
        self.assertEqual(self.names()[-2:], [("stream_validated", 2), ("stream_started", 2)])
        started = self.health.calls[-1][0]
        self.progress(second, 2.0)
        self.reactor.advance(2)
        self.manager.stop_channel("7")
        self.reactor.advance(5)
        call = self.health.calls[-1]
        self.assertEqual(call[1:3], ("stream_stopped", 2))
        self.assertAlmostEqual(call[3], call[0] - started, delta=0.11)

    def test_forced_switch_is_not_a_failure(self):
        """
        A switch on request reports the stream stopped, not failed, once
        the next stream (started alongside) plays.
        """
        self.tune("7")
        self.go_live(self.ffmpegs()[0])
        self.manager.force_switch("7")
        self.go_live(self.ffmpegs()[-1])
        self.assertIn(("stream_stopped", 1), self.names())
        self.assertNotIn("stream_failed", [name for name, _ in self.names()])

    def test_health_errors_do_not_disturb(self):
        """
        A health recorder that raises does not stop the channel playing.
        """

        class Broken:
            """
            A health recorder that raises at every report.
            """
            def __getattr__(self, name):
                def fail(*args):
                    """
                    Raise.
                    """
                    raise RuntimeError("health is broken")

                return fail

        self.manager.health = Broken()
        d = self.tune("7")
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(d)
        self.assertEqual(self.manager.session("7").state.value, "live")
        # validated, described (the codecs) and started
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)
        self.manager.session("7").health = HealthListener()
