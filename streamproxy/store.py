"""
The ``LiveStreams`` table in SQLite.

Start-up checks run synchronously before the reactor starts (so errors reach
the terminal before twistd daemonizes); everything afterwards goes through
``twisted.enterprise.adbapi`` so the reactor never waits on the database.
"""

import os
import sqlite3

from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.logger import Logger

from .channels import COLUMNS, COLUMN_NAMES, BadRow, Catalog, candidate_from_row
from .provider_rows import read_owners

TABLE = "LiveStreams"

# How long a statement waits for another program's lock before giving up.
# Short, so a refresh answers 503 promptly instead of hanging a request.
LOCK_WAIT_SECONDS = 2.0

CREATE_TABLE = "CREATE TABLE IF NOT EXISTS {} ({})".format(
    TABLE, ", ".join(f'"{name}" {kind}' for name, kind in COLUMNS)
)
SELECT_ALL = "SELECT rowid, {} FROM {} ORDER BY rowid".format(
    ", ".join(f'"{name}"' for name in COLUMN_NAMES), TABLE
)

log = Logger()


class StoreError(Exception):
    """
    The database cannot be used; the message names the file and the problem.
    """


def _describe(path, error):
    text = str(error)
    if "locked" in text or "busy" in text:
        return StoreError(f"{path}: the database is locked by another program ({text})")
    if "file is not a database" in text or "malformed" in text:
        return StoreError(f"{path}: not an SQLite database ({text})")
    if "unable to open" in text:
        return StoreError(f"{path}: cannot open the database file ({text})")
    return StoreError(f"{path}: database error: {text}")


def prepare_database(path):
    """
    Make sure ``path`` is a usable channel database, creating it (and the
    ``LiveStreams`` table) when the file is new.

    Blocking; call it before the reactor runs.

    :raises StoreError: when the file is not SQLite, is locked, or holds other
        tables but no ``LiveStreams`` table or one missing columns.
    """
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise StoreError(f"{path}: the folder {folder} does not exist")
    try:
        connection = sqlite3.connect(path, timeout=LOCK_WAIT_SECONDS)
    except sqlite3.Error as e:
        raise _describe(path, e)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        if TABLE not in tables:
            if tables:
                raise StoreError(
                    f"{path}: has no {TABLE} table (it holds {', '.join(sorted(tables))}); "
                    f"is db_path pointing at the right file?"
                )
            with connection:
                connection.execute(CREATE_TABLE)
            log.info("Created the {table} table in new database {path}", table=TABLE, path=path)
        present = {row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})")}
        missing = [name for name in COLUMN_NAMES if name not in present]
        if missing:
            raise StoreError(
                f"{path}: the {TABLE} table lacks the column(s) {', '.join(missing)}"
            )
        connection.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
    except sqlite3.Error as e:
        raise _describe(path, e)
    finally:
        connection.close()


def read_catalog(cursor_or_connection, path="database"):
    """
    Read every row into a :class:`Catalog`, skipping unusable rows with one
    warning each.  Rows a provider sync owns get their account (and the
    catalog's ``owners`` say which provider and how they were matched).
    Runs in the database thread (or directly, in tools).
    """
    candidates = []
    skipped = []
    owners = read_owners(cursor_or_connection)
    for row in cursor_or_connection.execute(SELECT_ALL).fetchall():
        rowid = row[0]
        values = dict(zip(COLUMN_NAMES, row[1:]))
        owner = owners.get(rowid)
        try:
            candidates.append(candidate_from_row(rowid, values, owner[1] if owner else None))
        except BadRow as e:
            name = values.get("Stream-name") or "unnamed"
            skipped.append((rowid, str(e)))
            log.warn(
                "Skipping row {rowid} ({name!r}) of {path}: {reason}",
                rowid=rowid,
                name=name,
                path=path,
                reason=str(e),
            )
    return Catalog.build(candidates, skipped, owners)


class ChannelStore(Service):
    """
    The channel table: holds the in-memory :class:`Catalog` and reloads it.

    The connection pool is made in ``startService`` and closed in
    ``stopService``, so building the service tree opens nothing.
    """

    name = "store"

    def __init__(self, path):
        self.path = path
        self.catalog = Catalog.build([])
        self._pool = None
        self._reload_listeners = []

    def add_reload_listener(self, listener):
        """
        Call ``listener(catalog)`` after every successful reload of the
        table (``/refresh_db_cache``, a provider sync).  A listener that
        raises is logged and the others still run.
        """
        self._reload_listeners.append(listener)

    def _connect(self):
        return adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            check_same_thread=False,
            timeout=LOCK_WAIT_SECONDS,
            cp_min=1,
            cp_max=1,
        )

    def startService(self):
        """
        Open the pool and load the table; the first load's failure is logged,
        leaving an empty catalog rather than a dead daemon.
        """
        super().startService()
        self._pool = self._connect()
        d = self.refresh()
        d.addErrback(lambda f: log.error("{error}", error=f.getErrorMessage()))
        return d

    def stopService(self):
        """
        Close the database pool.
        """
        super().stopService()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    @defer.inlineCallbacks
    def refresh(self):
        """
        Reload the table into memory and return the new :class:`Catalog`.

        Streams already playing keep the candidates they were started with.

        :raises StoreError: when the database cannot be read.
        """
        if self._pool is None:
            raise StoreError(f"{self.path}: the database is not open")
        try:
            catalog = yield self._pool.runInteraction(read_catalog, self.path)
        except sqlite3.Error as e:
            raise _describe(self.path, e)
        self.catalog = catalog
        for listener in list(self._reload_listeners):
            try:
                listener(catalog)
            except Exception:
                log.failure("Telling {listener!r} about the reloaded catalog", listener=listener)
        log.info(
            "Loaded {channels} channels ({streams} streams, {skipped} rows skipped) from {path}",
            channels=len(catalog.channels),
            streams=len(catalog.candidates),
            skipped=len(catalog.skipped),
            path=self.path,
        )
        return catalog

    def run_interaction(self, function, *args, **kwargs):
        """
        Run ``function(cursor, ...)`` in the database thread as one transaction.
        """
        if self._pool is None:
            return defer.fail(StoreError(f"{self.path}: the database is not open"))
        return self._pool.runInteraction(function, *args, **kwargs)
