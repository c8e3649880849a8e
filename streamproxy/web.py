"""
The HTTP face of streamproxy: M3U playlists, the channel streams and the
management endpoints, as one Klein application.
"""

import json
import re

from klein import Klein
from twisted.logger import Logger
from werkzeug.routing import BaseConverter

from twisted.web.server import Site
from twisted.web.static import File

from .manager import UnknownChannel
from .playlists import PlaylistCache
from .session import ChannelUnavailable
from .store import StoreError

log = Logger()

M3U_TYPE = b"audio/x-mpegurl; charset=utf-8"
JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"
HLS_TYPE = b"application/vnd.apple.mpegurl"
SEGMENT_TYPE = "video/mp2t"

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


class ProxySite(Site):
    """
    The HTTP site.  Successful playlist and segment requests, several a
    second per viewer, are left out of the access log: they drown what
    matters in it and cost more than serving them.  Errors are logged.
    """

    displayTracebacks = False

    def log(self, request):
        if request.code < 400 and request.uri.startswith(b"/channel/"):
            return
        super().log(request)


class StreamProxyWeb:
    """
    Routes requests to the store (playlists, refresh) and to the channel
    manager (streams, switching).
    """

    app = Klein()
    app.url_map.converters["channel"] = ChannelIdConverter
    app.url_map.converters["segment"] = SegmentConverter

    def __init__(self, config, store, ranking, channels):
        self._config = config
        self._store = store
        self._ranking = ranking
        self._channels = channels
        self._playlists = PlaylistCache(ranking)

    def resource(self):
        """
        The ``IResource`` to serve.
        """
        return self.app.resource()

    @app.handle_errors(StoreError)
    def _store_error(self, request, failure):
        log.error("{error}", error=failure.getErrorMessage())
        return _text(request, f"Database unavailable: {failure.getErrorMessage()}", 503)

    @app.handle_errors(UnknownChannel)
    def _unknown_channel(self, request, failure):
        return _text(request, f"No channel {failure.value.args[0]}.", 404)

    @app.handle_errors(ChannelUnavailable)
    def _unavailable(self, request, failure):
        request.setHeader(b"retry-after", b"10")
        return _text(request, str(failure.value), 503)

    @app.route("/m3u/<string:name>.m3u", methods=["GET", "HEAD"])
    def m3u(self, request, name):
        """
        The channels of one playlist, as Channels DVR reads custom channels.
        """
        catalog = self._store.catalog
        channels = catalog.find_playlist(name)
        if channels is None:
            return _text(request, f"No playlist named {name!r}.", 404)
        request.setHeader(b"content-type", M3U_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        return self._playlists.get(catalog, name, channels, base_url(request)).encode("utf-8")

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

    @app.route("/channel/<channel:channel_id>/stream.m3u8", methods=["GET", "HEAD"])
    async def stream_playlist(self, request, channel_id):
        """
        The channel's live HLS playlist; the first request starts the
        channel and is answered once the first segment is ready.
        """
        text = await self._channels.playlist(channel_id)
        request.setHeader(b"content-type", HLS_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        return text.encode("ascii")

    @app.route("/channel/<channel:channel_id>/<segment:name>", methods=["GET", "HEAD"])
    def segment(self, request, channel_id, name):
        """
        One segment of a running channel, as video/mp2t.
        """
        path = self._channels.segment_path(channel_id, name)
        if path is None:
            return _text(request, f"No segment {name} on channel {channel_id}.", 404)
        resource = File(path, defaultType=SEGMENT_TYPE)
        # Twisted guesses types from /etc/mime.types, where .ts is a Qt
        # translation file on Debian.
        resource.contentTypes = {".ts": SEGMENT_TYPE}
        resource.isLeaf = True
        return resource

    @app.route("/force_switch/<channel:channel_id>", methods=["GET", "POST"])
    def force_switch(self, request, channel_id):
        """
        End the channel's current stream and move to the next candidate.
        """
        left = self._channels.force_switch(channel_id)
        return _json(request, {"channel_id": channel_id, "switched_from": left})

    @app.route("/stop/<channel:channel_id>", methods=["POST"])
    async def stop(self, request, channel_id):
        """
        Stop a running channel and free its provider slot.
        """
        await self._channels.stop_channel(channel_id)
        return _json(request, {"channel_id": channel_id, "stopped": True})

    @app.route("/api/status", methods=["GET"])
    def api_status(self, request):
        """
        Running channels, their streams and source slot usage, as JSON.
        """
        return _json(request, self._channels.status())
