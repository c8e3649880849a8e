"""
``python -m streamproxy``: tools that work on the channel database.

    python -m streamproxy import-m3u FILE --source NAME [--quality Q] [--m3u NAME]
                                    [--config config.yaml | --db streams.db]

On a terminal, the import shows its progress on one line of standard error.
"""

import argparse
import sqlite3
import sys

from .config import ConfigError, load_config
from .m3u_import import M3UError, import_entries, parse_m3u
from .store import StoreError, prepare_database
from .urls import DEFAULT_SCHEMES


def _import_m3u(arguments, out, err):
    if arguments.db:
        db_path = arguments.db
        allowed_schemes = DEFAULT_SCHEMES
    else:
        config = load_config(arguments.config)
        db_path, allowed_schemes = config.db_path, config.allowed_url_schemes
    prepare_database(db_path)
    try:
        with open(arguments.file, encoding="utf-8-sig", errors="replace") as f:
            text = f.read()
    except OSError as e:
        raise M3UError(f"{arguments.file}: cannot read: {e.strerror}")
    try:
        entries = parse_m3u(text)
    except M3UError as e:
        raise M3UError(f"{arguments.file}: {e}")
    m3u = arguments.m3u or arguments.source
    progress = ProgressLine(err) if _is_terminal(err) else None
    written = [0]

    def report(done, total):
        written[0] = done
        if progress is not None:
            progress.show(f"{arguments.file}: {done:,} of {total:,} entries written")

    connection = sqlite3.connect(db_path, timeout=5)
    try:
        result = import_entries(
            connection, entries, arguments.source, arguments.quality, m3u,
            allowed_schemes=allowed_schemes, progress=report,
        )
    except sqlite3.Error as e:
        raise StoreError(f"{db_path}: {e} (the first {written[0]:,} entries were written)")
    finally:
        connection.close()
        if progress is not None:
            progress.clear()
    print(
        f"{arguments.file}: {result.added} streams added, {result.updated} updated, "
        f"{result.unchanged} unchanged in {db_path} "
        f"(source {arguments.source!r}, quality {arguments.quality!r}, playlist {m3u!r}). "
        f"Reload a running daemon with GET /refresh_db_cache.",
        file=out,
    )
    if result.duplicates:
        print(
            f"{arguments.file}: {result.duplicates} entries left out: the playlist lists their URL "
            f"earlier (the first listing is the one imported).",
            file=out,
        )
    if result.skipped:
        kinds = ", ".join(f"{scheme}: {count}" for scheme, count in sorted(result.skipped.items()))
        print(
            f"{arguments.file}: {result.skipped_count} entries skipped: their URLs are not "
            f"{' or '.join(allowed_schemes)} ({kinds}); allowed_url_schemes in config.yaml decides.",
            file=out,
        )


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressLine:
    """
    One line on a terminal, rewritten in place.
    """

    def __init__(self, stream):
        self._stream = stream
        self._width = 0

    def show(self, text):
        """
        Replace the line with ``text``.
        """
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)

    def clear(self):
        """
        Blank the line, leaving the cursor at its start.
        """
        if self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def main(argv=None, out=None, err=None):
    """
    Run the command line; returns the exit status.  ``out`` and ``err``
    default to the process's standard output and error.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(prog="python -m streamproxy")
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser(
        "import-m3u", help="add the channels of a provider's M3U playlist to the database"
    )
    importer.add_argument("file", help="the provider's M3U file")
    importer.add_argument("--source", required=True, help="provider name (the Source column)")
    importer.add_argument("--quality", default="1", help="Stream-quality value (default: 1)")
    importer.add_argument("--m3u", help="playlist name to list them in (default: the source name)")
    where = importer.add_mutually_exclusive_group()
    where.add_argument("--config", default="config.yaml", help="read db_path from this config")
    where.add_argument("--db", help="the SQLite database file to fill")
    importer.set_defaults(run=_import_m3u)
    arguments = parser.parse_args(argv)
    try:
        arguments.run(arguments, out, err)
    except (ConfigError, StoreError, M3UError) as e:
        print(f"streamproxy: {e}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
