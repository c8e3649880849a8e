"""
Tests of what the daemon observes of each stream: newer health and
measured facts ranking the candidates, and the health recorder writing
content faults, idle check results and measurements (kept in a table of
our own, read again at the next start).
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamproxy.channels import Ranking
from streamproxy.health import HealthRecorder, iso_utc
from streamproxy.observations import MEASUREMENTS_TABLE, Measurement, Observations, url_digest
from streamproxy.store import ChannelStore

from .helpers import candidate, make_database, row

START = 1714564800.0


def measured(c, width, height, fps=25.0, kbps=3000):
    return Measurement(width, height, fps, kbps, START, url_digest(c.url))


class RankingTests(SynchronousTestCase):
    """
    Ranking with observations.
    """

    def test_observed_status_beats_the_table(self):
        """
        A stream the table says online but seen failing since ranks after
        one seen working.
        """
        a, b = candidate(1, status="online"), candidate(2, status="offline")
        observations = Observations()
        ranking = Ranking((), (), observations)
        self.assertEqual([c.rowid for c in ranking.rank([a, b])], [1, 2])
        observations.note_status(1, "black", START)
        observations.note_status(2, "online", START)
        self.assertEqual([c.rowid for c in ranking.rank([a, b])], [2, 1])

    def test_measured_facts_break_ties(self):
        """
        Same source, quality and health: more pixels first, then frame
        rate, then bitrate; unmeasured streams after measured ones; facts
        measured of a URL the row no longer holds do not count.
        """
        streams = [candidate(i, status="online") for i in range(1, 6)]
        observations = Observations()
        observations.note_measurement(1, measured(streams[0], 1280, 720, 25, 5000))
        observations.note_measurement(2, measured(streams[1], 1920, 1080, 25, 4000))
        observations.note_measurement(3, measured(streams[2], 1280, 720, 50, 3000))
        observations.note_measurement(4, measured(streams[3], 1280, 720, 25, 6000))
        observations.note_measurement(5, Measurement(3840, 2160, 50, 20000, START, "another-url"))
        ranking = Ranking((), (), observations)
        self.assertEqual([c.rowid for c in ranking.rank(streams)], [2, 3, 4, 1, 5])

    def test_facts_never_beat_priority_or_health(self):
        """
        A sharper stream of a worse source, quality or health stays behind.
        """
        a = candidate(1, source="a", status="online")
        b = candidate(2, source="b", status="online")
        c = candidate(3, source="a", status="offline")
        observations = Observations()
        observations.note_measurement(2, measured(b, 1920, 1080))
        observations.note_measurement(3, measured(c, 1920, 1080))
        observations.note_measurement(1, measured(a, 640, 360))
        ranking = Ranking(("a", "b"), (), observations)
        self.assertEqual([x.rowid for x in ranking.rank([b, c, a])], [1, 3, 2])

    def test_downtime_in_steps(self):
        """
        Shares of downtime within the same 5 % step tie (facts decide);
        further apart they still rank.
        """
        a = candidate(1, status="online", uptime=98, downtime=2)
        b = candidate(2, status="online", uptime=97, downtime=3)
        c = candidate(3, status="online", uptime=80, downtime=20)
        observations = Observations()
        observations.note_measurement(2, measured(b, 1920, 1080))
        observations.note_measurement(3, measured(c, 3840, 2160))
        ranking = Ranking((), (), observations)
        self.assertEqual([x.rowid for x in ranking.rank([a, b, c])], [2, 1, 3])


class RecorderTests(TestCase):
    """
    The health recorder with content faults, checks and measurements,
    against a real database.
    """

    def setUp(self):
        self.path = make_database(os.path.abspath(self.mktemp()), [
            row(1, "http://127.0.0.1:1/1.ts"), row(2, "http://127.0.0.1:1/2.ts"),
        ])
        self.store = ChannelStore(self.path)
        self.store.startService()
        self.addCleanup(self.store.stopService)
        self.clock = Clock()
        self.clock.advance(START)
        self.observations = Observations()
        self.recorder = HealthRecorder(self.store, reactor=self.clock, observations=self.observations)

    def rows(self):
        connection = sqlite3.connect(self.path)
        try:
            return {r[0]: r[1:] for r in connection.execute(
                'SELECT rowid, "Stream-status", "Last-checked-time", "Uptime", "Downtime" FROM LiveStreams')}
        finally:
            connection.close()

    @defer.inlineCallbacks
    def test_content_fault(self):
        """
        A stream given up for a black picture after 12 s live, 10 of them
        black: status black, 2 s up and 10 s down; observed at once.
        """
        self.recorder.stream_started(candidate(1))
        self.clock.advance(12)
        self.recorder.stream_content_fault(candidate(1), "black", 10.0)
        self.assertEqual(self.observations.status(1), "black")
        yield self.recorder.flush()
        self.assertEqual(self.rows()[1], ("black", iso_utc(START + 12), 2, 10))

    @defer.inlineCallbacks
    def test_checked_and_measured(self):
        """
        An idle check's result sets the status and time only; its
        measurement is kept in StreamMeasurements and read back into a new
        recorder's observations at start.
        """
        c = candidate(2, url="http://127.0.0.1:1/2.ts")
        self.recorder.stream_checked(c, "offline")
        self.recorder.stream_measured(c, measured(c, 1280, 720))
        yield self.recorder.flush()
        self.assertEqual(self.rows()[2], ("offline", iso_utc(START), 0, 0))
        connection = sqlite3.connect(self.path)
        try:
            kept = connection.execute(f"SELECT rowid_of, width, height, kbps FROM {MEASUREMENTS_TABLE}").fetchall()
        finally:
            connection.close()
        self.assertEqual(kept, [(2, 1280, 720, 3000)])
        fresh = Observations()
        again = HealthRecorder(self.store, reactor=self.clock, observations=fresh)
        again.startService()
        yield again.measurements_read
        yield again.stopService()
        self.assertEqual(fresh.measurement(c).height, 720)

    @defer.inlineCallbacks
    def test_check_of_a_live_stream_is_ignored(self):
        """
        A check result for a stream playing meanwhile changes nothing: the
        run tells more.
        """
        self.recorder.stream_started(candidate(1))
        self.recorder.stream_checked(candidate(1), "offline")
        yield self.recorder.flush()
        self.assertEqual(self.rows()[1][0], "online")


class DashboardTests(SynchronousTestCase):
    """
    /api/channels shows what was seen and measured of each stream.
    """

    def test_seen_and_measured(self):
        """
        Each candidate carries its health seen since the start and its
        measured facts (None when there are none), ranked by them.
        """
        from twisted.internet.task import Clock

        from streamproxy.dashboard import Dashboard

        from .test_web_api import FakeManager, FakeStore

        streams = [candidate(1, "7", status="online"), candidate(2, "7", status="online")]
        store = FakeStore(streams)
        observations = Observations()
        observations.note_status(1, "frozen", START)
        observations.note_measurement(2, measured(streams[1], 1920, 1080, 50, 8000))
        dashboard = Dashboard(store, Ranking((), (), observations), FakeManager(store), None, Clock())
        answer = dashboard.channel_list()["channels"][0]["candidates"]
        self.assertEqual([c["rowid"] for c in answer], [2, 1])
        self.assertEqual(answer[1]["seen"], "frozen")
        self.assertIsNone(answer[0]["seen"])
        self.assertEqual(answer[0]["measured"]["height"], 1080)
        self.assertIsNone(answer[1]["measured"])
