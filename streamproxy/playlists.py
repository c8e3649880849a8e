"""
Building the M3U playlists Channels DVR reads as custom channels.

Pure functions over :class:`streamproxy.channels.Candidate` values.
"""

import re

_UNSAFE = re.compile(r'[\x00-\x1f\x7f",]+')
_SPACES = re.compile(r"\s{2,}")


def clean(value):
    """
    Make ``value`` safe inside a quoted attribute or as the display name:
    quotes become apostrophes, and commas and control characters (which
    some M3U readers split lines on) become spaces.
    """
    if not value:
        return ""
    value = value.replace('"', "'")
    if _UNSAFE.search(value):
        value = _SPACES.sub(" ", _UNSAFE.sub(" ", value)).strip()
    return value


def _first(candidates, attribute):
    for candidate in candidates:
        value = getattr(candidate, attribute)
        if value:
            return value
    return ""


def entry_lines(channel_id, ranked, base_url):
    """
    The ``#EXTINF`` line and URL line for one channel whose candidates are
    ``ranked`` best first.

    Metadata comes from the best candidate, falling back to the next one
    that has a value, so one row with a missing logo does not hide another's.
    """
    name = clean(_first(ranked, "uniform_name") or _first(ranked, "name")) or f"Channel {channel_id}"
    guide_id = clean(_first(ranked, "guide_id"))
    attributes = [
        ("channel-id", channel_id),
        ("channel-number", channel_id),
        ("tvg-id", guide_id),
        ("tvg-name", clean(_first(ranked, "guide_name")) or name),
        ("tvg-logo", clean(_first(ranked, "logo"))),
        ("group-title", clean(_first(ranked, "group"))),
    ]
    if guide_id.isdigit():
        attributes.append(("tvc-guide-stationid", guide_id))
    rendered = " ".join(f'{key}="{value}"' for key, value in attributes if value)
    return f"#EXTINF:-1 {rendered},{name}\n{base_url}/channel/{channel_id}/stream.m3u8\n"


def build_m3u(channels, ranking, base_url):
    """
    The whole playlist text for ``channels`` (a mapping of channel id to
    candidates, in channel order), with stream URLs under ``base_url``
    (``http://host:port``, no trailing slash).
    """
    parts = ["#EXTM3U\n"]
    for channel_id, candidates in channels.items():
        ranked = ranking.rank(candidates) if len(candidates) > 1 else candidates
        parts.append(entry_lines(channel_id, ranked, base_url))
    return "".join(parts)
