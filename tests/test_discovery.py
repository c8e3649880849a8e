"""
SiliconDust's packet format, discovery and control, and SSDP: the pure
encoders and decoders, then the listeners over real UDP and TCP sockets on
127.0.0.1 (ephemeral ports; the fixed ports 65001 and 1900 and the real
``hdhomerun_config`` client are in ``test_clients_e2e``).
"""

import socket
import struct
import zlib

from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamproxy import silicondust, ssdp
from streamproxy.discovery import DiscoveryService, local_address_towards
from streamproxy.hdhomerun import Device, NotReady
from streamproxy.silicondust import (
    SET_REFUSED, TAG_BASE_URL, TAG_DEVICE_AUTH_STR, TAG_DEVICE_ID, TAG_DEVICE_TYPE, TAG_ERROR_MESSAGE,
    TAG_GETSET_NAME, TAG_GETSET_VALUE, TAG_LINEUP_URL, TAG_TUNER_COUNT, TYPE_DISCOVER_REQ, TYPE_DISCOVER_RPY,
    TYPE_GETSET_REQ, TYPE_GETSET_RPY, UNKNOWN_VARIABLE, WILDCARD, PacketError, control_reply, decode_fields,
    discovery_replies, encode_length, frame, unframe,
)

MAIN = Device("main", "12345674", "authmain", "streamproxy main", 2, True)
SPORTS = Device("sports", "1ABCDEF0", "authsports", "streamproxy sports", 3, False)


def discover_request(device_type=1, device_id=WILDCARD):
    """
    A discovery request as libhdhomerun sends it.
    """
    return frame(TYPE_DISCOVER_REQ, [(TAG_DEVICE_TYPE, struct.pack(">I", device_type)),
                                     (TAG_DEVICE_ID, struct.pack(">I", device_id))])


def get_request(name, value=None):
    """
    A get (or, with ``value``, set) request.
    """
    fields = [(TAG_GETSET_NAME, name.encode() + b"\0")]
    if value is not None:
        fields.append((TAG_GETSET_VALUE, value.encode() + b"\0"))
    return frame(TYPE_GETSET_REQ, fields)


def fields_of(packet):
    """
    ``(type, {tag: value})`` of a whole packet.
    """
    kind, payload, size = unframe(packet)
    assert size == len(packet)
    return kind, dict(decode_fields(payload))


class FakeTuners:
    """
    Devices and control values for the listeners.
    """

    def __init__(self, devices=(MAIN, SPORTS), ready=True):
        self._devices = list(devices)
        self.ready = ready

    def devices(self):
        """
        The devices, or NotReady.
        """
        if not self.ready:
            raise NotReady("starting")
        return list(self._devices)

    def control_value(self, name):
        """
        A model name and nothing else.
        """
        if not self.ready:
            raise NotReady("starting")
        return {"/sys/model": "hdhomeruntc_atsc"}.get(name)


class PacketTests(SynchronousTestCase):
    """
    The packet format of libhdhomerun's hdhomerun_pkt.h.
    """

    def test_frame_layout(self):
        """
        Type and length big-endian, the fields, then the CRC-32 of all that,
        little-endian.
        """
        packet = frame(TYPE_GETSET_REQ, [(TAG_GETSET_NAME, b"/sys/model\0")])
        self.assertEqual(packet[:4], b"\x00\x04\x00\x0d")
        self.assertEqual(packet[4:6], b"\x03\x0b")
        self.assertEqual(packet[-4:], struct.pack("<I", zlib.crc32(packet[:-4])))
        self.assertEqual(unframe(packet), (TYPE_GETSET_REQ, packet[4:-4], len(packet)))

    def test_crc_is_ethernet_crc32(self):
        """
        The checksum is the standard CRC-32 (check value of "123456789").
        """
        self.assertEqual(silicondust.crc32(b"123456789"), 0xCBF43926)

    def test_two_byte_lengths(self):
        """
        Lengths over 127 take two bytes: the low 7 bits with 0x80, then the rest.
        """
        self.assertEqual(encode_length(127), b"\x7f")
        self.assertEqual(encode_length(128), b"\x80\x01")
        self.assertEqual(encode_length(300), bytes([(300 & 0x7F) | 0x80, 300 >> 7]))
        value = b"x" * 300
        self.assertEqual(decode_fields(bytes([7]) + encode_length(300) + value), [(7, value)])

    def test_incomplete_and_broken_packets(self):
        """
        A packet not all there yet is None; a wrong checksum, a payload over
        the limit and a field running past the end are errors.
        """
        packet = get_request("/sys/model")
        self.assertIsNone(unframe(packet[:3]))
        self.assertIsNone(unframe(packet[:-1]))
        self.assertRaises(PacketError, unframe, packet[:-1] + bytes([packet[-1] ^ 1]))
        self.assertRaises(PacketError, unframe, struct.pack(">HH", 4, 5000) + b"\0" * 5004)
        self.assertRaises(PacketError, decode_fields, b"\x03\x10abc")


class DiscoveryReplyTests(SynchronousTestCase):
    """
    Which devices answer a discovery request, and with what.
    """

    def base_of(self, device):
        """
        The device's base URL on a LAN address.
        """
        return "http://10.0.0.2:9090" + device.base_path()

    def test_wildcard_request(self):
        """
        A wildcard request is answered by every device with its type,
        DeviceID, tuner count, DeviceAuth, base URL and lineup URL.
        """
        replies = discovery_replies(discover_request(), [MAIN, SPORTS], self.base_of)
        self.assertEqual(len(replies), 2)
        kind, fields = fields_of(replies[1])
        self.assertEqual(kind, TYPE_DISCOVER_RPY)
        self.assertEqual(fields[TAG_DEVICE_TYPE], struct.pack(">I", 1))
        self.assertEqual(fields[TAG_DEVICE_ID], struct.pack(">I", 0x1ABCDEF0))
        self.assertEqual(fields[TAG_TUNER_COUNT], b"\x03")
        self.assertEqual(fields[TAG_DEVICE_AUTH_STR], b"authsports")
        self.assertEqual(fields[TAG_BASE_URL], b"http://10.0.0.2:9090/hdhr/sports")
        self.assertEqual(fields[TAG_LINEUP_URL], b"http://10.0.0.2:9090/hdhr/sports/lineup.json")
        self.assertEqual(fields_of(replies[0])[1][TAG_BASE_URL], b"http://10.0.0.2:9090")

    def test_request_for_one_device(self):
        """
        A request naming a DeviceID is answered by that device only; one
        naming another type of device (storage) by none.
        """
        replies = discovery_replies(discover_request(device_id=0x12345674), [MAIN, SPORTS], self.base_of)
        self.assertEqual([fields_of(r)[1][TAG_DEVICE_ID] for r in replies], [struct.pack(">I", 0x12345674)])
        self.assertEqual(discovery_replies(discover_request(device_id=0x11111111), [MAIN], self.base_of), [])
        self.assertEqual(discovery_replies(discover_request(device_type=5), [MAIN], self.base_of), [])
        self.assertEqual(len(discovery_replies(discover_request(device_type=WILDCARD), [MAIN], self.base_of)), 1)

    def test_other_packets(self):
        """
        A packet of another type is not a discovery request (None); a
        broken one is an error.
        """
        self.assertIsNone(discovery_replies(get_request("/sys/model"), [MAIN], self.base_of))
        self.assertRaises(PacketError, discovery_replies, b"\x00\x02", [MAIN], self.base_of)


class ControlReplyTests(SynchronousTestCase):
    """
    Answers to get and set requests.
    """

    values = {"/sys/model": "hdhomeruntc_atsc"}.get

    def test_get(self):
        """
        A get is answered with the name and the value, NUL-terminated.
        """
        kind, fields = fields_of(control_reply(unframe(get_request("/sys/model"))[1], self.values))
        self.assertEqual(kind, TYPE_GETSET_RPY)
        self.assertEqual(fields[TAG_GETSET_NAME], b"/sys/model\0")
        self.assertEqual(fields[TAG_GETSET_VALUE], b"hdhomeruntc_atsc\0")
        self.assertNotIn(TAG_ERROR_MESSAGE, fields)

    def test_unknown_variable(self):
        """
        A get of a name without a value is answered with an error message.
        """
        _, fields = fields_of(control_reply(unframe(get_request("/sys/boot"))[1], self.values))
        self.assertEqual(fields[TAG_ERROR_MESSAGE], UNKNOWN_VARIABLE.encode() + b"\0")
        self.assertNotIn(TAG_GETSET_VALUE, fields)

    def test_set_is_refused(self):
        """
        A set, even of a known name, is refused with the protocol's error
        reply and no value.
        """
        _, fields = fields_of(control_reply(unframe(get_request("/sys/model", "x"))[1], self.values))
        self.assertEqual(fields[TAG_ERROR_MESSAGE], SET_REFUSED.encode() + b"\0")
        self.assertNotIn(TAG_GETSET_VALUE, fields)

    def test_not_ready(self):
        """
        Right after the start, before the identity is read, a get is an
        error telling to try again.
        """
        def not_ready(name):
            raise NotReady("starting")

        _, fields = fields_of(control_reply(unframe(get_request("/sys/model"))[1], not_ready))
        self.assertIn(b"try again", fields[TAG_ERROR_MESSAGE])

    def test_request_without_name(self):
        """
        A request naming nothing is an error.
        """
        self.assertRaises(PacketError, control_reply, b"", self.values)


class SSDPTests(SynchronousTestCase):
    """
    SSDP searches and answers.
    """

    def search(self, st, man='"ssdp:discover"'):
        """
        An M-SEARCH for ``st`` as Plex sends it.
        """
        return (f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: {man}\r\nMX: 1\r\n"
                f"ST: {st}\r\n\r\n").encode()

    def base_of(self, device):
        """
        The device's base URL on a LAN address.
        """
        return "http://10.0.0.2:9090" + device.base_path()

    def test_media_server_search(self):
        """
        A search for the MediaServer type gets one answer per device whose
        LOCATION is its device.xml (the root device's at the root).
        """
        replies = ssdp.search_replies(self.search(ssdp.MEDIA_SERVER), [MAIN, SPORTS], self.base_of)
        self.assertEqual(len(replies), 2)
        text = replies[0].decode()
        self.assertTrue(text.startswith("HTTP/1.1 200 OK\r\n"))
        self.assertIn("LOCATION: http://10.0.0.2:9090/device.xml\r\n", text)
        self.assertIn(f"ST: {ssdp.MEDIA_SERVER}\r\n", text)
        self.assertIn(f"USN: uuid:12345674::{ssdp.MEDIA_SERVER}\r\n", text)
        self.assertIn("LOCATION: http://10.0.0.2:9090/hdhr/sports/device.xml\r\n", replies[1].decode())
        self.assertTrue(text.endswith("\r\n\r\n"))

    def test_all_and_rootdevice(self):
        """
        ssdp:all is answered with our three search targets per device;
        upnp:rootdevice and uuid:<DeviceID> with one.
        """
        self.assertEqual(len(ssdp.search_replies(self.search("ssdp:all"), [MAIN, SPORTS], self.base_of)), 6)
        self.assertEqual(len(ssdp.search_replies(self.search("upnp:rootdevice"), [MAIN], self.base_of)), 1)
        replies = ssdp.search_replies(self.search("uuid:12345674"), [MAIN, SPORTS], self.base_of)
        self.assertEqual(len(replies), 1)
        self.assertIn("USN: uuid:12345674\r\n", replies[0].decode())

    def test_other_searches_and_messages(self):
        """
        Searches for other things, NOTIFY messages, searches without the
        ssdp:discover MAN and garbage get no answer.
        """
        self.assertEqual(ssdp.search_replies(self.search("urn:dial-multiscreen-org:service:dial:1"),
                                             [MAIN], self.base_of), [])
        self.assertEqual(ssdp.search_replies(self.search("ssdp:all", man="nope"), [MAIN], self.base_of), [])
        self.assertEqual(ssdp.search_replies(b"NOTIFY * HTTP/1.1\r\nNT: upnp:rootdevice\r\n\r\n",
                                             [MAIN], self.base_of), [])
        self.assertEqual(ssdp.search_replies(b"\xff\xfe", [MAIN], self.base_of), [])
        self.assertEqual(ssdp.search_replies(b"M-SEARCH" + b"x" * 5000, [MAIN], self.base_of), [])


class Collector(protocol.DatagramProtocol):
    """
    A UDP client on 127.0.0.1 that keeps what it receives.
    """

    def __init__(self):
        self.received = []
        self._waiting = []

    def datagramReceived(self, data, address):
        self.received.append((data, address))
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def wait(self, count, timeout=5.0):
        """
        Fires once ``count`` datagrams have arrived; fails after ``timeout``.
        """
        if len(self.received) >= count:
            return defer.succeed(None)
        d = defer.Deferred()
        self._waiting.append(d)
        d.addTimeout(timeout, reactor)
        return d.addCallback(lambda _: self.wait(count, timeout))


class ControlClient(protocol.Protocol):
    """
    A TCP control client: sends requests, collects replies.
    """

    def __init__(self):
        self.buffer = b""
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.buffer += data

    def connectionLost(self, reason):
        self.closed.callback(None)


def sleep(seconds):
    """
    A Deferred firing after ``seconds`` of real time.
    """
    return task.deferLater(reactor, seconds, lambda: None)


@defer.inlineCallbacks
def wait_for(condition, timeout=5.0):
    """
    Wait until ``condition()`` is true, checking every 10 ms.
    """
    end = reactor.seconds() + timeout
    while not condition():
        if reactor.seconds() > end:
            raise AssertionError("timed out waiting")
        yield task.deferLater(reactor, 0.01, lambda: None)


class ListenerTests(TestCase):
    """
    The listeners on real sockets of 127.0.0.1, on ephemeral ports.
    """

    timeout = 20

    def start(self, tuners=None, discovery_port=0, ssdp_port=0):
        """
        A started DiscoveryService on 127.0.0.1.
        """
        service = DiscoveryService(tuners or FakeTuners(), 9090, "127.0.0.1", reactor,
                                   discovery_port=discovery_port, ssdp_port=ssdp_port)
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def udp_client(self):
        """
        A UDP collector listening on an ephemeral port of 127.0.0.1.
        """
        collector = Collector()
        port = reactor.listenUDP(0, collector, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return collector

    @defer.inlineCallbacks
    def test_discovery_over_udp(self):
        """
        A discovery request sent to the UDP port is answered, to the sender,
        by each device, with base URLs on the address it was reached at.
        """
        service = self.start()
        collector = self.udp_client()
        collector.transport.write(discover_request(), ("127.0.0.1", service.ports["discovery"].getHost().port))
        yield collector.wait(2)
        bases = sorted(fields_of(data)[1][TAG_BASE_URL] for data, _ in collector.received)
        self.assertEqual(bases, [b"http://127.0.0.1:9090", b"http://127.0.0.1:9090/hdhr/sports"])

    @defer.inlineCallbacks
    def test_garbage_and_early_requests_are_dropped(self):
        """
        Garbage, and requests before the identity is read, get no answer
        and do not stop the listener.
        """
        tuners = FakeTuners(ready=False)
        service = self.start(tuners)
        collector = self.udp_client()
        address = ("127.0.0.1", service.ports["discovery"].getHost().port)
        collector.transport.write(b"\x00\x02\x00\x05garbage", address)
        collector.transport.write(discover_request(), address)
        yield sleep(0.2)
        self.assertEqual(collector.received, [])
        tuners.ready = True
        collector.transport.write(discover_request(device_id=0x12345674), address)
        yield collector.wait(1)
        yield sleep(0.2)
        self.assertEqual(len(collector.received), 1)

    @defer.inlineCallbacks
    def test_control_over_tcp(self):
        """
        Get requests on one TCP connection are answered in order, even when
        they arrive in pieces or together; a set is refused; a broken
        packet closes the connection.
        """
        service = self.start()
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", service.ports["control"].getHost().port)
        client = yield endpoints.connectProtocol(endpoint, ControlClient())
        self.addCleanup(lambda: client.transport.abortConnection() if not client.closed.called else None)
        first = get_request("/sys/model")
        client.transport.write(first[:5])
        yield sleep(0.1)
        self.assertEqual(client.buffer, b"")
        client.transport.write(first[5:] + get_request("/sys/nothing") + get_request("/sys/model", "x"))
        yield wait_for(lambda: unframe_all(client.buffer, 3))
        replies = unframe_all(client.buffer, 3)
        self.assertEqual(replies[0][TAG_GETSET_VALUE], b"hdhomeruntc_atsc\0")
        self.assertIn(TAG_ERROR_MESSAGE, replies[1])
        self.assertEqual(replies[2][TAG_ERROR_MESSAGE], SET_REFUSED.encode() + b"\0")
        client.transport.write(b"\x00\x04\x00\x01x\x00\x00\x00\x00")
        yield client.closed

    @defer.inlineCallbacks
    def test_ssdp_search_sent_to_the_host(self):
        """
        An M-SEARCH sent straight to the SSDP port is answered to the
        sender with each device's LOCATION.
        """
        service = self.start()
        collector = self.udp_client()
        search = (f"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n"
                  f"MX: 2\r\nST: {ssdp.MEDIA_SERVER}\r\n\r\n").encode()
        collector.transport.write(search, ("127.0.0.1", service.ports["ssdp"].getHost().port))
        yield collector.wait(2)
        texts = sorted(data.decode() for data, _ in collector.received)
        self.assertIn("LOCATION: http://127.0.0.1:9090/device.xml\r\n", texts[0] + texts[1])
        self.assertIn("LOCATION: http://127.0.0.1:9090/hdhr/sports/device.xml\r\n", texts[0] + texts[1])

    def test_ports_in_use_are_one_warning_each(self):
        """
        With the UDP and TCP ports held by another program (bound without
        sharing), starting gives one warning per port naming it (65001's
        UDP and TCP sides in one), and the service runs on; stopping it is
        clean.
        """
        holders = []
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0 if not holders else holders[0].getsockname()[1]))
            if kind == socket.SOCK_STREAM:
                s.listen(1)
            holders.append(s)
            self.addCleanup(s.close)
        udp_port = holders[0].getsockname()[1]
        ssdp_holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ssdp_holder.bind(("127.0.0.1", 0))
        self.addCleanup(ssdp_holder.close)
        ssdp_port = ssdp_holder.getsockname()[1]
        service = self.start(discovery_port=udp_port, ssdp_port=ssdp_port)
        self.assertTrue(service.running)
        self.assertEqual(service.ports, {})
        self.assertEqual(len(service.warnings), 2, service.warnings)
        self.assertIn(f"UDP and TCP port {udp_port} is in use by another program", service.warnings[0])
        self.assertIn(f"UDP port {ssdp_port} is in use", service.warnings[1])
        self.assertIn("/discover.json) still works", service.warnings[0])
        return service.stopService()

    def test_local_address(self):
        """
        The address a peer reaches us by: the listening interface when
        there is one, else what the system routes from (127.0.0.1 for
        127.0.0.1).
        """
        self.assertEqual(local_address_towards("127.0.0.1"), "127.0.0.1")
        self.assertEqual(local_address_towards("192.0.2.1", "10.1.2.3"), "10.1.2.3")


def unframe_all(data, count):
    """
    The fields of the first ``count`` packets of ``data``, or None when
    fewer have arrived.
    """
    found = []
    while len(found) < count:
        opened = unframe(data)
        if opened is None:
            return None
        kind, payload, size = opened
        assert kind == TYPE_GETSET_RPY
        found.append(dict(decode_fields(payload)))
        data = data[size:]
    return found


class LocalNetworkTests(SynchronousTestCase):
    """
    Where discovery answers come from.
    """

    def test_local_addresses(self):
        """
        Loopback, private, link-local and shared (100.64/10) addresses are
        local; public ones and garbage are not, so discovery never answers
        (and amplifies for) the internet.
        """
        from streamproxy.hosts import on_local_network

        for address in ("127.0.0.1", "10.1.2.3", "192.168.1.20", "172.16.0.9", "169.254.3.4",
                        "100.100.1.1", "::1", "fe80::1", "fd00::5", "::ffff:192.168.1.2"):
            self.assertTrue(on_local_network(address), address)
        for address in ("8.8.8.8", "1.1.1.1", "2001:4860::8888", "nonsense", ""):
            self.assertFalse(on_local_network(address), address)

    def test_protocols_ignore_requests_from_afar(self):
        """
        A discovery request or an M-SEARCH from a public address gets no
        answer; the same from the local network does.
        """
        search = (b'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\n'
                  b"ST: ssdp:all\r\n\r\n")
        for proto, data in ((silicondust.DiscoveryProtocol(FakeTuners(), lambda peer: "http://x:1"),
                             discover_request()),
                            (ssdp.SSDPProtocol(FakeTuners(), lambda peer: "http://x:1"), search)):
            sent = []
            proto.transport = type("T", (), {"write": lambda self, d, a: sent.append(a)})()
            proto.datagramReceived(data, ("8.8.8.8", 1234))
            self.assertEqual(sent, [])
            proto.datagramReceived(data, ("192.168.1.7", 1234))
            self.assertTrue(sent)
