"""
Unit tests of HDHomeRun emulation: DeviceIDs and SiliconDust's check digit,
the install seed kept in the database, TunerCount, the devices per
playlist and what they answer (as plain data), and the ``hdhomerun:``
block of config.yaml.
"""

import os
import sqlite3
from xml.etree import ElementTree as ET

from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from streamproxy import hdhomerun
from streamproxy.channels import Catalog, Ranking
from streamproxy.codec_memory import CodecMemory, StreamMedia
from streamproxy.config import ConfigError, HDHomeRunConfig, parse_config
from streamproxy.hdhomerun import (
    IDLE_TUNER_STATUS, MAX_TUNERS, UNLIMITED_SOURCE_TUNERS, NotReady, Tuners, check_digit,
    complete_device_id, derive_identity, device_id_is_valid, device_xml, discover_answer, lineup_answer,
    load_or_create_seed, tuner_count,
)
from streamproxy.slots import SourceSlots
from streamproxy.store import prepare_database

from .helpers import candidate


class SqliteStore:
    """
    A store over a real SQLite file whose ``run_interaction`` runs at
    once, with a catalog the test sets.
    """

    def __init__(self, path, candidates=()):
        prepare_database(path)
        self.path = path
        self.catalog = Catalog.build(candidates)
        self.fail = False

    def run_interaction(self, function, *args):
        """
        ``function(cursor, *args)`` as one transaction, now.
        """
        if self.fail:
            return defer.fail(sqlite3.OperationalError("attempt to write a readonly database"))
        connection = sqlite3.connect(self.path)
        try:
            with connection:
                return defer.succeed(function(connection.cursor(), *args))
        finally:
            connection.close()


class FakeManager:
    """
    The running channels as ``ChannelManager.status()`` lists them.
    """

    def __init__(self, entries=()):
        self.entries = list(entries)

    def status(self):
        """
        What the manager's status gives: the channels' entries.
        """
        return {"channels": list(self.entries)}


class DeviceIdTests(SynchronousTestCase):
    """
    SiliconDust's check digit and the DeviceIDs we make.
    """

    def test_known_ids(self):
        """
        The check digit is SiliconDust's: 12345674 passes and 12345678 does
        not; the wildcard FFFFFFFF passes (as in libhdhomerun).
        """
        self.assertTrue(device_id_is_valid("12345674"))
        self.assertFalse(device_id_is_valid("12345678"))
        self.assertTrue(device_id_is_valid("FFFFFFFF"))
        self.assertEqual(check_digit(0x1234567), 4)
        self.assertEqual(complete_device_id(0x1234567), "12345674")

    def test_malformed_ids_are_invalid(self):
        """
        Text that is not 8 hex digits is never a valid DeviceID.
        """
        for text in ("1234567", "123456744", "1234567G", "", " 12345674"):
            self.assertFalse(device_id_is_valid(text), text)

    def test_derived_ids_are_valid_stable_and_distinct(self):
        """
        A playlist's DeviceID is valid, the same for the same seed and
        name, different for another playlist or another install, starts
        with 1 and never has a legacy model's prefix.
        """
        legacy = {0x100, 0x101, 0x102, 0x103, 0x111, 0x120, 0x121, 0x122}
        seen = set()
        for seed in ("a", "b", "c"):
            for name in ("main", "sports", "news", "", "Ünïcode"):
                device_id, auth = derive_identity(seed, name)
                self.assertTrue(device_id_is_valid(device_id), device_id)
                self.assertEqual(derive_identity(seed, name), (device_id, auth))
                self.assertTrue(device_id.startswith("1"))
                self.assertNotIn(int(device_id, 16) >> 20, legacy)
                self.assertEqual(len(auth), 24)
                seen.add(device_id)
        self.assertEqual(len(seen), 15)

    def test_seed_is_made_once_and_kept(self):
        """
        The first start stores a seed in the database file; later starts
        read that one back, whatever seed they would have made.
        """
        path = os.path.abspath(self.mktemp())
        prepare_database(path)
        connection = sqlite3.connect(path)
        with connection:
            first = load_or_create_seed(connection.cursor(), "seed-one")
        with connection:
            second = load_or_create_seed(connection.cursor(), "seed-two")
        connection.close()
        self.assertEqual((first, second), ("seed-one", "seed-one"))


class TunerCountTests(SynchronousTestCase):
    """
    TunerCount from the sources' limits.
    """

    def test_sum_of_limits(self):
        """
        Limited sources add their limits.
        """
        self.assertEqual(tuner_count({"a", "b"}, {"a": 2, "b": 3}.get), 5)

    def test_unlimited_source_counts_a_few(self):
        """
        A source without a limit counts UNLIMITED_SOURCE_TUNERS.
        """
        self.assertEqual(tuner_count({"a", "b"}, {"a": 2}.get), 2 + UNLIMITED_SOURCE_TUNERS)

    def test_bounds(self):
        """
        At least one tuner (sources limited to 0) and at most MAX_TUNERS.
        """
        self.assertEqual(tuner_count({"a"}, {"a": 0}.get), 1)
        self.assertEqual(tuner_count({f"s{i}" for i in range(50)}, lambda s: None), MAX_TUNERS)


class AnswerTests(SynchronousTestCase):
    """
    The HTTP answers as plain data.
    """

    device = hdhomerun.Device("main", "12345674", "auth", "streamproxy main", 3, True)

    def test_discover_answer(self):
        """
        discover.json names the device, an HDTC-2US model, and TunerCount
        as a JSON number (Plex misreads a string).
        """
        answer = discover_answer(self.device, "http://h:9090/hdhr/main")
        self.assertEqual(answer["DeviceID"], "12345674")
        self.assertEqual(answer["ModelNumber"], "HDTC-2US")
        self.assertIs(type(answer["TunerCount"]), int)
        self.assertEqual(answer["TunerCount"], 3)
        self.assertEqual(answer["BaseURL"], "http://h:9090/hdhr/main")
        self.assertEqual(answer["LineupURL"], "http://h:9090/hdhr/main/lineup.json")
        for key in ("FriendlyName", "FirmwareName", "FirmwareVersion", "DeviceAuth"):
            self.assertTrue(answer[key], key)

    def test_lineup_answer(self):
        """
        One entry per channel: GuideNumber (the channel number), GuideName,
        the MPEG-TS URL; codecs and HD only where the best candidate's
        media is known.
        """
        channels = {
            "7": (candidate(1, "7", uniform_name="Seven"),),
            "7.1": (candidate(2, "7.1", name="Seven Two"),),
        }
        media = {1: StreamMedia("h264", "ac3", 1080)}
        lineup = lineup_answer(channels, Ranking(), "http://h:9090", media.get)
        self.assertEqual(lineup[0], {
            "GuideNumber": "7", "GuideName": "Seven", "URL": "http://h:9090/channel/7/stream.ts",
            "VideoCodec": "H264", "AudioCodec": "AC3", "HD": 1,
        })
        self.assertEqual(lineup[1], {
            "GuideNumber": "7.1", "GuideName": "Seven Two", "URL": "http://h:9090/channel/7.1/stream.ts",
        })

    def test_sd_media_is_not_hd(self):
        """
        A 576-line picture is HD 0; MPEG-2 video is spelled MPEG2.
        """
        channels = {"3": (candidate(5, "3"),)}
        lineup = lineup_answer(channels, Ranking(), "http://h", {5: StreamMedia("mpeg2video", None, 576)}.get)
        self.assertEqual((lineup[0]["VideoCodec"], lineup[0]["HD"]), ("MPEG2", 0))
        self.assertNotIn("AudioCodec", lineup[0])

    def test_device_xml(self):
        """
        device.xml is a UPnP MediaServer root whose UDN carries the DeviceID.
        """
        root = ET.fromstring(device_xml(self.device, "http://h:9090").encode("utf-8"))
        ns = {"u": "urn:schemas-upnp-org:device-1-0"}
        self.assertEqual(root.find("u:device/u:deviceType", ns).text, "urn:schemas-upnp-org:device:MediaServer:1")
        self.assertEqual(root.find("u:device/u:UDN", ns).text, "uuid:12345674")
        self.assertEqual(root.find("u:URLBase", ns).text, "http://h:9090")

    def test_tuner_status(self):
        """
        An idle tuner says so as a real one does; a live channel shows its
        number and bitrate.
        """
        self.assertEqual(hdhomerun.tuner_status(None), IDLE_TUNER_STATUS)
        text = hdhomerun.tuner_status({"channel_id": "7", "state": "live", "current": {"bitrate_kbps": 4000}})
        self.assertEqual(text, "ch=auto:7 lock=auto ss=100 snq=100 seq=100 bps=4000000 pps=0")


class TunersTests(SynchronousTestCase):
    """
    The devices of a catalog.
    """

    def make(self, candidates, settings=None, limits=None, running=()):
        """
        A started :class:`Tuners` over ``candidates``.
        """
        self.store = SqliteStore(os.path.abspath(self.mktemp()), candidates)
        tuners = Tuners(settings or HDHomeRunConfig(), self.store, SourceSlots(limits or {}), Ranking(),
                        media=CodecMemory(), channels=FakeManager(running))
        tuners.startService()
        self.addCleanup(tuners.stopService)
        return tuners

    def rows(self):
        """
        Three candidates: two channels in "main", one in "sports".
        """
        return [
            candidate(1, "7", source="a", m3u="main"),
            candidate(2, "8", source="b", m3u="main"),
            candidate(3, "20", source="a", m3u="sports"),
        ]

    def test_a_device_per_playlist(self):
        """
        Each playlist is a device with its own valid DeviceID; the root is
        the first playlist by name; devices() lists the root first.
        """
        tuners = self.make(self.rows(), limits={"a": 2})
        main, sports = tuners.device("main"), tuners.device("sports")
        self.assertNotEqual(main.device_id, sports.device_id)
        self.assertTrue(all(device_id_is_valid(d.device_id) for d in (main, sports)))
        self.assertEqual(tuners.device(), main)
        self.assertTrue(main.root)
        self.assertFalse(sports.root)
        self.assertEqual([d.playlist for d in tuners.devices()], ["main", "sports"])
        self.assertEqual(main.friendly_name, "streamproxy main")
        self.assertEqual(main.tuner_count, 2 + UNLIMITED_SOURCE_TUNERS)
        self.assertEqual(sports.tuner_count, 2)
        self.assertEqual(sports.base_path(), "/hdhr/sports")
        self.assertIsNone(tuners.device("nope"))
        self.assertEqual(tuners.device("SPORTS"), sports)

    def test_ids_survive_a_restart(self):
        """
        A second start on the same database file gives the same DeviceIDs.
        """
        tuners = self.make(self.rows())
        before = [d.device_id for d in tuners.devices()]
        again = Tuners(HDHomeRunConfig(), self.store, SourceSlots({}), Ranking())
        again.startService()
        self.assertEqual([d.device_id for d in again.devices()], before)

    def test_configured_root(self):
        """
        hdhomerun.playlist picks the root's playlist, device_id replaces its
        DeviceID, tuner_count every device's TunerCount.
        """
        settings = HDHomeRunConfig(playlist="sports", device_id="12345674", tuner_count=6)
        tuners = self.make(self.rows(), settings)
        root = tuners.device()
        self.assertEqual((root.playlist, root.device_id, root.tuner_count), ("sports", "12345674", 6))
        self.assertEqual(tuners.device("sports").device_id, "12345674")
        self.assertNotEqual(tuners.device("main").device_id, "12345674")
        self.assertEqual(tuners.device("main").tuner_count, 6)

    def test_no_playlists(self):
        """
        Without playlists the root device still answers, with an empty lineup.
        """
        tuners = self.make([])
        root = tuners.device()
        self.assertIsNone(root.playlist)
        self.assertEqual(tuners.lineup(root), {})
        self.assertTrue(device_id_is_valid(root.device_id))

    def test_not_ready_before_the_seed(self):
        """
        Before the seed is read, device() raises NotReady and when_ready()
        waits; once read, both go on.
        """
        store = SqliteStore(os.path.abspath(self.mktemp()), self.rows())
        tuners = Tuners(HDHomeRunConfig(), store, SourceSlots({}), Ranking())
        self.assertRaises(NotReady, tuners.device)
        waiting = tuners.when_ready()
        self.assertNoResult(waiting)
        tuners.startService()
        self.assertIs(self.successResultOf(waiting), tuners)

    def test_unkept_seed_is_a_warning(self):
        """
        A database that cannot keep the seed gives DeviceIDs for this run
        and one warning.
        """
        store = SqliteStore(os.path.abspath(self.mktemp()), self.rows())
        store.fail = True
        tuners = Tuners(HDHomeRunConfig(), store, SourceSlots({}), Ranking())
        lines = []
        observer = lambda event: lines.append(formatEvent(event)) if event.get("log_level") == LogLevel.warn else None
        globalLogPublisher.addObserver(observer)
        try:
            tuners.startService()
        finally:
            globalLogPublisher.removeObserver(observer)
        self.assertTrue(device_id_is_valid(tuners.device().device_id))
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("new for this run only", lines[0])

    def test_control_values(self):
        """
        /sys/model, /sys/hwmodel and /sys/version have values; tuner N
        shows the N-th running channel, idle beyond; tuners past the count
        and unknown names have none.
        """
        running = [{"channel_id": "8", "state": "live", "since": 5, "current": {"bitrate_kbps": 2000}}]
        tuners = self.make(self.rows(), limits={"a": 1, "b": 1}, running=running)
        self.assertEqual(tuners.control_value("/sys/model"), hdhomerun.FIRMWARE_NAME)
        self.assertEqual(tuners.control_value("/sys/hwmodel"), "HDTC-2US")
        self.assertEqual(tuners.control_value("/sys/version"), hdhomerun.FIRMWARE_VERSION)
        self.assertEqual(tuners.control_value("/tuner0/status"),
                         "ch=auto:8 lock=auto ss=100 snq=100 seq=100 bps=2000000 pps=0")
        self.assertEqual(tuners.control_value("/tuner0/vchannel"), "8")
        self.assertEqual(tuners.control_value("/tuner1/status"), IDLE_TUNER_STATUS)
        self.assertIsNone(tuners.control_value("/tuner2/status"))
        self.assertIsNone(tuners.control_value("/sys/nonsense"))

    def test_playlist_channels(self):
        """
        The root's channels, a named playlist's, None for an unknown one.
        """
        tuners = self.make(self.rows())
        self.assertEqual(sorted(tuners.playlist_channels()), ["7", "8"])
        self.assertEqual(sorted(tuners.playlist_channels("sports")), ["20"])
        self.assertIsNone(tuners.playlist_channels("nope"))


class HDHomeRunConfigTests(SynchronousTestCase):
    """
    The ``hdhomerun:`` block of config.yaml.
    """

    def fails(self, block, *fragments):
        """
        ``block`` is refused with a message holding ``fragments``.
        """
        with self.assertRaises(ConfigError) as caught:
            parse_config({"hdhomerun": block})
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))

    def test_defaults(self):
        """
        On, discovery on, no fixed DeviceID or tuner count.
        """
        settings = parse_config({}).hdhomerun
        self.assertEqual(settings, HDHomeRunConfig())
        self.assertTrue(settings.enabled and settings.discovery)
        self.assertIsNone(settings.device_id)
        self.assertEqual(parse_config({"hdhomerun": None}).hdhomerun, HDHomeRunConfig())

    def test_values(self):
        """
        Every key is taken; a DeviceID is upper-cased.
        """
        device_id = complete_device_id(0x1ABCDEF)
        settings = parse_config({"hdhomerun": {
            "enabled": False, "discovery": False, "device_id": device_id.lower(),
            "friendly_name": "Living Room", "tuner_count": 4, "playlist": "main",
        }}).hdhomerun
        self.assertEqual(settings, HDHomeRunConfig(False, device_id, "Living Room", 4, False, "main"))

    def test_mistakes_name_the_key(self):
        """
        Each mistake names hdhomerun.<key>; a DeviceID failing the check
        digit says which one would pass.
        """
        self.fails({"device_id": "12345678"}, "hdhomerun.device_id", "check digit", "12345674 would pass")
        self.fails({"device_id": "xyz"}, "hdhomerun.device_id", "8 hex digits")
        self.fails({"tuner_count": 0}, "hdhomerun.tuner_count")
        self.fails({"tuner_count": "2"}, "hdhomerun.tuner_count")
        self.fails({"enabled": "yes"}, "hdhomerun.enabled", "true or false")
        self.fails({"discovery": 1}, "hdhomerun.discovery")
        self.fails({"friendly_name": ""}, "hdhomerun.friendly_name")
        self.fails({"enable": True}, "hdhomerun: unknown key 'enable'", "did you mean 'enabled'")
        self.fails(["enabled"], "hdhomerun: must be a mapping")
