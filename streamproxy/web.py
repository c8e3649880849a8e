"""
The HTTP face of streamproxy: M3U playlists, the channel streams and the
management endpoints, as one Klein application.
"""

import json
import re

from klein import Klein
from twisted.logger import Logger
from werkzeug.routing import BaseConverter

from .playlists import build_m3u
from .store import StoreError

log = Logger()

M3U_TYPE = b"audio/x-mpegurl; charset=utf-8"
JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"

# A Host header we are willing to echo into playlist URLs: a name or an
# address with an optional port, nothing that could break out of a URL.
_SAFE_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class ChannelIdConverter(BaseConverter):
    """
    A channel number in a path: ``7`` or a sub-channel ``7.1``.
    """

    regex = r"\d{1,9}(?:\.\d{1,4})?"


class SegmentConverter(BaseConverter):
    """
    A segment file name: letters, digits, ``_`` and ``-`` then ``.ts``.

    Anything else (dots, slashes, encoded slashes, absolute paths) does not
    match the route at all, so no handler ever sees a path outside the
    channel's own folder.
    """

    regex = r"[A-Za-z0-9_\-]{1,64}\.ts"


def base_url(request):
    """
    ``http://host:port`` as the client addressed us, for absolute URLs in
    playlists; falls back to the address the connection arrived on.
    """
    host = (request.getHeader("host") or "").strip()
    if not _SAFE_HOST.match(host):
        address = request.getHost()
        host = f"{address.host}:{address.port}"
        if ":" in address.host:
            host = f"[{address.host}]:{address.port}"
    return f"http://{host}"


def _json(request, value, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-cache")
    return json.dumps(value, indent=1).encode("utf-8")


def _text(request, text, code=200):
    request.setResponseCode(code)
    request.setHeader(b"content-type", TEXT_TYPE)
    return (text.rstrip("\n") + "\n").encode("utf-8")


class StreamProxyWeb:
    """
    Routes requests to the store (playlists, refresh) and to the channel
    manager (streams, switching).
    """

    app = Klein()
    app.url_map.converters["channel"] = ChannelIdConverter
    app.url_map.converters["segment"] = SegmentConverter

    def __init__(self, config, store, ranking):
        self._config = config
        self._store = store
        self._ranking = ranking

    def resource(self):
        """
        The ``IResource`` to serve.
        """
        return self.app.resource()

    @app.handle_errors(StoreError)
    def _store_error(self, request, failure):
        log.error("{error}", error=failure.getErrorMessage())
        return _text(request, f"Database unavailable: {failure.getErrorMessage()}", 503)

    @app.route("/m3u/<string:name>.m3u", methods=["GET", "HEAD"])
    def m3u(self, request, name):
        """
        The channels of one playlist, as Channels DVR reads custom channels.
        """
        channels = self._store.catalog.find_playlist(name)
        if channels is None:
            return _text(request, f"No playlist named {name!r}.", 404)
        request.setHeader(b"content-type", M3U_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        return build_m3u(channels, self._ranking, base_url(request)).encode("utf-8")

    @app.route("/m3u/", methods=["GET", "HEAD"])
    def m3u_index(self, request):
        """
        The playlists this daemon serves, one URL a line.
        """
        root = base_url(request)
        names = sorted(self._store.catalog.playlists)
        return _text(request, "\n".join(f"{root}/m3u/{name}.m3u" for name in names) or "No playlists.")

    @app.route("/refresh_db_cache", methods=["GET", "POST"])
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
