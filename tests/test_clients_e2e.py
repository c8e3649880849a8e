"""
Real clients against the daemon's service tree on 127.0.0.1: Debian's
``hdhomerun_config`` (SiliconDust discovery and control on the fixed port
65001, which it always uses) and ``tv_validate_file`` from ``xmltv-util``
(the guides we serve).  ``make test`` installs both; a missing one, or a
port 65001 another program holds, fails the test with a sentence saying
so (never a silent pass).  The one test of the default ports (65001 and
1900) accepts a port in use by asserting the warning instead.
"""

import gzip
import json
import os
import re
import struct

import treq
from twisted.internet import defer, reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from streamproxy.config import parse_config
from streamproxy.discovery import DiscoveryService
from streamproxy.silicondust import TAG_DEVICE_ID
from streamproxy.tap import build_services

from . import guidegen
from .helpers import make_database, row
from .test_daemon import free_port
from .upstream import wait_until
from .test_discovery import Collector, FakeTuners, discover_request, fields_of

HDHOMERUN_CONFIG = "/usr/bin/hdhomerun_config"
TV_VALIDATE_FILE = "/usr/bin/tv_validate_file"
XMLTV_DTD = "/usr/share/xmltv/xmltv.dtd"

# What tv_validate_file may say of our guides: ids that are channel
# numbers rather than dotted names, and channels without programmes.
ACCEPTED_COMPLAINTS = (
    re.compile(r"^Line \d+ Invalid channel-id '[0-9.]+'$"),
    re.compile(r"^No programme entries found for [0-9.]+$"),
    re.compile(r"^No programme entries found\.$"),
    re.compile(r"^\d+ errors? found\.$"),
)


def require(program, package):
    """
    Fail with a sentence when ``program`` is not installed.
    """
    if not os.access(program, os.X_OK):
        raise AssertionError(f"{program} is not installed: install the Debian package {package} "
                             f"(make test and .ci/run install it)")


class DaemonTree(TestCase):
    """
    The daemon's services over a database of three channels in two
    playlists, HTTP on a free port of 127.0.0.1.
    """

    timeout = 60

    def start(self, discovery=True, ssdp_port=0, **settings):
        """
        Build and start the service tree; SiliconDust discovery on its
        fixed port 65001 when ``discovery``, SSDP on ``ssdp_port``.
        """
        folder = os.path.abspath(self.mktemp())
        db = make_database(os.path.join(folder, "streams.db"), [
            row(7, "http://127.0.0.1:1/7.ts", source="a", uniform_name="Seven",
                tv_guide_id=guidegen.channel_id(1)),
            row(8, "http://127.0.0.1:1/8.ts", source="a", uniform_name="Eight & Co",
                tv_guide_id=guidegen.channel_id(2)),
            row(20, "http://127.0.0.1:1/20.ts", source="b", m3u="sports", uniform_name="Twenty"),
        ])
        values = {"db_path": db, "port": free_port(), "interface": "127.0.0.1",
                  "segment_dir": os.path.abspath(self.mktemp()), "source_limits": {"a": 2, "b": 1},
                  "hdhomerun": {"discovery": discovery}}
        values.update(settings)
        self.config = parse_config(values)
        self.root, self.parts = build_services(self.config, reactor)
        if discovery:
            self.parts["discovery"].ssdp_port = ssdp_port
        self.root.startService()
        self.addCleanup(self.root.stopService)
        return self.parts

    @defer.inlineCallbacks
    def get(self, path):
        """
        ``(response, body)`` of a GET to the daemon.
        """
        response = yield treq.get(f"http://127.0.0.1:{self.config.port}{path}", timeout=10, persistent=False)
        body = yield response.content()
        return response, body

    @defer.inlineCallbacks
    def wait_ready(self):
        """
        Wait for the table and the tuner identity.
        """
        yield self.parts["store"].when_loaded()
        yield self.parts["tuners"].when_ready()


class HDHomeRunConfigTests(DaemonTree):
    """
    ``hdhomerun_config`` finds and questions the emulated tuner.
    """

    @defer.inlineCallbacks
    def run_client(self, *args):
        """
        ``(exit code, output)`` of ``hdhomerun_config`` with ``args``.
        """
        out, err, code = yield getProcessOutputAndValue(HDHOMERUN_CONFIG, args, env={})
        return code, (out + err).decode("utf-8", "replace").strip()

    @defer.inlineCallbacks
    def test_hdhomerun_config_get_and_discover(self):
        """
        ``hdhomerun_config 127.0.0.1 get /sys/model`` prints our model
        (it discovers over UDP, then asks over TCP, both on port 65001);
        hwmodel, version and an idle tuner's status follow; ``set`` is
        refused with the protocol's error; ``discover 127.0.0.1`` lists one
        device per playlist, with the DeviceIDs of discover.json.
        """
        require(HDHOMERUN_CONFIG, "hdhomerun-config")
        parts = self.start()
        missing = [name for name in ("discovery", "control") if name not in parts["discovery"].ports]
        if missing:
            raise AssertionError(
                f"port 65001 is held by another program on this machine ({'; '.join(parts['discovery'].warnings)}); "
                f"hdhomerun_config only talks to port 65001, so this test needs it free")
        yield self.wait_ready()
        code, model = yield self.run_client("127.0.0.1", "get", "/sys/model")
        self.assertEqual((code, model), (0, "hdhomeruntc_atsc"))
        code, hwmodel = yield self.run_client("127.0.0.1", "get", "/sys/hwmodel")
        self.assertEqual(hwmodel, "HDTC-2US")
        code, version = yield self.run_client("127.0.0.1", "get", "/sys/version")
        self.assertRegex(version, r"^\d{8}$")
        code, status = yield self.run_client("127.0.0.1", "get", "/tuner0/status")
        self.assertEqual(status, "ch=none lock=none ss=0 snq=0 seq=0 bps=0 pps=0")
        code, unknown = yield self.run_client("127.0.0.1", "get", "/tuner9/status")
        self.assertEqual(unknown, "ERROR: unknown getset variable")
        code, refused = yield self.run_client("127.0.0.1", "set", "/tuner0/channel", "auto:7")
        self.assertIn("ERROR: streamproxy is read-only", refused)
        code, found = yield self.run_client("discover", "127.0.0.1")
        ids = sorted(re.findall(r"hdhomerun device ([0-9A-F]{8}) found at 127\.0\.0\.1", found))
        _, root = yield self.get("/discover.json")
        _, sports = yield self.get("/hdhr/sports/discover.json")
        self.assertEqual(ids, sorted([json.loads(root)["DeviceID"], json.loads(sports)["DeviceID"]]), found)


class DefaultPortTests(TestCase):
    """
    The listeners on their real ports, 65001 and 1900.
    """

    timeout = 20

    @defer.inlineCallbacks
    def test_default_ports_answer_or_warn(self):
        """
        On the default ports the service answers a discovery request sent
        to 127.0.0.1:65001 and an M-SEARCH sent to 127.0.0.1:1900; a port
        another program holds gives instead one warning naming it, and the
        service runs on.
        """
        service = DiscoveryService(FakeTuners(), 9090, "127.0.0.1", reactor)
        self.assertEqual((service.discovery_port, service.ssdp_port), (65001, 1900))
        service.startService()
        self.addCleanup(service.stopService)
        self.assertTrue(service.running)
        collector = Collector()
        port = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        expected = 0
        if "discovery" in service.ports:
            collector.transport.write(discover_request(device_id=0x12345674), ("127.0.0.1", 65001))
            expected += 1
        else:
            self.assertTrue(any("UDP" in w and "port 65001" in w for w in service.warnings), service.warnings)
        if "ssdp" in service.ports:
            # Port 1900 is shared (SO_REUSEPORT): another SSDP program here
            # may be handed a search sent straight to the port, so it is sent
            # from several client ports until ours answers.
            search = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
                      b"MX: 1\r\nST: uuid:12345674\r\n\r\n")
            searchers = []
            for _ in range(16):
                searcher = Collector()
                searchers.append(searcher)
                self.addCleanup(reactor.listenUDP(0, searcher, interface="127.0.0.1").stopListening)
                searcher.transport.write(search, ("127.0.0.1", 1900))
            yield wait_until(lambda: any(b"USN: uuid:12345674" in data for s in searchers for data, _ in s.received),
                             timeout=5)
            answer = next(data for s in searchers for data, _ in s.received if b"uuid:12345674" in data)
            self.assertIn(b"LOCATION: http://127.0.0.1:9090/device.xml\r\n", answer)
        else:
            self.assertTrue(any("UDP port 1900" in w for w in service.warnings), service.warnings)
        if "control" not in service.ports:
            self.assertTrue(any("TCP port 65001" in w for w in service.warnings), service.warnings)
        self.assertLessEqual(len([w for w in service.warnings if "65001" in w]), 1)
        if expected:
            yield collector.wait(expected)
        for data, address in collector.received:
            self.assertEqual(address[1], 65001)
            self.assertEqual(fields_of(data)[1][TAG_DEVICE_ID], struct.pack(">I", 0x12345674))


class GuideValidationTests(DaemonTree):
    """
    The guides we serve, checked by tv_validate_file.
    """

    @defer.inlineCallbacks
    def validate(self, path):
        """
        The complaints tv_validate_file makes of our guide at ``path``, with
        those we accept (numeric ids, channels without programmes) left out.
        """
        require(TV_VALIDATE_FILE, "xmltv-util")
        response, body = yield self.get(path)
        self.assertEqual(response.code, 200, body)
        file = os.path.abspath(self.mktemp() + ".xml")
        with open(file, "wb") as f:
            f.write(body)
        # --dtd-file: the Debian copy of the DTD (the default fetches it from the web).
        out, err, code = yield getProcessOutputAndValue(TV_VALIDATE_FILE, ["--dtd-file", XMLTV_DTD, file],
                                                         env={"PATH": "/usr/bin:/bin"})
        lines = [line for line in (out + err).decode("utf-8", "replace").splitlines() if line.strip()]
        self.assertFalse(any("not valid" in line or "not well-formed" in line for line in lines), lines)
        return [line for line in lines if not any(p.match(line) for p in ACCEPTED_COMPLAINTS)], lines, body

    @defer.inlineCallbacks
    def test_guide_from_a_generated_source_is_valid(self):
        """
        A playlist's guide built from a generated gzip source (fetched by
        the guide service at start) passes tv_validate_file apart from our
        numeric channel ids and the channel without programmes.
        """
        source = os.path.abspath(self.mktemp() + ".xml.gz")
        with gzip.open(source, "wb") as f:
            guidegen.write_guide(f, channels=4, days=2, minutes=90)
        self.start(discovery=False, guide_sources=[source])
        yield self.wait_ready()
        yield wait_until(lambda: self.parts["guide"].last_refresh is not None)
        rest, lines, body = yield self.validate("/xmltv/main.xml")
        self.assertEqual(rest, [], lines)
        self.assertEqual(body.count(b"<programme "), 2 * 32)

    @defer.inlineCallbacks
    def test_guide_without_sources_is_valid(self):
        """
        Without guide sources the guide lists the channels, and
        tv_validate_file finds nothing but the missing programmes and our ids.
        """
        self.start(discovery=False)
        yield self.wait_ready()
        rest, lines, body = yield self.validate("/xmltv/sports.xml")
        self.assertEqual(rest, [], lines)
        self.assertIn(b'<channel id="20">', body)
