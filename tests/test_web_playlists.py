"""
Tests for the playlist and database endpoints of the Klein resource, through
treq's StubTreq (no sockets).
"""

from twisted.internet import defer
from twisted.trial.unittest import TestCase
from treq.testing import StubTreq

from streamproxy.channels import Catalog, Ranking
from streamproxy.config import Config
from streamproxy.store import StoreError
from streamproxy.web import StreamProxyWeb

from .helpers import candidate


class FakeStore:
    """
    A store whose catalog and refresh outcome the test sets; loaded unless
    the test says otherwise.
    """

    def __init__(self, candidates):
        self.catalog = Catalog.build(candidates)
        self.next_refresh = None
        self.loaded = True
        self.load_error = None
        self.waiters = []

    def when_loaded(self):
        if self.loaded:
            return defer.succeed(self.catalog)
        waiter = defer.Deferred()
        self.waiters.append(waiter)
        return waiter

    def finish_load(self, candidates=None, error=None):
        """
        End the first load, with ``candidates`` or failing with ``error``.
        """
        if candidates is not None:
            self.catalog = Catalog.build(candidates)
        self.loaded = True
        self.load_error = error
        for waiter in self.waiters:
            waiter.callback(self.catalog)

    def refresh(self):
        if isinstance(self.next_refresh, Exception):
            return defer.fail(self.next_refresh)
        self.catalog = Catalog.build(self.next_refresh or self.catalog.candidates)
        return defer.succeed(self.catalog)


class PlaylistEndpointTests(TestCase):
    """
    GET /m3u/<name>.m3u and /refresh_db_cache.
    """

    def setUp(self):
        self.store = FakeStore(
            [
                candidate(1, "7", source="b", uniform_name="Seven", m3u="main"),
                candidate(2, "7", source="a", uniform_name="Seven A", m3u="main"),
                candidate(3, "12", uniform_name='Twelve "Plus"', m3u="sports"),
            ]
        )
        self.web = StreamProxyWeb(Config(), self.store, Ranking(("a", "b"), ()), channels=None)
        self.client = StubTreq(self.web.resource())

    @defer.inlineCallbacks
    def get(self, url, **kwargs):
        response = yield self.client.get(url, **kwargs)
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def test_playlist(self):
        """
        A playlist lists its channels with the best candidate's name and
        stream URLs on the host the client used, as audio/x-mpegurl.
        """
        response, body = yield self.get(
            "http://192.168.1.5:9090/m3u/main.m3u", headers={"Host": "192.168.1.5:9090"}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["audio/x-mpegurl; charset=utf-8"]
        )
        lines = body.splitlines()
        self.assertEqual(lines[0], "#EXTM3U")
        self.assertEqual(len(lines), 3)
        self.assertTrue(lines[1].endswith(",Seven A"), lines[1])
        self.assertEqual(lines[2], "http://192.168.1.5:9090/channel/7/stream.m3u8")

    @defer.inlineCallbacks
    def test_escaped_names(self):
        """
        A quote in a channel name does not break the EXTINF line.
        """
        _, body = yield self.get("http://h:1/m3u/sports.m3u", headers={"Host": "h:1"})
        self.assertIn(",Twelve 'Plus'\n", body)

    @defer.inlineCallbacks
    def test_hostile_host_header_is_not_echoed(self):
        """
        A Host header that is not a plain host[:port] is replaced by the
        address the connection arrived on.
        """
        _, body = yield self.get(
            "http://h:1/m3u/main.m3u", headers={"Host": 'evil.com/"\r\n#EXTINF'}
        )
        self.assertNotIn("evil", body)
        self.assertIn("/channel/7/stream.m3u8", body)

    @defer.inlineCallbacks
    def test_unknown_playlist(self):
        """
        An unknown playlist is a 404 with a short text naming it.
        """
        response, body = yield self.get("http://h:1/m3u/nope.m3u")
        self.assertEqual(response.code, 404)
        self.assertIn("'nope'", body)

    @defer.inlineCallbacks
    def test_refresh(self):
        """
        /refresh_db_cache reloads and answers with counts.
        """
        self.store.next_refresh = [candidate(9, "9", m3u="main")]
        response = yield self.client.get("http://127.0.0.1:1/refresh_db_cache")
        self.assertEqual(response.code, 200)
        body = yield response.json()
        self.assertEqual(body["channels"], 1)
        self.assertEqual(body["streams"], 1)
        _, playlist = yield self.get("http://h:1/m3u/main.m3u")
        self.assertIn("/channel/9/stream.m3u8", playlist)

    @defer.inlineCallbacks
    def test_refresh_of_a_broken_database_is_503(self):
        """
        A database that cannot be read makes refresh answer 503 with the
        reason, and the old channel list keeps being served.
        """
        self.store.next_refresh = StoreError("/x/streams.db: the database is locked")
        response, body = yield self.get("http://127.0.0.1:1/refresh_db_cache")
        self.assertEqual(response.code, 503)
        self.assertIn("locked", body)
        self.flushLoggedErrors()
        response, body = yield self.get("http://h:1/m3u/main.m3u")
        self.assertEqual(response.code, 200)
        self.assertIn("Seven A", body)
