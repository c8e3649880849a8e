"""
The HTTP face of streamproxy: M3U playlists, the channel streams, the
management endpoints, the JSON API and the status and log pages, as one
Klein application.

Playlists (``/m3u/...``) and streams (``/channel/...``) are for Channels
DVR and always open, under any host name.  Everything else is for people:
it answers only when the request's ``Host`` is this machine (an IP
address, ``localhost``, the machine's own name or one in ``allowed_hosts``;
see :mod:`streamproxy.hosts`), with ``admin_password`` set it asks for that
password (HTTP basic auth, any user name), and requests that change
something (stop, force_switch, refresh_db_cache, refresh_providers) are
refused when the browser says they come from another site (see
:func:`cross_site_problem`).

Bounds on every request (body size, time to send it, malformed headers)
are kept by :mod:`streamproxy.edge` before any route runs.
"""

import base64
import binascii
import functools
import hmac
import json
import os
import re
from urllib.parse import quote, urlsplit

from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.static import File
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

from . import hdhomerun
from .channels import normalize_channel_id
from .dashboard import Dashboard, masked
from .fanout import TS_TYPE, TSViewer
from .edge import EdgeSite
from .hosts import BadHost, host_is_ours, machine_names, parse_host_header
from .logs import LEVELS, BadLogQuery, check_level
from .manager import UnknownChannel
from .metrics import MetricsListener
from .playlists import STREAM_FILES, PlaylistCache
from .session import ChannelUnavailable
from .store import StoreError
from .urls import mask_text
from .guide import write_unpacked
from .xmltv import gzipped_guide

log = Logger()

# The pages, styles and scripts served under /static/, read once.
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
}

# What the pages may load: only this daemon's own files, except channel
# logos, which live on the providers' servers.
PAGE_POLICY = (
    b"default-src 'self'; img-src * data:; media-src 'self' blob:; "
    b"style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'"
)

M3U_TYPE = b"audio/x-mpegurl; charset=utf-8"
XML_TYPE = b"application/xml; charset=utf-8"
JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"
HLS_TYPE = b"application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"

# How long a playlist request that arrives before the first load of the
# table has finished waits for it (about 1 s for 40,000 rows) before it is
# answered 503 with Retry-After; never a 404 for a playlist that exists.
FIRST_LOAD_WAIT_SECONDS = 10.0
LOADING_RETRY_AFTER_SECONDS = 5

# Host names whose refusal is logged (once each); more are refused silently.
MAX_HOSTS_LOGGED = 100

# A Host header we are willing to echo into playlist URLs: a name or an
# address with an optional port, nothing that could break out of a URL.
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class ChannelIdConverter(BaseConverter):
    """
    A channel number in a path: ``7`` or a sub-channel ``7.1``, handed to
    the route in its canonical form (``0501`` is channel ``501``, ``7.10``
    is ``7.1``), as ``/force_switch`` and ``/stop`` take ids.
    """

    regex = r"\d{1,9}(?:\.\d{1,4})?"

    def to_python(self, value):
        """
        The canonical channel id of the path segment.
        """
        return normalize_channel_id(value)


class SegmentConverter(BaseConverter):
    """
    A segment file name: letters, digits, ``_`` and ``-`` then ``.ts``.

    Anything else (dots, slashes, encoded slashes, absolute paths) does not
    match the route at all, so no handler ever sees a path outside the
    channel's own folder.
    """

    regex = r"[A-Za-z0-9_\-]{1,64}\.ts"


class StaticNameConverter(BaseConverter):
    """
    The name of one of the daemon's own page files: no folders, no dots
    but the one before the extension.
    """

    regex = r"[a-z0-9_\-]{1,40}\.(?:css|js|html|svg)"


class BadChannelId(ValueError):
    """
    A path names something that is not a channel number (400).
    """


class BadRequest(ValueError):
    """
    A request with a value that makes no sense (400); the message says which.
    """


class Unauthorized(Exception):
    """
    ``admin_password`` is set and the request did not give it (401).
    """


class CrossSiteRequest(Exception):
    """
    A request that changes something came from another site's page (403);
    the message says how that was seen.
    """


class ForeignHost(Exception):
    """
    A page or management request addressed to a host name that is not this
    machine's (403): a DNS-rebinding page, or a name to add to
    ``allowed_hosts``.  The argument is the name.
    """


class MalformedHeader(ValueError):
    """
    A request header the route reads is not text (400); the message says
    which.
    """


class CatalogLoading(Exception):
    """
    The channel table has not been loaded yet since the start (503 with
    Retry-After); the message says so.
    """


def _header(request, name):
    """
    The text of request header ``name`` (bytes, lower case), or None.

    :raises MalformedHeader: when its value is not UTF-8.
    """
    values = request.requestHeaders.getRawHeaders(name)
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedHeader(f"the {name.decode('ascii').title()} header is not UTF-8 text")


def _header_or_blank(request, name):
    # For answering errors, where nothing may raise.
    values = request.requestHeaders.getRawHeaders(name)
    return values[-1].decode("utf-8", "replace") if values else ""


def parse_channel_id(text):
    """
    The canonical channel id of a path segment (``007`` is ``7``).

    :raises BadChannelId: when ``text`` is not a channel number.
    """
    try:
        return normalize_channel_id(text)
    except ValueError:
        raise BadChannelId(f"{text!r} is not a channel number (such as 7 or 7.1)")


def _authority(value):
    """
    ``(host, port or None)`` of an absolute http(s) URL or of a Host
    header value (``host[:port]``), the host lower-cased; None when it is
    neither.
    """
    if "://" not in value:
        value = "http://" + value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.hostname.lower(), port


def _default_port(url):
    return 443 if url.lower().startswith("https:") else 80


def cross_site_problem(request):
    """
    Why a request that changes something must be refused as coming from
    another site's page, or None when it may go ahead.

    The rule: what the browser says about where the request comes from
    must be this daemon itself, or absent.  Browsers say it in
    ``Sec-Fetch-Site`` (``cross-site`` and ``same-site`` are refused) and in
    ``Origin`` (or, without it, ``Referer``), whose host and port must be
    those of the ``Host`` header (the port is compared when the Host
    header names one).  Scripts such as curl send none of these and are
    let through, so the old GET and POST forms keep working for them.
    """
    fetch_site = (_header(request, b"sec-fetch-site") or "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"the browser marked it {fetch_site} (Sec-Fetch-Site)"
    origin = _header(request, b"origin")
    header, source = ("Origin", origin) if origin is not None else ("Referer", _header(request, b"referer"))
    if source is None:
        return None
    host = _authority(_header_or_blank(request, b"host").strip())
    if host is None:
        return f"it names an {header} ({source}) but no usable Host"
    seen = _authority(source.strip()) if source.strip().lower() != "null" else None
    if seen is None:
        return f"its {header} {source!r} is not this server"
    if seen[0] != host[0]:
        return f"its {header} {source} is not this server ({host[0]})"
    if host[1] is not None and (seen[1] or _default_port(source.strip())) != host[1]:
        return f"its {header} {source} is not this server (port {host[1]})"
    return None


def _admin(changes_state=False):
    """
    Mark a route as one for people: it answers only under this machine's
    host names (``allowed_hosts``), asks for ``admin_password`` when one
    is set and, when it ``changes_state``, refuses cross-site requests.
    """

    def decorate(handler):
        @functools.wraps(handler)
        def guarded(self, request, *args, **kwargs):
            self.check_host(request)
            self.check_password(request)
            if changes_state:
                problem = cross_site_problem(request)
                if problem is not None:
                    raise CrossSiteRequest(problem)
            return handler(self, request, *args, **kwargs)

        return guarded

    return decorate


def base_url(request):
    """
    ``http://host:port`` as the client addressed us, for absolute URLs in
    playlists; falls back to the address the connection arrived on.
    """
    host = _header_or_blank(request, b"host").strip()
    if not _SAFE_HOST.match(host):
        address = request.getHost()
        host = f"{address.host}:{address.port}"
        if ":" in address.host:
            host = f"[{address.host}]:{address.port}"
    return f"http://{host}"


def _json(request, value, code=200, compact=False):
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-cache")
    if compact:
        return json.dumps(value, separators=(",", ":")).encode("utf-8")
    return json.dumps(value, indent=1).encode("utf-8")


def _wants_json(request):
    path = request.path or b""
    accept = _header_or_blank(request, b"accept")
    return path.startswith(b"/api/") or "application/json" in accept


def _error(request, code, message):
    """
    A short error answer: JSON ``{"error": ...}`` for the API and for the
    pages' own calls (which accept JSON), one line of text otherwise.
    """
    if _wants_json(request):
        return _json(request, {"error": message, "status": code}, code)
    return _text(request, message, code)


def _text(request, text, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", TEXT_TYPE)
    return (text.rstrip("\n") + "\n").encode("utf-8")


class ProxySite(EdgeSite):
    """
    The HTTP site, with the bounds of :class:`~streamproxy.edge.EdgeSite`.
    Successful playlist and segment requests, several a second per viewer,
    and the pages' API polls are left out of the access log: they drown
    what matters in it and cost more than serving them.  Errors are logged.
    """

    displayTracebacks = False

    def log(self, request):
        # The status and log pages poll the API every two seconds, and
        # Prometheus scrapes /metrics every few seconds.
        if request.code < 400 and request.uri.startswith((b"/channel/", b"/api/", b"/static/", b"/metrics")):
            return
        super().log(request)


class StreamProxyWeb:
    """
    Routes requests to the store (playlists, refresh), to the channel
    manager (streams, switching, status) and to the log buffer, and serves
    the status and log pages.

    ``logs`` is the :class:`~streamproxy.logs.LogBuffer` behind ``/logs``;
    ``dvr`` the Channels DVR tracker whose ``status()`` the status page
    shows (taken from the manager when not given; either may be None).
    ``own_names`` are the host names of this machine that pages answer
    under besides IP addresses, ``localhost`` and ``allowed_hosts``
    (:func:`~streamproxy.hosts.machine_names` when not given).
    ``providers`` is the :class:`~streamproxy.providers.ProviderSync` behind
    ``/api/providers`` and ``POST /refresh_providers`` (None: no providers).
    ``metrics`` is the :class:`~streamproxy.metrics.Metrics` behind
    ``/metrics`` (None: no metrics).
    ``tuners`` is the :class:`~streamproxy.hdhomerun.Tuners` behind the
    HDHomeRun API (None: it is off), ``guide`` the
    :class:`~streamproxy.guide.GuideService` behind ``/xmltv/`` (None: no
    programmes, channels only), ``media`` the
    :class:`~streamproxy.codec_memory.CodecMemory` the playlists name codecs from.
    """

    app = Klein()
    app.url_map.converters["channel"] = ChannelIdConverter
    app.url_map.converters["segment"] = SegmentConverter
    app.url_map.converters["static"] = StaticNameConverter

    def __init__(self, config, store, ranking, channels, logs=None, dvr=None, reactor=None,
                 own_names=None, providers=None, metrics=None, tuners=None, guide=None, media=None):
        if reactor is None:
            from twisted.internet import reactor
        self._config = config
        self._store = store
        self._ranking = ranking
        self._channels = channels
        self._logs = logs
        self._dvr = dvr if dvr is not None else getattr(channels, "dvr", None)
        self._providers = providers
        self._metrics = metrics
        self._served = metrics if metrics is not None else MetricsListener()
        self._reactor = reactor
        # HDHomeRun emulation (None: hdhomerun.enabled is false), the XMLTV
        # guide service and the codecs seen (issue 11).
        self._tuners = tuners
        self._guide = guide
        self._playlists = PlaylistCache(ranking, media=media, guides=True)
        self._static = _read_static(STATIC_DIR)
        self._dashboard = Dashboard(store, ranking, channels, self._dvr, reactor)
        self._own_names = machine_names() if own_names is None else frozenset(own_names)
        self._refused_hosts = set()

    def resource(self):
        """
        The ``IResource`` to serve: the routes, behind the fast path for
        the requests players repeat every second.
        """
        return _FastPath(self, self.app.resource())

    def serve_repeated(self, request):
        """
        Answer a GET of a running channel's playlist (once it has a
        segment) or of one of its segments without routing, or return None
        to leave the request to the routes, which handle everything else
        (starting channels, waiting, HEAD, errors) the same way.
        """
        if request.method != b"GET" or request.getHeader(b"range") is not None:
            return None
        parts = request.path.split(b"/")
        if len(parts) != 4 or parts[1] != b"channel":
            return None
        try:
            raw_id, name = parts[2].decode("ascii"), parts[3].decode("ascii")
        except UnicodeDecodeError:
            return None
        if not _CHANNEL_ID.fullmatch(raw_id):
            return None
        channel_id = normalize_channel_id(raw_id)
        session = self._channels.session(channel_id)
        if session is None:
            return None
        if name == "stream.m3u8":
            if session.ended or not len(session.playlist):
                return None
            session.touch(_host(request))
            text = session.playlist.render()
            self._served.count_served("hls", len(text))
            return _playlist_answer(request, text)
        if not _SEGMENT_NAME.fullmatch(name) or name == "stream.ts":
            return None
        path = self._channels.segment_path(channel_id, name, client=_host(request))
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                body = f.read()
        except OSError:
            return None  # deleted meanwhile: the route answers 404
        self._served.count_served("hls", len(body))
        _open_to_any_origin(request)
        request.setHeader(b"content-type", SEGMENT_TYPE.encode())
        return body

    # Errors: every one a short text (or JSON for the API), never a
    # traceback page.

    @app.handle_errors(StoreError)
    def _store_error(self, request, failure):
        log.error("{error}", error=failure.getErrorMessage())
        return _error(request, 503, f"Database unavailable: {failure.getErrorMessage()}")

    @app.handle_errors(CatalogLoading)
    def _loading(self, request, failure):
        request.setHeader(b"retry-after", b"%d" % LOADING_RETRY_AFTER_SECONDS)
        return _error(request, 503, failure.getErrorMessage())

    @app.handle_errors(UnknownChannel)
    def _unknown_channel(self, request, failure):
        channel_id = failure.value.args[0]
        if self._catalog_missing():
            # Not a 404: the channel may well be in the table not read yet.
            request.setHeader(b"retry-after", b"%d" % LOADING_RETRY_AFTER_SECONDS)
            return _error(request, 503, _loading_message(self._store))
        if channel_id in self._store.catalog.channels and not _is_stream_path(request):
            return _error(request, 404, f"Channel {channel_id} is not running.")
        return _error(request, 404, f"No channel {channel_id}.")

    @app.handle_errors(ChannelUnavailable)
    def _unavailable(self, request, failure):
        request.setHeader(b"retry-after", b"10")
        return _error(request, 503, str(failure.value))

    @app.handle_errors(BadChannelId, BadLogQuery, BadRequest, MalformedHeader)
    def _bad_request(self, request, failure):
        return _error(request, 400, f"Bad request: {failure.getErrorMessage()}.")

    @app.handle_errors(Unauthorized)
    def _unauthorized(self, request, failure):
        request.setHeader(b"www-authenticate", b'Basic realm="streamproxy", charset="UTF-8"')
        return _error(request, 401, "This page needs the admin password (admin_password in config.yaml).")

    @app.handle_errors(CrossSiteRequest)
    def _cross_site(self, request, failure):
        log.warn(
            "Refused {method} {path} from another site: {why}",
            method=request.method.decode("ascii", "replace"),
            path=request.path.decode("ascii", "replace"),
            why=failure.getErrorMessage(),
        )
        return _error(request, 403, f"Refused: a request from another site ({failure.getErrorMessage()}).")

    @app.handle_errors(ForeignHost)
    def _foreign_host(self, request, failure):
        host = failure.value.args[0]
        # Once per name: a rebinding page may ask many times a second, and
        # must not push everything else out of the log viewer.
        if host not in self._refused_hosts and len(self._refused_hosts) < MAX_HOSTS_LOGGED:
            self._refused_hosts.add(host)
            log.warn("Refused {method} {path} addressed to {host!r}: not a name of this machine "
                     "(allowed_hosts); further requests under this name are refused silently",
                     method=request.method.decode("ascii", "replace"),
                     path=request.path.decode("ascii", "replace"), host=host)
        return _error(
            request,
            403,
            f"Refused: {host!r} is not a name of this machine. If you reach streamproxy "
            f"by this name, add it to allowed_hosts in config.yaml.",
        )

    @app.handle_errors(HTTPException)
    def _http_error(self, request, failure):
        # werkzeug's answers for no matching route (404), a method the
        # route does not take (405, with Allow) and a missing slash (308,
        # with Location), in our short form instead of an HTML page.
        error = failure.value
        for name, value in error.get_response({}).headers:
            if name.lower() not in ("content-type", "content-length"):
                request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if error.code == 404:
            message = f"Not found: {request.path.decode('utf-8', 'replace')}"
        elif error.code == 405:
            allowed = error.valid_methods or ()
            message = (
                f"Method {request.method.decode('ascii', 'replace')} is not allowed here; "
                f"use {' or '.join(sorted(allowed))}."
            )
        elif 300 <= error.code < 400 and getattr(error, "new_url", None):
            message = f"Moved to {error.new_url}"
        else:
            message = f"{error.code} {error.name}"
        return _error(request, error.code, message)

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure):
        log.failure("Answering {method} {path}", failure,
                    method=request.method.decode("ascii", "replace"),
                    path=request.path.decode("ascii", "replace"))
        detail = mask_text(failure.getErrorMessage() or failure.type.__name__)
        return _error(request, 500, f"Internal error: {detail}.")

    def check_host(self, request):
        """
        Let the request through when its ``Host`` names this machine: an IP
        address, ``localhost``, one of its own names or one listed in
        ``allowed_hosts``.

        :raises ForeignHost: otherwise.
        :raises MalformedHeader: when the Host header is not a host name.
        """
        values = request.requestHeaders.getRawHeaders(b"host")
        if not values or not values[-1].strip():
            return
        try:
            host, _ = parse_host_header(values[-1])
        except BadHost as e:
            raise MalformedHeader(f"the Host header {e}")
        if not host_is_ours(host, self._own_names, self._config.allowed_hosts):
            raise ForeignHost(host)

    def check_password(self, request):
        """
        Let the request through when no ``admin_password`` is set or when
        its basic auth gives that password (any user name).

        :raises Unauthorized: otherwise.
        """
        expected = self._config.admin_password
        if expected is None:
            return
        try:
            header = _header(request, b"authorization") or ""
        except MalformedHeader:
            raise Unauthorized()
        scheme, _, encoded = header.partition(" ")
        given = None
        if scheme.lower() == "basic":
            try:
                _, _, given = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                given = None
        if given is None or not hmac.compare_digest(given.encode("utf-8"), str(expected).encode("utf-8")):
            raise Unauthorized()

    # For Channels DVR: playlists and streams, always open.

    def _after_first_load(self, answer, *args):
        """
        ``answer(*args)`` once the first load of the table has finished: at
        once when it has, else after waiting for it up to
        :data:`FIRST_LOAD_WAIT_SECONDS`.

        :raises CatalogLoading: (through the Deferred when waiting) when the
            wait runs out, or when the first load failed and left no table.
        """
        if self._store.loaded:
            return self._answer_loaded(answer, *args)
        waiting = self._store.when_loaded()
        waiting.addTimeout(FIRST_LOAD_WAIT_SECONDS, self._reactor)

        def timed_out(failure):
            failure.trap(defer.TimeoutError, defer.CancelledError)
            raise CatalogLoading(_loading_message(self._store))

        return waiting.addCallbacks(lambda _: self._answer_loaded(answer, *args), timed_out)

    def _answer_loaded(self, answer, *args):
        if self._catalog_missing():
            raise CatalogLoading(_loading_message(self._store))
        return answer(*args)

    def _catalog_missing(self):
        """
        Whether the table has not been read since the start: its first load
        is under way, or failed and nothing has been read since.
        """
        store = self._store
        return not store.loaded or (store.load_error is not None and not store.catalog.candidates)

    @app.route("/m3u/<string:name>.m3u", methods=["GET", "HEAD"])
    def m3u(self, request, name):
        """
        The channels of one playlist, as Channels DVR reads custom channels
        (after the first load of the table; never a 404 before it).
        """
        return self._after_first_load(self._m3u, request, name)

    def _m3u(self, request, name):
        catalog = self._store.catalog
        channels = catalog.find_playlist(name)
        if channels is None:
            return _text(request, f"No playlist named {name!r}.", 404)
        stream_format = _query(request, "format") or self._config.stream_format
        if stream_format not in STREAM_FILES:
            raise BadRequest(f"format must be hls or ts, not {stream_format!r}")
        request.setHeader(b"content-type", M3U_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        text = self._playlists.get(catalog, name, channels, base_url(request), stream_format)
        return text.encode("utf-8")

    @app.route("/m3u/", methods=["GET", "HEAD"])
    def m3u_index(self, request):
        """
        The playlists this daemon serves, one URL a line (after the first
        load of the table).
        """
        return self._after_first_load(self._m3u_index, request)

    def _m3u_index(self, request):
        root = base_url(request)
        names = sorted(self._store.catalog.playlists)
        return _text(request, "\n".join(f"{root}/m3u/{name}.m3u" for name in names) or "No playlists.")

    @app.route("/channel/<channel:channel_id>/stream.m3u8", methods=["GET", "HEAD"])
    async def stream_playlist(self, request, channel_id):
        """
        The channel's live HLS playlist; the first request starts the
        channel and is answered once the first segment is ready.  HEAD
        never starts a channel (link checkers HEAD every channel of a
        playlist): it answers 200 with the headers for any channel the
        table has, 404 for others.
        """
        _open_to_any_origin(request)
        if request.method == b"HEAD":
            if self._channels.session(channel_id) is None and channel_id not in self._store.catalog.channels:
                raise UnknownChannel(channel_id)
            text = ""
        else:
            text = await self._channels.playlist(channel_id, client=_host(request))
            self._served.count_served("hls", len(text))
        return _playlist_answer(request, text)

    @app.route("/channel/<channel:channel_id>/stream.ts", methods=["GET", "HEAD"])
    def stream_ts(self, request, channel_id):
        """
        The channel as one continuous MPEG-TS response, lasting until the
        viewer leaves or the channel ends; it starts the channel.  HEAD
        answers like the playlist's HEAD and starts nothing.
        """
        _open_to_any_origin(request)
        if request.method == b"HEAD":
            if self._channels.session(channel_id) is None and channel_id not in self._store.catalog.channels:
                raise UnknownChannel(channel_id)
            request.setHeader(b"content-type", TS_TYPE)
            return b""
        session = self._channels.tune(channel_id)
        if session.ended:
            raise ChannelUnavailable(session.reason or f"channel {channel_id} stopped")
        return TSViewer(request, session, self._reactor, _client(request)).start()

    @app.route("/channel/<channel:channel_id>/<segment:name>", methods=["GET", "HEAD"])
    def segment(self, request, channel_id, name):
        """
        One segment of a running channel, as video/mp2t.
        """
        _open_to_any_origin(request)
        client = _host(request) if request.method != b"HEAD" else None
        path = self._channels.segment_path(channel_id, name, touch=request.method != b"HEAD", client=client)
        if path is None:
            return _text(request, f"No segment {name} on channel {channel_id}.", 404)
        if request.method != b"HEAD":
            try:
                self._served.count_served("hls", os.path.getsize(path))
            except OSError:
                pass  # gone meanwhile: File answers 404
        resource = File(path, defaultType=SEGMENT_TYPE)
        # Twisted guesses types from /etc/mime.types, where .ts is a Qt
        # translation file on Debian.
        resource.contentTypes = {".ts": SEGMENT_TYPE}
        resource.isLeaf = True
        return resource

    # -- HDHomeRun emulation and the XMLTV guide (issue 11) -----------------
    # Open like /m3u/ and /channel/, under any host name and without a
    # password: tuner clients (Plex, Jellyfin, Emby, Channels DVR) send
    # neither.  They show what the playlists show (channel names, logos,
    # this daemon's stream URLs), never a provider URL, and change nothing.

    def _device_answer(self, request, playlist, answer):
        """
        ``answer(request, device, base)`` for ``playlist``'s device (None:
        the root device), once the table and the tuner identity are read;
        404 when emulation is off or there is no such playlist.
        """
        if self._tuners is None:
            return _text(request, "HDHomeRun emulation is off (hdhomerun.enabled in config.yaml).", 404)

        def ready():
            waiting = self._tuners.when_ready()
            waiting.addTimeout(FIRST_LOAD_WAIT_SECONDS, self._reactor)

            def timed_out(failure):
                failure.trap(defer.TimeoutError, defer.CancelledError)
                raise CatalogLoading("The tuner is still starting; try again in a few seconds.")

            return waiting.addCallbacks(lambda _: found(), timed_out)

        def found():
            device = self._tuners.device(playlist)
            if device is None:
                return _text(request, f"No playlist named {playlist!r}.", 404)
            base = base_url(request)
            if playlist is not None:
                base += f"/hdhr/{quote(device.playlist, safe='')}"
            return answer(request, device, base)

        return self._after_first_load(ready)

    def _discover_json(self, request, device, base):
        return _json(request, hdhomerun.discover_answer(device, base))

    def _lineup_json(self, request, device, base):
        lineup = hdhomerun.lineup_answer(self._tuners.lineup(device), self._ranking, base_url(request),
                                         self._tuners.media_of)
        return _json(request, lineup, compact=True)

    def _lineup_status_json(self, request, device, base):
        return _json(request, hdhomerun.lineup_status_answer())

    def _device_xml(self, request, device, base):
        request.setHeader(b"content-type", XML_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        return hdhomerun.device_xml(device, base).encode("utf-8")

    def _scan(self, request, device, base):
        # A channel scan asked for (Plex posts one): the lineup is the
        # playlist, so there is nothing to scan.
        return b""

    @app.route("/discover.json", methods=["GET", "HEAD"])
    def hdhr_discover(self, request):
        """
        The root device's ``discover.json`` (FriendlyName, DeviceID, TunerCount, ...).
        """
        return self._device_answer(request, None, self._discover_json)

    @app.route("/hdhr/<string:playlist>/discover.json", methods=["GET", "HEAD"])
    def hdhr_playlist_discover(self, request, playlist):
        """
        ``discover.json`` of the device of playlist ``playlist``.
        """
        return self._device_answer(request, playlist, self._discover_json)

    @app.route("/lineup.json", methods=["GET", "HEAD"])
    def hdhr_lineup(self, request):
        """
        The root device's channels: GuideNumber, GuideName, URL (MPEG-TS).
        """
        return self._device_answer(request, None, self._lineup_json)

    @app.route("/hdhr/<string:playlist>/lineup.json", methods=["GET", "HEAD"])
    def hdhr_playlist_lineup(self, request, playlist):
        """
        The channels of playlist ``playlist``'s device.
        """
        return self._device_answer(request, playlist, self._lineup_json)

    @app.route("/lineup_status.json", methods=["GET", "HEAD"])
    def hdhr_lineup_status(self, request):
        """
        No scan in progress, none possible.
        """
        return self._device_answer(request, None, self._lineup_status_json)

    @app.route("/hdhr/<string:playlist>/lineup_status.json", methods=["GET", "HEAD"])
    def hdhr_playlist_lineup_status(self, request, playlist):
        """
        No scan in progress, none possible.
        """
        return self._device_answer(request, playlist, self._lineup_status_json)

    @app.route("/lineup.post", methods=["GET", "POST"])
    def hdhr_scan(self, request):
        """
        A scan request: answered, nothing to do.
        """
        return self._device_answer(request, None, self._scan)

    @app.route("/hdhr/<string:playlist>/lineup.post", methods=["GET", "POST"])
    def hdhr_playlist_scan(self, request, playlist):
        """
        A scan request: answered, nothing to do.
        """
        return self._device_answer(request, playlist, self._scan)

    @app.route("/device.xml", methods=["GET", "HEAD"])
    def hdhr_device_xml(self, request):
        """
        The root device's UPnP description (the SSDP answer's LOCATION).
        """
        return self._device_answer(request, None, self._device_xml)

    @app.route("/hdhr/<string:playlist>/device.xml", methods=["GET", "HEAD"])
    def hdhr_playlist_device_xml(self, request, playlist):
        """
        The UPnP description of playlist ``playlist``'s device.
        """
        return self._device_answer(request, playlist, self._device_xml)

    @app.route("/auto/v<channel:channel_id>", methods=["GET", "HEAD"])
    def hdhr_auto(self, request, channel_id):
        """
        Tune a channel of the root device the way a real HDHomeRun does:
        the channel as MPEG-TS.  Query parameters (Jellyfin's
        ``?transcode=mobile``) are ignored.
        """
        return self._tune_on_device(request, None, channel_id)

    @app.route("/hdhr/<string:playlist>/auto/v<channel:channel_id>", methods=["GET", "HEAD"])
    def hdhr_playlist_auto(self, request, playlist, channel_id):
        """
        Tune a channel of playlist ``playlist``'s device, as MPEG-TS.
        """
        return self._tune_on_device(request, playlist, channel_id)

    def _tune_on_device(self, request, playlist, channel_id):
        if self._tuners is None:
            return _text(request, "HDHomeRun emulation is off (hdhomerun.enabled in config.yaml).", 404)
        if not self._catalog_missing():
            channels = self._tuners.playlist_channels(playlist)
            if channels is None:
                return _text(request, f"No playlist named {playlist!r}.", 404)
            if channel_id not in channels:
                raise UnknownChannel(channel_id)
        return self.stream_ts(request, channel_id)

    @app.route("/xmltv/<string:name>.xml", methods=["GET", "HEAD"])
    def xmltv(self, request, name):
        """
        The XMLTV guide of playlist ``name``: a ``<channel>`` per channel
        (id = its channel number, as the playlist's ``tvg-id``) and the
        programmes of its ``TV-guide-id`` from the guide sources; gzip
        when the client takes it.
        """
        return self._after_first_load(self._xmltv, request, name)

    def _xmltv(self, request, name):
        channels = self._store.catalog.find_playlist(name)
        if channels is None:
            return _text(request, f"No playlist named {name!r}.", 404)
        if self._guide is not None:
            built = self._guide.document(name, channels, self._ranking)
        else:
            built = defer.succeed(gzipped_guide(channels, self._ranking, [])[0])
        gzip_ok = _accepts_gzip(request)

        def answer(gzipped):
            request.setHeader(b"content-type", XML_TYPE)
            request.setHeader(b"cache-control", b"no-cache")
            request.setHeader(b"vary", b"Accept-Encoding")
            if gzip_ok:
                request.setHeader(b"content-encoding", b"gzip")
                return gzipped
            if request.method == b"HEAD":
                return b""
            return write_unpacked(request, gzipped).addCallback(lambda _: b"")

        return built.addCallback(answer)

    @app.route("/api/guide", methods=["GET", "HEAD"])
    @_admin()
    def api_guide(self, request):
        """
        The guide sources: each one's last fetch, its result and error, and
        the channels and programmes it gave (JSON, no credentials).
        """
        if self._guide is None:
            return _json(request, {"sources": []})
        return _json(request, masked(self._guide.status()))

    # -- end of issue 11's routes ---------------------------------------------

    @app.route("/refresh_db_cache", methods=["GET", "POST"])
    @_admin(changes_state=True)
    async def refresh_db_cache(self, request):
        """
        Reload the channel table; streams that are playing are not touched.
        """
        catalog = await self._store.refresh()
        return _json(
            request,
            {
                "channels": len(catalog.channels),
                "streams": len(catalog.candidates),
                "skipped_rows": len(catalog.skipped),
                "playlists": sorted(catalog.playlists),
            },
        )

    @app.route("/force_switch/<string:channel_id>", methods=["GET", "POST"])
    @_admin(changes_state=True)
    def force_switch(self, request, channel_id):
        """
        End the channel's current stream and move to the next candidate.
        """
        channel_id = parse_channel_id(channel_id)
        left = self._channels.force_switch(channel_id)
        return _json(request, {"channel_id": channel_id, "switched_from": left})

    @app.route("/stop/<string:channel_id>", methods=["POST"])
    @_admin(changes_state=True)
    async def stop(self, request, channel_id):
        """
        Stop a running channel and free its provider slot.
        """
        channel_id = parse_channel_id(channel_id)
        await self._channels.stop_channel(channel_id)
        return _json(request, {"channel_id": channel_id, "stopped": True})

    @app.route("/refresh_providers", methods=["POST"])
    @_admin(changes_state=True)
    async def refresh_providers(self, request):
        """
        Sync every provider now; answers, once done, with what
        ``/api/providers`` shows.  Streams that are playing are not touched.
        """
        if self._providers is None:
            return _json(request, masked({"now": self._reactor.seconds(), "providers": []}))
        return _json(request, masked(await self._providers.sync_all()))

    # Pages.

    @app.route("/", methods=["GET", "HEAD"])
    def home(self, request):
        """
        The status page is the home page.
        """
        request.redirect(b"/status")
        return b""

    @app.route("/status", methods=["GET", "HEAD"])
    @_admin()
    def status_page(self, request):
        """
        The status page (it fetches everything it shows from the API).
        """
        return self._serve_static(request, "status.html")

    @app.route("/logs", methods=["GET", "HEAD"])
    @_admin()
    def logs_page(self, request):
        """
        The log viewer page.
        """
        return self._serve_static(request, "logs.html")

    @app.route("/static/<static:name>", methods=["GET", "HEAD"])
    @_admin()
    def static(self, request, name):
        """
        One of the pages' style sheets or scripts.
        """
        return self._serve_static(request, name)

    def _serve_static(self, request, name):
        body = self._static.get(name)
        if body is None:
            return _text(request, f"Not found: {name}", 404)
        request.setHeader(b"content-type", STATIC_TYPES[os.path.splitext(name)[1]])
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if name.endswith(".html"):
            request.setHeader(b"content-security-policy", PAGE_POLICY)
            request.setHeader(b"x-frame-options", b"DENY")
            request.setHeader(b"referrer-policy", b"same-origin")
        return body

    # Prometheus.

    @app.route("/metrics", methods=["GET", "HEAD"])
    @_admin()
    def metrics(self, request):
        """
        The daemon's metrics in the Prometheus text format (running
        channels, viewers, slots, tunes, failovers, buffering events,
        content faults, bytes served, tune and failover gap histograms),
        answered by prometheus_client's Twisted resource.  Asks for
        ``admin_password`` like the API.
        """
        if self._metrics is None:
            return _text(request, "Metrics are not collected by this server.", 404)
        return self._metrics.resource()

    # The JSON API.

    @app.route("/api/status", methods=["GET", "HEAD"])
    @_admin()
    def api_status(self, request):
        """
        Running channels (name, logo, stream in use, state, speed,
        bitrate, failovers), source slot usage, the Channels DVR connection
        and the database size, as JSON with every URL masked.
        """
        return _json(request, self._dashboard.status())

    @app.route("/api/channels", methods=["GET", "HEAD"])
    @_admin()
    def api_channels(self, request):
        """
        Every channel with its candidates in the order they would be tried
        and their health from the database, as JSON with masked URLs.
        """
        return _json(request, self._dashboard.channel_list(), compact=True)

    @app.route("/api/providers", methods=["GET", "HEAD"])
    @_admin()
    def api_providers(self, request):
        """
        Per provider: the last sync (time, result, rows added, updated and
        removed, the error), connections in use against its limit, and per
        account the same plus, for Xtream, the account's status and expiry
        date, as JSON without credentials.
        """
        if self._providers is None:
            return _json(request, {"now": self._reactor.seconds(), "providers": []})
        return _json(request, masked(self._providers.status()))

    @app.route("/api/logs", methods=["GET", "HEAD"])
    @_admin()
    def api_logs(self, request):
        """
        The kept log lines newer than ``after`` (a sequence number; 0 for
        all), optionally only ``level`` and more severe and only those
        about ``channel``, oldest first, as JSON.
        """
        after = _query(request, "after") or "0"
        if not after.isdigit():
            raise BadLogQuery(f"after must be a line number, not {after!r}")
        level = _query(request, "level") or None
        if level is not None:
            level = check_level(level)
        channel = _query(request, "channel") or None
        if channel is not None:
            try:
                channel = normalize_channel_id(channel)
            except ValueError:
                raise BadLogQuery(f"channel {channel!r} is not a channel number")
        buffer = self._logs
        if buffer is None:
            return _json(request, {"lines": [], "last": 0, "size": 0, "levels": list(LEVELS), "channels": []})
        return _json(
            request,
            {
                "lines": buffer.entries(int(after), level, channel),
                "last": buffer.last,
                "size": buffer.size,
                "levels": list(LEVELS),
                "channels": buffer.channels(),
            },
            compact=True,
        )


class _FastPath(Resource):
    """
    The site's root: most requests are a player's playlist reload or
    segment fetch of a running channel, answered by
    :meth:`StreamProxyWeb.serve_repeated` without the routing machinery
    (a third of the daemon's cost per request); the rest go to the routes.
    """

    isLeaf = True

    def __init__(self, web, routes):
        super().__init__()
        self._web = web
        self._routes = routes

    def render(self, request):
        try:
            body = self._web.serve_repeated(request)
        except Exception:
            # The routes answer it, errors and all.
            log.failure("The fast path for {path}", path=request.path.decode("ascii", "replace"))
            body = None
        if body is not None:
            return body
        return self._routes.render(request)


_CHANNEL_ID = re.compile(ChannelIdConverter.regex)
_SEGMENT_NAME = re.compile(SegmentConverter.regex)


def _playlist_answer(request, text):
    _open_to_any_origin(request)
    request.setHeader(b"content-type", HLS_TYPE)
    request.setHeader(b"cache-control", b"no-cache")
    return text.encode("ascii")


def _client(request):
    # host:port of one connection (a TS viewer).
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return f"{host}:{address.port}" if host else "unknown"


def _host(request):
    # The address of an HLS player, which opens connection after connection.
    return getattr(request.getClientAddress(), "host", None) or "unknown"


def _accepts_gzip(request):
    """
    Whether the request's Accept-Encoding takes gzip (not with q=0).
    """
    for part in _header_or_blank(request, b"accept-encoding").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            q = params.replace(" ", "")
            if q.startswith("q=") and q[2:] in ("0", "0.0", "0.00", "0.000"):
                return False
            return True
    return False


def _open_to_any_origin(request):
    # Playlists and segments are open to everyone anyway; this lets a web
    # player on another origin read them.
    request.setHeader(b"access-control-allow-origin", b"*")


def _loading_message(store):
    """
    The 503 line for a request that came before the table could be read.
    """
    if store.loaded and store.load_error is not None:
        return f"Database unavailable: {store.load_error}"
    return "The channel table is still being loaded after the start; try again in a few seconds."


def _query(request, name):
    values = request.args.get(name.encode("ascii"))
    return values[0].decode("utf-8", "replace").strip() if values else None


def _is_stream_path(request):
    return (request.path or b"").startswith(b"/channel/")


def _read_static(folder):
    """
    ``{name: bytes}`` of the page files in ``folder`` (none when missing).
    """
    files = {}
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if os.path.splitext(name)[1] in STATIC_TYPES:
                with open(os.path.join(folder, name), "rb") as f:
                    files[name] = f.read()
    return files
