"""
Filling the ``LiveStreams`` table from a provider's M3U playlist file
(``python -m streamproxy import-m3u``).

The parsing (:mod:`streamproxy.m3u_parser`) and the channel matching
(:mod:`streamproxy.matching`) are the provider sync's own; the rows an import
writes belong to no provider.  It runs outside the daemon, so plain blocking
``sqlite3`` is right here.
"""

from .m3u_parser import M3UError, PlaylistEntry, exact_url_key, parse_extinf, parse_m3u, stream_entries
from .provider_rows import import_rows

__all__ = ["M3UError", "PlaylistEntry", "parse_extinf", "parse_m3u", "import_entries"]


def import_entries(connection, entries, source, quality, m3u):
    """
    Add playlist ``entries`` to the table as candidates of ``source`` in
    ``quality`` listed in playlist ``m3u``.

    A stream already present for the same source and URL is updated (when
    anything about it changed) rather than added twice.  Channels are matched
    by the rule of :mod:`streamproxy.matching`: same guide id, else same
    normalized name, else the playlist's channel number when free, else the
    next free number.  Rows are written and committed in batches.

    :return: ``(added, updated, unchanged)`` counts.
    """
    streams, _, _ = stream_entries(entries, key=exact_url_key)
    return import_rows(connection, streams, source, quality, m3u)
