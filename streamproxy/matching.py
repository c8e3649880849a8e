"""
Matching a provider's streams to channels, and planning the row changes of a
sync: which rows to add, update and remove.

Pure functions over plain data, shared by ``import-m3u`` and the provider
sync; :mod:`streamproxy.provider_rows` reads the inputs from the database and
writes the plan back.  Every lookup is a dict lookup, so planning is linear
in the number of rows and entries.

The matching rule, for a stream that has no row yet:

1. the channel of an existing row with the same ``TV-guide-id``;
2. else the channel of an existing row whose ``Uniform-name`` or
   ``Stream-name`` has the same normalized name (:func:`normalize_name`);
3. else the channel this provider's stream got before (a provider's new
   channels keep their number when a stream vanishes and comes back);
4. else the channel number the provider suggests (``tvg-chno``, Xtream
   ``num``) when no row uses it;
5. else the next number after the highest one in use.

A row that exists already keeps its ``Channel-id``: a sync never moves it.
"""

import re
import unicodedata
from dataclasses import dataclass, field

from .channels import normalize_channel_id

# How a row's channel was found, as /api/channels shows it.
BY_GUIDE_ID = "tv-guide-id"
BY_NAME = "name"
REMEMBERED = "remembered"
PROVIDER_NUMBER = "provider-number"
NEXT_FREE = "next-free"

# Words at the end of a name that say how it is delivered, not what it is:
# "ABC HD" and "ABC" are one channel.
_QUALITY_WORDS = frozenset(
    {"hd", "fhd", "uhd", "sd", "4k", "8k", "hq", "lq", "hevc", "h264", "h265", "1080p", "1080i",
     "720p", "576p", "480p", "raw", "backup"}
)
# A country or package prefix such as "US:", "UK | ", "[DE]".
_PREFIX = re.compile(r"^\s*(?:\[[A-Za-z]{2,3}\]|[A-Za-z]{2,3}\s*[:|])\s*")
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalize_name(name):
    """
    The form two channel names must share to be the same channel: accents
    dropped, case folded, ``&`` read as ``and``, a leading country prefix
    (``US:``, ``UK |``, ``[DE]``) and trailing quality words (``HD``,
    ``FHD``, ``4K``, ``1080p``...) dropped, punctuation and spacing ignored.
    "US: ABC HD", "abc" and "A.B.C." are all ``abc``; "" stays "".
    """
    if not name:
        return ""
    text = _PREFIX.sub("", name, count=1)
    if text.isascii():
        text = text.lower()
    else:
        text = "".join(
            c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
        ).casefold()
    words = _NOT_WORD.split(text.replace("&", " and "))
    words = [w for w in words if w]
    while len(words) > 1 and words[-1] in _QUALITY_WORDS:
        words.pop()
    # "A.B.C." and "ABC" match: single letters run together.
    return "".join(words) if all(len(w) == 1 for w in words) else " ".join(words)


def stored_channel_id(channel_id):
    """
    The value written to the ``Channel-id`` column for canonical id
    ``channel_id``: an integer, or a float for a sub-channel (``7.1``).
    """
    return float(channel_id) if "." in channel_id else int(channel_id)


class ChannelIndex:
    """
    The channels in use: by guide id, by normalized name, and the numbers
    taken.  Built from every row of the table (owned by a provider or not)
    and extended as a plan gives streams their channels.
    """

    def __init__(self):
        self.by_guide = {}
        self.by_name = {}
        self.used = set()
        self.highest = 0
        # The last name normalized: planning looks a stream's name up and
        # then records it, and normalizing is the costly part of both.
        self._last = ("", "")

    @classmethod
    def from_rows(cls, rows):
        """
        An index of ``rows``: ``(Channel-id, TV-guide-id, Stream-name,
        Uniform-name)`` tuples, in table order (the first row of a guide id or
        name wins).  Rows whose Channel-id is not a channel number are left out.
        """
        index = cls()
        for channel_id, guide_id, name, uniform in rows:
            try:
                key = normalize_channel_id(channel_id)
            except ValueError:
                continue
            index.add(key, guide_id, (uniform, name))
        return index

    def add(self, channel_id, guide_id, names):
        """
        Record that ``channel_id`` is in use and carries ``guide_id`` and
        ``names`` (earlier entries keep a guide id or name they have).
        """
        if channel_id not in self.used:
            self.used.add(channel_id)
            whole = int(channel_id.partition(".")[0])
            if whole > self.highest:
                self.highest = whole
        if guide_id:
            self.by_guide.setdefault(str(guide_id).strip(), channel_id)
        for name in names:
            normalized = self._normalized(str(name)) if name else ""
            if normalized:
                self.by_name.setdefault(normalized, channel_id)

    def _normalized(self, name):
        if self._last[0] != name:
            self._last = (name, normalize_name(name))
        return self._last[1]

    def find(self, guide_id, name):
        """
        ``(channel id, how)`` of the existing channel a stream with
        ``guide_id`` and ``name`` joins, or None.
        """
        if guide_id:
            found = self.by_guide.get(guide_id)
            if found is not None:
                return found, BY_GUIDE_ID
        normalized = self._normalized(name) if name else ""
        if normalized:
            found = self.by_name.get(normalized)
            if found is not None:
                return found, BY_NAME
        return None

    def allocate(self, wanted=None):
        """
        A channel number for a new channel: ``wanted`` (any form
        :func:`normalize_channel_id` reads) when it is free, else the next
        number after the highest in use.  Returns ``(channel id, how)``.
        """
        if wanted:
            try:
                canonical = normalize_channel_id(wanted)
            except ValueError:
                canonical = None
            if canonical is not None and canonical not in self.used and canonical != "0":
                return canonical, PROVIDER_NUMBER
        return str(self.highest + 1), NEXT_FREE


def match_key(entry):
    """
    What a provider's new channel is remembered by: its guide id, else its
    normalized name, else its stream key.
    """
    if entry.guide_id:
        return "guide:" + entry.guide_id
    normalized = normalize_name(entry.name)
    return "name:" + normalized if normalized else "key:" + entry.key


@dataclass(frozen=True, slots=True)
class OwnedRow:
    """
    A row a provider (or an import) made earlier: its row id, channel, and
    the values of the columns a sync sets, as stored.
    """

    rowid: int
    channel_id: str
    values: tuple


# The columns a sync sets from a provider's entry, in this order; a row's
# other columns (Channel-id once given, ISO3, the health columns) are kept.
SYNCED_COLUMNS = (
    "Stream-name",
    "stream-url",
    "Source",
    "Stream-quality",
    "M3U",
    "TV-Logo",
    "Group-title",
    "Uniform-name",
    "TV-guide-id",
    "TV-guide-name",
)


def row_values(entry, source, quality, playlist):
    """
    The :data:`SYNCED_COLUMNS` values of ``entry`` as a row of ``source``
    with ``quality``, listed in ``playlist``.
    """
    return (
        entry.guide_name or entry.name,
        entry.url,
        source,
        quality,
        playlist,
        entry.logo,
        entry.group,
        entry.name,
        entry.guide_id,
        entry.guide_name,
    )


@dataclass
class Insert:
    """
    A new row: the entry's key, its channel, how the channel was found, and
    its :data:`SYNCED_COLUMNS` values.
    """

    key: str
    channel_id: str
    matched: str
    values: tuple


@dataclass
class SyncPlan:
    """
    What one sync of one account (or one import) changes.
    """

    inserts: list = field(default_factory=list)
    updates: list = field(default_factory=list)  # (rowid, values)
    removes: list = field(default_factory=list)  # rowids
    unchanged: int = 0
    remembered: dict = field(default_factory=dict)  # match key -> channel id, new ones

    @property
    def counts(self):
        """
        ``{"added", "updated", "removed", "unchanged"}`` for the status page.
        """
        return {
            "added": len(self.inserts),
            "updated": len(self.updates),
            "removed": len(self.removes),
            "unchanged": self.unchanged,
        }


def plan_sync(entries, owned, index, source, quality, playlist, remembered=None, remove_missing=True):
    """
    The changes that make the rows in ``owned`` (``{key: OwnedRow}``) match
    ``entries`` (:class:`~streamproxy.m3u_parser.StreamEntry`, in provider
    order).

    An entry whose key has a row updates that row when any synced value
    differs (a rotated URL, a new logo), keeping its channel; a new key gets
    a row in the channel the rule of this module finds, using ``index`` (of
    every row in the table, extended here) and ``remembered`` (``{match
    key: channel id}`` of this provider's earlier new channels).  With
    ``remove_missing``, rows of keys no longer offered are removed.
    """
    remembered = remembered or {}
    plan = SyncPlan()
    seen = set()
    for entry in entries:
        seen.add(entry.key)
        values = row_values(entry, source, quality, playlist)
        existing = owned.get(entry.key)
        if existing is not None:
            if existing.values != values:
                plan.updates.append((existing.rowid, values))
            else:
                plan.unchanged += 1
            continue
        found = index.find(entry.guide_id, entry.name)
        key = match_key(entry)
        if found is None:
            earlier = remembered.get(key)
            if earlier is not None and earlier not in index.used:
                found = (earlier, REMEMBERED)
            else:
                found = index.allocate(entry.number)
        channel_id, how = found
        if remembered.get(key) != channel_id and how != BY_GUIDE_ID and how != BY_NAME:
            plan.remembered[key] = channel_id
        index.add(channel_id, entry.guide_id, (entry.name, entry.guide_name))
        plan.inserts.append(Insert(entry.key, channel_id, how, values))
    if remove_missing:
        plan.removes = [row.rowid for key, row in owned.items() if key not in seen]
    return plan
