"""
Fetching a provider's answer over HTTP: with treq, a deadline for the whole
answer, a bound on its size (after decompression) and gzip (treq asks for it
and inflates ``Content-Encoding: gzip``; a body that is a gzip file, such as
a ``playlist.m3u.gz``, is inflated here, within the bound).

Errors are :class:`FetchError` sentences that never hold the URL (provider
URLs carry credentials); callers name the provider and show
:func:`streamproxy.urls.display_url`.
"""

import zlib

import treq
from twisted.internet import defer, error as net_error
from twisted.web import client as web_client

# Most seconds one answer may take, connecting and reading included.  Big
# playlists from slow panels take a while; a hung one must not stall syncs.
FETCH_TIMEOUT_SECONDS = 90.0

# Largest answer taken, after decompression: a 50,000-channel playlist is
# about 15 MB; anything far beyond is not a channel list.
MAX_ANSWER_BYTES = 128 * 1024 * 1024

_GZIP_MAGIC = b"\x1f\x8b"


class FetchError(Exception):
    """
    The answer could not be had; the message says why, without the URL.
    """


class _Body:
    """
    Collects a body up to ``limit`` bytes, inflating gzip on the way
    (announced by Content-Encoding or recognized by its magic bytes).
    """

    def __init__(self, limit, gzip_announced):
        self.limit = limit
        self.parts = []
        self.size = 0
        self._gzip = gzip_announced
        self._decided = gzip_announced
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip_announced else None

    def __call__(self, data):
        if not self._decided:
            self._decided = True
            if data[:2] == _GZIP_MAGIC:
                self._gzip = True
                self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not self._gzip:
            self._keep(data)
            return
        try:
            while data:
                # Never inflate more than the room left (a gzip bomb stops here).
                out = self._inflater.decompress(data, self.limit - self.size + 1)
                self._keep(out)
                data = self._inflater.unconsumed_tail
        except zlib.error:
            raise FetchError("the answer is not valid gzip")

    def _keep(self, data):
        self.size += len(data)
        if self.size > self.limit:
            raise FetchError(f"the answer is larger than {self.limit // (1024 * 1024)} MB")
        self.parts.append(data)

    def result(self):
        if self._gzip:
            try:
                self._keep(self._inflater.flush())
            except zlib.error:
                raise FetchError("the answer is not valid gzip")
        return b"".join(self.parts)


def _phrase(response):
    phrase = getattr(response, "phrase", b"") or b""
    return phrase.decode("latin-1", "replace") if isinstance(phrase, bytes) else str(phrase)


def describe_failure(failure, timeout):
    """
    A sentence for a failed fetch, without the URL.
    """
    if failure.check(FetchError):
        return failure.getErrorMessage()
    if failure.check(defer.CancelledError, defer.TimeoutError, net_error.TimeoutError):
        return f"no complete answer within {timeout:g} s"
    if failure.check(net_error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(net_error.DNSLookupError):
        return "host name not found"
    if failure.check(net_error.ConnectError):
        return "cannot connect"
    if failure.check(web_client.ResponseNeverReceived, web_client.ResponseFailed, net_error.ConnectionLost):
        reasons = getattr(failure.value, "reasons", ())
        if any(r.check(defer.CancelledError) for r in reasons if hasattr(r, "check")):
            return f"no complete answer within {timeout:g} s"
        return "the connection broke before the answer was complete"
    return failure.type.__name__


def fetch(client, url, reactor, timeout=None, max_bytes=None):
    """
    GET ``url`` with ``client`` (a treq ``HTTPClient`` or ``StubTreq``); a
    Deferred firing with the body (bytes, inflated) of a 200 answer.

    Fails with :class:`FetchError` (its message says why, never the URL):
    another status, an answer over ``max_bytes`` (default
    :data:`MAX_ANSWER_BYTES`), more than ``timeout`` seconds (default
    :data:`FETCH_TIMEOUT_SECONDS`) for the whole answer, a connection that could not be made or
    broke.
    """
    timeout = FETCH_TIMEOUT_SECONDS if timeout is None else timeout
    max_bytes = MAX_ANSWER_BYTES if max_bytes is None else max_bytes

    def read(response):
        encoding = b",".join(response.headers.getRawHeaders(b"content-encoding", [])).lower()
        body = _Body(max_bytes, b"gzip" in encoding)
        return treq.collect(response, body).addCallback(lambda _: body.result())

    return _get(client, url, reactor, timeout, read)


def _get(client, url, reactor, timeout, read):
    """
    GET ``url`` and ``read(response)`` a 200 answer (a Deferred), within
    ``timeout`` seconds for the whole; every failure a :class:`FetchError`.
    """

    def answered(response):
        if response.code != 200:
            # Read and drop the body so the connection is freed.
            treq.collect(response, lambda data: None).addErrback(lambda f: None)
            raise FetchError(f"HTTP {response.code} {_phrase(response)}".strip())
        return read(response)

    d = defer.maybeDeferred(
        client.get,
        url,
        headers={b"User-Agent": [b"streamproxy"]},
        timeout=timeout,
        reactor=reactor,
        unbuffered=True,
    )
    d.addCallback(answered)
    d.addTimeout(timeout, reactor)

    def failed(failure):
        raise FetchError(describe_failure(failure, timeout))

    return d.addErrback(failed)


class _FileBody:
    """
    Writes a body to an open file as it arrives, up to ``limit`` bytes.
    """

    def __init__(self, file, limit):
        self.file = file
        self.limit = limit
        self.size = 0

    def __call__(self, data):
        self.size += len(data)
        if self.size > self.limit:
            raise FetchError(f"the answer is larger than {self.limit // (1024 * 1024)} MB")
        self.file.write(data)


def fetch_to_file(client, url, reactor, file, timeout, max_bytes):
    """
    GET ``url`` and write the body of a 200 answer to the binary ``file``
    as it arrives, so a guide of hundreds of MB never sits in memory
    (treq unpacks ``Content-Encoding: gzip``; a ``.gz`` or ``.xz`` file is
    written as it is, for the reader to unpack).  A Deferred firing with
    the number of bytes written.

    Fails with :class:`FetchError` (never naming the URL) as :func:`fetch`
    does: another status, more than ``max_bytes``, more than ``timeout``
    seconds for the whole answer, a connection that could not be made or
    broke.
    """

    def read(response):
        body = _FileBody(file, max_bytes)
        return treq.collect(response, body).addCallback(lambda _: body.size)

    return _get(client, url, reactor, timeout, read)
