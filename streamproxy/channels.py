"""
The channel list as plain data: rows of the ``LiveStreams`` table turned into
candidate streams grouped by channel, and the ranking of a channel's candidates.

No I/O here; :mod:`streamproxy.store` reads the rows and hands them over.
"""

import re
from dataclasses import dataclass, field

from .urls import DEFAULT_SCHEMES, display_url, scheme_problem, url_scheme

# The columns of the original system's table, in its order, with its names.
COLUMNS = (
    ("Channel-id", "INTEGER"),
    ("Stream-name", "TEXT"),
    ("stream-url", "TEXT"),
    ("Source", "TEXT"),
    ("Stream-quality", "TEXT"),
    ("M3U", "TEXT"),
    ("TV-Logo", "TEXT"),
    ("Group-title", "TEXT"),
    ("Uniform-name", "TEXT"),
    ("ISO3", "TEXT"),
    ("TV-guide-id", "TEXT"),
    ("TV-guide-name", "TEXT"),
    ("Stream-status", "TEXT"),
    ("Last-checked-time", "TEXT"),
    ("Uptime", "INTEGER"),
    ("Downtime", "INTEGER"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)

_CHANNEL_ID = re.compile(r"^\d{1,9}(?:\.\d{1,4})?$")


class BadRow(ValueError):
    """
    A row that cannot be used as a candidate stream; the message says why.
    """


def normalize_channel_id(value):
    """
    The canonical text form of a channel id: ``7`` for 7, 7.0 and "007";
    ``7.1`` for a sub-channel.  Raises ValueError for anything else.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a channel number: {value!r}")
    if isinstance(value, float):
        if value != value or value < 0:
            raise ValueError(f"not a channel number: {value!r}")
        text = repr(value)
    else:
        text = str(value).strip()
    if not _CHANNEL_ID.match(text):
        raise ValueError(f"not a channel number: {value!r}")
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0")
    whole = str(int(whole))
    return f"{whole}.{fraction}" if fraction else whole


def channel_sort_key(channel_id):
    """
    Order channel ids numerically, sub-channels after their main channel.
    """
    whole, _, fraction = channel_id.partition(".")
    return (int(whole), int(fraction) if fraction else -1, fraction)


def playlist_name(value):
    """
    The name a stored ``M3U`` value is served under: ``sports`` for both
    ``sports`` and ``sports.m3u``.
    """
    value = (value or "").strip()
    if value.lower().endswith(".m3u"):
        value = value[: -len(".m3u")]
    return value


def _text(value):
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _seconds(value):
    try:
        return max(0, int(value or 0))
    except (TypeError, ValueError):
        return 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """
    One row of ``LiveStreams``: one way of getting one channel.
    """

    rowid: int
    channel_id: str
    name: str
    url: str
    source: str
    quality: str
    m3u: str
    logo: str = ""
    group: str = ""
    uniform_name: str = ""
    iso3: str = ""
    guide_id: str = ""
    guide_name: str = ""
    status: str = ""
    last_checked: str = ""
    uptime: int = 0
    downtime: int = 0
    # The provider account that owns this row (see streamproxy.providers),
    # or None for a row no provider owns.  Slots are counted per account as
    # well as per source, so pooled accounts each stay within their limit.
    account: str | None = None

    @property
    def display_name(self):
        """
        The name shown to viewers: the uniform name when there is one.
        """
        return self.uniform_name or self.name or f"Channel {self.channel_id}"

    @property
    def display_url(self):
        """
        The stream URL as pages, the API and logs show it: scheme, host,
        port, last path component and query names, no credentials (see
        :func:`streamproxy.urls.display_url`).
        """
        return display_url(self.url)

    @property
    def label(self):
        """
        How logs refer to this candidate, without its URL (which holds credentials).
        """
        return f"{self.source or 'unnamed source'}/{self.quality or '?'} (row {self.rowid})"


class DisallowedScheme(BadRow):
    """
    A row whose stream URL is not an allowed network URL (``file://``,
    ``concat:``, a scheme not in ``allowed_url_schemes``); it never
    reaches ffmpeg.
    """


def candidate_from_row(rowid, row, allowed_schemes=DEFAULT_SCHEMES, account=None):
    """
    Build a :class:`Candidate` from a database row mapping column name to
    value; ``account`` names the provider account owning the row, if any.

    Only stream URLs whose scheme is one of ``allowed_schemes``
    (``allowed_url_schemes``) are taken.

    :raises BadRow: with a reason naming the problem (a
        :class:`DisallowedScheme` for a URL of another scheme).
    """
    try:
        channel_id = normalize_channel_id(row.get("Channel-id"))
    except ValueError:
        raise BadRow(f"Channel-id {row.get('Channel-id')!r} is not a channel number")
    url = _text(row.get("stream-url"))
    if not url:
        raise BadRow("stream-url is empty")
    if not url_scheme(url):
        raise BadRow("stream-url has no scheme (such as http://)")
    problem = scheme_problem(url, allowed_schemes)
    if problem is not None:
        raise DisallowedScheme(f"stream-url {problem}")
    return Candidate(
        rowid=rowid,
        channel_id=channel_id,
        name=_text(row.get("Stream-name")),
        url=url,
        source=_text(row.get("Source")),
        quality=_text(row.get("Stream-quality")),
        m3u=playlist_name(_text(row.get("M3U"))),
        logo=_text(row.get("TV-Logo")),
        group=_text(row.get("Group-title")),
        uniform_name=_text(row.get("Uniform-name")),
        iso3=_text(row.get("ISO3")),
        guide_id=_text(row.get("TV-guide-id")),
        guide_name=_text(row.get("TV-guide-name")),
        status=_text(row.get("Stream-status")).lower(),
        last_checked=_text(row.get("Last-checked-time")),
        uptime=_seconds(row.get("Uptime")),
        downtime=_seconds(row.get("Downtime")),
        account=account,
    )


@dataclass(frozen=True)
class Ranking:
    """
    The user's preferences: earlier sources and qualities are better.

    ``observations`` (a :class:`~streamproxy.observations.Observations`,
    optional) are what the daemon saw of each stream since it started: the
    latest health status wins over the table's, and measured facts break
    the remaining ties.
    """

    source_priority: tuple = ()
    quality_priority: tuple = ()
    observations: object = field(default=None, compare=False)

    def __post_init__(self):
        # Position lookups by dict: ranking runs for every channel of a
        # 20,000-channel playlist.
        object.__setattr__(self, "_sources", _positions(self.source_priority))
        object.__setattr__(self, "_qualities", _positions(self.quality_priority))

    def key(self, candidate, penalised=frozenset()):
        """
        Sort key for one candidate; lower is better.

        Recently failed candidates (``penalised`` row ids) go after all
        others; then source priority, then quality priority, unlisted values
        last; then health (:func:`health_rank`); then measured facts (more
        pixels, a higher frame rate, a higher bitrate; unmeasured streams
        last).  Python's sort is stable, so ties keep table order.
        """
        source_rank = self._sources.get(candidate.source, len(self.source_priority))
        quality_rank = self._qualities.get(candidate.quality, len(self.quality_priority))
        observations = self.observations
        if observations is None:
            return (candidate.rowid in penalised, source_rank, quality_rank, health_rank(candidate))
        return (
            candidate.rowid in penalised,
            source_rank,
            quality_rank,
            health_rank(candidate, observations.status(candidate.rowid)),
            observations.measured_key(candidate),
        )

    def rank(self, candidates, penalised=frozenset()):
        """
        The candidates best first.
        """
        if not penalised:
            return sorted(candidates, key=self.key)
        return sorted(candidates, key=lambda c: self.key(c, penalised))


def _positions(names):
    """
    ``{name: position}``, the first position where a name is listed twice.
    """
    positions = {}
    for index, name in enumerate(names):
        positions.setdefault(name, index)
    return positions


# Stream-status values, best first: a stream that showed a black or frozen
# picture or no sound (streamproxy.content) ranks with the offline ones.
_STATUS_RANK = {
    "online": 0, "buffering": 1, "": 2, "unknown": 2, "offline": 3, "black": 3, "frozen": 3, "silent": 3,
}

# Shares of downtime this close count as the same, so that measured facts
# can tell apart two streams that are about equally reliable.
DOWN_SHARE_STEP = 0.05


def health_rank(candidate, status=None):
    """
    Within one source and quality, a stream that has been working beats one
    that has been failing: last known status first (``status`` when given,
    newer than the table's), then the share of time it was seen down (in
    steps of 5 %).  Streams never checked sit between the two.
    """
    status_rank = _STATUS_RANK.get(status if status is not None else candidate.status, 2)
    seen = candidate.uptime + candidate.downtime
    down_share = candidate.downtime / seen if seen else 0.5
    return (status_rank, int(down_share / DOWN_SHARE_STEP + 1e-9))


@dataclass
class Catalog:
    """
    Every usable candidate, grouped by channel and by playlist.

    Built once per load of the table; requests only read it.
    """

    candidates: tuple = ()
    skipped: tuple = ()
    channels: dict = field(default_factory=dict)
    playlists: dict = field(default_factory=dict)
    # {rowid: ProviderOwner} for rows a provider sync owns (empty without
    # providers): which provider and account, and how the row's channel
    # was matched, for /api/channels.
    owners: dict = field(default_factory=dict)

    @classmethod
    def build(cls, candidates, skipped=(), owners=None):
        """
        Group ``candidates`` (in table order) by channel id and playlist name;
        ``owners`` maps the row ids of provider-owned rows to their owner.
        """
        channels = {}
        playlists = {}
        for candidate in candidates:
            channels.setdefault(candidate.channel_id, []).append(candidate)
            if candidate.m3u:
                playlists.setdefault(candidate.m3u, {}).setdefault(candidate.channel_id, []).append(
                    candidate
                )
        return cls(
            candidates=tuple(candidates),
            skipped=tuple(skipped),
            channels={k: tuple(v) for k, v in channels.items()},
            playlists={
                name: {k: tuple(members[k]) for k in sorted(members, key=channel_sort_key)}
                for name, members in playlists.items()
            },
            owners=dict(owners or {}),
        )

    def find_playlist(self, name):
        """
        The channels of playlist ``name`` (``.m3u`` suffix optional, case
        ignored when there is no exact match), or None.
        """
        name = playlist_name(name)
        if name in self.playlists:
            return self.playlists[name]
        folded = name.casefold()
        for key, value in self.playlists.items():
            if key.casefold() == folded:
                return value
        return None

    def __len__(self):
        return len(self.channels)
