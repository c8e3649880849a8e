"""
Tests for streamproxy.hosts: reading the Host header, and telling this
machine's names from a rebound one.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.hosts import BadHost, host_is_ours, machine_names, normalize_allowed_host, parse_host_header


class ParseHostTests(SynchronousTestCase):
    """
    parse_host_header reads well-formed Host headers and names what is
    wrong with the others.
    """

    def test_forms(self):
        """
        Names, addresses, ports, IPv6 literals, a trailing dot and upper
        case.
        """
        for raw, expected in [
            (b"127.0.0.1", ("127.0.0.1", None)),
            (b"127.0.0.1:9090", ("127.0.0.1", 9090)),
            (b"TV.Example.lan.:9090", ("tv.example.lan", 9090)),
            (b"[::1]:9090", ("::1", 9090)),
            (b"[fe80::1%eth0]", ("fe80::1%eth0", None)),
            (b"my_box", ("my_box", None)),
            (b" localhost ", ("localhost", None)),
            (b"a" * 63 + b".example", ("a" * 63 + ".example", None)),
        ]:
            self.assertEqual(parse_host_header(raw), expected, raw)

    def test_malformed(self):
        """
        Each malformed form is refused with words saying what is wrong.
        """
        for raw, words in [
            (b"a" * 64 + b".example", "label longer than 63"),
            (b"a..b", "empty label"),
            (b".a", "empty label"),
            (b"a.b..", "empty label"),
            (b"caf\xc3\xa9.example", "not ASCII"),
            (b"\xff", "not ASCII"),
            (b"", "empty"),
            (b":9090", "no host name"),
            (b"x:99999", "port"),
            (b"x:0", "port"),
            (b"x:abc", "port"),
            (b"evil.com/x", "character"),
            (b"[::1", "IPv6"),
            (b"[1.2.3.4]", "IPv6"),
            (b"[::1]x", "port"),
            (b"a" * 250 + b".example", "longer than 253"),
        ]:
            with self.assertRaises(BadHost, msg=raw) as caught:
                parse_host_header(raw)
            self.assertIn(words, str(caught.exception), raw)

    def test_allowed_host_entries(self):
        """
        allowed_hosts entries are compared lower-cased, without trailing
        dot or brackets; a port or a malformed name is refused.
        """
        self.assertEqual(normalize_allowed_host(" TV.Example.LAN. "), "tv.example.lan")
        self.assertEqual(normalize_allowed_host("[::1]"), "::1")
        self.assertRaises(BadHost, normalize_allowed_host, "tv.example.lan:9090")
        self.assertRaises(BadHost, normalize_allowed_host, "a..b")


class HostIsOursTests(SynchronousTestCase):
    """
    Which host names may reach the pages and management endpoints.
    """

    def test_decisions(self):
        """
        IP addresses, localhost (and names under it), the machine's own
        names and allowed_hosts pass; any other name does not.
        """
        own = machine_names("streambox.home.lan")
        for host in ("127.0.0.1", "192.168.1.20", "::1", "fe80::1%eth0", "localhost", "app.localhost",
                     "streambox", "streambox.home.lan", "streambox.local", "tv.example.lan", None):
            self.assertTrue(host_is_ours(host, own, ("tv.example.lan",)), host)
        for host in ("evil.example", "streambox.evil.example", "localhost.evil.example", "tv.example.lan.evil",
                     "127.0.0.1.nip.io", "example.lan"):
            self.assertFalse(host_is_ours(host, own, ("tv.example.lan",)), host)

    def test_machine_names(self):
        """
        The machine's names come from its host name alone (no DNS).
        """
        self.assertEqual(machine_names("Box.Home.Lan."), {"box.home.lan", "box", "box.local"})
        self.assertEqual(machine_names(""), frozenset())
        self.assertTrue(machine_names())
