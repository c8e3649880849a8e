"""
The HTTP edge: what every request passes before any route sees it.

:class:`EdgeSite` is a ``twisted.web.server.Site`` whose connections
(:class:`EdgeChannel`) and requests (:class:`EdgeRequest`) add bounds that
Twisted leaves open:

* **Bodies** are refused with 413 as soon as they pass
  :data:`MAX_BODY_BYTES`, whether announced by ``Content-Length`` (before
  a byte of them is read) or sent chunked; no route takes more than a few
  hundred bytes.
* **Slow requests**: the request line, headers and body must all arrive
  within :data:`RECEIVE_SECONDS` of the request's first byte (a client
  trickling a byte every few seconds resets Twisted's idle timer forever),
  else 408 and the connection is closed.
* **Idle connections** between requests are closed after
  :data:`IDLE_SECONDS`.
* **Long answers are left alone**: once a request has arrived whole, no
  timer runs on its connection until its answer is finished, however long
  it streams (a ``/channel/<id>/stream.ts`` may run for hours).
* **Malformed headers** (a ``Host`` that is not a host name, or headers
  the routes read as text that are not UTF-8) and paths that are not
  UTF-8 after %-decoding are a 400 with one line saying which, never a
  traceback, on every route.

Errors are one line of text, like the routes' own.
"""

from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Request, Site

from .hosts import BadHost, parse_host_header

log = Logger()

# Largest request body accepted, bytes.  The routes that take a body
# (POST /stop, /force_switch, /refresh_db_cache) read none; this leaves
# room for clients that send a small form anyway.
MAX_BODY_BYTES = 16 * 1024

# Seconds from a request's first byte until its headers and body must be
# in.  Generous for any real client on a home network.
RECEIVE_SECONDS = 20.0

# Seconds a connection may sit without a request before it is closed.
# Players reload a live playlist about once per segment (6 s); Channels
# DVR opens a new connection when it finds one closed.
IDLE_SECONDS = 60.0

# The request headers the routes read as text: each must be UTF-8.
TEXT_HEADERS = (b"authorization", b"origin", b"referer", b"sec-fetch-site", b"accept")

# Names as the error lines show them.
_HEADER_NAMES = {
    b"authorization": "Authorization",
    b"origin": "Origin",
    b"referer": "Referer",
    b"sec-fetch-site": "Sec-Fetch-Site",
    b"accept": "Accept",
}

_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 413: b"Content Too Large"}


def request_problem(headers, path):
    """
    Why a request with ``headers`` (a ``twisted.web.http_headers.Headers``)
    for ``path`` (raw bytes) cannot be answered, as one sentence for a 400,
    or None when it can.
    """
    hosts = headers.getRawHeaders(b"host") or []
    if len(hosts) > 1:
        return "Bad request: more than one Host header."
    if hosts and hosts[0].strip():
        try:
            parse_host_header(hosts[0])
        except BadHost as e:
            return f"Bad request: the Host header {e}."
    for name in TEXT_HEADERS:
        for value in headers.getRawHeaders(name) or ():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                return f"Bad request: the {_HEADER_NAMES[name]} header is not UTF-8 text."
    try:
        unquote_to_bytes(path.split(b"?", 1)[0]).decode("utf-8")
    except UnicodeDecodeError:
        return "Bad request: the path is not UTF-8 text (after %-decoding)."
    return None


def raw_answer(code, text):
    """
    The bytes of a complete one-line answer that closes the connection, for
    answering outside a request's normal life (before its body is read).
    """
    body = (text.rstrip("\n") + "\n").encode("utf-8")
    return (
        b"HTTP/1.1 %d %s\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Connection: close\r\n\r\n" % (code, _REASONS.get(code, b"Error"), len(body))
    ) + body


class EdgeRequest(Request):
    """
    A request that refuses malformed headers and over-long bodies before
    any route sees it.
    """

    def gotLength(self, length):
        """
        Start collecting the body (chunked bodies are counted as they come).
        """
        self._body_bytes = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        """
        Keep a chunk of the body, or refuse the request once the body
        passes :data:`MAX_BODY_BYTES`.
        """
        self._body_bytes = getattr(self, "_body_bytes", 0) + len(data)
        if self._body_bytes > self.channel.max_body_bytes:
            self.channel.refuse(413, body_too_large(self.channel.max_body_bytes))
            return
        super().handleContentChunk(data)

    def process(self):
        """
        Answer 400 for a malformed request; hand the others to the site.
        """
        problem = request_problem(self.requestHeaders, self.path or b"")
        if problem is None:
            return super().process()
        self.site = self.channel.site
        # A client that sends such requests gets no second one on this
        # connection.
        self.channel.persistent = False
        self.setResponseCode(400)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"connection", b"close")
        body = problem.encode("utf-8") + b"\n"
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()

    def processingFailed(self, reason):
        """
        A failure outside the application's own error handling: logged, and
        answered with one line instead of Twisted's HTML page.
        """
        log.failure("Answering {method} {path}", reason,
                    method=(self.method or b"?").decode("ascii", "replace"),
                    path=(self.path or b"?").decode("ascii", "replace"))
        if not self.startedWriting:
            self.setResponseCode(500)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.setHeader(b"content-length", b"%d" % len(b"Internal error.\n"))
            self.write(b"Internal error.\n")
        self.finish()
        return reason


def body_too_large(limit):
    """
    The line a 413 answers.
    """
    return f"Request body over {limit} bytes: no request to this server needs one that large."


class EdgeChannel(http.HTTPChannel):
    """
    One client connection, with the body bound and the receive deadline.

    Timers use ``self.callLater``, which the site sets to its reactor's, so
    tests drive them with a ``Clock`` while the socket is real.
    """

    max_body_bytes = MAX_BODY_BYTES
    receive_seconds = RECEIVE_SECONDS

    def __init__(self):
        super().__init__()
        self._receive_deadline = None
        self._answering = False
        self._refused = False

    def dataReceived(self, data):
        """
        Start the receive deadline at a request's first byte.
        """
        if self._refused:
            return
        if not self._answering and self._receive_deadline is None:
            self._receive_deadline = self.callLater(self.receive_seconds, self._receive_timed_out)
        super().dataReceived(data)

    def rawDataReceived(self, data):
        """
        Body bytes, dropped once the request has been refused.
        """
        if self._refused:
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self):
        """
        Refuse a body announced larger than :data:`MAX_BODY_BYTES` before
        reading any of it.
        """
        if self.length is not None and self.length > self.max_body_bytes:
            self.refuse(413, body_too_large(self.max_body_bytes))
            return
        super().allHeadersReceived()

    def allContentReceived(self):
        """
        The request is in: no timer runs while it is answered.
        """
        if self._refused:
            return
        self._cancel_deadline()
        self._answering = True
        super().allContentReceived()

    def requestDone(self, request):
        """
        The answer is finished; the idle timer runs again.
        """
        self._answering = False
        super().requestDone(request)

    def connectionLost(self, reason):
        """
        Cancel the receive deadline.
        """
        self._cancel_deadline()
        super().connectionLost(reason)

    def refuse(self, code, text):
        """
        Answer ``code`` with ``text`` at once and close the connection,
        reading nothing more from it.
        """
        if self._refused:
            return
        self._refused = True
        self._cancel_deadline()
        self.transport.write(raw_answer(code, text))
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self):
        # Twisted's answer to a malformed request line or header is a bare
        # status line; this one says what happened in one line, like ours.
        self.refuse(400, "Bad request: malformed HTTP request.")

    def _receive_timed_out(self):
        self._receive_deadline = None
        if not self._answering:
            self.refuse(408, f"Request not received within {self.receive_seconds:g} s.")

    def _cancel_deadline(self):
        if self._receive_deadline is not None and self._receive_deadline.active():
            self._receive_deadline.cancel()
        self._receive_deadline = None


class EdgeSite(Site):
    """
    A ``Site`` whose connections and requests are bounded as this module
    describes; ``timeout`` is the idle time between requests.
    """

    protocol = EdgeChannel
    requestFactory = EdgeRequest

    def __init__(self, resource, timeout=IDLE_SECONDS, reactor=None, **kwargs):
        super().__init__(resource, timeout=timeout, reactor=reactor, **kwargs)
