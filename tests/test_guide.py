"""
The XMLTV guide service: sources fetched through ``StubTreq`` (a fake
guide server of the test's own), on a ``Clock``'s schedule, the last good
guide kept through failures, the Xtream providers' guides, and the built
playlist guides cached; and the ``guide_sources``/``guide_refresh_hours``
keys.
"""

import gzip
import os
from xml.etree import ElementTree as ET

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from streamproxy.channels import Catalog, Ranking
from streamproxy.config import ConfigError, parse_config
from streamproxy.guide import GuideService
from streamproxy.providers import ProviderSync
from streamproxy.slots import SourceSlots
from streamproxy.urls import KnownUrls

from . import guidegen
from .helpers import candidate


class GuideServer(Resource):
    """
    Serves guides: ``/guide.xml`` (plain), ``/guide.xml.gz`` (a gzip
    file), ``/encoded.xml`` (gzip Content-Encoding), ``/xmltv.php`` (an
    Xtream panel's guide); ``fail`` makes every answer a 500, ``html`` an
    HTML page.  Counts requests per path.
    """

    isLeaf = True

    def __init__(self, channels=3):
        super().__init__()
        self.data = guidegen.guide_bytes(channels=channels, days=1, minutes=120)
        self.fail = False
        self.html = False
        self.requests = {}

    def render_GET(self, request):
        path = request.path.decode()
        self.requests[path] = self.requests.get(path, 0) + 1
        if self.fail:
            request.setResponseCode(500)
            return b"Internal Server Error"
        if self.html:
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body>Subscription expired</body></html>"
        if path == "/guide.xml.gz":
            return gzip.compress(self.data)
        if path == "/encoded.xml":
            request.setHeader(b"content-encoding", b"gzip")
            return gzip.compress(self.data)
        if path in ("/guide.xml", "/xmltv.php"):
            return self.data
        request.setResponseCode(404)
        return b"not found"


def synchronously(function, *args):
    """
    Run ``function`` now, as the worker thread would.
    """
    return defer.maybeDeferred(function, *args)


class GuideServiceTests(SynchronousTestCase):
    """
    Fetching, keeping and serving guides.
    """

    def setUp(self):
        self.server = GuideServer()
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.temp = os.path.abspath(self.mktemp())
        os.makedirs(self.temp)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def service(self, locations, providers=None, hours=12):
        """
        A started GuideService over the fake server.
        """
        service = GuideService(locations, hours, StubTreq(self.server), providers=providers, reactor=self.clock,
                               run_in_thread=synchronously, temp_dir=self.temp, known_urls=KnownUrls())
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def logged(self):
        """
        Every line logged during the test, as text.
        """
        return "\n".join(formatEvent(e) for e in self.events)

    def test_fetched_at_start_in_every_form(self):
        """
        Plain, gzip-file and gzip-encoded sources are all fetched at the
        start and read; nothing is left in the temp folder.
        """
        service = self.service(["http://guides.test/guide.xml", "http://guides.test/guide.xml.gz",
                                "http://guides.test/encoded.xml"])
        states = service.status()["sources"]
        self.assertEqual([s["state"] for s in states], ["ok", "ok", "ok"])
        self.assertEqual([s["programmes"] for s in states], [36, 36, 36])
        self.assertEqual(len(service.guides()), 3)
        self.assertEqual(os.listdir(self.temp), [])
        self.assertIn("Guide http://guides.test/guide.xml: 3 channels, 36 programmes", self.logged())

    def test_refreshed_on_schedule(self):
        """
        The sources are fetched again every guide_refresh_hours.
        """
        service = self.service(["http://guides.test/guide.xml"], hours=6)
        self.assertEqual(self.server.requests["/guide.xml"], 1)
        self.clock.advance(6 * 3600 - 1)
        self.assertEqual(self.server.requests["/guide.xml"], 1)
        self.clock.advance(1)
        self.assertEqual(self.server.requests["/guide.xml"], 2)
        self.assertEqual(service.last_refresh, self.clock.seconds())

    def test_failed_fetch_keeps_the_last_good_guide(self):
        """
        An HTTP error or an HTML page keeps the guide fetched before, with
        the error in the status and one warning naming the source.
        """
        service = self.service(["http://guides.test/guide.xml"], hours=1)
        first = service.guides()[0]
        version = service.version
        self.server.fail = True
        self.clock.advance(3600)
        self.assertIs(service.guides()[0], first)
        status = service.status()["sources"][0]
        self.assertEqual((status["state"], status["error"]), ("failed", "HTTP 500 Internal Server Error"))
        self.assertEqual(status["programmes"], 36)
        self.assertIn("Guide http://guides.test/guide.xml: HTTP 500 Internal Server Error; keeping its guide "
                      "from 2023-11-14T22:13:20Z", self.logged())
        self.server.fail, self.server.html = False, True
        self.clock.advance(3600)
        self.assertIs(service.guides()[0], first)
        self.assertIn("not an XMLTV guide", service.status()["sources"][0]["error"])
        self.assertEqual(service.version, version)
        self.server.html = False
        self.clock.advance(3600)
        self.assertIsNot(service.guides()[0], first)
        self.assertIsNone(service.status()["sources"][0]["error"])
        self.assertEqual(os.listdir(self.temp), [])

    def test_unreachable_at_start(self):
        """
        A source failing from the start has no guide, says so, and the
        others are read.
        """
        service = self.service(["http://guides.test/missing.xml", "http://guides.test/guide.xml"])
        states = service.status()["sources"]
        self.assertEqual(states[0]["state"], "failed")
        self.assertEqual(states[0]["error"], "HTTP 404 Not Found")
        self.assertEqual(states[1]["state"], "ok")
        self.assertIn("no guide from it yet", self.logged())

    def test_file_source(self):
        """
        A file source is read from disk; a missing file is an error.
        """
        path = os.path.join(self.temp, "..", "tv.xml.gz")
        with open(path, "wb") as f:
            f.write(gzip.compress(self.server.data))
        service = self.service([os.path.abspath(path), "/nonexistent/tv.xml"])
        states = service.status()["sources"]
        self.assertEqual(states[0]["programmes"], 36)
        self.assertIn("cannot be opened", states[1]["error"])

    def test_credentials_never_shown(self):
        """
        A source URL with a user name and password is shown and logged in
        its masked form only.
        """
        url = "http://guides.test/xmltv.php?username=alice&password=hunter2"
        service = self.service([url])
        text = repr(service.status()) + self.logged()
        self.assertNotIn("hunter2", text)
        self.assertNotIn("alice", text)
        self.assertIn("xmltv.php?username&password", text)

    def test_xtream_providers_join_once_per_provider(self):
        """
        Each Xtream provider's xmltv.php is a source after guide_sources;
        pooled accounts of one provider share one fetch; M3U providers add
        none.
        """
        config = parse_config({"providers": [
            {"name": "p", "xtream": {"url": "http://guides.test", "username": "u1", "password": "p1"}},
            {"name": "p", "xtream": {"url": "http://guides.test", "username": "u2", "password": "p2"}},
            {"name": "m", "m3u_url": "http://guides.test/get.php"},
        ]})
        providers = ProviderSync(config.providers, None, SourceSlots({}), None, reactor=self.clock,
                                 known_urls=KnownUrls())
        service = self.service(["http://guides.test/guide.xml"], providers=providers)
        states = service.status()["sources"]
        self.assertEqual(len(states), 2)
        self.assertEqual(states[1]["state"], "ok")
        self.assertIn("(provider p)", states[1]["source"])
        self.assertNotIn("p1", states[1]["source"])
        self.assertEqual(self.server.requests["/xmltv.php"], 1)

    def test_built_guide_is_cached_until_something_changes(self):
        """
        A playlist's guide is built once and served from the cache until
        the guide or the catalog changes.
        """
        service = self.service(["http://guides.test/guide.xml"], hours=1)
        catalog = Catalog.build([candidate(1, "7", guide_id=guidegen.channel_id(2), uniform_name="Seven")])
        channels = catalog.playlists["main"]
        builds = []
        original = service._build
        self.patch(service, "_build", lambda *args: builds.append(1) or original(*args))
        first = self.successResultOf(service.document("main", channels, Ranking()))
        again = self.successResultOf(service.document("main", channels, Ranking()))
        self.assertIs(first, again)
        self.assertEqual(len(builds), 1)
        tv = ET.fromstring(gzip.decompress(first))
        self.assertEqual(len(tv.findall("programme[@channel='7']")), 12)
        self.clock.advance(3600)
        self.successResultOf(service.document("main", channels, Ranking()))
        self.assertEqual(len(builds), 2)
        other = Catalog.build(catalog.candidates).playlists["main"]
        self.successResultOf(service.document("main", other, Ranking()))
        self.assertEqual(len(builds), 3)
        self.assertEqual(self.successResultOf(service.plain(first)), gzip.decompress(first))

    def test_concurrent_requests_share_one_build(self):
        """
        Requests arriving while a build runs wait for that build.
        """
        waiting = []

        def in_thread(function, *args):
            d = defer.Deferred()
            waiting.append((d, function, args))
            return d

        service = GuideService([], 12, StubTreq(self.server), reactor=self.clock, run_in_thread=in_thread,
                               known_urls=KnownUrls())
        channels = Catalog.build([candidate(1, "7")]).playlists["main"]
        one = service.document("main", channels, Ranking())
        two = service.document("main", channels, Ranking())
        self.assertEqual(len(waiting), 1)
        d, function, args = waiting[0]
        d.callback(function(*args))
        self.assertEqual(self.successResultOf(one), self.successResultOf(two))

    def test_stop_during_a_fetch(self):
        """
        Stopping the service while a source is being fetched cancels it
        without an error logged.
        """
        pending = defer.Deferred()

        class Hanging:
            """
            An HTTP client whose answer never comes.
            """

            def get(self, *args, **kwargs):
                """
                The answer that never comes.
                """
                return pending

        service = GuideService(["http://guides.test/guide.xml"], 12, Hanging(), reactor=self.clock,
                               run_in_thread=synchronously, temp_dir=self.temp, known_urls=KnownUrls())
        service.startService()
        self.assertIsNotNone(service._refreshing)
        self.successResultOf(defer.maybeDeferred(service.stopService))
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(os.listdir(self.temp), [])


class GuideConfigTests(SynchronousTestCase):
    """
    The guide_sources and guide_refresh_hours keys.
    """

    def test_defaults(self):
        """
        No sources, a refresh every 12 hours.
        """
        config = parse_config({})
        self.assertEqual((config.guide_sources, config.guide_refresh_hours), ((), 12.0))

    def test_values(self):
        """
        URLs are kept, files resolved next to the config file, duplicates dropped.
        """
        config = parse_config({"guide_sources": ["http://a/g.xml", "tv.xml", "http://a/g.xml"],
                               "guide_refresh_hours": 6}, base_dir="/etc/sp")
        self.assertEqual(config.guide_sources, ("http://a/g.xml", "/etc/sp/tv.xml"))
        self.assertEqual(config.guide_refresh_hours, 6.0)

    def test_mistakes_name_the_key(self):
        """
        A source that is not an http(s) URL or a path, a list that is not
        one, and a refresh that is not positive are refused naming the key.
        """
        for value, fragment in ((["ftp://a/g.xml"], "guide_sources[0]: must be an http"),
                                ([""], "guide_sources[0]"), ("http://a", "guide_sources: must be a list"),
                                ([3], "guide_sources[0]")):
            with self.assertRaises(ConfigError) as caught:
                parse_config({"guide_sources": value})
            self.assertIn(fragment, str(caught.exception))
        for hours in (0, -1, "12", True):
            with self.assertRaises(ConfigError) as caught:
                parse_config({"guide_refresh_hours": hours})
            self.assertIn("guide_refresh_hours", str(caught.exception))
