"""
Filling the ``LiveStreams`` table from a provider's M3U playlist.

Used by ``python -m streamproxy import-m3u``; it runs outside the daemon, so
plain blocking ``sqlite3`` is right here.
"""

import re
from dataclasses import dataclass

from .channels import normalize_channel_id
from .store import TABLE

_ATTRIBUTE = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*"([^"]*)"')
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


class M3UError(ValueError):
    """
    The playlist cannot be imported; the message names the line.
    """


@dataclass(frozen=True)
class PlaylistEntry:
    """
    One channel of a provider playlist.
    """

    name: str
    url: str
    attributes: dict
    line: int


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
        if line.upper().startswith("#EXTINF:"):
            attributes, name = parse_extinf(line[len("#EXTINF:") :])
            pending = (attributes, name, number)
        elif line.startswith("#"):
            continue
        else:
            attributes, name, at = pending if pending else ({}, "", number)
            entries.append(PlaylistEntry(name=name or line, url=line, attributes=attributes, line=at))
            pending = None
    return entries


def _channel_number(attributes):
    for key in ("tvg-chno", "channel-number", "channel-id", "tvc-guide-chno"):
        value = attributes.get(key)
        if value:
            try:
                return normalize_channel_id(value)
            except ValueError:
                pass
    return None


def import_entries(connection, entries, source, quality, m3u):
    """
    Add ``entries`` to the table as candidates of ``source`` in ``quality``
    listed in playlist ``m3u``.

    A stream already present for the same source and URL is updated rather
    than added twice.  Channels are matched to existing ones by guide id,
    then by name (case ignored), so a second provider's copy of a channel
    joins it; otherwise the playlist's channel number is used when free, else
    the next free number.

    :return: ``(added, updated)`` counts.
    """
    by_guide = {}
    by_name = {}
    used = set()
    highest = 0
    for channel_id, guide_id, name, uniform in connection.execute(
        f'SELECT "Channel-id", "TV-guide-id", "Stream-name", "Uniform-name" FROM {TABLE}'
    ):
        try:
            key = normalize_channel_id(channel_id)
        except ValueError:
            continue
        used.add(key)
        highest = max(highest, int(key.partition(".")[0]))
        if guide_id:
            by_guide.setdefault(str(guide_id).strip(), key)
        for value in (uniform, name):
            if value:
                by_name.setdefault(str(value).strip().casefold(), key)
    added = updated = 0
    for entry in entries:
        attributes = entry.attributes
        guide_id = attributes.get("tvg-id", "")
        display = entry.name
        channel_id = by_guide.get(guide_id) if guide_id else None
        channel_id = channel_id or by_name.get(display.casefold())
        if channel_id is None:
            wanted = _channel_number(attributes)
            if wanted is not None and wanted not in used:
                channel_id = wanted
            else:
                highest += 1
                channel_id = str(highest)
        used.add(channel_id)
        highest = max(highest, int(channel_id.partition(".")[0]))
        if guide_id:
            by_guide.setdefault(guide_id, channel_id)
        by_name.setdefault(display.casefold(), channel_id)
        number = float(channel_id) if "." in channel_id else int(channel_id)
        values = {
            "Channel-id": number,
            "Stream-name": attributes.get("tvg-name") or display,
            "stream-url": entry.url,
            "Source": source,
            "Stream-quality": quality,
            "M3U": m3u,
            "TV-Logo": attributes.get("tvg-logo", ""),
            "Group-title": attributes.get("group-title", ""),
            "Uniform-name": display,
            "TV-guide-id": guide_id,
            "TV-guide-name": attributes.get("tvg-name", ""),
        }
        existing = connection.execute(
            f'SELECT rowid FROM {TABLE} WHERE "Source" = ? AND "stream-url" = ?',
            (source, entry.url),
        ).fetchone()
        names = list(values)
        if existing:
            assignments = ", ".join(f'"{n}" = ?' for n in names)
            connection.execute(
                f"UPDATE {TABLE} SET {assignments} WHERE rowid = ?",
                [values[n] for n in names] + [existing[0]],
            )
            updated += 1
        else:
            columns = ", ".join(f'"{n}"' for n in names + ["Stream-status", "Uptime", "Downtime"])
            marks = ", ".join("?" for _ in range(len(names) + 3))
            connection.execute(
                f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})",
                [values[n] for n in names] + ["unknown", 0, 0],
            )
            added += 1
    return added, updated
