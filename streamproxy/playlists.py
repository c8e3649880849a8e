"""
Building the M3U playlists Channels DVR reads as custom channels.

Pure functions over :class:`streamproxy.channels.Candidate` values.
"""

import re
from urllib.parse import quote

_UNSAFE = re.compile(r'[\x00-\x1f\x7f",]+')
_BREAKING = re.compile(r"[\x00-\x1f\x7f,]+")
_SPACES = re.compile(r"\s{2,}")


def clean(value):
    """
    Make ``value`` safe inside a quoted attribute or as the display name:
    quotes become apostrophes, and commas and control characters (which
    some M3U readers split lines on) become spaces.
    """
    if not value or not _UNSAFE.search(value):
        return value or ""
    value = _BREAKING.sub(" ", value.replace('"', "'"))
    return _SPACES.sub(" ", value).strip()


def _first(ranked, attribute):
    for candidate in ranked:
        value = getattr(candidate, attribute)
        if value:
            return value
    return ""


# The file each stream format is served as, under /channel/<id>/.
STREAM_FILES = {"hls": "stream.m3u8", "ts": "stream.ts"}


def channel_display_name(channel_id, ranked):
    """
    The name a channel is shown by (in playlists, guides and tuner
    lineups): the best candidate's uniform name or stream name, falling
    back to the next candidate's, else ``Channel <id>``.
    """
    best = ranked[0]
    name = clean(best.uniform_name or _first(ranked, "uniform_name") or best.name or _first(ranked, "name"))
    return name or f"Channel {channel_id}"


def channel_logo(ranked):
    """
    The logo of a channel whose candidates are ``ranked``: the best
    candidate's, else the next one that has one ("" when none).
    """
    return clean(ranked[0].logo or _first(ranked, "logo"))


def entry_lines(channel_id, ranked, base_url, stream_format="hls", guided=False, media=None):
    """
    The ``#EXTINF`` line and URL line for one channel whose candidates are
    ``ranked`` best first; the URL is the channel's HLS playlist or, with
    ``stream_format`` ``ts``, its MPEG-TS stream.

    Metadata comes from the best candidate, falling back to the next one
    that has a value, so one row with a missing logo does not hide another's.

    When the playlist names our guide (``guided``), ``tvg-id`` is the
    channel number, the id of the channel's ``<channel>`` in that guide, so
    every client matches them; else it is the provider's guide id
    (``TV-guide-id``).  A numeric ``TV-guide-id`` (a Gracenote station) is
    given as ``tvc-guide-stationid`` either way, for Channels DVR's own
    guide.  ``media`` (a :class:`~streamproxy.codec_memory.StreamMedia`)
    adds ``tvc-stream-vcodec``/``tvc-stream-acodec``, so Channels DVR need
    not probe the stream.
    """
    best = ranked[0]
    name = channel_display_name(channel_id, ranked)
    guide_id = clean(best.guide_id or _first(ranked, "guide_id"))
    guide_name = clean(best.guide_name or _first(ranked, "guide_name")) or name
    logo = channel_logo(ranked)
    group = clean(best.group or _first(ranked, "group"))
    parts = [f'#EXTINF:-1 channel-id="{channel_id}" channel-number="{channel_id}"']
    if guided:
        parts.append(f' tvg-id="{channel_id}" tvg-chno="{channel_id}"')
    elif guide_id:
        parts.append(f' tvg-id="{guide_id}"')
    parts.append(f' tvg-name="{guide_name}"')
    if logo:
        parts.append(f' tvg-logo="{logo}"')
    if group:
        parts.append(f' group-title="{group}"')
    if guide_id.isdigit():
        parts.append(f' tvc-guide-stationid="{guide_id}"')
    if media is not None and media.video:
        parts.append(f' tvc-stream-vcodec="{clean(media.video)}"')
        if media.audio:
            parts.append(f' tvc-stream-acodec="{clean(media.audio)}"')
    parts.append(f",{name}\n{base_url}/channel/{channel_id}/{STREAM_FILES[stream_format]}\n")
    return "".join(parts)


def build_m3u(channels, ranking, base_url, stream_format="hls", guide_url=None, media_of=None):
    """
    The whole playlist text for ``channels`` (a mapping of channel id to
    candidates, in channel order), with stream URLs of ``stream_format``
    (``hls`` or ``ts``) under ``base_url`` (``http://host:port``, no
    trailing slash).

    ``guide_url``, the playlist's XMLTV guide, is named in the header
    (``url-tvg`` and ``x-tvg-url``) and makes ``tvg-id`` the channel
    number (see :func:`entry_lines`); ``media_of(rowid)`` tells what a
    row's stream carried when it last played (None when unknown).
    """
    if guide_url is None:
        parts = ["#EXTM3U\n"]
    else:
        parts = [f'#EXTM3U url-tvg="{guide_url}" x-tvg-url="{guide_url}"\n']
    for channel_id, candidates in channels.items():
        ranked = ranking.rank(candidates) if len(candidates) > 1 else candidates
        media = media_of(ranked[0].rowid) if media_of is not None else None
        parts.append(entry_lines(channel_id, ranked, base_url, stream_format, guide_url is not None, media))
    return "".join(parts)


# Stands for the base URL in a cached playlist; cannot occur in cleaned text.
_BASE = "\x00"


def guide_path(name):
    """
    The path of playlist ``name``'s XMLTV guide.
    """
    return f"/xmltv/{quote(name, safe='')}.xml"


class PlaylistCache:
    """
    Built playlists of the current catalog, so that Channels DVR's
    periodic reloads of a big playlist cost a string substitution, not a
    rebuild.  A new catalog (a refresh) empties it, and so does news of a
    stream's codecs in ``media`` (a :class:`~streamproxy.codec_memory.
    CodecMemory`, or None).  With ``guides`` each playlist names its
    XMLTV guide (:func:`guide_path`).
    """

    def __init__(self, ranking, media=None, guides=False):
        self._ranking = ranking
        self._media = media
        self._guides = guides
        self._catalog = None
        self._media_version = None
        self._texts = {}

    def get(self, catalog, name, channels, base_url, stream_format="hls"):
        """
        The text of playlist ``name`` (whose ``channels`` come from
        ``catalog``) with ``stream_format`` URLs under ``base_url``.
        """
        version = self._media.version if self._media is not None else None
        if catalog is not self._catalog or version != self._media_version:
            self._catalog = catalog
            self._media_version = version
            self._texts = {}
        template = self._texts.get((name, stream_format))
        if template is None:
            guide_url = _BASE + guide_path(name) if self._guides else None
            media_of = self._media.get if self._media is not None else None
            template = build_m3u(channels, self._ranking, _BASE, stream_format, guide_url, media_of)
            self._texts[(name, stream_format)] = template
        return template.replace(_BASE, base_url)
