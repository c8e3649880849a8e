"""
Unit tests of the metrics: reasons normalised to small fixed label sets,
what the registry exposes, the gauges read from the manager, and who may
read ``/metrics`` (the Klein app through StubTreq; the answer itself over
HTTP is in tests/test_content_e2e.py).
"""

import base64

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from streamproxy.channels import Ranking
from streamproxy.config import Config
from streamproxy.metrics import (
    BUFFERING_REASONS, FAILURE_REASONS, Metrics, buffering_reason, failure_reason,
)
from streamproxy.web import StreamProxyWeb

from .test_web_api import WebTestCase


class ReasonTests(SynchronousTestCase):
    """
    Reason sentences become a few fixed labels, never free text.
    """

    def test_failure_reasons(self):
        """
        Each kind of failure the daemon words has its label.
        """
        cases = {
            "stalled: no new media for 4 s": "stalled",
            "stalled: no new media for 2.1 s (b/1 (row 2) was ready)": "stalled",
            "buffering: 3 events in a minute (reconnect)": "buffering",
            "black picture for 10 s": "black",
            "frozen picture for 12 s": "frozen",
            "no sound for 20 s": "silent",
            "switched by request": "switch_requested",
            "no media within 15 s": "start_timeout",
            "ffmpeg exited (1): HTTP 404": "connection",
            "ffmpeg exited (1): connection failed: Connection refused": "connection",
            "ffprobe: audio only (no video stream)": "unusable",
            "audio only (no video stream)": "unusable",
            "ffmpeg exited (0): the upstream ended the stream": "exited",
            "could not start ffmpeg: [Errno 24] Too many open files": "spawn_failed",
            "something new http://user:pass@host/x": "other",
            None: "other",
        }
        for text, label in cases.items():
            self.assertEqual(failure_reason(text), label, text)
            self.assertIn(label, FAILURE_REASONS)

    def test_buffering_reasons(self):
        """
        Buffering events likewise.
        """
        cases = {
            "reconnect (End of file)": "reconnect",
            "media at 0.50x real time": "slow",
            "upstream playlist reload failed": "playlist_reload",
            "upstream segments skipped (3)": "segment_failed",
            "Connection timed out": "read_timeout",
            "Input/output error": "io_error",
            "who knows": "other",
        }
        for text, label in cases.items():
            self.assertEqual(buffering_reason(text), label, text)
            self.assertIn(label, BUFFERING_REASONS)


class RegistryTests(SynchronousTestCase):
    """
    What the registry exposes.
    """

    def test_counters_histograms_and_gauges(self):
        """
        Counted events and the manager's state, in the text format, with
        sources and normalised reasons as labels and no URL.
        """
        state = {
            "channels": {"live": 2, "retrying": 1},
            "viewers": {"hls": 3, "ts": 1},
            "slots": {"prov_a": (2, 2), "prov_b": (0, None)},
            "waiting": 1,
        }
        metrics = Metrics(lambda: state)
        metrics.tune_outcome("live", 0.8)
        metrics.tune_outcome("no_slot")
        metrics.failover("prov_a", "black picture for 10 s")
        metrics.failover_gap(0.4)
        metrics.buffering("prov_a", "reconnect (End of file)")
        metrics.content_fault("prov_a", "black")
        metrics.idle_check("prov_b", "offline")
        metrics.count_served("ts", 188 * 7)
        metrics.count_served("hls", 1000)
        text = metrics.text().decode()
        for line in (
            'streamproxy_tunes_total{outcome="live"} 1.0',
            'streamproxy_tunes_total{outcome="no_slot"} 1.0',
            'streamproxy_tunes_total{outcome="unavailable"} 0.0',
            'streamproxy_tune_seconds_bucket{le="1.0"} 1.0',
            'streamproxy_failovers_total{reason="black",source="prov_a"} 1.0',
            'streamproxy_failover_gap_seconds_bucket{le="0.5"} 1.0',
            'streamproxy_buffering_events_total{reason="reconnect",source="prov_a"} 1.0',
            'streamproxy_content_faults_total{kind="black",source="prov_a"} 1.0',
            'streamproxy_idle_checks_total{result="offline",source="prov_b"} 1.0',
            'streamproxy_served_bytes_total{format="ts"} 1316.0',
            'streamproxy_served_bytes_total{format="hls"} 1000.0',
            'streamproxy_channels{state="live"} 2.0',
            'streamproxy_viewers{format="hls"} 3.0',
            'streamproxy_source_slots_in_use{source="prov_a"} 2.0',
            'streamproxy_source_slots_limit{source="prov_a"} 2.0',
            'streamproxy_tunes_waiting_for_slot 1.0',
        ):
            self.assertIn(line, text)
        self.assertNotIn('streamproxy_source_slots_limit{source="prov_b"}', text)

    def test_a_failing_snapshot_leaves_the_rest(self):
        """
        A state that cannot be read is logged; the counters still answer.
        """
        def broken():
            raise RuntimeError("no state")

        metrics = Metrics(broken)
        metrics.tune_outcome("live", 1.0)
        text = metrics.text().decode()
        self.assertIn('streamproxy_tunes_total{outcome="live"} 1.0', text)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class AccessTests(WebTestCase):
    """
    ``/metrics`` asks for the admin password and answers only under this
    machine's names, like the API.
    """

    password = "pw"
    allowed_hosts = ()

    def make_web(self, dvr=None):
        return StreamProxyWeb(
            Config(admin_password=self.password, allowed_hosts=self.allowed_hosts),
            self.store, Ranking(("prov_a", "prov_b"), ()), self.manager, logs=self.buffer, dvr=dvr,
            reactor=self.clock, own_names=("streambox",), metrics=Metrics(),
        )

    @defer.inlineCallbacks
    def test_password_and_host(self):
        """
        Without the password 401; under a foreign name 403.
        """
        response, _ = yield self.call("GET", "/metrics")
        self.assertEqual(response.code, 401)
        response, body = yield self.call("GET", "/metrics", host="attacker.example",
                                         headers={"Authorization": "Basic " + base64.b64encode(b"x:pw").decode()})
        self.assertEqual(response.code, 403, body)

    @defer.inlineCallbacks
    def test_without_metrics(self):
        """
        A web app built without metrics answers 404 with a line.
        """
        self.client = StubTreq(StreamProxyWeb(
            Config(), self.store, Ranking(), self.manager, reactor=self.clock, own_names=()).resource())
        response, body = yield self.call("GET", "/metrics")
        self.assertEqual(response.code, 404)
        self.assertIn("not collected", body)
