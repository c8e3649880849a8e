"""
Tests of the JSON API, the status and log pages, the management endpoints'
protections (cross-site refusal, the admin password) and the error answers,
through the Klein resource and treq's StubTreq (no sockets), with a fake
channel manager, a fake store and a Clock.
"""

import os
import base64
import json
from types import SimpleNamespace

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger, LogPublisher
from twisted.python import log as legacy_log
from twisted.trial.unittest import TestCase

from streamproxy.channels import Catalog, Ranking
from streamproxy.config import Config
from streamproxy.hls import LivePlaylist
from streamproxy.logs import LogBuffer, LogService
from streamproxy.manager import UnknownChannel
from streamproxy.urls import KNOWN_URLS
from streamproxy.web import StreamProxyWeb

from .helpers import candidate

SECRET_URL = "http://provider.example:8080/live/alice/hunter2/1001.ts"
SECRET_QUERY_URL = "http://cdn.example/play.m3u8?username=alice&password=hunter2"
NOW = 1_700_000_000.0


class FakeStore:
    """
    A store holding a fixed catalog, loaded; ``refresh`` rebuilds it.
    """

    def __init__(self, candidates):
        self.catalog = Catalog.build(candidates)
        self.refreshes = 0
        self.loaded = True
        self.load_error = None

    def when_loaded(self):
        """
        Loaded already.
        """
        return defer.succeed(self.catalog)

    def refresh(self):
        self.refreshes += 1
        return defer.succeed(self.catalog)


class FakeFailures:
    """
    Recently failed candidates, as the manager's FailureMemory answers.
    """

    def __init__(self, failed=None):
        self.failed = dict(failed or {})

    def recent(self, now):
        return frozenset(self.failed)

    def reason(self, rowid):
        return self.failed.get(rowid)


class FakeSession:
    """
    A running channel: the attributes the web layer reads, and a status
    shaped like ChannelSession.status().
    """

    def __init__(self, channel_id, name, current, state="live", folder="/nonexistent"):
        self.channel_id = channel_id
        self.name = name
        self.state = state
        self.ended = False
        self.current = current
        self.folder = folder
        self.playlist = LivePlaylist(2, 3)
        self.attempt = None
        if current is not None:
            self.attempt = SimpleNamespace(
                candidate=current, prefix="sx01", buffer_events=[]
            )
        self.failovers = []
        self.tried = []

    def status(self):
        current = None
        if self.current is not None:
            current = {
                "source": self.current.source,
                "quality": self.current.quality,
                "rowid": self.current.rowid,
                # The real session masks; the fake does not, so the tests
                # show the web layer masks everything again.
                "url": self.current.url,
                "encoding": "copy",
                "since": NOW - 30,
                "live_for": 25.0,
                "buffer_events": len(self.attempt.buffer_events),
                "speed": 1.01,
                "bitrate_kbps": None,
                "video": "h264",
            }
        return {
            "channel_id": self.channel_id,
            "name": self.name,
            "state": self.state,
            "reason": None,
            "since": NOW - 30,
            "last_request_ago": 1.5,
            "requests": 12,
            "current": current,
            "failovers": len(self.failovers),
            "tried": self.tried,
            "last_failover": self.failovers[-1] if self.failovers else None,
            "segments": 3,
            "media_sequence": 4,
            "recent_buffering": [when for when, _ in self.attempt.buffer_events] if self.attempt else [],
            "measured_kbps": self.playlist.bitrate_kbps(),
        }


class FakeManager:
    """
    The channel manager's surface the web layer uses; records actions.
    """

    def __init__(self, store, dvr=None):
        self.store = store
        self.sessions = {}
        self.failures = FakeFailures()
        self.dvr = dvr
        self.switched = []
        self.stopped = []
        self.explode = None

    def status(self):
        if self.explode is not None:
            raise self.explode
        return {
            "channels": [s.status() for s in self.sessions.values()],
            "sources": {"prov_a": {"in_use": 1, "limit": 2}, "prov_b": {"in_use": 0, "limit": None}},
            "waiting_for_slot": 0,
            "recently_ended": [],
        }

    def force_switch(self, channel_id):
        session = self.sessions.get(channel_id)
        if session is None:
            raise UnknownChannel(channel_id)
        self.switched.append(channel_id)
        return session.current.label

    def stop_channel(self, channel_id):
        if channel_id not in self.sessions:
            raise UnknownChannel(channel_id)
        self.stopped.append(channel_id)
        del self.sessions[channel_id]
        return defer.succeed(None)

    def playlist(self, channel_id, client=None):
        if channel_id not in self.store.catalog.channels:
            raise UnknownChannel(channel_id)
        return defer.succeed("#EXTM3U\n")

    def segment_path(self, channel_id, name, touch=True, client=None):
        return None

    def session(self, channel_id):
        return self.sessions.get(channel_id)


class FakeDVR:
    """
    A Channels DVR tracker whose status the test sets (or makes fail).
    """

    def __init__(self, answer):
        self.answer = answer

    def status(self):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class WebTestCase(TestCase):
    """
    A web application over fakes: channel 7 (two candidates, running on
    prov_a) and channel 12 (one candidate, not running).
    """

    password = None
    allowed_hosts = ()

    def setUp(self):
        self.candidates = [
            candidate(1, "7", source="prov_b", quality="1", uniform_name="Seven",
                      status="online", last_checked="2025-11-25T05:00:00Z", uptime=3600, downtime=60,
                      url="http://b.example/7.ts", logo="http://logos.example/7.png"),
            candidate(2, "7", source="prov_a", quality="1", url=SECRET_URL, status="offline"),
            candidate(3, "12", source="prov_a", quality="2", uniform_name="Twelve", url=SECRET_QUERY_URL),
        ]
        self.store = FakeStore(self.candidates)
        self.clock = Clock()
        self.clock.advance(NOW)
        self.manager = FakeManager(self.store)
        self.session = FakeSession("7", "Seven", self.candidates[1])
        self.manager.sessions["7"] = self.session
        self.buffer = LogBuffer(5)
        self.web = self.make_web()
        self.client = StubTreq(self.web.resource())

    def make_web(self, dvr=None):
        """
        The application under test, with the test's password setting.
        """
        return StreamProxyWeb(
            Config(admin_password=self.password, allowed_hosts=self.allowed_hosts),
            self.store,
            Ranking(("prov_a", "prov_b"), ()),
            self.manager,
            logs=self.buffer,
            dvr=dvr,
            reactor=self.clock,
            own_names=("streambox", "streambox.local"),
        )

    @defer.inlineCallbacks
    def call(self, method, path, headers=None, host="127.0.0.1:9090"):
        """
        ``(response, body text)`` of one request to ``path`` (redirects
        not followed).
        """
        all_headers = {"Host": host}
        all_headers.update(headers or {})
        response = yield self.client.request(
            method, f"http://127.0.0.1:9090{path}", headers=all_headers, allow_redirects=False
        )
        body = yield response.text()
        return response, body


class PageTests(WebTestCase):
    """
    The status and log pages and their files.
    """

    @defer.inlineCallbacks
    def test_pages_are_served_with_a_strict_policy(self):
        """
        /status and /logs are HTML pages that load only the daemon's own
        scripts and styles (no CDN, no external font), under a
        Content-Security-Policy that forbids anything else.
        """
        for path, script in (("/status", "/static/status.js"), ("/logs", "/static/logs.js")):
            response, body = yield self.call("GET", path)
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"])
            policy = response.headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("script-src 'self'", policy)
            self.assertIn(f'src="{script}"', body)
            self.assertIn('href="/static/app.css"', body)
            self.assertNotIn("https://", body)
            self.assertNotIn("http://", body)

    @defer.inlineCallbacks
    def test_static_files(self):
        """
        The scripts and the style sheet are served with their types; names
        that are not one of the files, or try to leave the folder, are 404.
        """
        for name, kind in (("app.css", "text/css"), ("status.js", "text/javascript"),
                           ("logs.js", "text/javascript"), ("common.js", "text/javascript")):
            response, body = yield self.call("GET", f"/static/{name}")
            self.assertEqual(response.code, 200, name)
            self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith(kind))
            self.assertTrue(body)
        for path in ("/static/nope.js", "/static/..%2Fweb.py", "/static/../web.py", "/static/web.py"):
            response, body = yield self.call("GET", path)
            self.assertEqual(response.code, 404, path)
            self.assertLess(len(body), 200)

    @defer.inlineCallbacks
    def test_home_redirects_to_status(self):
        """
        / sends the browser to the status page.
        """
        response, _ = yield self.call("GET", "/")
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders("location"), ["/status"])


class StatusAPITests(WebTestCase):
    """
    GET /api/status.
    """

    @defer.inlineCallbacks
    def status(self):
        """
        The parsed answer of /api/status, checked to be a 200.
        """
        response, body = yield self.call("GET", "/api/status")
        self.assertEqual(response.code, 200, body)
        return json.loads(body)

    @defer.inlineCallbacks
    def test_running_channel(self):
        """
        A running channel comes with its name, its logo (from any of its
        candidates), the stream in use with the provider's credentials
        masked, its state, and the link the preview plays.
        """
        status = yield self.status()
        [entry] = status["channels"]
        self.assertEqual(entry["channel_id"], "7")
        self.assertEqual(entry["name"], "Seven")
        self.assertEqual(entry["logo"], "http://logos.example/7.png")
        self.assertEqual(entry["display_state"], "live")
        self.assertEqual(entry["current"]["source"], "prov_a")
        self.assertEqual(entry["stream_url"], "/channel/7/stream.m3u8")
        self.assertEqual(entry["candidates"], 2)
        self.assertIn("provider.example:8080", entry["current"]["url"])
        self.assertEqual(status["now"], NOW)
        self.assertEqual(status["database"], {"channels": 2, "streams": 3, "skipped_rows": 0})

    @defer.inlineCallbacks
    def test_logos(self):
        """
        A logo is shown as it is when it is a plain image URL, even one
        whose folders mask_url would hide; a logo URL with a user name and
        password in it is not shown at all.
        """
        self.store.catalog = Catalog.build(
            [
                candidate(1, "7", logo="http://u:pw@logos.example/7.png"),
                candidate(2, "7", logo="http://logos.example/images/channels/seven-hd.png"),
            ]
        )
        status = yield self.status()
        self.assertEqual(status["channels"][0]["logo"], "http://logos.example/images/channels/seven-hd.png")
        self.store.catalog = Catalog.build([candidate(1, "7", logo="http://u:pw@logos.example/7.png")])
        status = yield self.status()
        self.assertEqual(status["channels"][0]["logo"], "")

    @defer.inlineCallbacks
    def test_no_credentials_anywhere(self):
        """
        Passwords in stream URLs, in failover reasons and in start-up
        failures never appear in the answer.
        """
        self.session.failovers.append(
            {"at": NOW - 5, "from": "prov_b/1 (row 1)", "reason": f"ffmpeg exited (1): {SECRET_URL}: 403"}
        )
        self.session.tried = [{"candidate": "prov_b/1 (row 1)", "reason": f"HTTP 403 on {SECRET_QUERY_URL}"}]
        _, body = yield self.call("GET", "/api/status")
        self.assertNotIn("hunter2", body)
        self.assertIn("ffmpeg exited (1)", body)
        self.assertIn("HTTP 403 on http://cdn.example/", body)

    @defer.inlineCallbacks
    def test_buffering_state(self):
        """
        A live channel whose stream had a buffering event in the last
        twenty seconds shows as buffering; an older event does not count.
        """
        self.session.attempt.buffer_events = [(NOW - 5, "reconnect")]
        status = yield self.status()
        self.assertEqual(status["channels"][0]["display_state"], "buffering")
        self.session.attempt.buffer_events = [(NOW - 50, "reconnect")]
        status = yield self.status()
        self.assertEqual(status["channels"][0]["display_state"], "live")

    @defer.inlineCallbacks
    def test_switching_state(self):
        """
        A channel failing over shows as switching, with no stream.
        """
        self.session.state = "switching"
        self.session.current = None
        self.session.attempt = None
        status = yield self.status()
        entry = status["channels"][0]
        self.assertEqual(entry["display_state"], "switching")
        self.assertIsNone(entry["current"])

    @defer.inlineCallbacks
    def test_bitrate_measured_from_segments(self):
        """
        The status shows the bitrate measured from the sizes and durations
        of the channel's newest segments.
        """
        for index in range(2):
            self.session.playlist.add(f"sx01_{index:05d}.ts", 2.0, size=250_000)
        status = yield self.status()
        self.assertEqual(status["channels"][0]["measured_kbps"], 1000)

    @defer.inlineCallbacks
    def test_sources_with_limits(self):
        """
        Each source's slots in use and its limit (None for unlimited).
        """
        status = yield self.status()
        self.assertEqual(
            status["sources"],
            {"prov_a": {"in_use": 1, "limit": 2}, "prov_b": {"in_use": 0, "limit": None}},
        )

    @defer.inlineCallbacks
    def test_dvr_not_configured(self):
        """
        Without a Channels DVR tracker, or with one that has no URL, the
        DVR is reported as not configured.
        """
        status = yield self.status()
        self.assertEqual(status["dvr"], {"configured": False, "state": "not configured"})
        self.client = StubTreq(self.make_web(FakeDVR({"state": "off", "url": None})).resource())
        status = yield self.status()
        self.assertFalse(status["dvr"]["configured"])
        self.assertEqual(status["dvr"]["state"], "not configured")

    @defer.inlineCallbacks
    def test_dvr_status(self):
        """
        The tracker's status is passed on, credentials in its URL masked,
        and a channel it reports watched carries that activity.
        """
        dvr = FakeDVR(
            {
                "state": "ok",
                "url": "http://admin:pw123456@192.168.1.20:8089/dvr",
                "last_error": None,
                "last_success": NOW - 3,
                "event_stream": "connected",
                "activities": [{"kind": "watching", "channel_id": "7", "client": "Living room",
                                "sentence": "Watching ch7 from Living room"}],
            }
        )
        self.client = StubTreq(self.make_web(dvr).resource())
        status = yield self.status()
        self.assertTrue(status["dvr"]["configured"])
        self.assertEqual(status["dvr"]["state"], "ok")
        self.assertNotIn("pw123456", status["dvr"]["url"])
        self.assertEqual(status["channels"][0]["dvr_activity"][0]["client"], "Living room")

    @defer.inlineCallbacks
    def test_dvr_status_failing(self):
        """
        A tracker whose status raises does not break the page: the DVR
        shows as an error and the rest is answered.
        """
        self.client = StubTreq(self.make_web(FakeDVR(RuntimeError("boom"))).resource())
        status = yield self.status()
        self.assertEqual(status["dvr"]["state"], "error")
        self.assertEqual(len(status["channels"]), 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @defer.inlineCallbacks
    def test_unexpected_error_is_a_short_500(self):
        """
        A bug behind an endpoint answers a short 500 naming the error, not
        a traceback page; the traceback goes to the log.
        """
        self.manager.explode = ZeroDivisionError("division by zero")
        response, body = yield self.call("GET", "/api/status")
        self.assertEqual(response.code, 500)
        self.assertIn("division by zero", body)
        self.assertNotIn("Traceback", body)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class ChannelsAPITests(WebTestCase):
    """
    GET /api/channels.
    """

    @defer.inlineCallbacks
    def channels(self):
        """
        ``{channel id: entry}`` of /api/channels, checked to be a 200.
        """
        response, body = yield self.call("GET", "/api/channels")
        self.assertEqual(response.code, 200, body)
        return {c["channel_id"]: c for c in json.loads(body)["channels"]}

    @defer.inlineCallbacks
    def test_ranked_candidates_with_health(self):
        """
        Every channel, in channel order, with its candidates in the order
        they would be tried (source_priority here) and their health
        columns; the one playing is marked.
        """
        channels = yield self.channels()
        self.assertEqual(list(channels), ["7", "12"])
        seven = channels["7"]
        self.assertEqual(seven["name"], "Seven")
        self.assertEqual(seven["state"], "live")
        self.assertEqual([c["rowid"] for c in seven["candidates"]], [2, 1])
        self.assertEqual([c["rank"] for c in seven["candidates"]], [1, 2])
        best, other = seven["candidates"]
        self.assertTrue(best["playing"])
        self.assertEqual(best["status"], "offline")
        self.assertEqual(
            (other["status"], other["last_checked"], other["uptime"], other["downtime"]),
            ("online", "2025-11-25T05:00:00Z", 3600, 60),
        )
        self.assertIsNone(channels["12"]["state"])

    @defer.inlineCallbacks
    def test_recent_failures_rank_last(self):
        """
        A candidate that failed recently ranks last and says why.
        """
        self.manager.failures = FakeFailures({2: "stalled: no new media for 4 s"})
        channels = yield self.channels()
        ranked = channels["7"]["candidates"]
        self.assertEqual([c["rowid"] for c in ranked], [1, 2])
        self.assertEqual(ranked[1]["failed_recently"], "stalled: no new media for 4 s")
        self.assertIsNone(ranked[0]["failed_recently"])

    @defer.inlineCallbacks
    def test_urls_masked(self):
        """
        No provider credentials in the channel list.
        """
        _, body = yield self.call("GET", "/api/channels")
        self.assertNotIn("hunter2", body)
        self.assertNotIn("alice", body)
        self.assertIn("provider.example", body)


class LogsAPITests(WebTestCase):
    """
    GET /api/logs and the log buffer behind it.
    """

    def setUp(self):
        super().setUp()
        self.publisher = LogPublisher()
        self.service = LogService(self.buffer, self.publisher)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        self.log = Logger(namespace="streamproxy.session", observer=self.publisher)

    @defer.inlineCallbacks
    def fetch_logs(self, query=""):
        """
        The parsed answer of /api/logs with ``query``, checked to be a 200.
        """
        response, body = yield self.call("GET", f"/api/logs{query}")
        self.assertEqual(response.code, 200, body)
        return json.loads(body)

    @defer.inlineCallbacks
    def test_lines_after_a_sequence_number(self):
        """
        Lines come oldest first with time, level, namespace and text; asking
        with ``after`` gives only newer ones, and ``last`` is the newest
        line number.
        """
        self.log.info("channel {channel_id}: starting", channel_id="7")
        self.log.warn("something odd")
        body = yield self.fetch_logs()
        self.assertEqual([line["text"] for line in body["lines"]], ["channel 7: starting", "something odd"])
        first = body["lines"][0]
        self.assertEqual(
            (first["level"], first["namespace"], first["channel"], first["seq"]),
            ("info", "streamproxy.session", "7", 1),
        )
        self.assertIsInstance(first["time"], float)
        self.assertEqual(body["last"], 2)
        self.log.error("channel {channel_id}: unavailable", channel_id="12.1")
        self.log.error("a text naming channel 3 but no field")
        body = yield self.fetch_logs("?after=2")
        self.assertEqual([line["seq"] for line in body["lines"]], [3, 4])
        self.assertEqual(body["lines"][0]["channel"], "12.1")
        self.assertIsNone(body["lines"][1]["channel"], "the channel is a field, not read from text")
        self.assertEqual(body["channels"], ["7", "12.1"])

    @defer.inlineCallbacks
    def test_ring_buffer(self):
        """
        Only the last log_buffer_size lines are kept.
        """
        for number in range(8):
            self.log.info("line {n}", n=number)
        body = yield self.fetch_logs()
        self.assertEqual([line["text"] for line in body["lines"]], [f"line {n}" for n in range(3, 8)])
        self.assertEqual((body["last"], body["size"]), (8, 5))

    @defer.inlineCallbacks
    def test_filters(self):
        """
        ``level`` keeps that level and worse; ``channel`` keeps the lines
        about that channel (``007`` is channel 7).
        """
        self.log.info("channel {channel_id}: trying prov_a", channel_id="7")
        self.log.warn("channel {channel_id}: prov_a failed", channel_id="7")
        self.log.warn("channel {channel_id}: prov_b failed", channel_id="9")
        self.log.debug("channel {channel_id}: detail", channel_id="7")
        body = yield self.fetch_logs("?level=warn")
        self.assertEqual([line["seq"] for line in body["lines"]], [2, 3])
        body = yield self.fetch_logs("?channel=007")
        self.assertEqual([line["seq"] for line in body["lines"]], [1, 2, 4])
        body = yield self.fetch_logs("?channel=7&level=WARNING")
        self.assertEqual([line["seq"] for line in body["lines"]], [2])

    @defer.inlineCallbacks
    def test_masked(self):
        """
        URLs in log lines, and in the tracebacks of logged failures, are
        masked before they are kept.
        """
        self.log.info("opening {url}", url=SECRET_URL)
        try:
            raise ValueError(f"cannot open {SECRET_QUERY_URL}")
        except ValueError:
            self.log.failure("while opening")
        body = yield self.fetch_logs()
        text = "\n".join(line["text"] for line in body["lines"])
        self.assertNotIn("hunter2", text)
        self.assertIn("provider.example:8080", text)
        self.assertIn("Traceback", text)
        self.assertEqual(body["lines"][1]["level"], "critical")

    def test_legacy_events(self):
        """
        Events of the old ``twisted.python.log`` API (the access log) are
        kept as info, or error when flagged so.
        """
        self.buffer.add({"message": ("GET /m3u/main.m3u 200",), "isError": 0, "system": "-",
                       "log_format": "{log_text}", "log_text": "GET /m3u/main.m3u 200"})
        entry = self.buffer.add({"message": (), "isError": 1, "why": "bad", "log_format": "bad"})
        self.assertEqual([e["level"] for e in self.buffer.entries()], ["info", "error"])
        self.assertEqual(entry["text"], "bad")

    def test_factory_chatter_left_out(self):
        """
        Twisted's "Starting factory" / "Stopping factory" lines (one pair
        per outgoing connection) are left out of the viewer only.
        """
        seen = []
        self.publisher.addObserver(seen.append)
        self.log.info("Starting factory {factory!r}", factory=object())
        self.log.info("Stopping factory {factory!r}", factory=object())
        self.log.info("Starting something else")
        self.assertEqual(len(seen), 3)
        self.assertEqual([e["text"] for e in self.buffer.entries()], ["Starting something else"])

    def test_other_observers_still_get_lines(self):
        """
        The buffer is one more observer: the others (console, twistd's log
        file) still receive every event, and stopping the service takes
        only the buffer away.
        """
        seen = []
        self.publisher.addObserver(seen.append)
        self.log.info("hello")
        self.assertEqual(len(seen), 1)
        self.assertEqual(len(self.buffer.entries()), 1)
        self.service.stopService()
        self.log.info("again")
        self.assertEqual(len(seen), 2)
        self.assertEqual(len(self.buffer.entries()), 1)
        self.service.startService()

    def test_global_publisher_by_default(self):
        """
        Without a publisher of its own the service observes the global
        one, where both twisted.logger and twisted.python.log events go.
        """
        buffer = LogBuffer(10)
        service = LogService(buffer)
        service.startService()
        try:
            Logger(namespace="streamproxy.test").info("via the new API {n}", n=1)
            legacy_log.msg("via the old API")
        finally:
            service.stopService()
        texts = [e["text"] for e in buffer.entries()]
        self.assertIn("via the new API 1", texts)
        self.assertIn("via the old API", texts)

    @defer.inlineCallbacks
    def test_bad_queries(self):
        """
        A malformed ``after``, an unknown level or a channel that is not a
        number is a 400 with a JSON error saying which.
        """
        for query, word in (("?after=x", "after"), ("?level=loud", "loud"), ("?channel=abc", "abc")):
            response, body = yield self.call("GET", f"/api/logs{query}")
            self.assertEqual(response.code, 400, query)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
            self.assertIn(word, body)


class ManagementTests(WebTestCase):
    """
    POST (and GET) /force_switch/<id>, POST /stop/<id>, /refresh_db_cache.
    """

    @defer.inlineCallbacks
    def test_force_switch(self):
        """
        POST /force_switch/7 switches the running channel and names the
        stream it left; the GET form still works for old scripts.
        """
        response, body = yield self.call("POST", "/force_switch/7")
        self.assertEqual(response.code, 200, body)
        self.assertIn('"switched_from": "prov_a/1 (row 2)"', body)
        response, _ = yield self.call("GET", "/force_switch/007")
        self.assertEqual(response.code, 200)
        self.assertEqual(self.manager.switched, ["7", "7"])

    @defer.inlineCallbacks
    def test_stop(self):
        """
        POST /stop/7 stops the channel; a second stop is a 404 saying the
        channel is not running.
        """
        response, body = yield self.call("POST", "/stop/7")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(self.manager.stopped, ["7"])
        response, body = yield self.call("POST", "/stop/7")
        self.assertEqual(response.code, 404)
        self.assertEqual(body, "Channel 7 is not running.\n")

    @defer.inlineCallbacks
    def test_refresh(self):
        """
        Both forms of /refresh_db_cache reload the database.
        """
        for method in ("GET", "POST"):
            response, body = yield self.call(method, "/refresh_db_cache")
            self.assertEqual(response.code, 200, body)
        self.assertEqual(self.store.refreshes, 2)

    @defer.inlineCallbacks
    def test_unknown_and_malformed_ids(self):
        """
        A channel the table does not have is 404 "No channel"; one that is
        not running is 404 "not running"; an id that is not a channel
        number is 400.  The page's own calls (Accept: JSON) get JSON.
        """
        response, body = yield self.call("POST", "/force_switch/99")
        self.assertEqual((response.code, body), (404, "No channel 99.\n"))
        response, body = yield self.call("POST", "/force_switch/12")
        self.assertEqual((response.code, body), (404, "Channel 12 is not running.\n"))
        for path in ("/force_switch/abc", "/stop/7x", "/force_switch/1.2.3"):
            response, body = yield self.call("POST", path)
            self.assertEqual(response.code, 400, path)
            self.assertIn("is not a channel number", body)
        response, body = yield self.call("POST", "/stop/abc", headers={"Accept": "application/json"})
        self.assertEqual(response.code, 400)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        self.assertIn('"error"', body)
        self.assertEqual(self.manager.switched + self.manager.stopped, [])

    @defer.inlineCallbacks
    def test_wrong_method(self):
        """
        A method a route does not take is 405 with an Allow header and one
        short line, not werkzeug's HTML page.
        """
        response, body = yield self.call("GET", "/stop/7")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        self.assertEqual(body, "Method GET is not allowed here; use POST.\n")
        response, body = yield self.call("DELETE", "/api/status")
        self.assertEqual(response.code, 405)
        self.assertIn('"error"', body)
        self.assertEqual(self.manager.stopped, [])

    @defer.inlineCallbacks
    def test_no_such_page(self):
        """
        A path that matches no route is a short 404 naming it; under
        /api/ the answer is JSON.
        """
        response, body = yield self.call("GET", "/nothing/here")
        self.assertEqual((response.code, body), (404, "Not found: /nothing/here\n"))
        self.assertNotIn("<", body)
        response, body = yield self.call("GET", "/api/nothing")
        self.assertEqual(response.code, 404)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])


class CrossSiteTests(WebTestCase):
    """
    Requests that change something are refused when the browser says they
    come from another site; scripts (no such headers) and the pages
    themselves (same origin) go through.
    """

    allowed_hosts = ("tv.local",)

    @defer.inlineCallbacks
    def check(self, method, path, headers, code):
        response, body = yield self.call(method, path, headers=headers)
        self.assertEqual(response.code, code, f"{method} {path} {headers}: {body}")
        return body

    @defer.inlineCallbacks
    def test_other_origin_is_refused(self):
        """
        A POST whose Origin is another site, another port of this host, or
        "null" is 403 and does nothing.
        """
        for origin in ("http://evil.example", "http://127.0.0.1:8089", "null", "http://127.0.0.1.evil.example:9090"):
            body = yield self.check("POST", "/stop/7", {"Origin": origin}, 403)
            self.assertIn("another site", body)
        yield self.check("POST", "/force_switch/7", {"Origin": "http://evil.example"}, 403)
        yield self.check("POST", "/refresh_db_cache", {"Origin": "https://evil.example"}, 403)
        self.assertEqual((self.manager.stopped, self.manager.switched, self.store.refreshes), ([], [], 0))
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_other_referer_is_refused(self):
        """
        Without an Origin, a Referer from another site is refused too.
        """
        yield self.check("POST", "/stop/7", {"Referer": "http://evil.example/page"}, 403)
        self.assertEqual(self.manager.stopped, [])

    @defer.inlineCallbacks
    def test_cross_site_get_is_refused(self):
        """
        The old GET forms of force_switch and refresh_db_cache are refused
        when the browser marks them cross-site (an <img> on another page),
        but work when typed in the address bar.
        """
        yield self.check("GET", "/force_switch/7", {"Sec-Fetch-Site": "cross-site"}, 403)
        yield self.check("GET", "/refresh_db_cache", {"Sec-Fetch-Site": "same-site"}, 403)
        yield self.check("GET", "/force_switch/7", {"Sec-Fetch-Site": "none"}, 200)
        self.assertEqual(self.manager.switched, ["7"])

    @defer.inlineCallbacks
    def test_same_origin_and_scripts_pass(self):
        """
        The page's own POSTs (Origin equal to Host, Sec-Fetch-Site
        same-origin) and scripts sending none of these headers are let
        through.
        """
        yield self.check("POST", "/force_switch/7",
                         {"Origin": "http://127.0.0.1:9090", "Sec-Fetch-Site": "same-origin"}, 200)
        yield self.check("POST", "/force_switch/7", {"Referer": "http://127.0.0.1:9090/status"}, 200)
        yield self.check("POST", "/force_switch/7", {}, 200)
        self.assertEqual(self.manager.switched, ["7", "7", "7"])

    @defer.inlineCallbacks
    def test_host_without_port(self):
        """
        When the Host header names no port (a reverse proxy), the host
        names alone are compared.
        """
        response, _ = yield self.call("POST", "/force_switch/7", headers={"Origin": "https://tv.local"}, host="TV.local")
        self.assertEqual(response.code, 200)
        response, _ = yield self.call("POST", "/force_switch/7", headers={"Origin": "https://evil.local"}, host="tv.local")
        self.assertEqual(response.code, 403)

    @defer.inlineCallbacks
    def test_reading_is_not_refused(self):
        """
        Reading endpoints do not check where the request comes from.
        """
        yield self.check("GET", "/api/status", {"Origin": "http://evil.example"}, 200)


class PasswordTests(WebTestCase):
    """
    With ``admin_password`` set, everything but playlists and streams asks
    for it through HTTP basic auth (any user name).
    """

    password = "s3cret ü"

    PROTECTED = (
        ("GET", "/status"),
        ("GET", "/logs"),
        ("GET", "/static/app.css"),
        ("GET", "/api/status"),
        ("GET", "/api/channels"),
        ("GET", "/api/logs"),
        ("POST", "/force_switch/7"),
        ("GET", "/force_switch/7"),
        ("POST", "/stop/7"),
        ("POST", "/refresh_db_cache"),
    )

    def auth(self, user, password):
        """
        A basic Authorization header.
        """
        token = base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    @defer.inlineCallbacks
    def test_asks_for_the_password(self):
        """
        Without the password, or with a wrong or malformed one, every
        protected endpoint is 401 with a basic auth challenge, and nothing
        is done.
        """
        for headers in ({}, self.auth("admin", "wrong"), {"Authorization": "Basic !!!"},
                        {"Authorization": "Bearer s3cret"}, self.auth("s3cret ü", "")):
            for method, path in self.PROTECTED:
                response, body = yield self.call(method, path, headers=headers)
                self.assertEqual(response.code, 401, (method, path, headers))
                self.assertEqual(
                    response.headers.getRawHeaders("www-authenticate"),
                    ['Basic realm="streamproxy", charset="UTF-8"'],
                )
                self.assertNotIn("s3cret", body)
        self.assertEqual((self.manager.stopped, self.manager.switched, self.store.refreshes), ([], [], 0))

    @defer.inlineCallbacks
    def test_any_user_with_the_password(self):
        """
        The right password opens every protected endpoint, whatever the
        user name.
        """
        for user in ("admin", "", "someone"):
            response, _ = yield self.call("GET", "/api/status", headers=self.auth(user, self.password))
            self.assertEqual(response.code, 200)
        for method, path in self.PROTECTED:
            if path == "/stop/7":
                continue
            response, body = yield self.call(method, path, headers=self.auth("x", self.password))
            self.assertEqual(response.code, 200, (method, path, body))

    @defer.inlineCallbacks
    def test_playlists_and_streams_stay_open(self):
        """
        Channels DVR needs no password: playlists and streams answer
        without one.
        """
        for path in ("/m3u/main.m3u", "/m3u/", "/channel/7/stream.m3u8"):
            response, body = yield self.call("GET", path)
            self.assertEqual(response.code, 200, (path, body))
        response, _ = yield self.call("GET", "/channel/7/sx01_00001.ts")
        self.assertEqual(response.code, 404)

    @defer.inlineCallbacks
    def test_no_password_no_question(self):
        """
        Without admin_password nothing asks for one.
        """
        self.password = None
        self.client = StubTreq(self.make_web().resource())
        response, _ = yield self.call("GET", "/api/status")
        self.assertEqual(response.code, 200)


class HostTests(WebTestCase):
    """
    Pages, the API and management answer only under this machine's names
    (DNS rebinding); playlists and streams answer under any name.
    """

    allowed_hosts = ("tv.example.lan",)
    FOR_PEOPLE = PasswordTests.PROTECTED

    @defer.inlineCallbacks
    def test_foreign_names_are_refused(self):
        """
        Under a name that is not this machine's, every page, API and
        management request is 403 with a line naming allowed_hosts, even
        when Origin matches Host (what a rebinding page sends), and nothing
        is done.
        """
        for host in ("attacker.example", "attacker.example:9090", "streambox.attacker.example",
                     "127.0.0.1.attacker.example"):
            for method, path in self.FOR_PEOPLE:
                response, body = yield self.call(method, path, host=host,
                                                 headers={"Origin": f"http://{host}"})
                self.assertEqual(response.code, 403, (host, method, path, body))
                self.assertIn("allowed_hosts", body)
                if not path.startswith("/api/"):
                    self.assertEqual(body.count("\n"), 1, body)
        self.assertEqual((self.manager.stopped, self.manager.switched, self.store.refreshes), ([], [], 0))

    @defer.inlineCallbacks
    def test_this_machine_is_let_through(self):
        """
        IP addresses, localhost, the machine's own names and allowed_hosts
        reach the API, whatever the case or a trailing dot.
        """
        for host in ("127.0.0.1:9090", "192.168.1.20", "[::1]:9090", "localhost:9090", "app.localhost",
                     "streambox", "STREAMBOX.local:9090", "tv.example.lan", "TV.Example.Lan.:9090"):
            response, body = yield self.call("GET", "/api/status", host=host)
            self.assertEqual(response.code, 200, (host, body))

    @defer.inlineCallbacks
    def test_playlists_and_streams_under_any_name(self):
        """
        Channels DVR may use any name for this machine: playlists and
        streams are served under it.
        """
        for path in ("/m3u/main.m3u", "/m3u/", "/channel/7/stream.m3u8"):
            response, body = yield self.call("GET", path, host="whatever.example:9090")
            self.assertEqual(response.code, 200, (path, body))
        response, body = yield self.call("GET", "/m3u/main.m3u", host="whatever.example:9090")
        self.assertIn("http://whatever.example:9090/channel/7/stream.m3u8", body)

    @defer.inlineCallbacks
    def test_malformed_headers_are_short_answers(self):
        """
        Without the edge in front (as here, through StubTreq; a malformed
        Host is the edge's alone, Klein fails on it before any route) the
        routes still answer Origin and Authorization values that are not
        text with one short line, not a 500.
        """
        self.password = "pw"
        self.client = StubTreq(self.make_web().resource())
        response, body = yield self.call("GET", "/api/status", headers={"Authorization": b"Basic \xff\xfe"})
        self.assertEqual(response.code, 401)
        self.password = None
        self.client = StubTreq(self.make_web().resource())
        response, body = yield self.call("POST", "/stop/7", headers={"Origin": b"http://\xff.example"})
        self.assertEqual(response.code, 400)
        self.assertIn("Origin header is not UTF-8", body)
        self.assertEqual(self.manager.stopped, [])


class FirstLoadTests(WebTestCase):
    """
    Before the first load of the table, a stream request is not told its
    channel does not exist.
    """

    @defer.inlineCallbacks
    def test_stream_before_the_first_load(self):
        """
        A stream of a channel not in the (still empty) table is 503 with
        Retry-After while the first load runs, and 404 once it has.
        """
        self.store.catalog = Catalog.build([])
        self.store.loaded = False
        response, body = yield self.call("GET", "/channel/7/stream.m3u8")
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        self.assertIn("still being loaded", body)
        self.store.loaded = True
        response, body = yield self.call("GET", "/channel/7/stream.m3u8")
        self.assertEqual((response.code, body), (404, "No channel 7.\n"))

    @defer.inlineCallbacks
    def test_stream_after_a_failed_first_load(self):
        """
        When the first load failed and nothing was read since, it is 503
        naming the database problem.
        """
        self.store.catalog = Catalog.build([])
        self.store.load_error = "/x/streams.db: the database is locked by another program"
        response, body = yield self.call("GET", "/channel/7/stream.m3u8")
        self.assertEqual(response.code, 503)
        self.assertIn("locked", body)


class LeadingZeroTests(WebTestCase):
    """
    A channel number in a path may have leading zeros, as the README says.
    """

    @defer.inlineCallbacks
    def test_stream_paths(self):
        """
        /channel/0007/stream.m3u8 is channel 7, /channel/07.10/... is 7.1;
        the manager gets the canonical id.
        """
        asked = []
        playlist = self.manager.playlist
        self.manager.playlist = lambda channel_id, **kw: (asked.append(channel_id), playlist(channel_id))[1]
        response, body = yield self.call("GET", "/channel/0007/stream.m3u8")
        self.assertEqual(response.code, 200, body)
        response, body = yield self.call("GET", "/channel/0501/stream.m3u8")
        self.assertEqual((response.code, body), (404, "No channel 501.\n"))
        yield self.call("GET", "/channel/07.10/stream.m3u8")
        self.assertEqual(asked, ["7", "501", "7.1"])
        segments = []
        self.manager.segment_path = lambda channel_id, name, **kw: segments.append((channel_id, name))
        yield self.call("GET", "/channel/007/sx01_00001.ts")
        # (Asked by the fast path, then by the route that answers the 404.)
        self.assertEqual(set(segments), {("7", "sx01_00001.ts")})


class DisplayFormTests(WebTestCase):
    """
    Pages and the API show stream URLs in their display form, built from
    the row; log lines and errors hold no URL the daemon knows.
    """

    def know(self, urls):
        """
        Put ``urls`` in the process-wide known URLs for this test.
        """
        saved = (KNOWN_URLS._current, KNOWN_URLS._previous, KNOWN_URLS._lengths)

        def restore():
            KNOWN_URLS._current, KNOWN_URLS._previous, KNOWN_URLS._lengths = saved

        self.addCleanup(restore)
        KNOWN_URLS.remember(urls)

    @defer.inlineCallbacks
    def test_channel_list_shows_display_forms(self):
        """
        Each candidate's URL is its display form: scheme, host, port, last
        component and query names.
        """
        response, body = yield self.call("GET", "/api/channels")
        channels = {c["channel_id"]: c for c in json.loads(body)["channels"]}
        urls = {c["rowid"]: c["url"] for c in channels["7"]["candidates"] + channels["12"]["candidates"]}
        self.assertEqual(urls, {
            1: "http://b.example/7.ts",
            2: "http://provider.example:8080/.../1001.ts",
            3: "http://cdn.example/play.m3u8?username&password",
        })

    @defer.inlineCallbacks
    def test_unrecognisable_forms_hidden_by_exact_match(self):
        """
        A stream URL whose account no pattern recognises is still hidden
        in the log viewer, the status and a 500, because the daemon knows it.
        """
        odd = "http://cdn.example/streams/alice-hunter2/ch5/index.m3u8"
        self.know([odd])
        self.buffer.add({"log_format": "ffmpeg prov_a/1 (row 9): [warning] Opening '{u}' failed",
                         "u": odd, "log_level": None})
        _, body = yield self.call("GET", "/api/logs")
        self.assertNotIn("hunter2", body)
        self.assertIn("http://cdn.example/.../index.m3u8", body)
        self.session.tried = [{"candidate": "prov_a/1 (row 9)", "reason": f"HTTP 403 on {odd}"}]
        _, body = yield self.call("GET", "/api/status")
        self.assertNotIn("hunter2", body)
        self.manager.explode = ValueError(f"cannot open {odd}")
        response, body = yield self.call("GET", "/api/status")
        self.assertEqual(response.code, 500)
        self.assertNotIn("hunter2", body)
        self.assertIn("http://cdn.example/.../index.m3u8", body)
        self.flushLoggedErrors(ValueError)

    @defer.inlineCallbacks
    def test_500_text_masked_by_heuristics_too(self):
        """
        An error holding a URL the daemon never knew is masked as well.
        """
        self.manager.explode = ValueError("redirected to http://x.example/hls/bob/s3cretpw/index.m3u8")
        response, body = yield self.call("GET", "/api/status")
        self.assertEqual(response.code, 500)
        self.assertNotIn("s3cretpw", body)
        self.flushLoggedErrors(ValueError)


class FastPathTests(WebTestCase):
    """
    The requests players repeat every second, answered without routing,
    answer exactly as the routes would.
    """

    def running_session(self):
        """
        Channel 7 with one segment on disk and in its playlist.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        with open(os.path.join(folder, "sx01_00000.ts"), "wb") as f:
            f.write(b"\x47" * 188)
        self.session.playlist.add("sx01_00000.ts", 1.0)
        touched = []
        self.session.touch = touched.append
        self.manager.segment_path = lambda channel_id, name, touch=True, client=None: (
            touched.append(client) or (os.path.join(folder, name) if channel_id == "7" and name == "sx01_00000.ts"
                                       else None))
        return touched

    @defer.inlineCallbacks
    def test_playlist_and_segment_of_a_running_channel(self):
        """
        The live playlist and a segment come with their types, no-cache on
        the playlist and the cross-origin header on both; each counts as
        the client's request.
        """
        touched = self.running_session()
        response, body = yield self.call("GET", "/channel/0007/stream.m3u8")
        self.assertEqual(response.code, 200)
        self.assertIn("sx01_00000.ts", body)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/vnd.apple.mpegurl"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-cache"])
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        response = yield self.client.get("http://127.0.0.1:9090/channel/7/sx01_00000.ts",
                                         headers={"Host": "127.0.0.1:9090"})
        segment = yield response.content()
        self.assertEqual((response.code, segment), (200, b"\x47" * 188))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["video/mp2t"])
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        self.assertEqual(len(touched), 2)

    @defer.inlineCallbacks
    def test_everything_else_goes_to_the_routes(self):
        """
        An unknown segment, a channel not running, a HEAD and a failing
        fast path are answered by the routes (404 text, 200 headers),
        never by an error page.
        """
        self.running_session()
        response, body = yield self.call("GET", "/channel/7/sx01_99999.ts")
        self.assertEqual((response.code, body), (404, "No segment sx01_99999.ts on channel 7.\n"))
        response, body = yield self.call("HEAD", "/channel/12/stream.m3u8")
        self.assertEqual(response.code, 200)
        self.assertIsNone(self.manager.session("12"))

        def broken(channel_id):
            raise RuntimeError("boom")

        self.manager.session = broken
        response, body = yield self.call("GET", "/channel/7/stream.m3u8")
        self.assertEqual(response.code, 200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
