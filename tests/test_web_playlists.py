"""
Tests for the playlist and database endpoints of the Klein resource, through
treq's StubTreq (no sockets).
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from treq.testing import StubTreq

from streamproxy.channels import Catalog, Ranking
from streamproxy.config import Config
from streamproxy.store import StoreError
from streamproxy.web import FIRST_LOAD_WAIT_SECONDS, StreamProxyWeb

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
        """
        Fires once the test ends the first load (at once if it has).
        """
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
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.called:
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
        stream URLs on the host the client used, as audio/x-mpegurl; its
        header names the playlist's XMLTV guide on that host.
        """
        response, body = yield self.get(
            "http://192.168.1.5:9090/m3u/main.m3u", headers={"Host": "192.168.1.5:9090"}
        )
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["audio/x-mpegurl; charset=utf-8"]
        )
        lines = body.splitlines()
        self.assertEqual(
            lines[0],
            '#EXTM3U url-tvg="http://192.168.1.5:9090/xmltv/main.xml" '
            'x-tvg-url="http://192.168.1.5:9090/xmltv/main.xml"',
        )
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


class FirstLoadTests(TestCase):
    """
    Playlists asked for before the first load of the table has finished
    wait for it, bounded; they are never a false 404.
    """

    def setUp(self):
        """
        An application whose store has not finished its first load.
        """
        self.clock = Clock()
        self.store = FakeStore([])
        self.store.loaded = False
        self.web = StreamProxyWeb(Config(), self.store, Ranking(), channels=None, reactor=self.clock)
        self.client = StubTreq(self.web.resource())

    def get(self, path):
        """
        Start a request; a Deferred of its response.
        """
        return self.client.get(f"http://h:1{path}")

    @defer.inlineCallbacks
    def test_waits_for_the_first_load(self):
        """
        A playlist request during the first load is answered from the table
        as soon as the load ends.
        """
        pending = [self.get("/m3u/main.m3u"), self.get("/m3u/")]
        self.client.flush()
        for d in pending:
            self.assertNoResult(d)
        self.clock.advance(1)
        self.store.finish_load([candidate(1, "7", m3u="main", uniform_name="Seven")])
        self.client.flush()
        response = self.successResultOf(pending[0])
        self.assertEqual(response.code, 200)
        body = yield response.text()
        self.assertIn("Seven", body)
        response = self.successResultOf(pending[1])
        body = yield response.text()
        self.assertIn("/m3u/main.m3u", body)

    @defer.inlineCallbacks
    def test_wait_is_bounded(self):
        """
        A first load that takes too long makes waiting requests 503 with
        Retry-After, not 404.
        """
        pending = self.get("/m3u/main.m3u")
        self.client.flush()
        self.clock.advance(FIRST_LOAD_WAIT_SECONDS)
        self.client.flush()
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["5"])
        body = yield response.text()
        self.assertIn("still being loaded", body)

    @defer.inlineCallbacks
    def test_failed_first_load(self):
        """
        When the first load fails, playlists are 503 naming the database
        problem; once a refresh reads the table they are served.
        """
        pending = self.get("/m3u/main.m3u")
        self.client.flush()
        self.store.finish_load(error="/x/streams.db: not an SQLite database")
        self.client.flush()
        response = self.successResultOf(pending)
        self.assertEqual(response.code, 503)
        body = yield response.text()
        self.assertIn("not an SQLite database", body)
        self.store.finish_load([candidate(1, "7", m3u="main")])
        response = yield self.get("/m3u/main.m3u")
        self.assertEqual(response.code, 200)

    def test_unknown_playlist_after_the_load_is_404(self):
        """
        Once the table is loaded, an unknown playlist is a 404 as before.
        """
        pending = self.get("/m3u/nope.m3u")
        self.client.flush()
        self.store.finish_load([candidate(1, "7", m3u="main")])
        self.client.flush()
        self.assertEqual(self.successResultOf(pending).code, 404)
