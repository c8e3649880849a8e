"""
Filling the ``LiveStreams`` table from a provider's M3U playlist file
(``python -m streamproxy import-m3u``).

The parsing (:mod:`streamproxy.m3u_parser`) and the channel matching
(:mod:`streamproxy.matching`) are the provider sync's own; the rows an import
writes belong to no provider.  It runs outside the daemon, so plain blocking
``sqlite3`` is right here.  The work is linear in the playlist and the
table: the table is read once into dictionaries, and rows are written in
batches of :data:`BATCH_ROWS`, each its own transaction.
"""

from collections import Counter
from dataclasses import dataclass, field

from .m3u_parser import M3UError, PlaylistEntry, exact_url_key, parse_extinf, parse_m3u, stream_entries
from .provider_rows import BATCH_ROWS, import_rows
from .urls import DEFAULT_SCHEMES

__all__ = ["BATCH_ROWS", "ImportResult", "M3UError", "PlaylistEntry", "parse_extinf", "parse_m3u",
           "import_entries"]


@dataclass
class ImportResult:
    """
    What an import did: rows ``added``, ``updated`` (something about the
    stream changed) and ``unchanged``; ``duplicates``, entries left out
    because the playlist lists their URL again (the first listing counts);
    and the entries ``skipped`` because their URL's scheme is not allowed,
    counted by scheme.
    """

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    skipped: Counter = field(default_factory=Counter)

    @property
    def skipped_count(self):
        """
        How many entries were skipped for their scheme.
        """
        return sum(self.skipped.values())


def import_entries(connection, entries, source, quality, m3u, allowed_schemes=DEFAULT_SCHEMES,
                   batch_rows=BATCH_ROWS, progress=None):
    """
    Add playlist ``entries`` to the table as candidates of ``source`` in
    ``quality`` listed in playlist ``m3u``, committing every ``batch_rows``
    rows written.

    A stream already present for the same source and URL is updated (when
    anything about it changed) rather than added twice.  Channels are matched
    by the rule of :mod:`streamproxy.matching`: same guide id, else same
    normalized name, else the playlist's channel number when free, else the
    next free number.  Entries whose URL's scheme is not one of
    ``allowed_schemes`` (``file://``, ``concat:``...) are skipped and
    counted.  ``progress(done, total)`` is called after each batch with the
    rows written so far and the rows to write.

    :return: an :class:`ImportResult`.
    """
    streams, duplicates, _, skipped = stream_entries(entries, key=exact_url_key, allowed_schemes=allowed_schemes)
    added, updated, unchanged = import_rows(
        connection, streams, source, quality, m3u, batch_rows=batch_rows, progress=progress
    )
    return ImportResult(added, updated, unchanged, duplicates, skipped)
