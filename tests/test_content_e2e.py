"""
End-to-end tests of the content checks, the slate and /metrics: the whole
service tree in-process, real ffmpeg, and the fake provider serving
generated media that is up but useless (a black picture, a held frame,
silence; tests/upstream.py's lavfi recipes).
"""

import json
import os
import sqlite3

import treq
from twisted.internet import defer, reactor

from streamproxy.mpegts import PES, VIDEO, CLOCK_HZ, TSReader
from streamproxy.timeline import unwrap

from .helpers import row
from .test_streaming_e2e import StreamingTestCase, sleep
from .upstream import FFPROBE, Fault, wait_until

# Short limits, so each test takes seconds: the media are black, frozen or
# silent from their first frame.
FAST = {"content_checks": {"black_seconds": 3, "freeze_seconds": 3, "silence_seconds": 4}}


class TSCapture:
    """
    A TS viewer: collects what ``/channel/<id>/stream.ts`` sends.
    """

    def __init__(self):
        self.data = bytearray()
        self.response = None
        self.done = None

    @defer.inlineCallbacks
    def start(self, url):
        self.response = yield treq.get(url, persistent=False, unbuffered=True)
        self.done = treq.collect(self.response, self.data.extend)
        self.done.addErrback(lambda f: None)

    def video_times(self):
        """
        The unwrapped video DTS of what arrived, in seconds.
        """
        reader = TSReader()
        times, last = [], None
        for unit in reader.feed(bytes(self.data)):
            if unit.kind == PES and unit.stream == VIDEO and unit.dts is not None:
                last = unit.dts if last is None else unwrap(unit.dts, last)
                times.append(last / CLOCK_HZ)
        return times


class ContentFailoverTests(StreamingTestCase):
    """
    A black picture, a frozen picture and silence past their limits move
    the channel to its next candidate, with the reason shown everywhere.
    """

    @defer.inlineCallbacks
    def check_fault(self, media, kind, reason):
        """
        Channel 1 plays ``media`` from prov_a first; it ends up live on
        prov_b, the failover's reason is ``reason``, and prov_a's row gets
        ``kind`` as its Stream-status.
        """
        self.add("a", media=media)
        self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"], **FAST,
        )
        yield self.tune("1")
        self.assertTrue(self.live_on("1", "prov_a"), self.channels.session("1").status())
        yield self.wait_live_on("1", "prov_b", timeout=20)
        entry = yield self.channel_status("1")
        self.assertEqual(entry["failovers"], 1, entry)
        self.assertRegex(entry["last_failover"]["reason"], reason)
        self.assertIn(kind, [c for c in entry["current"]["checks"]])
        # The health column says what was wrong, once written.
        yield self.parts["health"].flush()
        db = sqlite3.connect(self.config.db_path)
        try:
            status = dict(db.execute('SELECT rowid, "Stream-status" FROM LiveStreams').fetchall())
        finally:
            db.close()
        self.assertEqual(status[1], kind)
        self.assertIn(status[2], ("online", None))
        # Counted for Prometheus by kind.
        text = self.parts["metrics"].text().decode()
        self.assertIn(f'streamproxy_content_faults_total{{kind="{kind}",source="prov_a"}} 1.0', text)
        self.assertIn(f'reason="{kind}",source="prov_a"', text)

    def test_black_picture(self):
        """
        A stream whose picture is black fails over after ``black_seconds``.
        """
        return self.check_fault("black", "black", r"^black picture for [34] s$")

    def test_frozen_picture(self):
        """
        A stream whose picture is one held frame fails over after
        ``freeze_seconds``.
        """
        return self.check_fault("frozen", "frozen", r"^frozen picture for [3-5] s$")

    def test_silence(self):
        """
        A stream without sound fails over after ``silence_seconds``.
        """
        return self.check_fault("silent", "silent", r"^no sound for [4-6] s$")

    @defer.inlineCallbacks
    def test_healthy_stream_stays(self):
        """
        The normal test picture and tone raise nothing: after twice the
        limits the channel still plays its first candidate, every frame of
        it (decoding keyframes for the checks leaves the copy untouched).
        """
        self.add("a")
        self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"], **FAST,
        )
        yield self.tune("1")
        capture = TSCapture()
        yield capture.start(self.url("/channel/1/stream.ts"))
        yield sleep(8)
        self.assertTrue(self.live_on("1", "prov_a"), self.channels.session("1").status())
        self.assertEqual(self.channels.session("1").failovers, [])
        times = capture.video_times()
        span = times[-1] - times[0]
        # 25 frames a second, none missing.
        self.assertGreater(span, 5)
        self.assertAlmostEqual(len(times) / (span + 0.04), 25, delta=0.5)


class OptOutTests(StreamingTestCase):
    """
    A channel that really is black (or silent) keeps playing.
    """

    @defer.inlineCallbacks
    def test_every_candidate_shows_the_same(self):
        """
        When both candidates show a black picture, the first fails over
        and the second is kept: black is taken as the channel's content,
        said once in the log, and not judged on the channel any more.
        """
        self.add("a", media="black")
        self.add("b", media="black")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"], **FAST,
        )
        yield self.tune("1")
        yield self.wait_live_on("1", "prov_b", timeout=20)
        session = self.channels.session("1")
        yield wait_until(lambda: "black" in session.tolerated, timeout=15)
        yield sleep(5)
        self.assertTrue(self.live_on("1", "prov_b"), session.status())
        self.assertEqual(len(session.failovers), 1)
        entry = yield self.channel_status("1")
        self.assertEqual(entry["content_tolerated"], ["black"])
        status = yield self.api_status()
        self.assertEqual([t["kind"] for t in status["content_checks"]["tolerated"]], ["black"])

    @defer.inlineCallbacks
    def test_single_candidate_is_kept(self):
        """
        A channel with one candidate, silent, is never switched for it.
        """
        self.add("a", media="silent")
        yield self.serve([row(1, self.live("a"), source="prov_a")], **FAST)
        yield self.tune("1")
        session = self.channels.session("1")
        yield wait_until(lambda: "silent" in session.tolerated, timeout=15)
        self.assertTrue(self.live_on("1", "prov_a"))
        self.assertEqual(session.failovers, [])

    @defer.inlineCallbacks
    def test_skip_channels(self):
        """
        A channel in ``content_checks.skip_channels`` runs no checks at all.
        """
        self.add("a", media="black")
        self.add("b")
        settings = {"content_checks": dict(FAST["content_checks"], skip_channels=[1])}
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"], **settings,
        )
        yield self.tune("1")
        yield sleep(6)
        self.assertTrue(self.live_on("1", "prov_a"))
        status = self.channels.session("1").status()
        self.assertEqual(status["current"]["checks"], [])


class SlateTests(StreamingTestCase):
    """
    While every candidate fails, a channel that had been playing shows the
    slate, and its stream goes on.
    """

    @defer.inlineCallbacks
    def test_slate_while_retrying(self):
        """
        The only upstream breaks: a TS viewer goes on getting a stream (the
        slate) whose clock runs on; when the upstream is back the channel
        is live again, in the same response, with the clock still running.
        """
        self.add("a")
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        yield wait_until(lambda: self.parts["slate"].slate is not None, timeout=10)
        capture = TSCapture()
        yield capture.start(self.url("/channel/1/stream.ts"))
        yield self.wait_live_on("1", "prov_a")
        yield sleep(2)
        self.upstream.set_fault("a", Fault.status(503))
        self.upstream.set_fault("a", Fault.close())
        yield wait_until(lambda: self.channels.session("1").status()["slate_for"] is not None, timeout=20)
        self.upstream.set_fault("a", Fault.status(503))
        entry = yield self.channel_status("1")
        self.assertIn(entry["state"], ("retrying", "switching"))
        before = len(capture.video_times())
        yield sleep(3)
        during = capture.video_times()
        self.assertGreater(len(during), before + 40, "the slate did not keep the stream going")
        self.upstream.set_fault("a", None)
        yield self.wait_live_on("1", "prov_a", timeout=20)
        self.assertIsNone(self.channels.session("1").status()["slate_for"])
        yield sleep(2)
        times = capture.video_times()
        steps = [b - a for a, b in zip(times, times[1:])]
        self.assertTrue(all(step > 0 for step in steps), "the clock went back")
        self.assertLess(max(steps), 5.0, "a long hole in the stream")


class MetricsTests(StreamingTestCase):
    """
    ``/metrics`` over HTTP.
    """

    @defer.inlineCallbacks
    def test_scrape(self):
        """
        Behind the admin password; in the Prometheus text format, with the
        running channel, its viewer, the slots and the tune.
        """
        self.add("a")
        yield self.serve([row(1, self.live("a"), source="prov_a")], admin_password="pw",
                         source_limits={"prov_a": 2})
        yield self.tune("1")
        response, _ = yield self.fetch("/metrics")
        self.assertEqual(response.code, 401)
        response = yield treq.get(self.url("/metrics"), auth=("any", "pw"), persistent=False, timeout=10)
        body = (yield response.content()).decode()
        self.assertEqual(response.code, 200, body)
        self.assertIn(b"text/plain", response.headers.getRawHeaders(b"content-type")[0])
        self.assertIn('streamproxy_channels{state="live"} 1.0', body)
        self.assertIn('streamproxy_viewers{format="hls"} 1.0', body)
        self.assertIn('streamproxy_source_slots_limit{source="prov_a"} 2.0', body)
        self.assertIn('streamproxy_tunes_total{outcome="live"} 1.0', body)
        self.assertIn("streamproxy_tune_seconds_bucket", body)
        self.assertIn('streamproxy_served_bytes_total{format="hls"}', body)
        self.assertNotIn("http://", body)


class IdleCheckTests(StreamingTestCase):
    """
    Idle checks with real ffprobe and ffmpeg.
    """

    @defer.inlineCallbacks
    def test_checks_record_health_and_facts(self):
        """
        Two streams nobody watches, one fine and one black, are checked one
        after the other; their rows say online and black, and the fine
        one's picture size and bitrate are measured and kept.
        """
        from streamproxy.idle import START_DELAY_SECONDS

        self.add("good")
        self.add("dark", media="black")
        yield self.serve(
            [row(1, self.live("good"), source="prov_a"), row(2, self.live("dark"), source="prov_a")],
            source_limits={"prov_a": 3}, idle_check_hours=1,
        )
        idle = self.parts["idle"]
        idle.started_at -= START_DELAY_SECONDS
        for _ in range(2):
            idle.tick()
            self.assertIsNotNone(idle.check)
            yield wait_until(lambda: idle.check is None, timeout=30)
        results = {r["channel_id"]: r for r in idle.status()["recent"]}
        self.assertEqual(results["1"]["status"], "online", results)
        self.assertEqual(results["2"]["status"], "black", results)
        self.assertIn("320x180", results["1"]["measured"])
        yield self.parts["health"].flush()
        db = sqlite3.connect(self.config.db_path)
        try:
            status = dict(db.execute('SELECT rowid, "Stream-status" FROM LiveStreams').fetchall())
            kept = db.execute("SELECT rowid_of, width, height, kbps FROM StreamMeasurements ORDER BY 1").fetchall()
        finally:
            db.close()
        self.assertEqual(status, {1: "online", 2: "black"})
        self.assertEqual([k[:3] for k in kept], [(1, 320, 180), (2, 320, 180)])
        self.assertGreater(kept[0][3], 100)
        self.assertEqual(self.in_use(), {})
