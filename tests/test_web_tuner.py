"""
The HTTP side of HDHomeRun emulation and the XMLTV guide, through treq's
``StubTreq`` (no sockets): ``discover.json``, ``lineup.json``,
``lineup_status.json``, ``device.xml``, ``/auto/v<n>``, per playlist under
``/hdhr/<name>/``; ``/xmltv/<name>.xml``; and what the M3U playlists say
of the guide and the codecs.
"""

import base64
import gzip
import json
import os
from xml.etree import ElementTree as ET

import treq
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from streamproxy.channels import Ranking
from streamproxy.codec_memory import CodecMemory
from streamproxy.config import Config, HDHomeRunConfig
from streamproxy.ffmpeg import Encoding
from streamproxy.guide import GuideService
from streamproxy.hdhomerun import Tuners, device_id_is_valid
from streamproxy.media import StreamFacts
from streamproxy.session import ChannelUnavailable
from streamproxy.slots import SourceSlots
from streamproxy.urls import KnownUrls
from streamproxy.web import StreamProxyWeb

from . import guidegen
from .helpers import candidate
from .test_hdhomerun import SqliteStore


class WebStore(SqliteStore):
    """
    A loaded store with a catalog, over a real SQLite file (for the seed).
    """

    loaded = True
    load_error = None

    def when_loaded(self):
        """
        Loaded already.
        """
        return defer.succeed(self.catalog)


class FakeChannels:
    """
    A channel manager whose tunes fail with a reason, recording them.
    """

    def __init__(self):
        self.tuned = []

    def session(self, channel_id):
        """
        Nothing is running.
        """
        return None

    def tune(self, channel_id, client=None):
        """
        Record the tune and fail it as a channel whose candidates all failed.
        """
        self.tuned.append(channel_id)
        raise ChannelUnavailable(f"channel {channel_id}: every candidate failed (test)")

    def status(self):
        """
        No running channels.
        """
        return {"channels": []}


def pumped(agent, d, limit=100_000):
    """
    ``d`` after moving the in-memory connections' bytes until it has fired
    (an answer written a step at a time as the client reads).
    """
    fired = []

    def note(result):
        fired.append(True)
        return result

    d.addBoth(note)
    for _ in range(limit):
        if fired:
            break
        agent.flush()
    return d


def synchronously(function, *args):
    """
    Run ``function`` now.
    """
    return defer.maybeDeferred(function, *args)


class TunerWebTests(TestCase):
    """
    The HDHomeRun routes, the guide route and the playlists' new attributes.
    """

    def setUp(self):
        self.store = WebStore(os.path.abspath(self.mktemp()), [
            candidate(1, "7", source="a", uniform_name="Seven", guide_id=guidegen.channel_id(1),
                      logo="http://logos.test/7.png", m3u="main"),
            candidate(2, "8", source="b", uniform_name="Eight", guide_id="10001", m3u="main"),
            candidate(3, "20", source="a", uniform_name="Twenty", m3u="sports"),
        ])
        self.media = CodecMemory()
        self.channels = FakeChannels()
        self.clock = Clock()

    def web(self, settings=None, enabled=True, admin_password=None, guide_sources=()):
        """
        The web resource with tuners (unless not ``enabled``) and a guide
        service reading ``guide_sources`` synchronously.
        """
        config = Config(admin_password=admin_password)
        tuners = None
        if enabled:
            tuners = Tuners(settings or HDHomeRunConfig(), self.store, SourceSlots({"a": 2, "b": 1}), Ranking(),
                            media=self.media, channels=self.channels)
            tuners.startService()
        self.guide = GuideService(list(guide_sources), 12, None, reactor=self.clock, run_in_thread=synchronously,
                                  known_urls=KnownUrls())
        web = StreamProxyWeb(config, self.store, Ranking(), self.channels, reactor=self.clock,
                             own_names=["tv"], tuners=tuners, guide=self.guide, media=self.media)
        self.resource = web.resource()
        self.client = StubTreq(self.resource)
        return web

    @defer.inlineCallbacks
    def get(self, url, method="GET", **kwargs):
        """
        ``(response, body)`` of one request through StubTreq.
        """
        response = yield self.client.request(method, url, **kwargs)
        body = yield response.content()
        return response, body

    @defer.inlineCallbacks
    def json(self, url, **kwargs):
        """
        The JSON of a 200 answer.
        """
        response, body = yield self.get(url, **kwargs)
        self.assertEqual(response.code, 200, body)
        return json.loads(body)

    @defer.inlineCallbacks
    def test_discover_root_and_per_playlist(self):
        """
        The root serves the first playlist's device; /hdhr/<name>/ each
        playlist's own, with its own valid DeviceID, base and lineup URLs
        under the host the client used, and TunerCount as a number.
        """
        self.web()
        root = yield self.json("http://10.0.0.5:9090/discover.json")
        main = yield self.json("http://10.0.0.5:9090/hdhr/main/discover.json")
        sports = yield self.json("http://10.0.0.5:9090/hdhr/sports/discover.json")
        self.assertEqual(root["DeviceID"], main["DeviceID"])
        self.assertNotEqual(main["DeviceID"], sports["DeviceID"])
        self.assertTrue(device_id_is_valid(sports["DeviceID"]))
        self.assertEqual(root["BaseURL"], "http://10.0.0.5:9090")
        self.assertEqual(root["LineupURL"], "http://10.0.0.5:9090/lineup.json")
        self.assertEqual(sports["BaseURL"], "http://10.0.0.5:9090/hdhr/sports")
        self.assertEqual(sports["LineupURL"], "http://10.0.0.5:9090/hdhr/sports/lineup.json")
        self.assertIs(type(root["TunerCount"]), int)
        self.assertEqual((root["TunerCount"], sports["TunerCount"]), (3, 2))
        self.assertEqual(root["ModelNumber"], "HDTC-2US")
        response, body = yield self.get("http://10.0.0.5:9090/hdhr/nope/discover.json")
        self.assertEqual(response.code, 404)
        self.assertIn(b"'nope'", body)

    @defer.inlineCallbacks
    def test_configured_root_device(self):
        """
        hdhomerun.playlist and device_id choose the root's playlist and its
        DeviceID; tuner_count fixes TunerCount.
        """
        self.web(HDHomeRunConfig(playlist="sports", device_id="12345674", tuner_count=5))
        root = yield self.json("http://h/discover.json")
        self.assertEqual((root["DeviceID"], root["TunerCount"]), ("12345674", 5))
        self.assertEqual(root["FriendlyName"], "streamproxy sports")
        lineup = yield self.json("http://h/lineup.json")
        self.assertEqual([e["GuideNumber"] for e in lineup], ["20"])

    @defer.inlineCallbacks
    def test_lineup_with_codecs_once_known(self):
        """
        lineup.json lists each channel with its number, name and MPEG-TS
        URL; codecs and HD appear once a stream has been seen playing.
        """
        self.web()
        lineup = yield self.json("http://h:9090/lineup.json")
        self.assertEqual(lineup, [
            {"GuideNumber": "7", "GuideName": "Seven", "URL": "http://h:9090/channel/7/stream.ts"},
            {"GuideNumber": "8", "GuideName": "Eight", "URL": "http://h:9090/channel/8/stream.ts"},
        ])
        self.media.stream_described(self.store.catalog.channels["7"][0],
                                    StreamFacts("mpeg2video", ("mp2",), (), 1920, 1080, 25.0), Encoding(True, True))
        lineup = yield self.json("http://h:9090/lineup.json")
        self.assertEqual((lineup[0]["VideoCodec"], lineup[0]["AudioCodec"], lineup[0]["HD"]), ("H264", "AAC", 1))
        sports = yield self.json("http://h:9090/hdhr/sports/lineup.json")
        self.assertEqual([e["GuideNumber"] for e in sports], ["20"])

    @defer.inlineCallbacks
    def test_lineup_status_scan_and_device_xml(self):
        """
        lineup_status.json says no scan; a scan request is answered; device.xml
        is a UPnP root whose UDN carries the DeviceID and URLBase the base.
        """
        self.web()
        status = yield self.json("http://h/lineup_status.json")
        self.assertEqual(status, {"ScanInProgress": 0, "ScanPossible": 0, "Source": "Cable",
                                  "SourceList": ["Cable"]})
        response, _ = yield self.get("http://h/lineup.post?scan=start", method="POST")
        self.assertEqual(response.code, 200)
        sports = yield self.json("http://h/hdhr/sports/discover.json")
        response, body = yield self.get("http://h/hdhr/sports/device.xml")
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/xml; charset=utf-8"])
        root = ET.fromstring(body)
        ns = {"u": "urn:schemas-upnp-org:device-1-0"}
        self.assertEqual(root.find("u:device/u:UDN", ns).text, f"uuid:{sports['DeviceID']}")
        self.assertEqual(root.find("u:URLBase", ns).text, "http://h/hdhr/sports")

    @defer.inlineCallbacks
    def test_auto_tunes_the_channel_ignoring_query_parameters(self):
        """
        /auto/v<n> tunes the channel as MPEG-TS whatever query parameters
        come with it (Jellyfin's ?transcode=mobile), as does the lineup's
        stream.ts URL; a channel not in the device's lineup is 404; HEAD
        answers without tuning.
        """
        self.web()
        response, body = yield self.get("http://h/auto/v7?transcode=mobile")
        self.assertEqual(response.code, 503)
        self.assertIn(b"every candidate failed (test)", body)
        self.assertEqual(self.channels.tuned, ["7"])
        response, _ = yield self.get("http://h/hdhr/sports/auto/v20?transcode=heavy&duration=60")
        self.assertEqual(self.channels.tuned, ["7", "20"])
        response, _ = yield self.get("http://h/hdhr/sports/auto/v7")
        self.assertEqual(response.code, 404)
        response, _ = yield self.get("http://h/auto/v99")
        self.assertEqual(response.code, 404)
        response, _ = yield self.get("http://h/auto/v8", method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["video/mp2t"])
        self.assertEqual(self.channels.tuned, ["7", "20"])
        # The lineup's own URLs, with Jellyfin's parameter appended.
        response, body = yield self.get("http://h/channel/8/stream.ts?transcode=mobile")
        self.assertEqual(response.code, 503)
        self.assertEqual(self.channels.tuned, ["7", "20", "8"])

    @defer.inlineCallbacks
    def test_open_to_tuner_clients(self):
        """
        With admin_password set and a host name that is not this machine's,
        the tuner and guide routes still answer (Plex and Jellyfin send
        neither); /api/guide asks for the password.
        """
        self.web(admin_password="secret")
        for path in ("/discover.json", "/lineup.json", "/lineup_status.json", "/device.xml",
                     "/hdhr/sports/lineup.json", "/xmltv/main.xml"):
            response, body = yield self.get(f"http://tuner.example{path}", headers={"Host": "tuner.example"})
            self.assertEqual(response.code, 200, (path, body))
        response, _ = yield self.get("http://127.0.0.1/api/guide")
        self.assertEqual(response.code, 401)
        auth = base64.b64encode(b"x:secret").decode()
        status = yield self.json("http://127.0.0.1/api/guide", headers={"Authorization": f"Basic {auth}"})
        self.assertEqual(status["sources"], [])

    @defer.inlineCallbacks
    def test_disabled(self):
        """
        With hdhomerun.enabled false the tuner routes are 404 with a line
        naming the key; the guide still answers.
        """
        self.web(enabled=False)
        for path in ("/discover.json", "/lineup.json", "/hdhr/main/discover.json", "/auto/v7"):
            response, body = yield self.get(f"http://h{path}")
            self.assertEqual(response.code, 404, path)
            self.assertIn(b"hdhomerun.enabled", body)
        response, _ = yield self.get("http://h/xmltv/main.xml")
        self.assertEqual(response.code, 200)

    @defer.inlineCallbacks
    def test_guide_route(self):
        """
        /xmltv/<name>.xml lists the playlist's channels with their numbers
        as ids and the programmes of their TV-guide-id from the sources;
        an unknown playlist is 404.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            guidegen.write_guide(f, channels=2, days=1, minutes=180)
        web = self.web(guide_sources=[path])
        self.guide.startService()
        self.addCleanup(self.guide.stopService)
        response, body = yield self.get("http://h/xmltv/main.xml")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/xml; charset=utf-8"])
        tv = ET.fromstring(body)
        self.assertEqual([c.get("id") for c in tv.findall("channel")], ["7", "8"])
        self.assertEqual(len(tv.findall("programme[@channel='7']")), 8)
        self.assertEqual(tv.findall("programme[@channel='8']"), [])
        response, _ = yield self.get("http://h/xmltv/nope.xml")
        self.assertEqual(response.code, 404)
        self.assertIsNotNone(web)

    @defer.inlineCallbacks
    def test_guide_is_gzipped_when_accepted(self):
        """
        A client taking gzip gets the guide gzip-encoded; one that does not
        (or refuses it with q=0) gets it plain.
        """
        self.web()
        agent = RequestTraversalAgent(self.resource)
        bodies = {}
        for accept in ("gzip, deflate", "identity", "gzip;q=0"):
            response = yield pumped(agent, agent.request(b"GET", b"http://h/xmltv/main.xml",
                                                         Headers({b"accept-encoding": [accept.encode()]})))
            body = yield pumped(agent, treq.content(response))
            bodies[accept] = (response.headers.getRawHeaders(b"content-encoding"), body)
        encoding, body = bodies["gzip, deflate"]
        self.assertEqual(encoding, [b"gzip"])
        self.assertEqual(gzip.decompress(body), bodies["identity"][1])
        self.assertIsNone(bodies["identity"][0])
        self.assertIsNone(bodies["gzip;q=0"][0])
        self.assertTrue(bodies["identity"][1].startswith(b'<?xml version="1.0" encoding="UTF-8"?>'))

    @defer.inlineCallbacks
    def test_playlist_names_the_guide_and_agrees_with_it(self):
        """
        The M3U header names the playlist's guide (url-tvg and x-tvg-url);
        each channel's tvg-id is the id of its <channel> in that guide (its
        number), tvg-chno its number; a numeric TV-guide-id still gives
        tvc-guide-stationid.
        """
        self.web()
        _, m3u = yield self.get("http://10.0.0.5:9090/m3u/main.m3u")
        _, guide = yield self.get("http://10.0.0.5:9090/xmltv/main.xml")
        lines = m3u.decode().splitlines()
        self.assertEqual(lines[0], '#EXTM3U url-tvg="http://10.0.0.5:9090/xmltv/main.xml" '
                                   'x-tvg-url="http://10.0.0.5:9090/xmltv/main.xml"')
        tvg_ids = [line.split('tvg-id="')[1].split('"')[0] for line in lines if line.startswith("#EXTINF")]
        self.assertEqual(tvg_ids, [c.get("id") for c in ET.fromstring(guide).findall("channel")])
        self.assertIn('tvg-id="8" tvg-chno="8"', lines[3])
        self.assertIn('tvc-guide-stationid="10001"', lines[3])

    @defer.inlineCallbacks
    def test_playlist_codecs_from_a_previous_run(self):
        """
        Once a channel's best stream has played, the playlist gives its
        codecs as served (tvc-stream-vcodec, tvc-stream-acodec); the built
        playlist is rebuilt for it.
        """
        self.web()
        _, before = yield self.get("http://h/m3u/main.m3u")
        self.assertNotIn(b"tvc-stream-vcodec", before)
        self.media.stream_described(self.store.catalog.channels["8"][0],
                                    StreamFacts("hevc", ("eac3", "aac"), (), 3840, 2160, 50.0), Encoding())
        _, after = yield self.get("http://h/m3u/main.m3u")
        line = after.decode().splitlines()[3]
        self.assertIn('tvc-stream-vcodec="hevc" tvc-stream-acodec="eac3"', line)
        self.assertNotIn("tvc-stream-vcodec", after.decode().splitlines()[1])
