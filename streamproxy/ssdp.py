"""
SSDP (UPnP discovery, UDP port 1900): answering an ``M-SEARCH`` for our
tuners, so Plex finds them the way it finds real HDHomeRuns.

A search sent to the multicast group (239.255.255.250:1900) or straight to
this host whose ``ST`` is ``ssdp:all``, ``upnp:rootdevice``,
``urn:schemas-upnp-org:device:MediaServer:1`` or ``uuid:<DeviceID>`` is
answered, to the sender only, with one reply per device (per ST for
``ssdp:all``) whose ``LOCATION`` is that device's ``device.xml``; searches
from outside the local network are not.  The
answer goes out at once, whatever ``MX`` says: a handful of devices
cannot flood anyone.
"""

from twisted.internet import protocol
from twisted.logger import Logger

from .hdhomerun import NotReady
from .hosts import on_local_network

log = Logger()

PORT = 1900
GROUP = "239.255.255.250"

MEDIA_SERVER = "urn:schemas-upnp-org:device:MediaServer:1"
ROOT_DEVICE = "upnp:rootdevice"
ALL = "ssdp:all"

# Seconds a client may keep our answer.
MAX_AGE_SECONDS = 1800

# Longest search read; a real one is a few hundred bytes.
MAX_SEARCH_BYTES = 4096

SERVER = "Linux/1.0 UPnP/1.0 streamproxy/1.0"


def parse_search(data):
    """
    The headers of an ``M-SEARCH`` request (names lower-cased), or None
    when ``data`` is not one.
    """
    if len(data) > MAX_SEARCH_BYTES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines[0].strip().upper().startswith("M-SEARCH * HTTP/1."):
        return None
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    if headers.get("man", "").strip('"').lower() != "ssdp:discover":
        return None
    return headers


def search_targets(st, device):
    """
    The search targets ``device`` answers a search for ``st`` with: none,
    the one asked for, or for ``ssdp:all`` each of ours.
    """
    uuid = f"uuid:{device.device_id}"
    if st == ALL:
        return [ROOT_DEVICE, uuid, MEDIA_SERVER]
    if st in (ROOT_DEVICE, MEDIA_SERVER) or st.lower() == uuid.lower():
        return [st]
    return []


def search_reply(st, device, location):
    """
    The reply to a search for ``st`` by ``device``, described at
    ``location``.
    """
    uuid = f"uuid:{device.device_id}"
    usn = uuid if st.startswith("uuid:") else f"{uuid}::{st}"
    return (
        "HTTP/1.1 200 OK\r\n"
        f"CACHE-CONTROL: max-age={MAX_AGE_SECONDS}\r\n"
        "EXT:\r\n"
        f"LOCATION: {location}\r\n"
        f"SERVER: {SERVER}\r\n"
        f"ST: {st}\r\n"
        f"USN: {usn}\r\n"
        "\r\n"
    ).encode("utf-8")


def search_replies(data, devices, base_of):
    """
    Every reply to the datagram ``data`` from ``devices``, the device
    described at ``base_of(device) + "/device.xml"``; none when it is not a
    search for us.
    """
    headers = parse_search(data)
    if headers is None:
        return []
    st = headers.get("st", "").strip()
    replies = []
    for device in devices:
        for target in search_targets(st, device):
            replies.append(search_reply(target, device, f"{base_of(device)}/device.xml"))
    return replies


class SSDPProtocol(protocol.DatagramProtocol):
    """
    Answers searches with :func:`search_replies`.  ``tuners`` is the
    :class:`~streamproxy.hdhomerun.Tuners`; ``base_for(address)`` the
    ``http://ip:port`` the searcher at ``address`` reaches us by.
    """

    noisy = False

    def __init__(self, tuners, base_for):
        self._tuners = tuners
        self._base_for = base_for

    def datagramReceived(self, data, address):
        if not data.startswith((b"M-SEARCH", b"m-search")) or not on_local_network(address[0]):
            return  # NOTIFY, answers of other devices, searches from afar
        try:
            devices = self._tuners.devices()
        except NotReady:
            return
        root = self._base_for(address[0])
        for reply in search_replies(data, devices, lambda device: root + device.base_path()):
            self.transport.write(reply, address)
