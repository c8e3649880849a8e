"""
``python -m streamproxy``: tools that work on the channel database.

    python -m streamproxy import-m3u FILE --source NAME [--quality Q] [--m3u NAME]
                                    [--config config.yaml | --db streams.db]
"""

import argparse
import sqlite3
import sys

from .config import ConfigError, load_config
from .m3u_import import M3UError, import_entries, parse_m3u
from .store import StoreError, prepare_database


def _import_m3u(arguments, out):
    if arguments.db:
        db_path = arguments.db
    else:
        db_path = load_config(arguments.config).db_path
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
    connection = sqlite3.connect(db_path, timeout=5)
    try:
        with connection:
            added, updated, unchanged = import_entries(
                connection, entries, arguments.source, arguments.quality, m3u
            )
    except sqlite3.Error as e:
        raise StoreError(f"{db_path}: {e}")
    finally:
        connection.close()
    print(
        f"{arguments.file}: {added} streams added, {updated} updated, {unchanged} unchanged in {db_path} "
        f"(source {arguments.source!r}, quality {arguments.quality!r}, playlist {m3u!r}). "
        f"Reload a running daemon with GET /refresh_db_cache.",
        file=out,
    )


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
        arguments.run(arguments, out)
    except (ConfigError, StoreError, M3UError) as e:
        print(f"streamproxy: {e}", file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
