"""
SiliconDust's own protocols on port 65001, so apps that find tuners that
way (``hdhomerun_config``, Channels DVR's and Jellyfin's HDHomeRun
discovery) find streamproxy's.

Both use one packet format, written here from its public description
(libhdhomerun's ``hdhomerun_pkt.h``):

- a big-endian ``uint16`` packet type and ``uint16`` payload length,
- the payload: tag-length-value fields, each a ``uint8`` tag, a length of
  one byte (up to 127) or two (the low 7 bits with 0x80 set, then the
  rest shifted down 7 bits), and the value,
- a CRC-32 (Ethernet's, as :func:`zlib.crc32`) of everything before it,
  little-endian.

**Discovery** (UDP): a request names a device type and a device id
(either may be the wildcard ``0xFFFFFFFF``); each matching device answers
the requester with its type (tuner), DeviceID, tuner count, DeviceAuth,
base URL and lineup URL.  **Control** (TCP): a get request names a
variable (``/sys/model``) and is answered with its value, or with an
error message when there is none; a set request (a name and a value) is
refused with an error message: nothing of streamproxy can be changed
this way.
"""

import struct
import zlib

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from .hdhomerun import NotReady
from .hosts import on_local_network

log = Logger()

PORT = 65001

TYPE_DISCOVER_REQ = 0x0002
TYPE_DISCOVER_RPY = 0x0003
TYPE_GETSET_REQ = 0x0004
TYPE_GETSET_RPY = 0x0005

TAG_DEVICE_TYPE = 0x01
TAG_DEVICE_ID = 0x02
TAG_GETSET_NAME = 0x03
TAG_GETSET_VALUE = 0x04
TAG_ERROR_MESSAGE = 0x05
TAG_TUNER_COUNT = 0x10
TAG_GETSET_LOCKKEY = 0x15
TAG_LINEUP_URL = 0x27
TAG_BASE_URL = 0x2A
TAG_DEVICE_AUTH_STR = 0x2B

DEVICE_TYPE_TUNER = 0x00000001
WILDCARD = 0xFFFFFFFF

# The largest payload a packet may carry (libhdhomerun's limit); a
# control connection announcing more is closed.
MAX_PAYLOAD = 1452

# Seconds a control connection may sit idle before it is closed.
CONTROL_IDLE_SECONDS = 30

UNKNOWN_VARIABLE = "ERROR: unknown getset variable"
SET_REFUSED = "ERROR: streamproxy is read-only; set is not supported"
NOT_READY = "ERROR: starting up; try again"


class PacketError(ValueError):
    """
    Bytes that are not a well-formed packet; the message says why.
    """


def crc32(data):
    """
    The packet checksum of ``data``.
    """
    return zlib.crc32(data) & 0xFFFFFFFF


def encode_length(length):
    """
    A TLV length field: one byte up to 127, else two.
    """
    if length <= 0x7F:
        return bytes([length])
    if length > 0x7FFF:
        raise ValueError(f"a field of {length} bytes is too long for a packet")
    return bytes([(length & 0x7F) | 0x80, length >> 7])


def encode_fields(fields):
    """
    The payload of ``fields``, a sequence of ``(tag, value bytes)``.
    """
    return b"".join(bytes([tag]) + encode_length(len(value)) + value for tag, value in fields)


def decode_fields(payload):
    """
    ``[(tag, value bytes)]`` of a payload.

    :raises PacketError: when a field runs past the end.
    """
    fields = []
    position = 0
    end = len(payload)
    while position < end:
        tag = payload[position]
        position += 1
        if position >= end:
            raise PacketError("a field without a length")
        length = payload[position]
        position += 1
        if length & 0x80:
            if position >= end:
                raise PacketError("a two-byte length cut short")
            length = (length & 0x7F) | (payload[position] << 7)
            position += 1
        if position + length > end:
            raise PacketError("a field runs past the end of the packet")
        fields.append((tag, payload[position : position + length]))
        position += length
    return fields


def frame(kind, fields):
    """
    A whole packet of type ``kind`` carrying ``fields``.
    """
    payload = encode_fields(fields)
    head = struct.pack(">HH", kind, len(payload)) + payload
    return head + struct.pack("<I", crc32(head))


def unframe(data):
    """
    ``(kind, payload, size)`` of the packet at the start of ``data``, or
    None when it has not all arrived yet (``size`` is how many bytes it
    took).

    :raises PacketError: when its checksum is wrong or it is too long.
    """
    if len(data) < 4:
        return None
    kind, length = struct.unpack(">HH", data[:4])
    if length > MAX_PAYLOAD:
        raise PacketError(f"a payload of {length} bytes is over the limit of {MAX_PAYLOAD}")
    size = 4 + length + 4
    if len(data) < size:
        return None
    (checksum,) = struct.unpack("<I", data[4 + length : size])
    if checksum != crc32(data[: 4 + length]):
        raise PacketError("wrong checksum")
    return kind, data[4 : 4 + length], size


def _text(value):
    """
    A NUL-terminated string value as text.
    """
    return value.split(b"\x00", 1)[0].decode("utf-8", "replace")


def _cstring(text):
    return text.encode("utf-8") + b"\x00"


def discovery_wanted(payload):
    """
    ``(device types, device ids)`` a discovery request asks for.
    """
    types, ids = [], []
    for tag, value in decode_fields(payload):
        if tag == TAG_DEVICE_TYPE and len(value) == 4:
            types.append(struct.unpack(">I", value)[0])
        elif tag == TAG_DEVICE_ID and len(value) == 4:
            ids.append(struct.unpack(">I", value)[0])
    return types, ids


def discovery_replies(packet, devices, base_of):
    """
    The reply packets to discovery request ``packet``: one for each of
    ``devices`` (:class:`~streamproxy.hdhomerun.Device`) the request
    matches, with base URL ``base_of(device)``.  None when ``packet`` is
    not a discovery request; an empty list when it asks for nothing we are.

    :raises PacketError: when ``packet`` is malformed.
    """
    opened = unframe(packet)
    if opened is None:
        raise PacketError("a packet cut short")
    kind, payload, _ = opened
    if kind != TYPE_DISCOVER_REQ:
        return None
    types, ids = discovery_wanted(payload)
    if types and not any(t in (WILDCARD, DEVICE_TYPE_TUNER) for t in types):
        return []
    replies = []
    for device in devices:
        number = int(device.device_id, 16)
        if ids and not any(i in (WILDCARD, number) for i in ids):
            continue
        base = base_of(device)
        replies.append(frame(TYPE_DISCOVER_RPY, [
            (TAG_DEVICE_TYPE, struct.pack(">I", DEVICE_TYPE_TUNER)),
            (TAG_DEVICE_ID, struct.pack(">I", number)),
            (TAG_TUNER_COUNT, bytes([min(255, device.tuner_count)])),
            (TAG_DEVICE_AUTH_STR, device.device_auth.encode("ascii")),
            (TAG_BASE_URL, base.encode("utf-8")),
            (TAG_LINEUP_URL, f"{base}/lineup.json".encode("utf-8")),
        ]))
    return replies


def control_reply(payload, value_of):
    """
    The reply packet to a get/set request's ``payload``: the variable's
    value from ``value_of(name)`` (None: no such variable) for a get, an
    error message for a set or an unknown variable.

    :raises PacketError: when the payload is malformed or names nothing.
    """
    name = value = None
    for tag, data in decode_fields(payload):
        if tag == TAG_GETSET_NAME:
            name = _text(data)
        elif tag == TAG_GETSET_VALUE:
            value = _text(data)
    if name is None:
        raise PacketError("a get/set request without a name")
    fields = [(TAG_GETSET_NAME, _cstring(name))]
    if value is not None:
        fields.append((TAG_ERROR_MESSAGE, _cstring(SET_REFUSED)))
    else:
        try:
            answer = value_of(name)
        except NotReady:
            answer, fields = None, fields + [(TAG_ERROR_MESSAGE, _cstring(NOT_READY))]
        if answer is not None:
            fields.append((TAG_GETSET_VALUE, _cstring(answer)))
        elif len(fields) == 1:
            fields.append((TAG_ERROR_MESSAGE, _cstring(UNKNOWN_VARIABLE)))
    return frame(TYPE_GETSET_RPY, fields)


class DiscoveryProtocol(protocol.DatagramProtocol):
    """
    Answers discovery requests on UDP.  ``tuners`` is the
    :class:`~streamproxy.hdhomerun.Tuners`; ``base_for(address)`` is the
    ``http://ip:port`` under which the requester at ``address`` reaches us.
    Malformed packets, and requests from outside the local network (see
    :func:`~streamproxy.hosts.on_local_network`), are dropped silently.
    """

    noisy = False

    def __init__(self, tuners, base_for):
        self._tuners = tuners
        self._base_for = base_for

    def datagramReceived(self, data, address):
        if not on_local_network(address[0]):
            return
        try:
            devices = self._tuners.devices()
        except NotReady:
            return  # the client asks again
        try:
            root = self._base_for(address[0])
            replies = discovery_replies(data, devices, lambda device: root + device.base_path())
        except PacketError:
            return
        for reply in replies or ():
            self.transport.write(reply, address)


class ControlProtocol(protocol.Protocol, TimeoutMixin):
    """
    One TCP control connection: get/set requests answered in order.  A
    malformed packet, one over the size limit or
    :data:`CONTROL_IDLE_SECONDS` without a request closes it.
    """

    def __init__(self, value_of):
        self._value_of = value_of
        self._buffer = b""

    def connectionMade(self):
        self.setTimeout(CONTROL_IDLE_SECONDS)

    def dataReceived(self, data):
        self.resetTimeout()
        self._buffer += data
        while True:
            try:
                opened = unframe(self._buffer)
                if opened is None:
                    return
                kind, payload, size = opened
                self._buffer = self._buffer[size:]
                if kind == TYPE_GETSET_REQ:
                    self.transport.write(control_reply(payload, self._value_of))
                # Other kinds (a firmware upgrade) are not answered.
            except PacketError:
                self.transport.loseConnection()
                return

    def timeoutConnection(self):
        self.transport.loseConnection()

    def connectionLost(self, reason=None):
        self.setTimeout(None)


class ControlFactory(protocol.Factory):
    """
    Makes a :class:`ControlProtocol` per connection, answering from
    ``tuners.control_value``.
    """

    noisy = False

    def __init__(self, tuners):
        self._tuners = tuners

    def buildProtocol(self, addr):
        return ControlProtocol(self._tuners.control_value)
