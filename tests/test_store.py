"""
Tests for the SQLite channel store against real temporary database files.
"""

import os
import sqlite3

from twisted.internet import defer
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from streamproxy.channels import COLUMNS
from streamproxy.store import ChannelStore, StoreError, prepare_database

from .helpers import make_database, row


class PrepareDatabaseTests(TestCase):
    """
    The start-up check of the database file.
    """

    def test_new_file_gets_the_table(self):
        """
        A database file that does not exist yet is created with the
        LiveStreams table, with the original columns and types.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        prepare_database(path)
        connection = sqlite3.connect(path)
        info = [(r[1], r[2]) for r in connection.execute("PRAGMA table_info(LiveStreams)")]
        connection.close()
        self.assertEqual(info, list(COLUMNS))

    def test_old_style_database_is_used_unchanged(self):
        """
        A database made by the original system passes and is not modified.
        """
        path = make_database(
            os.path.abspath(self.mktemp()), [row(5, "http://127.0.0.1:1/5.ts")], old_style=True
        )
        with open(path, "rb") as f:
            before = f.read()
        prepare_database(path)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)

    def test_not_sqlite(self):
        """
        A file that is not SQLite gives an error naming the file.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("this is not a database, just some text that is long enough " * 20)
        with self.assertRaises(StoreError) as caught:
            prepare_database(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("not an SQLite database", str(caught.exception))

    def test_missing_table(self):
        """
        A database holding other tables but no LiveStreams is refused (it
        is probably the wrong file) and left alone.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        connection = sqlite3.connect(path)
        connection.execute("CREATE TABLE other (x)")
        connection.commit()
        connection.close()
        with self.assertRaises(StoreError) as caught:
            prepare_database(path)
        self.assertIn("has no LiveStreams table", str(caught.exception))
        self.assertIn(path, str(caught.exception))

    def test_missing_column(self):
        """
        A LiveStreams table without one of the original columns is named.
        """
        path = os.path.abspath(self.mktemp())
        os.makedirs(os.path.dirname(path), exist_ok=True)
        connection = sqlite3.connect(path)
        connection.execute('CREATE TABLE LiveStreams ("Channel-id" INTEGER, "stream-url" TEXT)')
        connection.commit()
        connection.close()
        with self.assertRaises(StoreError) as caught:
            prepare_database(path)
        self.assertIn("Stream-name", str(caught.exception))

    def test_locked(self):
        """
        A database locked by another program gives a clear error, not a hang.
        """
        path = make_database(os.path.abspath(self.mktemp()))
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        self.addCleanup(holder.close)
        self.patch(__import__("streamproxy.store").store, "LOCK_WAIT_SECONDS", 0.1)
        with self.assertRaises(StoreError) as caught:
            prepare_database(path)
        self.assertIn("locked", str(caught.exception))

    def test_missing_folder(self):
        """
        A db_path in a folder that does not exist is named.
        """
        with self.assertRaises(StoreError) as caught:
            prepare_database("/nonexistent-folder/streams.db")
        self.assertIn("/nonexistent-folder", str(caught.exception))


class ChannelStoreTests(TestCase):
    """
    Loading rows through adbapi into the in-memory catalog.
    """

    def start(self, path):
        store = ChannelStore(path)
        d = store.startService()
        self.addCleanup(store.stopService)
        return d.addCallback(lambda _: store)

    @defer.inlineCallbacks
    def test_loads_and_groups_rows(self):
        """
        Rows sharing a Channel-id become one channel with several candidates;
        playlists group channels by the M3U column with or without ``.m3u``.
        """
        path = make_database(
            os.path.abspath(self.mktemp()),
            [
                row(7, "http://127.0.0.1:1/a7.ts", source="a", m3u="main.m3u"),
                row(7, "http://127.0.0.1:1/b7.ts", source="b", m3u="main"),
                row("8", "http://127.0.0.1:1/a8.ts", source="a", m3u="sports"),
                row(7.1, "http://127.0.0.1:1/a71.ts", source="a", m3u="main"),
            ],
            old_style=True,
        )
        store = yield self.start(path)
        catalog = store.catalog
        self.assertEqual(sorted(catalog.channels), ["7", "7.1", "8"])
        self.assertEqual([c.source for c in catalog.channels["7"]], ["a", "b"])
        self.assertEqual(list(catalog.find_playlist("main")), ["7", "7.1"])
        self.assertEqual(list(catalog.find_playlist("main.m3u")), ["7", "7.1"])
        self.assertEqual(list(catalog.find_playlist("sports")), ["8"])
        self.assertIsNone(catalog.find_playlist("nope"))

    @defer.inlineCallbacks
    def test_bad_rows_are_skipped_with_a_warning(self):
        """
        Rows without a URL or with a non-numeric Channel-id are skipped, each
        with one warning naming the row, and the rest load.
        """
        path = make_database(
            os.path.abspath(self.mktemp()),
            [
                row(1, "http://127.0.0.1:1/1.ts"),
                row(2, None, name="No URL"),
                row("abc", "http://127.0.0.1:1/x.ts", name="Bad id"),
                row(None, "http://127.0.0.1:1/y.ts", name="No id"),
                row(3, "not a url", name="Schemeless"),
            ],
        )
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        store = yield self.start(path)
        self.assertEqual(list(store.catalog.channels), ["1"])
        reasons = dict(store.catalog.skipped)
        self.assertEqual(sorted(reasons), [2, 3, 4, 5])
        self.assertIn("stream-url is empty", reasons[2])
        self.assertIn("'abc'", reasons[3])
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 4)
        self.assertIn("Skipping row 3 ('Bad id')", warnings[1])
        self.assertIn(path, warnings[1])

    @defer.inlineCallbacks
    def test_refresh_sees_new_rows(self):
        """
        refresh() reloads the table and replaces the catalog.
        """
        path = make_database(os.path.abspath(self.mktemp()), [row(1, "http://127.0.0.1:1/1.ts")])
        store = yield self.start(path)
        connection = sqlite3.connect(path)
        with connection:
            connection.execute(
                'INSERT INTO LiveStreams ("Channel-id", "stream-url", "M3U") VALUES (2, ?, ?)',
                ("http://127.0.0.1:1/2.ts", "main"),
            )
        connection.close()
        catalog = yield store.refresh()
        self.assertEqual(sorted(catalog.channels), ["1", "2"])
        self.assertIs(store.catalog, catalog)

    @defer.inlineCallbacks
    def test_refresh_of_a_broken_database_fails_cleanly(self):
        """
        When the file turns into garbage, refresh fails with StoreError and
        the previous catalog stays in use.
        """
        path = make_database(os.path.abspath(self.mktemp()), [row(1, "http://127.0.0.1:1/1.ts")])
        store = yield self.start(path)
        before = store.catalog
        yield store.stopService()
        with open(path, "wb") as f:
            f.write(b"garbage" * 1000)
        store.startService()
        self.flushLoggedErrors()
        with self.assertRaises(StoreError):
            yield store.refresh()
        self.assertEqual(list(before.channels), ["1"])


class SchemeAndLoadTests(TestCase):
    """
    Rows whose URLs may not be played, the known URLs for log masking, and
    the first load.
    """

    @defer.inlineCallbacks
    def test_disallowed_schemes_skipped_with_one_warning(self):
        """
        Rows with file://, concat: or a scheme not in allowed_url_schemes
        are skipped (never candidates, so never given to ffmpeg) with one
        warning for all of them, naming the first few and the key.
        """
        path = make_database(
            os.path.abspath(self.mktemp()),
            [row(1, "http://127.0.0.1:1/1.ts"), row(2, "file:///etc/passwd", name="Local")]
            + [row(3, f"concat:/etc/passwd|/etc/x{n}", name=f"Concat {n}") for n in range(6)]
            + [row(4, "rtmp://127.0.0.1/app/key", name="Rtmp")],
        )
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        store = ChannelStore(path)
        yield store.startService()
        self.addCleanup(store.stopService)
        self.assertEqual(list(store.catalog.channels), ["1"])
        self.assertEqual(len(store.catalog.skipped), 8)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("Skipping 8 rows of", warnings[0])
        self.assertIn("row 2 ('Local', file:)", warnings[0])
        self.assertIn("and 3 more", warnings[0])
        self.assertIn("allowed_url_schemes (http, https)", warnings[0])

    @defer.inlineCallbacks
    def test_other_schemes_when_allowed(self):
        """
        With rtmp in allowed_url_schemes, rtmp rows are candidates.
        """
        path = make_database(os.path.abspath(self.mktemp()), [row(4, "rtmp://127.0.0.1/app/key")])
        store = ChannelStore(path, ("http", "https", "rtmp"))
        yield store.startService()
        self.addCleanup(store.stopService)
        self.assertEqual(list(store.catalog.channels), ["4"])

    @defer.inlineCallbacks
    def test_known_urls(self):
        """
        Each load hands the stream URLs to the known-URL table that log
        masking uses.
        """
        from streamproxy.urls import KnownUrls

        known = KnownUrls()
        url = "http://127.0.0.1:1/streams/alice-hunter2/1.ts"
        path = make_database(os.path.abspath(self.mktemp()), [row(1, url)])
        store = ChannelStore(path, known_urls=known)
        yield store.startService()
        self.addCleanup(store.stopService)
        self.assertIn(url, known)

    @defer.inlineCallbacks
    def test_first_load(self):
        """
        ``loaded`` turns true when the first load finishes; waiters fire
        then (at once afterwards); a failed first load says why.
        """
        path = make_database(os.path.abspath(self.mktemp()), [row(1, "http://127.0.0.1:1/1.ts")])
        store = ChannelStore(path)
        self.assertFalse(store.loaded)
        waiting = store.when_loaded()
        self.assertNoResult(waiting)
        cancelled = store.when_loaded()
        cancelled.cancel()
        self.failureResultOf(cancelled, defer.CancelledError)
        yield store.startService()
        self.addCleanup(store.stopService)
        self.assertTrue(store.loaded)
        catalog = self.successResultOf(waiting)
        self.assertEqual(list(catalog.channels), ["1"])
        self.assertIsNone(store.load_error)
        self.successResultOf(store.when_loaded())

        broken = os.path.abspath(self.mktemp())
        with open(broken, "wb") as f:
            f.write(b"garbage" * 1000)
        store = ChannelStore(broken)
        waiting = store.when_loaded()
        yield store.startService()
        self.addCleanup(store.stopService)
        self.flushLoggedErrors()
        self.successResultOf(waiting)
        self.assertTrue(store.loaded)
        self.assertIn("not an SQLite database", store.load_error)
