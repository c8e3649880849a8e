"""
The provider bookkeeping kept beside ``LiveStreams`` in the same SQLite file,
and the database side of a sync.

``LiveStreams`` keeps exactly its original columns.  Which rows a provider
sync owns lives in a side table of ours, created on the first sync:

``ProviderStreams``
    one line per owned row: ``row`` (the ``LiveStreams`` rowid),
    ``provider`` (its name, the rows' ``Source``), ``account`` (which of the
    provider's accounts), ``stream_key`` (the provider's stream id or URL,
    see :func:`streamproxy.m3u_parser.stream_key`), ``url`` (the URL the
    sync last wrote) and ``matched`` (how its channel was found).
``ProviderChannels``
    ``(provider, match_key) -> channel_id`` for channels a provider's
    streams created, so a stream that vanishes and comes back gets its
    number again.

A line whose row is gone, or whose row's ``stream-url`` is no longer the URL
the sync wrote (another tool changed or reused it), is dropped and the row
left alone: rows no provider owns are never touched.

Everything here runs in the database thread (``run_interaction``) or, for
``import-m3u``, on a plain ``sqlite3`` connection.
"""

from .channels import normalize_channel_id
from .matching import SYNCED_COLUMNS, ChannelIndex, OwnedRow, plan_sync, stored_channel_id

TABLE = "LiveStreams"
OWNERS = "ProviderStreams"
ASSIGNMENTS = "ProviderChannels"

CREATE_OWNERS = (
    f'CREATE TABLE IF NOT EXISTS "{OWNERS}" ('
    '"row" INTEGER PRIMARY KEY, "provider" TEXT NOT NULL, "account" TEXT NOT NULL, '
    '"stream_key" TEXT NOT NULL, "url" TEXT NOT NULL, "matched" TEXT NOT NULL DEFAULT \'\')'
)
CREATE_OWNERS_INDEX = (
    f'CREATE INDEX IF NOT EXISTS "{OWNERS}_account" ON "{OWNERS}" ("provider", "account")'
)
CREATE_ASSIGNMENTS = (
    f'CREATE TABLE IF NOT EXISTS "{ASSIGNMENTS}" ('
    '"provider" TEXT NOT NULL, "match_key" TEXT NOT NULL, "channel_id" TEXT NOT NULL, '
    'PRIMARY KEY ("provider", "match_key"))'
)

_QUOTED_SYNCED = ", ".join(f'"{name}"' for name in SYNCED_COLUMNS)
_PREFIXED_SYNCED = ", ".join(f'l."{name}"' for name in SYNCED_COLUMNS)
_INSERT_ROW = 'INSERT INTO {} ("Channel-id", {}, "Stream-status", "Uptime", "Downtime") VALUES ({})'.format(
    TABLE, _QUOTED_SYNCED, ", ".join("?" for _ in range(len(SYNCED_COLUMNS) + 4))
)
_UPDATE_ROW = "UPDATE {} SET {} WHERE rowid = ?".format(
    TABLE, ", ".join(f'"{name}" = ?' for name in SYNCED_COLUMNS)
)
_URL_POSITION = SYNCED_COLUMNS.index("stream-url")

# Rows written per statement batch: bounded memory for parameter lists.
BATCH_ROWS = 5000


def ensure_tables(cursor):
    """
    Create the side tables when they are missing.
    """
    cursor.execute(CREATE_OWNERS)
    cursor.execute(CREATE_OWNERS_INDEX)
    cursor.execute(CREATE_ASSIGNMENTS)


def has_owner_table(cursor):
    """
    Whether the database has the provider side table (a database no
    provider ever synced into has not).
    """
    found = cursor.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (OWNERS,)
    ).fetchone()
    return found is not None


def begin(cursor):
    """
    Start the write transaction now, so the rows read for planning are the
    rows the plan is applied to (another writer waits for the commit).
    """
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except Exception as e:  # already in a transaction: that one holds
        if "within a transaction" not in str(e):
            raise


def read_index(cursor):
    """
    A :class:`~streamproxy.matching.ChannelIndex` of every row of the table.
    """
    return ChannelIndex.from_rows(
        cursor.execute(
            f'SELECT "Channel-id", "TV-guide-id", "Stream-name", "Uniform-name" FROM {TABLE} ORDER BY rowid'
        ).fetchall()
    )


def _stored(value):
    return "" if value is None else str(value)


def read_owned(cursor, provider, account):
    """
    ``({stream key: OwnedRow}, stale row ids)`` of the rows ``account`` of
    ``provider`` owns.  Stale lines (row gone, or its URL changed by
    someone else) are returned apart, for :func:`forget_stale`.
    """
    owned = {}
    stale = []
    query = (
        f'SELECT p."row", p."stream_key", p."url", l.rowid, l."Channel-id", {_PREFIXED_SYNCED} '
        f'FROM "{OWNERS}" p LEFT JOIN {TABLE} l ON l.rowid = p."row" '
        'WHERE p."provider" = ? AND p."account" = ?'
    )
    for line in cursor.execute(query, (provider, account)).fetchall():
        row, key, url, rowid, channel_id = line[:5]
        values = tuple(_stored(v) for v in line[5:])
        if rowid is None or values[_URL_POSITION] != url:
            stale.append(row)
            continue
        try:
            channel = normalize_channel_id(channel_id)
        except ValueError:
            channel = str(channel_id)
        owned[key] = OwnedRow(rowid, channel, values)
    return owned, stale


def forget_stale(cursor, rows):
    """
    Drop the bookkeeping lines of ``rows`` (their rows are not ours any more).
    """
    for start in range(0, len(rows), BATCH_ROWS):
        cursor.executemany(
            f'DELETE FROM "{OWNERS}" WHERE "row" = ?', [(r,) for r in rows[start : start + BATCH_ROWS]]
        )


def read_remembered(cursor, provider):
    """
    ``{match key: channel id}`` of the channels ``provider``'s streams created.
    """
    return dict(
        cursor.execute(
            f'SELECT "match_key", "channel_id" FROM "{ASSIGNMENTS}" WHERE "provider" = ?', (provider,)
        ).fetchall()
    )


def apply_plan(cursor, plan, provider=None, account=None, after_batch=None, batch_rows=BATCH_ROWS):
    """
    Write ``plan``: insert, update and delete rows of ``LiveStreams`` and,
    with a ``provider`` and ``account``, keep the side tables in step.
    Statements go in batches of ``batch_rows``; ``after_batch(done)``, when
    given, is called after each batch with the number of rows written so far
    (``import-m3u`` commits and shows its progress there; a provider sync is
    one transaction and passes none).
    """
    owned = provider is not None
    done = 0

    def batch_written(size):
        nonlocal done
        done += size
        if after_batch is not None:
            after_batch(done)

    for start in range(0, len(plan.inserts), batch_rows):
        batch = plan.inserts[start : start + batch_rows]
        lines = []
        for insert in batch:
            cursor.execute(
                _INSERT_ROW,
                (stored_channel_id(insert.channel_id), *insert.values, "unknown", 0, 0),
            )
            if owned:
                lines.append(
                    (cursor.lastrowid, provider, account, insert.key, insert.values[_URL_POSITION], insert.matched)
                )
        if lines:
            cursor.executemany(
                f'INSERT OR REPLACE INTO "{OWNERS}" ("row", "provider", "account", "stream_key", "url", "matched") '
                "VALUES (?, ?, ?, ?, ?, ?)",
                lines,
            )
        batch_written(len(batch))
    for start in range(0, len(plan.updates), batch_rows):
        batch = plan.updates[start : start + batch_rows]
        cursor.executemany(_UPDATE_ROW, [(*values, rowid) for rowid, values in batch])
        if owned:
            cursor.executemany(
                f'UPDATE "{OWNERS}" SET "url" = ? WHERE "row" = ?',
                [(values[_URL_POSITION], rowid) for rowid, values in batch],
            )
        batch_written(len(batch))
    for start in range(0, len(plan.removes), batch_rows):
        batch = [(rowid,) for rowid in plan.removes[start : start + batch_rows]]
        cursor.executemany(f"DELETE FROM {TABLE} WHERE rowid = ?", batch)
        if owned:
            cursor.executemany(f'DELETE FROM "{OWNERS}" WHERE "row" = ?', batch)
        batch_written(len(batch))
    if owned and plan.remembered:
        cursor.executemany(
            f'INSERT OR REPLACE INTO "{ASSIGNMENTS}" ("provider", "match_key", "channel_id") VALUES (?, ?, ?)',
            [(provider, key, channel_id) for key, channel_id in plan.remembered.items()],
        )


def sync_accounts(cursor, provider, quality_playlists, results):
    """
    Apply the fetched streams of one provider's accounts as one transaction.

    ``results`` is a list of ``(account, entries)`` for the accounts whose
    fetch succeeded (an account that failed is not listed, so its rows
    stay); ``quality_playlists`` maps each account to its ``(quality,
    playlist)``.  Accounts are planned one after the other over one channel
    index, so a second account's copy of a channel joins the first's.

    :return: ``{account: counts}`` (see :attr:`SyncPlan.counts`).
    """
    begin(cursor)
    ensure_tables(cursor)
    index = read_index(cursor)
    remembered = read_remembered(cursor, provider)
    counts = {}
    for account, entries in results:
        owned, stale = read_owned(cursor, provider, account)
        forget_stale(cursor, stale)
        quality, playlist = quality_playlists[account]
        plan = plan_sync(entries, owned, index, provider, quality, playlist, remembered)
        apply_plan(cursor, plan, provider, account)
        remembered.update(plan.remembered)
        counts[account] = dict(plan.counts, rows=len(entries))
    return counts


def read_owners(cursor):
    """
    ``{rowid: (provider, account, matched)}`` of the rows a provider owns
    (their URL still the one the sync wrote); empty when no provider ever
    synced into this database.
    """
    if not has_owner_table(cursor):
        return {}
    return {
        row: (provider, account, matched)
        for row, provider, account, matched in cursor.execute(
            f'SELECT p."row", p."provider", p."account", p."matched" FROM "{OWNERS}" p '
            f'JOIN {TABLE} l ON l.rowid = p."row" AND l."stream-url" = p."url"'
        ).fetchall()
    }


def import_rows(connection, entries, source, quality, playlist, batch_rows=BATCH_ROWS, progress=None):
    """
    ``import-m3u``: add ``entries`` (keyed by their whole URL) to the table as
    rows of ``source``, updating rows of that source with the same URL and
    removing nothing.  These rows belong to no provider.  Written in batches
    of ``batch_rows``, each committed on its own (an interrupted import
    keeps what it wrote; importing again completes it); ``progress(done,
    total)`` is called after each with the rows written so far and the rows
    to write (added and updated; unchanged ones need no write).

    :return: ``(added, updated, unchanged)``.
    """
    owned = {}
    select = f'SELECT rowid, "Channel-id", {_QUOTED_SYNCED} FROM {TABLE} WHERE "Source" = ? ORDER BY rowid'
    for line in connection.execute(select, (source,)):
        rowid, channel_id = line[:2]
        values = tuple(_stored(v) for v in line[2:])
        try:
            channel = normalize_channel_id(channel_id)
        except ValueError:
            continue
        owned.setdefault("url:" + values[_URL_POSITION], OwnedRow(rowid, channel, values))
    # The channel index (every row's names normalized) is only needed for
    # streams without a row yet; importing a file again needs none.
    if any(entry.key not in owned for entry in entries):
        index = read_index(connection)
    else:
        index = ChannelIndex()
    plan = plan_sync(entries, owned, index, source, quality, playlist, remove_missing=False)
    total = len(plan.inserts) + len(plan.updates)

    def batch_done(done):
        connection.commit()
        if progress is not None:
            progress(done, total)

    apply_plan(connection, plan, after_batch=batch_done, batch_rows=batch_rows)
    connection.commit()
    return len(plan.inserts), len(plan.updates), plan.unchanged
