"""
What the daemon has seen of each candidate stream: its latest health
status (as written to the table's ``Stream-status``) and its measured
facts (picture size, frame rate, bitrate) from its last run or idle check.

The table's health columns are read only when the catalog is loaded; these
in-memory observations are newer, so ranking prefers them: a stream an
idle check found dead ranks as dead at the next tune, not after the next
``/refresh_db_cache``.  Measured facts are kept in a table of our own
(``StreamMeasurements``, next to ``LiveStreams``, which keeps exactly its
columns), keyed by row id and a digest of the stream URL, so a row that
now holds another stream does not inherit them.
"""

import functools
import hashlib
from dataclasses import dataclass

MEASUREMENTS_TABLE = "StreamMeasurements"

CREATE_MEASUREMENTS = (
    f"CREATE TABLE IF NOT EXISTS {MEASUREMENTS_TABLE} ("
    "rowid_of INTEGER PRIMARY KEY, url_digest TEXT, width INTEGER, height INTEGER, "
    "fps REAL, kbps INTEGER, measured REAL)"
)
UPSERT_MEASUREMENT = (
    f"INSERT OR REPLACE INTO {MEASUREMENTS_TABLE} "
    "(rowid_of, url_digest, width, height, fps, kbps, measured) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SELECT_MEASUREMENTS = (
    f"SELECT rowid_of, url_digest, width, height, fps, kbps, measured FROM {MEASUREMENTS_TABLE}"
)


@functools.lru_cache(maxsize=65536)
def url_digest(url):
    """
    A short digest of a stream URL: tells whether a row still holds the
    stream that was measured, without keeping its credentials twice.
    """
    return hashlib.sha1(url.encode("utf-8", "replace")).hexdigest()[:12]


@dataclass(frozen=True)
class Measurement:
    """
    Measured facts of one stream: picture ``width`` x ``height``, ``fps``,
    ``kbps`` (any may be None), ``at`` (when, epoch seconds) and the
    ``digest`` of the URL measured.
    """

    width: int | None = None
    height: int | None = None
    fps: float | None = None
    kbps: int | None = None
    at: float = 0.0
    digest: str = ""

    def rank_key(self):
        """
        Sort key, lower is better: more pixels, then a higher frame rate,
        then a higher bitrate.
        """
        pixels = (self.width or 0) * (self.height or 0)
        return (-pixels, -(self.fps or 0.0), -(self.kbps or 0))

    def describe(self):
        """
        ``1280x720, 25 fps, 4980 kb/s`` (what is known of it).
        """
        parts = []
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.fps:
            parts.append(f"{self.fps:g} fps")
        if self.kbps:
            parts.append(f"{self.kbps} kb/s")
        return ", ".join(parts) or "nothing measured"

    def as_dict(self):
        """
        For the API.
        """
        return {"width": self.width, "height": self.height, "fps": self.fps, "kbps": self.kbps, "at": self.at}


# Ranks after every measured stream.
UNMEASURED = (1, 0, 0, 0)


class Observations:
    """
    The latest status and measurement of each stream, by row id.
    """

    def __init__(self):
        self._status = {}
        self._measured = {}

    def note_status(self, rowid, status, at):
        """
        ``rowid``'s health status became ``status`` at ``at``.
        """
        self._status[rowid] = (status, at)

    def status(self, rowid):
        """
        The latest status seen of ``rowid`` since the start, or None.
        """
        entry = self._status.get(rowid)
        return entry[0] if entry else None

    def seen_at(self, rowid):
        """
        When ``rowid``'s status was last noted (epoch seconds), or None.
        """
        entry = self._status.get(rowid)
        return entry[1] if entry else None

    def note_measurement(self, rowid, measurement):
        """
        Keep ``measurement`` as ``rowid``'s latest.
        """
        self._measured[rowid] = measurement

    def measurement(self, candidate):
        """
        The latest measurement of ``candidate`` if it was of its current
        URL, else None.
        """
        found = self._measured.get(candidate.rowid)
        if found is None or found.digest != url_digest(candidate.url):
            return None
        return found

    def measured_key(self, candidate):
        """
        The ranking key of ``candidate``'s measured facts (unmeasured
        streams after measured ones).
        """
        found = self._measured.get(candidate.rowid)
        if found is None or found.digest != url_digest(candidate.url):
            return UNMEASURED
        return (0, *found.rank_key())

    def load(self, measurements):
        """
        Take ``{rowid: Measurement}`` read from the database (older than
        anything seen since the start).
        """
        for rowid, measurement in measurements.items():
            self._measured.setdefault(rowid, measurement)


def read_measurements(cursor):
    """
    ``{rowid: Measurement}`` from the database (in its thread).
    """
    cursor.execute(CREATE_MEASUREMENTS)
    found = {}
    for rowid, digest, width, height, fps, kbps, at in cursor.execute(SELECT_MEASUREMENTS).fetchall():
        found[rowid] = Measurement(width, height, fps, kbps, at or 0.0, digest or "")
    return found


def measurement_rows(pending):
    """
    The parameters of :data:`UPSERT_MEASUREMENT` for ``{rowid: Measurement}``.
    """
    return [
        (rowid, m.digest, m.width, m.height, m.fps, m.kbps, m.at) for rowid, m in sorted(pending.items())
    ]
