"""
The listeners that let apps find the emulated tuners without being told
the address: SiliconDust discovery (UDP 65001) and control (TCP 65001),
and SSDP (UDP 1900, joined to its multicast group).

Discovery never stops the daemon: a port another program holds, a
multicast group that cannot be joined, is one warning line each, and the
HTTP API goes on working (clients can always be given the address).
"""

import errno
import socket

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.logger import Logger

from . import silicondust, ssdp

log = Logger()

_ANY = ("", "0.0.0.0", "::")


def local_address_towards(peer, interface=""):
    """
    This machine's IPv4 address as seen by ``peer``: ``interface`` when
    the daemon listens on one address, else the address the system would
    send from (asked of a UDP socket, which sends nothing).
    """
    if interface not in _ANY:
        return interface
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((peer, 9))
        return probe.getsockname()[0]
    except OSError:
        return "127.0.0.1"
    finally:
        probe.close()


class DiscoveryService(Service):
    """
    Listens for SiliconDust discovery and control and for SSDP searches
    while running, answering for ``tuners`` (a
    :class:`~streamproxy.hdhomerun.Tuners`) with base URLs on ``http_port``.

    ``interface`` is the daemon's (``0.0.0.0`` listens everywhere, as
    broadcast and multicast discovery need); the ports are arguments so
    tests can use ephemeral ones.  ``warnings`` lists the warnings given
    at start (for tests and the status API).
    """

    name = "discovery"

    def __init__(self, tuners, http_port, interface="0.0.0.0", reactor=None,
                 discovery_port=silicondust.PORT, ssdp_port=ssdp.PORT):
        if reactor is None:
            from twisted.internet import reactor
        self._tuners = tuners
        self._http_port = http_port
        self._interface = "" if interface in _ANY else interface
        self._reactor = reactor
        self.discovery_port = discovery_port
        self.ssdp_port = ssdp_port
        self.ports = {}
        self.warnings = []

    def base_for(self, peer):
        """
        ``http://ip:port`` of the HTTP API as the host at ``peer`` reaches it.
        """
        return f"http://{local_address_towards(peer, self._interface)}:{self._http_port}"

    def _warn(self, text, **fields):
        self.warnings.append(text.format(**fields))
        log.warn(text, **fields)

    def startService(self):
        """
        Open the listeners; a port that cannot be opened is one warning
        (one for port 65001 whether its UDP side, its TCP side or both are
        taken).
        """
        super().startService()
        if ":" in self._interface:
            self._warn("HDHomeRun discovery is off: it works over IPv4 and the daemon listens on {interface} only",
                       interface=self._interface)
            return
        problems = [
            self._listen("discovery", "UDP", lambda: self._reactor.listenUDP(
                self.discovery_port, silicondust.DiscoveryProtocol(self._tuners, self.base_for),
                interface=self._interface)),
            self._listen("control", "TCP", lambda: self._reactor.listenTCP(
                self.discovery_port, silicondust.ControlFactory(self._tuners), interface=self._interface)),
        ]
        self._report("SiliconDust discovery and control (hdhomerun_config, Channels DVR, Jellyfin) are",
                     self.discovery_port, [p for p in problems if p])
        problem = self._listen("ssdp", "UDP", lambda: self._reactor.listenMulticast(
            self.ssdp_port, ssdp.SSDPProtocol(self._tuners, self.base_for), interface=self._interface,
            listenMultiple=True))
        self._report("SSDP (Plex's tuner search) is", self.ssdp_port, [problem] if problem else [])
        port = self.ports.get("ssdp")
        if port is not None:
            d = defer.maybeDeferred(port.joinGroup, ssdp.GROUP, self._interface or "0.0.0.0")
            d.addErrback(lambda failure: self._warn(
                "SSDP: could not join the multicast group {group} ({error}); searches sent straight "
                "to this host are still answered", group=ssdp.GROUP, error=failure.getErrorMessage()))

    def _listen(self, name, kind, listen):
        """
        Open one listener; ``(kind, reason)`` when it cannot be, else None.
        """
        try:
            self.ports[name] = listen()
        except error.CannotListenError as e:
            in_use = getattr(e.socketError, "errno", None) == errno.EADDRINUSE
            return kind, "is in use by another program" if in_use else f"cannot be opened ({e.socketError})"
        return None

    def _report(self, what, number, problems):
        """
        One warning for the listeners of port ``number`` that could not be
        opened (``problems``: ``(kind, reason)`` each).
        """
        if not problems:
            return
        kinds = " and ".join(kind for kind, _ in problems)
        reasons = sorted({reason for _, reason in problems})
        self._warn("{what} off: {kinds} port {port} {reason}; apps that find tuners this way will not "
                   "see streamproxy, the HTTP API (/discover.json) still works",
                   what=what, kinds=kinds, port=number, reason="; ".join(reasons))

    def stopService(self):
        """
        Close the listeners; fires once they are closed.
        """
        super().stopService()
        ports, self.ports = self.ports, {}
        stopping = [defer.maybeDeferred(port.stopListening) for port in ports.values()]
        return defer.DeferredList(stopping, consumeErrors=True) if stopping else None
