"""
The ``Host`` header: whether it is well formed, and whether it names this
machine.

A web page on another site can make a browser send requests to this
daemon under the other site's own name (DNS rebinding: the name first
points at the attacker, then at the daemon's address).  The browser then
counts the daemon as that site, sends ``Host: <that name>`` and an
``Origin`` of the same name, so comparing the two proves nothing.  What
the attacker cannot choose is a name that is not theirs: pages and
management endpoints answer only when ``Host`` is an IP address,
``localhost``, one of this machine's own names, or a name listed in
``allowed_hosts`` (:func:`host_is_ours`).

Pure functions over plain values, except :func:`machine_names`, which
asks the operating system once at start.
"""

import ipaddress
import re
import socket

MAX_LABEL = 63
MAX_NAME = 253

# One label of a host name.  Underscores are not allowed by the DNS rules
# for host names but turn up in local names, so they are accepted.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_\-]*[A-Za-z0-9_])?$")
_PORT = re.compile(r"^\d{1,5}$")


class BadHost(ValueError):
    """
    A ``Host`` header (or an ``allowed_hosts`` entry) that is not a host
    name; the message says what is wrong with it, e.g. "has an empty label".
    """


def _check_name(name):
    """
    ``name`` lower-cased without a trailing dot, if it is an IP address or
    a host name of valid labels.

    :raises BadHost: otherwise.
    """
    if name.endswith(".") and not name.endswith(".."):
        name = name[:-1]
    if not name:
        raise BadHost("has no host name")
    if _ip(name) is not None:
        return name.lower()
    if len(name) > MAX_NAME:
        raise BadHost(f"is longer than {MAX_NAME} characters")
    for label in name.split("."):
        if not label:
            raise BadHost("has an empty label (two dots in a row, or a dot at the start)")
        if len(label) > MAX_LABEL:
            raise BadHost(f"has a label longer than {MAX_LABEL} characters")
        if not _LABEL.match(label):
            raise BadHost("has a character that is not allowed in a host name")
    return name.lower()


def _ip(text):
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def parse_host_header(raw):
    """
    ``(host, port or None)`` of the raw bytes of a ``Host`` header: the host
    lower-cased without brackets or trailing dot.

    :raises BadHost: when it is not ASCII, has an empty label or one over
        63 characters, a character no host name has, or a bad port.
    """
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise BadHost("is not ASCII text")
    if not text:
        raise BadHost("is empty")
    if text.startswith("["):
        literal, bracket, rest = text[1:].partition("]")
        address = _ip(literal.split("%", 1)[0]) if bracket else None
        if address is None or address.version != 6:
            raise BadHost("has a bracketed part that is not an IPv6 address")
        host = literal.lower()
        if rest and not rest.startswith(":"):
            raise BadHost("has something after the IPv6 address that is not a port")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            host, port_text = text, None
        host = _check_name(host)
    port = None
    if port_text is not None:
        if not _PORT.match(port_text) or not 0 < int(port_text) < 65536:
            raise BadHost("has a port that is not a number from 1 to 65535")
        port = int(port_text)
    return host, port


def normalize_allowed_host(text):
    """
    An ``allowed_hosts`` entry as it is compared: lower-cased, no trailing
    dot, no port.

    :raises BadHost: when it is not a host name.
    """
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text and _ip(text) is None:
        raise BadHost("is not a host name (leave the port out)")
    return _check_name(text)


def machine_names(hostname=None):
    """
    The names this machine goes by without any configuration: its host
    name (with and without its domain) and ``<name>.local`` (mDNS).

    ``hostname`` defaults to ``socket.gethostname()``; no DNS is asked,
    so this never blocks.
    """
    if hostname is None:
        hostname = socket.gethostname()
    names = set()
    hostname = (hostname or "").strip().rstrip(".").lower()
    if hostname:
        short = hostname.split(".", 1)[0]
        names.update({hostname, short, f"{short}.local"})
    return frozenset(names)


def host_is_ours(host, own_names=frozenset(), allowed=()):
    """
    Whether a request addressed to ``host`` (from :func:`parse_host_header`;
    None when the request had no ``Host``) may reach the pages and the
    management endpoints: an IP address, ``localhost`` (and names under
    it), one of ``own_names`` or one of ``allowed`` (``allowed_hosts``).
    """
    if host is None:
        # HTTP/1.0 without Host: no browser sends that, so no rebinding.
        return True
    if _ip(host.split("%", 1)[0]) is not None:
        return True
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return host in own_names or host in allowed


# Shared address space (RFC 6598): carrier-grade NAT and overlay networks
# such as Tailscale, which Python does not count as private.
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def on_local_network(address):
    """
    Whether ``address`` (text) is loopback, private, link-local or in the
    shared space 100.64.0.0/10: where tuner discovery may come from.  Tuner
    discovery answers more than it is asked, so it must not answer (and be
    used as an amplifier by) the internet at large.
    """
    ip = _ip(address)
    if ip is None:
        return False
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_private or ip.is_link_local or (ip.version == 4 and ip in _SHARED)
