"""
Reading a provider's extended M3U playlist into :class:`StreamEntry` values.

Shared by ``import-m3u`` and the provider sync.  One pass over the lines,
one regular expression per ``#EXTINF`` attribute: linear in the size of the
playlist (a 50,000-entry playlist parses in well under a second).
"""

import re
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

from .urls import DEFAULT_SCHEMES, scheme_problem, url_scheme

_ATTRIBUTE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"')
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")
# The last path component of a provider stream URL when it is the provider's
# stream id: "/live/USER/PASS/1234.ts", "/USER/PASS/1234", "/play/1234.m3u8".
_STREAM_ID = re.compile(r"^(\d{1,12})(?:\.[A-Za-z0-9]{1,5})?$")


class M3UError(ValueError):
    """
    The playlist cannot be read; the message says why.
    """


@dataclass(frozen=True)
class PlaylistEntry:
    """
    One channel of a provider playlist as written: its display name, URL,
    ``#EXTINF`` attributes (names lower-cased) and the line it starts on.
    """

    name: str
    url: str
    attributes: dict
    line: int


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """
    One stream a provider offers, whatever the provider's format: what
    becomes (or updates) one row of ``LiveStreams``.

    ``key`` identifies the stream within its provider account across syncs
    (see :func:`stream_key`); ``number`` is the channel number the provider
    suggests, used for a new channel when it is free.
    """

    key: str
    url: str
    name: str
    guide_id: str = ""
    guide_name: str = ""
    logo: str = ""
    group: str = ""
    number: str = ""


def parse_extinf(text):
    """
    Split the part of an ``#EXTINF:`` line after the colon into
    ``(attributes, display name)``.  Commas inside quoted attribute values
    do not end the attributes.
    """
    match = _DURATION.match(text)
    position = match.end() if match else 0
    attributes = {}
    while True:
        found = _ATTRIBUTE.match(text, position)
        if not found:
            break
        attributes[found.group(1).lower()] = found.group(2).strip()
        position = found.end()
    rest = text[position:]
    comma = rest.find(",")
    name = rest[comma + 1 :].strip() if comma >= 0 else ""
    return attributes, name


def parse_m3u(text):
    """
    The entries of an extended M3U playlist, in order.

    :raises M3UError: when the text is not an M3U playlist.
    """
    lines = text.splitlines()
    if not lines or not lines[0].lstrip("\ufeff").strip().upper().startswith("#EXTM3U"):
        raise M3UError("not an M3U playlist (the first line is not #EXTM3U)")
    entries = []
    pending = None
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            if line[:8].upper() == "#EXTINF:":
                attributes, name = parse_extinf(line[8:])
                pending = (attributes, name, number)
            continue
        attributes, name, at = pending if pending else ({}, "", number)
        entries.append(PlaylistEntry(name=name or line, url=line, attributes=attributes, line=at))
        pending = None
    return entries


def stream_key(url):
    """
    What identifies a stream of an M3U provider across syncs, so a rotated
    URL updates its row instead of replacing it:

    - ``id:<n>`` when the URL's last path component is a number (with or
      without an extension), as in Xtream-style panels' ``/live/U/P/<n>.ts``
      whose user, password or token part changes;
    - else ``url:<scheme://host/path>``, the URL without its query string
      and fragment (where rotating tokens usually sit).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "url:" + url
    last = parts.path.rstrip("/").rpartition("/")[2]
    match = _STREAM_ID.match(last)
    if match:
        return "id:" + match.group(1)
    netloc = parts.netloc.rpartition("@")[2]
    return f"url:{parts.scheme}://{netloc}{parts.path}"


def _number(attributes):
    for name in ("tvg-chno", "channel-number", "channel-id", "tvc-guide-chno"):
        value = attributes.get(name)
        if value:
            return value
    return ""


def exact_url_key(url):
    """
    The key ``import-m3u`` gives a stream: its whole URL, so importing the
    same file again updates the rows it made.
    """
    return "url:" + url


def disallowed_scheme(url, allowed_schemes=DEFAULT_SCHEMES):
    """
    What :func:`stream_entries` and :func:`streamproxy.xtream.stream_entries`
    count a stream ``url`` under when it may not be played (its scheme,
    ``no scheme`` for a bare path), or None when its scheme is one of
    ``allowed_schemes`` (``allowed_url_schemes``).
    """
    separator = url.find("://")
    if separator > 0 and url[:separator].lower() in allowed_schemes:
        return None  # the common case, without the general rule's regular expression
    if scheme_problem(url, allowed_schemes) is None:
        return None
    return url_scheme(url) or "no scheme"


def stream_entries(entries, groups=None, key=stream_key, allowed_schemes=DEFAULT_SCHEMES):
    """
    The :class:`StreamEntry` values of parsed playlist ``entries``, keyed by
    ``key(url)`` (:func:`stream_key` by default); only ``groups`` (group
    titles, case ignored) when given, and only URLs whose scheme is one of
    ``allowed_schemes`` (``file://``, ``concat:``, a bare path never are).
    A stream listed twice (same key) is kept once, the first time.

    :return: ``(stream entries, duplicates left out, entries outside groups,
        Counter of the entries left out for their scheme, by scheme)``.
    """
    wanted = {g.casefold() for g in groups} if groups else None
    seen = set()
    result = []
    duplicates = outside = 0
    disallowed = Counter()
    for entry in entries:
        attributes = entry.attributes
        group = attributes.get("group-title", "")
        if wanted is not None and group.casefold() not in wanted:
            outside += 1
            continue
        scheme = disallowed_scheme(entry.url, allowed_schemes)
        if scheme is not None:
            disallowed[scheme] += 1
            continue
        entry_key = key(entry.url)
        if entry_key in seen:
            duplicates += 1
            continue
        seen.add(entry_key)
        result.append(
            StreamEntry(
                key=entry_key,
                url=entry.url,
                name=entry.name,
                guide_id=attributes.get("tvg-id", ""),
                guide_name=attributes.get("tvg-name", ""),
                logo=attributes.get("tvg-logo", ""),
                group=group,
                number=_number(attributes),
            )
        )
    return result, duplicates, outside, disallowed
