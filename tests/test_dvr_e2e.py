"""
End-to-end test of Channels DVR awareness: the whole service tree with real
ffmpeg against the fake provider, and a fake Channels DVR listening on
127.0.0.1 (status JSON with ``activity`` and the ``/dvr/events/subscribe``
event stream).
"""

import sqlite3

from twisted.internet import defer, reactor
from twisted.web.server import Site

from .helpers import row
from .test_dvr import FakeDVR
from .test_streaming_e2e import StreamingTestCase
from .upstream import wait_until

# Long, so that only the event stream can make a stop noticed in time.
POLL_INTERVAL = 60


class DVRAwarenessTests(StreamingTestCase):
    """
    Channels stop when neither requested nor active in Channels DVR.
    """

    timeout = 60

    def setUp(self):
        """
        Start the upstream and a fake Channels DVR on 127.0.0.1.
        """
        super().setUp()
        self.dvr = FakeDVR()
        self.dvr_port = reactor.listenTCP(0, Site(self.dvr), interface="127.0.0.1")
        self.addCleanup(self.stop_dvr)

    def stop_dvr(self):
        """
        Close the fake DVR and any event stream still open.
        """
        for request in list(self.dvr.subscribers):
            request.transport.abortConnection()
        return self.dvr_port.stopListening()

    @defer.inlineCallbacks
    def test_dvr_activity_keeps_a_channel_until_it_ends(self):
        """
        Two channels tuned, channel 2 watched in Channels DVR: channel 1 stops
        after inactivity_timeout, channel 2 stays; when the DVR's event
        stream ends the activity, channel 2 stops within seconds (long before
        the next poll); their streams' health is in the table.
        """
        self.add("one")
        self.add("two")
        self.dvr.activity = {"6-stream-M3U-streamproxy-ch2": "Watching ch2 Two from Living Room (127.0.0.1)"}
        yield self.serve(
            [row(1, self.live("one"), source="prov_a"), row(2, self.live("two"), source="prov_b")],
            inactivity_timeout=3,
            channels_dvr_url=f"http://127.0.0.1:{self.dvr_port.getHost().port}/dvr",
            dvr_poll_interval=POLL_INTERVAL,
        )
        tracker = self.parts["dvr"]
        yield wait_until(
            lambda: tracker.current_state() == "ok" and len(self.dvr.subscribers) == 1, timeout=10
        )
        self.assertTrue(tracker.is_watched("2"))
        yield self.tune("1")
        yield self.tune("2")
        tuned = reactor.seconds()

        yield wait_until(lambda: self.channels.session("1") is None, timeout=15)
        ended = {e["channel_id"]: e["reason"] for e in self.channels.ended}
        self.assertRegex(ended["1"], r"^not watched in Channels DVR and no request for \d+ s$")
        self.assertIsNotNone(self.channels.session("2"))
        # Well past the inactivity timeout, still playing.
        yield wait_until(lambda: reactor.seconds() - tuned > 8, timeout=10)
        self.assertEqual(self.channels.session("2").state, "live")
        status = yield self.api_status()
        self.assertEqual(status["dvr"]["state"], "ok")
        self.assertEqual(status["dvr"]["event_stream"], "connected")
        self.assertEqual(
            [(a["kind"], a["channel_id"]) for a in status["dvr"]["activities"]],
            [("watching", "2")],
        )

        polls = self.dvr.requests
        self.dvr.set_activity("6-stream-M3U-streamproxy-ch2", "")
        ended_at = reactor.seconds()
        yield wait_until(lambda: self.channels.session("2") is None, timeout=15)
        self.assertLess(reactor.seconds() - ended_at, POLL_INTERVAL / 2)
        self.assertEqual(self.dvr.requests, polls, "the stop came from the event stream, not a poll")
        ended = {e["channel_id"]: e["reason"] for e in self.channels.ended}
        self.assertRegex(ended["2"], r"^not watched in Channels DVR and no request for \d+ s$")

        health = self.parts["health"]
        yield health.flush()
        connection = sqlite3.connect(self.config.db_path)
        try:
            rows = connection.execute(
                'SELECT "Channel-id", "Stream-status", "Last-checked-time", "Uptime", "Downtime" '
                "FROM LiveStreams ORDER BY rowid"
            ).fetchall()
        finally:
            connection.close()
        for channel_id, status_text, checked, uptime, downtime in rows:
            self.assertEqual(status_text, "online", rows)
            self.assertRegex(checked, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
            self.assertEqual(downtime or 0, 0)
        # Channel 2 played for longer than channel 1.
        self.assertGreater(rows[1][3], rows[0][3])
        self.assertGreaterEqual(rows[1][3], 8)
