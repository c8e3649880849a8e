"""
Building the M3U playlists Channels DVR reads as custom channels.

Pure functions over :class:`streamproxy.channels.Candidate` values.
"""

import re

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


def entry_lines(channel_id, ranked, base_url, stream_format="hls"):
    """
    The ``#EXTINF`` line and URL line for one channel whose candidates are
    ``ranked`` best first; the URL is the channel's HLS playlist or, with
    ``stream_format`` ``ts``, its MPEG-TS stream.

    Metadata comes from the best candidate, falling back to the next one
    that has a value, so one row with a missing logo does not hide another's.
    """
    best = ranked[0]
    name = clean(best.uniform_name or _first(ranked, "uniform_name") or best.name or _first(ranked, "name"))
    name = name or f"Channel {channel_id}"
    guide_id = clean(best.guide_id or _first(ranked, "guide_id"))
    guide_name = clean(best.guide_name or _first(ranked, "guide_name")) or name
    logo = clean(best.logo or _first(ranked, "logo"))
    group = clean(best.group or _first(ranked, "group"))
    parts = [f'#EXTINF:-1 channel-id="{channel_id}" channel-number="{channel_id}"']
    if guide_id:
        parts.append(f' tvg-id="{guide_id}"')
    parts.append(f' tvg-name="{guide_name}"')
    if logo:
        parts.append(f' tvg-logo="{logo}"')
    if group:
        parts.append(f' group-title="{group}"')
    if guide_id.isdigit():
        parts.append(f' tvc-guide-stationid="{guide_id}"')
    parts.append(f",{name}\n{base_url}/channel/{channel_id}/{STREAM_FILES[stream_format]}\n")
    return "".join(parts)


def build_m3u(channels, ranking, base_url, stream_format="hls"):
    """
    The whole playlist text for ``channels`` (a mapping of channel id to
    candidates, in channel order), with stream URLs of ``stream_format``
    (``hls`` or ``ts``) under ``base_url`` (``http://host:port``, no
    trailing slash).
    """
    parts = ["#EXTM3U\n"]
    for channel_id, candidates in channels.items():
        ranked = ranking.rank(candidates) if len(candidates) > 1 else candidates
        parts.append(entry_lines(channel_id, ranked, base_url, stream_format))
    return "".join(parts)


# Stands for the base URL in a cached playlist; cannot occur in cleaned text.
_BASE = "\x00"


class PlaylistCache:
    """
    Built playlists of the current catalog, so that Channels DVR's
    periodic reloads of a big playlist cost a string substitution, not a
    rebuild.  A new catalog (a refresh) empties it.
    """

    def __init__(self, ranking):
        self._ranking = ranking
        self._catalog = None
        self._texts = {}

    def get(self, catalog, name, channels, base_url, stream_format="hls"):
        """
        The text of playlist ``name`` (whose ``channels`` come from
        ``catalog``) with ``stream_format`` URLs under ``base_url``.
        """
        if catalog is not self._catalog:
            self._catalog = catalog
            self._texts = {}
        template = self._texts.get((name, stream_format))
        if template is None:
            template = build_m3u(channels, self._ranking, _BASE, stream_format)
            self._texts[(name, stream_format)] = template
        return template.replace(_BASE, base_url)
