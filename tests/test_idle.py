"""
Unit tests of the idle checks: which stream is checked when, the check
itself (ffprobe, then a few seconds of content, played by hand through the
fake process reactor), what it records, and that a tune always wins over a
check.  Time is a Clock.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.health import HealthListener
from streamproxy.idle import (
    CHECK_SECONDS, START_DELAY_SECONDS, TICK_SECONDS, IdleChecker, due_candidates, parse_checked,
)
from streamproxy.metrics import MetricsListener
from streamproxy.observations import Observations

from .helpers import candidate
from .test_content_session import Recorder, meta, tick
from .test_session import Harness

NOW = 1_700_000_000.0


class DueTests(SynchronousTestCase):
    """
    Which streams are due, in which order.
    """

    def test_order(self):
        """
        Never-checked streams first, then the longest unchecked; streams
        checked within the period and those of running channels are left.
        """
        streams = [candidate(1, "1"), candidate(2, "2"), candidate(3, "3"), candidate(4, "4"), candidate(5, "5")]
        last = {1: NOW - 7200, 2: None, 3: NOW - 100, 4: NOW - 90000, 5: None}
        due = due_candidates(streams, NOW, 3600, lambda c: last[c.rowid], running={"5"})
        self.assertEqual([c.rowid for c in due], [2, 4, 1])

    def test_parse_checked(self):
        """
        The table's Last-checked-time, ISO 8601 UTC, or None.
        """
        self.assertEqual(parse_checked("2023-11-14T22:13:20Z"), NOW)
        self.assertIsNone(parse_checked(""))
        self.assertIsNone(parse_checked("yesterday"))
        self.assertIsNone(parse_checked("2023-11-14T22:13:20"))


class IdleHarness(Harness):
    """
    A manager, and an idle checker over the same slots and catalog.
    """

    def setUp(self):
        self.streams = [
            candidate(1, "1", source="a", url="http://127.0.0.1:1/a1.ts"),
            candidate(2, "2", source="a", url="http://127.0.0.1:1/a2.ts"),
            candidate(3, "3", source="b", url="http://127.0.0.1:2/b3.ts"),
        ]
        self.source_of = {c.url: c.source for c in self.streams}
        manager = self.make(self.streams, source_limits={"a": 2, "b": 1}, idle_check_hours=1,
                            stream_start_timeout=10)
        self.reactor.advance(NOW - self.reactor.seconds())
        self.health = Recorder(HealthListener())
        self.metrics = Recorder(MetricsListener())
        self.observations = Observations()
        self.checker = IdleChecker(self.config, manager.store, self.slots, manager.running_channels,
                                   self.health, self.observations, reactor=self.reactor, metrics=self.metrics)
        manager.idle_checks = self.checker
        self.checker.startService()
        self.addCleanup(self.stop_checker)

    def stop_checker(self):
        if self.checker.running:
            d = self.checker.stopService()
            self.reactor.advance(5)
            return d

    def past_start_delay(self):
        """
        As if the daemon had started long ago; the checker looks now.
        """
        self.checker.started_at -= START_DELAY_SECONDS
        self.checker.tick()

    def check_content(self, process, seconds=CHECK_SECONDS, black=False):
        """
        The check's ffmpeg reads ``seconds`` of media (black from the start
        when ``black``) and exits.
        """
        self.report(process)
        tick(process, 0)
        if black:
            meta(process, "black_start", 0)
        self.media(process, seconds)
        tick(process, seconds)
        process.exit(0)


class IdleCheckTests(IdleHarness):
    """
    One check from start to finish.
    """

    def test_nothing_in_the_first_minutes(self):
        """
        No check starts before START_DELAY_SECONDS after the start.
        """
        self.reactor.advance(START_DELAY_SECONDS - TICK_SECONDS)
        self.assertEqual(self.reactor.running(), [])
        self.reactor.advance(2 * TICK_SECONDS)
        self.assertEqual(len(self.probes()), 1)
        self.assertEqual(len(self.reactor.running()), 1)

    def test_probe_then_content_then_health(self):
        """
        ffprobe first, then ffmpeg for CHECK_SECONDS with the content
        checks, on one connection; the stream's health says online and
        its measured facts are kept; the connection is given back.
        """
        self.past_start_delay()
        probe = self.probes()[0]
        self.assertEqual(self.url_of(probe), "http://127.0.0.1:1/a1.ts")
        self.assertEqual(self.in_use(), {"a": 1})
        self.probe_ok(probe)
        ffmpeg = self.ffmpegs()[0]
        self.assertEqual(ffmpeg.command[ffmpeg.command.index("-t") + 1], f"{CHECK_SECONDS:g}")
        self.assertIn("blackdetect", " ".join(ffmpeg.command))
        self.assertEqual(self.in_use(), {"a": 1})
        self.check_content(ffmpeg)
        self.assertEqual(self.in_use(), {})
        checked = self.health.named("stream_checked")
        self.assertEqual([(c.rowid, status) for c, status in checked], [(1, "online")])
        measured = self.health.named("stream_measured")[0][1]
        self.assertEqual((measured.width, measured.height, measured.fps), (320, 180, 25.0))
        self.assertGreater(measured.kbps, 0)
        self.assertEqual(self.metrics.named("idle_check"), [("a", "online")])
        self.assertEqual(self.checker.status()["recent"][0]["status"], "online")

    def test_one_at_a_time_then_the_next(self):
        """
        While a check runs no other starts; the next tick after it checks
        the next stream (not the one just checked).
        """
        self.past_start_delay()
        self.checker.tick()
        self.checker.tick()
        self.assertEqual(len(self.reactor.running()), 1)
        self.probes()[0].exit(1)
        self.assertEqual(self.health.named("stream_checked")[0][1], "offline")
        self.observations.note_status(1, "offline", self.reactor.seconds())
        self.checker.tick()
        self.assertEqual(self.url_of(self.probes()[0]), "http://127.0.0.1:1/a2.ts")

    def test_black_stream(self):
        """
        A stream black for the whole sample is recorded as black.
        """
        self.past_start_delay()
        self.probe_ok(self.probes()[0])
        self.check_content(self.ffmpegs()[0], black=True)
        self.assertEqual(self.health.named("stream_checked")[0][1], "black")

    def test_no_media_is_offline(self):
        """
        ffmpeg ending with barely any media is offline, with the reason.
        """
        self.past_start_delay()
        self.probe_ok(self.probes()[0])
        ffmpeg = self.ffmpegs()[0]
        ffmpeg.stderr("[http @ 0x1] [error] HTTP error 404 Not Found\n")
        ffmpeg.exit(1)
        self.assertEqual(self.health.named("stream_checked")[0][1], "offline")
        self.assertIn("HTTP 404", self.checker.status()["recent"][0]["reason"])


class SparingTests(IdleHarness):
    """
    A check never gets in a viewer's way.
    """

    def test_never_the_last_free_connection(self):
        """
        With one of source a's two connections in use, a's streams are not
        checked (a check would take the last); b (limit 1) never is.
        """
        self.tune("1")
        self.go_live(self.ffmpegs()[0], self.probes()[0] if self.probes() else None)
        self.assertEqual(self.in_use(), {"a": 1})
        self.past_start_delay()
        self.checker.tick()
        self.assertEqual(len(self.reactor.running()), 1)
        self.assertEqual(self.health.named("stream_checked"), [])

    def test_running_channels_are_left_alone(self):
        """
        The candidates of a running channel are not checked.
        """
        self.slots.set_limits({"a": 4, "b": 1})
        self.tune("1")
        self.past_start_delay()
        probes = [self.url_of(p) for p in self.probes()]
        self.assertNotIn("http://127.0.0.1:1/a1.ts", probes[1:])
        self.assertIn("http://127.0.0.1:1/a2.ts", probes)

    def test_a_tune_stops_a_check_at_once(self):
        """
        A check holding a connection a tune waits for is killed at once and
        the tune starts on its connection; the check is recorded as
        stopped, not as a result.
        """
        self.past_start_delay()
        self.probe_ok(self.probes()[0])
        check = self.ffmpegs()[0]
        self.assertEqual(self.url_of(check), "http://127.0.0.1:1/a1.ts")
        self.tune("2")
        self.assertEqual(self.in_use(), {"a": 2})
        viewer = [p for p in self.ffmpegs() if p is not check][0]
        self.go_live(viewer, self.probes()[0] if self.probes() else None)
        # A second tune finds source a full: the check gives way.
        d = self.tune("1")
        self.reactor.advance(0)
        self.assertEqual(check.signals, ["KILL"])
        self.assertTrue(check.exited)
        started = [p for p in self.ffmpegs() if self.url_of(p) == "http://127.0.0.1:1/a1.ts"]
        self.assertEqual(len(started), 1)
        self.assertIsNot(started[0], check)
        self.assertEqual(self.in_use(), {"a": 2})
        self.go_live(started[0])
        self.successResultOf(d)
        self.assertEqual(self.health.named("stream_checked"), [])
        self.assertEqual(self.metrics.named("idle_check"), [("a", "stopped")])
        self.assertEqual(self.checker.status()["recent"][0]["status"], "stopped")
        self.assertSlotsMatchProcesses()

    def test_a_tune_stops_a_probe_at_once(self):
        """
        The same while the check is still at its ffprobe.
        """
        self.past_start_delay()
        probe = self.probes()[0]
        self.tune("2")
        self.assertEqual(self.in_use(), {"a": 2})
        self.tune("1")
        self.reactor.advance(0)
        self.assertEqual(probe.signals, ["KILL"])
        self.assertTrue(probe.exited)
        self.assertEqual(len([p for p in self.ffmpegs() if self.url_of(p) == "http://127.0.0.1:1/a1.ts"]), 1)
        self.assertEqual(self.health.named("stream_checked"), [])
        self.assertSlotsMatchProcesses()

    def test_no_check_while_a_tune_waits(self):
        """
        No check starts while any tune waits for a connection.
        """
        self.slots.set_limits({"a": 0, "b": 1})
        d = self.tune("1")
        self.past_start_delay()
        self.assertEqual(self.slots.waiting(), 1)
        self.assertEqual(self.reactor.running(), [])
        d.addErrback(lambda f: None)

    def test_shutdown_stops_a_check(self):
        """
        Stopping the checker kills a check under way.
        """
        self.past_start_delay()
        probe = self.probes()[0]
        self.checker.stopService()
        self.assertTrue(probe.exited)
        self.assertEqual(self.in_use(), {})
