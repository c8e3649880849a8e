"""
The HTTP edge on a real socket: malformed headers as raw bytes on every
route, request bodies over the bound, requests sent too slowly, idle
connections, and a long-lived answer that must be left alone.

The site listens on 127.0.0.1; its timers run on a Clock, so the time
bounds are checked without waiting for them.
"""

from twisted.internet import defer, reactor
from twisted.internet.protocol import ClientFactory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamproxy.channels import Ranking
from streamproxy.config import Config
from streamproxy.edge import IDLE_SECONDS, MAX_BODY_BYTES, RECEIVE_SECONDS, EdgeChannel

from streamproxy.logs import LogBuffer
from streamproxy.web import ProxySite, StreamProxyWeb

from .helpers import candidate
from .test_web_api import SECRET_URL, FakeManager, FakeSession, FakeStore
from .upstream import wait_until

# Every route, with the method it takes.
ROUTES = (
    ("GET", "/m3u/main.m3u"),
    ("GET", "/m3u/"),
    ("GET", "/channel/7/stream.m3u8"),
    ("GET", "/channel/7/sx01_00001.ts"),
    ("GET", "/"),
    ("GET", "/status"),
    ("GET", "/logs"),
    ("GET", "/static/app.css"),
    ("GET", "/api/status"),
    ("GET", "/api/channels"),
    ("GET", "/api/logs"),
    ("POST", "/stop/7"),
    ("POST", "/force_switch/7"),
    ("GET", "/refresh_db_cache"),
    ("GET", "/no/such/page"),
)

# Header lines no client should send, as raw bytes.
MALFORMED = (
    (b"Host: 127.0.0.1\r\nAuthorization: Basic \xff\xfe\xfd", "Authorization"),
    (b"Host: 127.0.0.1\r\nAuthorization: \xc3(", "Authorization"),
    (b"Host: 127.0.0.1\r\nOrigin: http://\xff.example", "Origin"),
    (b"Host: 127.0.0.1\r\nReferer: http://x.example/\xe9", "Referer"),
    (b"Host: 127.0.0.1\r\nAccept: \xff", "Accept"),
    (b"Host: " + b"a" * 64 + b".example", "label longer than 63"),
    (b"Host: a..b", "empty label"),
    (b"Host: .a.example:9090", "empty label"),
    (b"Host: caf\xc3\xa9.example", "not ASCII"),
    (b"Host: 127.0.0.1:99999", "port"),
    (b"Host: 127.0.0.1\r\nHost: evil.example", "more than one Host"),
)


class RawClient(Protocol):
    """
    Sends bytes and keeps everything the server answers; ``closed`` fires
    with it when the server closes the connection.
    """

    def __init__(self):
        self.received = b""
        self.closed = defer.Deferred()
        self.lost = False

    def dataReceived(self, data):
        """
        Keep what the server sent.
        """
        self.received += data

    def connectionLost(self, reason):
        """
        Fire ``closed`` with everything received.
        """
        self.lost = True
        self.closed.callback(self.received)


class CountingChannel(EdgeChannel):
    """
    The site's channel, counting the bytes it received (so a test knows
    the server has seen what it sent).
    """

    received = 0

    def dataReceived(self, data):
        """
        Count, then handle as usual.
        """
        self.received += len(data)
        super().dataReceived(data)


class Stream(Resource):
    """
    A never-ending answer, like the MPEG-TS stream of a channel that plays
    for hours: each ``push()`` writes one more chunk.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.requests = []

    def render_GET(self, request):
        """
        Start the answer with one chunk and keep it open.
        """
        request.setHeader(b"content-type", b"video/mp2t")
        request.write(b"G" * 188)
        self.requests.append(request)
        return NOT_DONE_YET

    def push(self):
        """
        Write one more chunk to every open answer.
        """
        for request in self.requests:
            request.write(b"G" * 188)


class EdgeTestCase(TestCase):
    """
    The web application behind a ProxySite on 127.0.0.1 whose timers run
    on a Clock.
    """

    timeout = 60
    password = "s3cret"

    def setUp(self):
        """
        Serve the application with fakes behind it on 127.0.0.1.
        """
        self.clock = Clock()
        self.store = FakeStore([
            candidate(1, "7", uniform_name="Seven", url=SECRET_URL),
            candidate(2, "12", uniform_name="Twelve"),
        ])
        self.manager = FakeManager(self.store)
        self.manager.sessions["7"] = FakeSession("7", "Seven", self.store.catalog.candidates[0])
        self.web = StreamProxyWeb(
            Config(admin_password=self.password), self.store, Ranking(), self.manager,
            logs=LogBuffer(10), reactor=self.clock, own_names=("streambox",),
        )
        self.site = self.make_site(self.web.resource())
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.clients = []
        self.addCleanup(self.close_clients)

    def make_site(self, resource):
        """
        A ProxySite of ``resource`` counting bytes, with the test's Clock.
        """
        site = ProxySite(resource, reactor=self.clock)
        site.protocol = CountingChannel
        self.channels = []
        build = site.buildProtocol

        def keep(addr):
            channel = build(addr)
            self.channels.append(channel)
            return channel

        site.buildProtocol = keep
        return site

    def close_clients(self):
        """
        Drop every client connection still open and wait for them to close.
        """
        waits = []
        for client in self.clients:
            if not client.lost:
                client.transport.abortConnection()
                waits.append(client.closed)
        return defer.DeferredList(waits)

    @defer.inlineCallbacks
    def connect(self):
        """
        A RawClient connected to the site.
        """
        client = RawClient()
        factory = ClientFactory.forProtocol(lambda: client)
        connected = defer.Deferred()
        factory.clientConnectionFailed = lambda connector, reason: connected.errback(reason)
        original = client.connectionMade
        client.connectionMade = lambda: (original(), connected.callback(client))
        reactor.connectTCP("127.0.0.1", self.port.getHost().port, factory)
        yield connected
        self.clients.append(client)
        return client

    @defer.inlineCallbacks
    def send_and_wait(self, client, data):
        """
        Send ``data`` and wait until the server has received it (or closed
        the connection).
        """
        before = sum(channel.received for channel in self.channels)
        client.transport.write(data)
        yield wait_until(
            lambda: client.lost or sum(channel.received for channel in self.channels) >= before + len(data)
        )

    @defer.inlineCallbacks
    def exchange(self, data):
        """
        Send ``data`` on a new connection (asking the server to close after
        answering) and return everything it answered.
        """
        client = yield self.connect()
        client.transport.write(data)
        answer = yield client.closed
        return answer

    def status_and_body(self, answer):
        """
        ``(status code, body)`` of a raw answer (chunked bodies joined).
        """
        head, _, body = answer.partition(b"\r\n\r\n")
        code = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            joined, rest = b"", body
            while rest:
                size, _, rest = rest.partition(b"\r\n")
                size = int(size, 16)
                if not size:
                    break
                joined, rest = joined + rest[:size], rest[size + 2 :]
            body = joined
        return code, body


class MalformedHeaderTests(EdgeTestCase):
    """
    Raw bytes no client should send, on every route: 400 (or 401/403)
    with one short line, never a traceback.
    """

    @defer.inlineCallbacks
    def test_every_route(self):
        """
        Non-UTF-8 Authorization, Origin, Referer or Accept, a Host label
        over 63 characters or empty, a non-ASCII Host, a bad port, two Host
        headers: each is answered with one short line on every route, and
        nothing reaches the application.
        """
        for method, path in ROUTES:
            for headers, words in MALFORMED:
                request = (f"{method} {path} HTTP/1.1\r\n".encode() + headers
                           + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                answer = yield self.exchange(request)
                code, body = self.status_and_body(answer)
                where = f"{method} {path} {headers!r}: {answer!r}"
                self.assertIn(code, (400, 401, 403), where)
                self.assertIn(words.encode(), body, where)
                self.assertEqual(body.count(b"\n"), 1, where)
                self.assertLess(len(body), 200, where)
                self.assertNotIn(b"Traceback", body, where)
                self.assertNotIn(b"<html", body.lower(), where)
        self.assertEqual((self.manager.stopped, self.manager.switched), ([], []))
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_path_not_utf8(self):
        """
        A %-encoded path that is not UTF-8 is one short 400 line too, not a
        logged traceback.
        """
        answer = yield self.exchange(b"GET /m3u/%FF%FE.m3u HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        code, body = self.status_and_body(answer)
        self.assertEqual(code, 400)
        self.assertIn(b"path is not UTF-8", body)
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_malformed_request_line(self):
        """
        What Twisted itself refuses (a broken header line, a NUL byte) is
        answered with one line as well.
        """
        for request in (b"GET /m3u/ HTTP/1.1\r\nno colon here\r\n\r\n",
                        b"GET /m3u/ HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"):
            answer = yield self.exchange(request)
            code, body = self.status_and_body(answer)
            self.assertEqual((code, body), (400, b"Bad request: malformed HTTP request.\n"), request)

    @defer.inlineCallbacks
    def test_good_requests_still_pass(self):
        """
        Well-formed requests, including UTF-8 in the password and a Host
        with a trailing dot, are answered normally.
        """
        answer = yield self.exchange(
            b"GET /api/status HTTP/1.1\r\nHost: localhost.:9090\r\n"
            b"Authorization: Basic eDpzM2NyZXQ=\r\nConnection: close\r\n\r\n")
        self.assertEqual(self.status_and_body(answer)[0], 200, answer)
        answer = yield self.exchange(b"GET /m3u/main.m3u HTTP/1.1\r\nHost: tv.example\r\nConnection: close\r\n\r\n")
        code, body = self.status_and_body(answer)
        self.assertEqual(code, 200)
        self.assertIn(b"#EXTM3U", body)

    @defer.inlineCallbacks
    def test_rebound_name_is_refused_on_the_wire(self):
        """
        A page under a rebound name (Host and Origin both that name, so it
        counts as same-origin) cannot stop a channel or read the API; the
        playlist is served under the same name.
        """
        self.web._config = Config(admin_password=None)
        for request in (
            b"POST /stop/7 HTTP/1.1\r\nHost: attacker.example:9090\r\nOrigin: http://attacker.example:9090\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
            b"GET /api/status HTTP/1.1\r\nHost: attacker.example:9090\r\nConnection: close\r\n\r\n",
        ):
            code, body = self.status_and_body((yield self.exchange(request)))
            self.assertEqual(code, 403)
            self.assertIn(b"allowed_hosts", body)
        self.assertEqual(self.manager.stopped, [])
        code, _ = self.status_and_body((yield self.exchange(
            b"GET /m3u/main.m3u HTTP/1.1\r\nHost: attacker.example:9090\r\nConnection: close\r\n\r\n")))
        self.assertEqual(code, 200)


class BodyBoundTests(EdgeTestCase):
    """
    Request bodies are bounded on every route, before authentication.
    """

    password = "s3cret"

    @defer.inlineCallbacks
    def test_announced_body_refused_before_it_is_sent(self):
        """
        A Content-Length over the bound is answered 413 at once, without
        waiting for (or reading) the body, on open and protected routes
        alike.
        """
        for path in ("/stop/7", "/m3u/main.m3u", "/api/status"):
            client = yield self.connect()
            client.transport.write(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10000000\r\n\r\n".encode()
                + b"x" * 1000)
            answer = yield client.closed
            code, body = self.status_and_body(answer)
            self.assertEqual(code, 413, path)
            self.assertIn(str(MAX_BODY_BYTES).encode(), body)
        self.assertEqual(self.manager.stopped, [])

    @defer.inlineCallbacks
    def test_chunked_body_refused_at_the_bound(self):
        """
        A chunked body is counted as it arrives and refused once over the
        bound.
        """
        client = yield self.connect()
        client.transport.write(b"POST /stop/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (4096, b"y" * 4096)
        for _ in range(MAX_BODY_BYTES // 4096 + 2):
            if client.lost:
                break
            yield self.send_and_wait(client, chunk)
        answer = yield client.closed
        self.assertEqual(self.status_and_body(answer)[0], 413)
        self.assertEqual(self.manager.stopped, [])

    @defer.inlineCallbacks
    def test_small_body_passes(self):
        """
        A small body (a form some client sends anyway) is fine.
        """
        answer = yield self.exchange(
            b"POST /force_switch/7 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic eDpzM2NyZXQ=\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n"
            b"Connection: close\r\n\r\nreason=test")
        self.assertEqual(self.status_and_body(answer)[0], 200, answer)
        self.assertEqual(self.manager.switched, ["7"])


class TimeoutTests(EdgeTestCase):
    """
    Requests must arrive within a bound, idle connections are closed, and
    long answers are left alone.
    """

    password = None

    @defer.inlineCallbacks
    def test_trickled_request_is_cut(self):
        """
        A request whose headers trickle in a byte every few seconds (which
        keeps resetting an idle timer) is answered 408 and closed once
        RECEIVE_SECONDS have passed since its first byte.
        """
        client = yield self.connect()
        yield self.send_and_wait(client, b"GET /m3u/main.m3u HTTP/1.1\r\n")
        for _ in range(int(RECEIVE_SECONDS // 4) - 1):
            self.clock.advance(4)
            yield self.send_and_wait(client, b"X-A: b\r\n")
            self.assertFalse(client.lost)
        self.clock.advance(4)
        answer = yield client.closed
        code, body = self.status_and_body(answer)
        self.assertEqual(code, 408)
        self.assertIn(b"not received within", body)

    @defer.inlineCallbacks
    def test_silent_half_request_is_cut(self):
        """
        Half a request and then silence is cut at the same bound.
        """
        client = yield self.connect()
        yield self.send_and_wait(client, b"GET /m3u/main.m3u HTTP/1.1\r\nHost: 127")
        self.clock.advance(RECEIVE_SECONDS - 0.5)
        self.assertFalse(client.lost)
        self.clock.advance(1)
        answer = yield client.closed
        self.assertEqual(self.status_and_body(answer)[0], 408)

    @defer.inlineCallbacks
    def test_idle_keep_alive_is_closed(self):
        """
        A kept-alive connection is served, then closed after IDLE_SECONDS
        without a new request; a new request before that keeps it.
        """
        client = yield self.connect()
        request = b"GET /m3u/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        yield self.send_and_wait(client, request)
        yield wait_until(lambda: client.received.endswith(b"0\r\n\r\n"))
        self.clock.advance(IDLE_SECONDS - 1)
        yield self.send_and_wait(client, request)
        yield wait_until(lambda: client.received.count(b"HTTP/1.1 200") == 2 and client.received.endswith(b"0\r\n\r\n"))
        self.clock.advance(IDLE_SECONDS - 1)
        self.assertFalse(client.lost)
        self.clock.advance(2)
        yield client.closed

    @defer.inlineCallbacks
    def test_long_answer_is_left_alone(self):
        """
        An answer that streams for hours (a channel's MPEG-TS) is not cut by
        any timer, and the connection still works when it goes on.
        """
        stream = Stream()
        root = Resource()
        channel = Resource()
        root.putChild(b"channel", channel)
        one = Resource()
        channel.putChild(b"1", one)
        one.putChild(b"stream.ts", stream)
        self.port.stopListening()
        self.site = self.make_site(root)
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        client = yield self.connect()
        yield self.send_and_wait(client, b"GET /channel/1/stream.ts HTTP/1.1\r\nHost: tv.example\r\n\r\n")
        yield wait_until(lambda: stream.requests)
        for _ in range(6 * 60):
            self.clock.advance(60)
            stream.push()
        self.assertFalse(client.lost)
        expected = 188 * (1 + 6 * 60)
        yield wait_until(lambda: client.received.count(b"G") >= expected)
        # No timer of the connection is waiting; only the site's log clock.
        self.assertEqual([call.func.__name__ for call in self.clock.getDelayedCalls()], ["_updateLogDateTime"])
