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

from .channels import COLUMNS, COLUMN_NAMES, BadRow, Catalog, DisallowedScheme, candidate_from_row
from .provider_rows import read_owners
from .urls import DEFAULT_SCHEMES, KNOWN_URLS, url_scheme

TABLE = "LiveStreams"

# Rows named in the one warning about stream URLs of schemes that are not
# allowed; the rest are counted.
NAMED_DISALLOWED_ROWS = 5

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


def read_catalog(cursor_or_connection, path="database", allowed_schemes=DEFAULT_SCHEMES):
    """
    Read every row into a :class:`Catalog`, skipping unusable rows with one
    warning each, and rows whose stream URL's scheme is not one of
    ``allowed_schemes`` with one warning for all of them.  Rows a provider
    sync owns get their account (and the catalog's ``owners`` say which
    provider and how they were matched).  Runs in the database thread (or
    directly, in tools).
    """
    candidates = []
    skipped = []
    disallowed = []
    owners = read_owners(cursor_or_connection)
    for row in cursor_or_connection.execute(SELECT_ALL).fetchall():
        rowid = row[0]
        values = dict(zip(COLUMN_NAMES, row[1:]))
        owner = owners.get(rowid)
        try:
            candidates.append(
                candidate_from_row(rowid, values, allowed_schemes, account=owner[1] if owner else None)
            )
        except DisallowedScheme as e:
            skipped.append((rowid, str(e)))
            disallowed.append((rowid, values.get("Stream-name") or "unnamed", url_scheme(values.get("stream-url"))))
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
    if disallowed:
        named = ", ".join(
            f"row {rowid} ({name!r}, {scheme}:)" for rowid, name, scheme in disallowed[:NAMED_DISALLOWED_ROWS]
        )
        more = len(disallowed) - NAMED_DISALLOWED_ROWS
        log.warn(
            "Skipping {count} rows of {path} whose stream-url scheme is not in allowed_url_schemes "
            "({allowed}): {named}{more}",
            count=len(disallowed),
            path=path,
            allowed=", ".join(allowed_schemes),
            named=named,
            more=f" and {more} more" if more > 0 else "",
        )
    return Catalog.build(candidates, skipped, owners)


class ChannelStore(Service):
    """
    The channel table: holds the in-memory :class:`Catalog` and reloads it.

    The connection pool is made in ``startService`` and closed in
    ``stopService``, so building the service tree opens nothing.

    Only rows whose stream URL's scheme is in ``allowed_schemes`` become
    candidates.  Each load's stream URLs go to ``known_urls`` (the
    process-wide :data:`~streamproxy.urls.KNOWN_URLS` by default), so that
    log text shows them only in their display form.  ``loaded`` is False
    until the first load has finished; :meth:`when_loaded` waits for it.
    """

    name = "store"

    def __init__(self, path, allowed_schemes=DEFAULT_SCHEMES, known_urls=None):
        self.path = path
        self.allowed_schemes = tuple(allowed_schemes)
        self.catalog = Catalog.build([])
        self.loaded = False
        self.load_error = None
        self._known_urls = KNOWN_URLS if known_urls is None else known_urls
        self._load_waiters = []
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
        d.addErrback(self._first_load_failed)
        d.addBoth(self._first_load_finished)
        return d

    def _first_load_failed(self, failure):
        self.load_error = failure.getErrorMessage()
        log.error("{error}", error=self.load_error)

    def _first_load_finished(self, _):
        self.loaded = True
        waiters, self._load_waiters = self._load_waiters, []
        for waiter in waiters:
            waiter.callback(self.catalog)

    def when_loaded(self):
        """
        A Deferred that fires with the catalog once the first load of the
        table has finished (at once when it has), whether it succeeded or
        not (then ``load_error`` says why).  Cancelling it only stops this
        wait.
        """
        if self.loaded:
            return defer.succeed(self.catalog)
        waiter = defer.Deferred(lambda d: self._load_waiters.remove(d) if d in self._load_waiters else None)
        self._load_waiters.append(waiter)
        return waiter

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
            catalog = yield self._pool.runInteraction(read_catalog, self.path, self.allowed_schemes)
        except sqlite3.Error as e:
            raise _describe(self.path, e)
        self._known_urls.remember(candidate.url for candidate in catalog.candidates)
        self.catalog = catalog
        self.load_error = None
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
