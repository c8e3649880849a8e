"""
Filling the ``LiveStreams`` table from a provider's M3U playlist.

Used by ``python -m streamproxy import-m3u``; it runs outside the daemon, so
plain blocking ``sqlite3`` is right here.  The work is linear in the
playlist and the table: the table is read once into dictionaries, and rows
are written in batches of :data:`BATCH_ROWS`, each its own transaction.
"""

import re
from collections import Counter
from dataclasses import dataclass, field

from .channels import normalize_channel_id
from .store import TABLE
from .urls import DEFAULT_SCHEMES, scheme_problem, url_scheme

# Entries written per transaction: an interrupted import keeps what it
# wrote (importing again updates rather than duplicates), and a running
# daemon's refresh never waits for more than one batch.
BATCH_ROWS = 5000

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


@dataclass
class ImportResult:
    """
    What an import did: rows ``added`` and ``updated``, and the entries
    ``skipped`` because their URL's scheme is not allowed, counted by scheme.
    """

    added: int = 0
    updated: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def skipped_count(self):
        """
        How many entries were skipped.
        """
        return sum(self.skipped.values())


def _existing_channels(connection):
    """
    ``(by_guide, by_name, used, highest)`` of the table's channels: guide
    id and name (case folded) to channel id, the ids in use, the highest
    whole number.
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
    return by_guide, by_name, used, highest


_NAMES = ("Channel-id", "Stream-name", "stream-url", "Source", "Stream-quality", "M3U", "TV-Logo",
          "Group-title", "Uniform-name", "TV-guide-id", "TV-guide-name")
_UPDATE = f"UPDATE {TABLE} SET " + ", ".join(f'"{n}" = ?' for n in _NAMES) + " WHERE rowid = ?"
_INSERT = (
    f"INSERT INTO {TABLE} (" + ", ".join(f'"{n}"' for n in _NAMES + ("Stream-status", "Uptime", "Downtime"))
    + ") VALUES (" + ", ".join("?" for _ in range(len(_NAMES) + 3)) + ")"
)


def import_entries(connection, entries, source, quality, m3u, allowed_schemes=DEFAULT_SCHEMES,
                   batch_rows=BATCH_ROWS, progress=None):
    """
    Add ``entries`` to the table as candidates of ``source`` in ``quality``
    listed in playlist ``m3u``, committing every ``batch_rows`` entries.

    A stream already present for the same source and URL is updated rather
    than added twice.  Channels are matched to existing ones by guide id,
    then by name (case ignored), so a second provider's copy of a channel
    joins it; otherwise the playlist's channel number is used when free, else
    the next free number.  Entries whose URL's scheme is not one of
    ``allowed_schemes`` (``file://``, ``concat:``...) are skipped and
    counted.  ``progress(done, total)`` is called after each batch.

    :return: an :class:`ImportResult`.
    """
    by_guide, by_name, used, highest = _existing_channels(connection)
    rows_of_source = {
        url: rowid
        for rowid, url in connection.execute(
            f'SELECT rowid, "stream-url" FROM {TABLE} WHERE "Source" = ? ORDER BY rowid DESC', (source,)
        )
    }
    result = ImportResult()
    total = len(entries)
    cursor = connection.cursor()
    for done, entry in enumerate(entries, 1):
        if scheme_problem(entry.url, allowed_schemes) is not None:
            result.skipped[url_scheme(entry.url) or "no scheme"] += 1
        else:
            channel_id, highest = _place(entry, by_guide, by_name, used, highest)
            attributes = entry.attributes
            number = float(channel_id) if "." in channel_id else int(channel_id)
            values = (
                number,
                attributes.get("tvg-name") or entry.name,
                entry.url,
                source,
                quality,
                m3u,
                attributes.get("tvg-logo", ""),
                attributes.get("group-title", ""),
                entry.name,
                attributes.get("tvg-id", ""),
                attributes.get("tvg-name", ""),
            )
            rowid = rows_of_source.get(entry.url)
            if rowid is not None:
                cursor.execute(_UPDATE, values + (rowid,))
                result.updated += 1
            else:
                cursor.execute(_INSERT, values + ("unknown", 0, 0))
                rows_of_source[entry.url] = cursor.lastrowid
                result.added += 1
        if done % batch_rows == 0 or done == total:
            connection.commit()
            if progress is not None:
                progress(done, total)
    connection.commit()
    return result


def _place(entry, by_guide, by_name, used, highest):
    """
    The channel id of ``entry`` and the new highest whole number, noting
    the entry's guide id and name for the entries after it.
    """
    attributes = entry.attributes
    guide_id = attributes.get("tvg-id", "")
    display = entry.name
    folded = display.casefold()
    channel_id = by_guide.get(guide_id) if guide_id else None
    channel_id = channel_id or by_name.get(folded)
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
    by_name.setdefault(folded, channel_id)
    return channel_id, highest
