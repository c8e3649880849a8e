"""
Tests of the M3U importer at scale and at its edges: linear time, batched
writes, progress on a terminal, and provider URLs that must not be copied
(``file://``, ``concat:`` and other schemes not allowed).
"""

import io
import os
import sqlite3
import time

from twisted.trial.unittest import TestCase

from streamproxy.__main__ import main as cli_main
from streamproxy.m3u_import import import_entries, parse_m3u
from streamproxy.store import prepare_database


def playlist(count, start=1, host="a.example.net", group="News"):
    """
    A provider playlist of ``count`` entries with full attributes.
    """
    lines = ["#EXTM3U"]
    for number in range(start, start + count):
        lines.append(
            f'#EXTINF:-1 tvg-id="ch{number}.a" tvg-name="Channel {number}" '
            f'tvg-logo="https://logos.example/{number}.png" group-title="{group}" tvg-chno="{number}",'
            f"Channel {number}"
        )
        lines.append(f"http://{host}:8080/live/u/p/{number}.ts")
    return "\n".join(lines) + "\n"


class TerminalIO(io.StringIO):
    """
    A text stream that says it is a terminal.
    """

    def isatty(self):
        """
        Yes, a terminal.
        """
        return True


class ImporterTests(TestCase):
    """
    import_entries and the import-m3u command on large and hostile playlists.
    """

    def setUp(self):
        """
        A new database in a folder of the test's own.
        """
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)
        self.db = os.path.join(self.folder, "streams.db")
        prepare_database(self.db)

    def rows(self, columns='"Channel-id", "Source", "stream-url"'):
        """
        The table's rows, in rowid order.
        """
        connection = sqlite3.connect(self.db)
        try:
            return connection.execute(f"SELECT {columns} FROM LiveStreams ORDER BY rowid").fetchall()
        finally:
            connection.close()

    def write(self, name, text):
        """
        Write a file in the test folder; its path.
        """
        path = os.path.join(self.folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def test_linear(self):
        """
        20,000 entries into a table already holding 5,000 rows of another
        provider take well under the 17 s the per-entry lookups took: the
        table is read once, not once per entry.  Importing them again finds
        every row unchanged and writes nothing; importing them with a new
        group title updates every row, as fast.
        """
        connection = sqlite3.connect(self.db)
        self.addCleanup(connection.close)
        import_entries(connection, parse_m3u(playlist(5_000, host="b.example.org")), "b", "2", "main")
        entries = parse_m3u(playlist(20_000))
        started = time.perf_counter()
        result = import_entries(connection, entries, "a", "1", "main")
        elapsed = time.perf_counter() - started
        self.assertEqual((result.added, result.updated), (20_000, 0))
        self.assertLess(elapsed, 5.0)
        started = time.perf_counter()
        result = import_entries(connection, entries, "a", "1", "main")
        self.assertEqual((result.added, result.updated, result.unchanged), (0, 0, 20_000))
        self.assertLess(time.perf_counter() - started, 5.0)
        started = time.perf_counter()
        result = import_entries(connection, parse_m3u(playlist(20_000, group="Sports")), "a", "1", "main")
        self.assertEqual((result.added, result.updated, result.unchanged), (0, 20_000, 0))
        self.assertLess(time.perf_counter() - started, 5.0)
        self.assertEqual(len(self.rows()), 25_000)

    def test_written_in_batches(self):
        """
        Every batch is committed on its own and reported: an import that
        stops part-way keeps the batches it finished, and importing again
        completes it without duplicates (the rows written before are found
        unchanged).
        """
        entries = parse_m3u(playlist(250))
        seen = []

        def progress(done, total):
            seen.append((done, total))
            if done == 200:
                raise KeyboardInterrupt()

        connection = sqlite3.connect(self.db)
        self.addCleanup(connection.close)
        self.assertRaises(KeyboardInterrupt, import_entries, connection, entries, "a", "1", "main",
                          batch_rows=100, progress=progress)
        self.assertEqual(seen, [(100, 250), (200, 250)])
        self.assertEqual(len(self.rows()), 200)
        result = import_entries(connection, entries, "a", "1", "main", batch_rows=100)
        self.assertEqual((result.added, result.updated, result.unchanged), (50, 0, 200))
        self.assertEqual(len(self.rows()), 250)

    def test_same_url_twice_in_one_playlist(self):
        """
        A URL listed twice in one playlist is one row, made from the first
        listing (the shared parser's rule, as for a provider sync); the
        repeat is counted, not written.
        """
        text = ("#EXTM3U\n#EXTINF:-1,First\nhttp://a.example/1.ts\n"
                "#EXTINF:-1,Second\nhttp://a.example/1.ts\n")
        connection = sqlite3.connect(self.db)
        self.addCleanup(connection.close)
        result = import_entries(connection, parse_m3u(text), "a", "1", "main")
        self.assertEqual((result.added, result.updated, result.duplicates), (1, 0, 1))
        self.assertEqual(self.rows('"Uniform-name"'), [("First",)])

    def test_disallowed_schemes_are_skipped(self):
        """
        Local files, ffmpeg's own prefixes and schemes not allowed are not
        copied from a provider's playlist; they are counted by scheme.
        """
        text = (
            "#EXTM3U\n"
            "#EXTINF:-1,Good\nhttp://a.example/1.ts\n"
            "#EXTINF:-1,Local\nfile:///etc/passwd\n"
            "#EXTINF:-1,Concat\nconcat:http://a.example/1.ts|/etc/passwd\n"
            "#EXTINF:-1,Bare\n/var/lib/x.ts\n"
            "#EXTINF:-1,Rtmp\nrtmp://a.example/app/key\n"
            "#EXTINF:-1,Secure\nhttps://a.example/2.ts\n"
        )
        connection = sqlite3.connect(self.db)
        self.addCleanup(connection.close)
        result = import_entries(connection, parse_m3u(text), "a", "1", "main")
        self.assertEqual((result.added, result.skipped_count), (2, 4))
        self.assertEqual(dict(result.skipped), {"file": 1, "concat": 1, "no scheme": 1, "rtmp": 1})
        self.assertEqual([url for _, _, url in self.rows()], ["http://a.example/1.ts", "https://a.example/2.ts"])
        result = import_entries(connection, parse_m3u(text), "a", "1", "main",
                                allowed_schemes=("http", "https", "rtmp"))
        self.assertEqual((result.added, result.updated, result.unchanged, result.skipped_count), (1, 0, 2, 3))

    def test_command_reports_skips_and_reads_the_key(self):
        """
        The command says how many entries it skipped and why; with
        ``--config`` it takes allowed_url_schemes from the file.
        """
        path = self.write("p.m3u", "#EXTM3U\n#EXTINF:-1,A\nhttp://a.example/1.ts\n"
                                   "#EXTINF:-1,B\nfile:///etc/passwd\n#EXTINF:-1,C\nrtmp://a.example/app/k\n")
        out = io.StringIO()
        self.assertEqual(cli_main(["import-m3u", path, "--source", "a", "--db", self.db], out=out), 0)
        last = out.getvalue().splitlines()[-1]
        self.assertIn("2 entries skipped", last)
        self.assertIn("file: 1, rtmp: 1", last)
        self.assertIn("allowed_url_schemes", last)
        config = self.write("config.yaml", f"db_path: {self.db}\nallowed_url_schemes: [http, rtmp]\n")
        out = io.StringIO()
        self.assertEqual(cli_main(["import-m3u", path, "--source", "a", "--config", config], out=out), 0)
        self.assertIn("1 streams added, 0 updated, 1 unchanged", out.getvalue())
        self.assertIn("1 entries skipped", out.getvalue())
        self.assertEqual(len(self.rows()), 2)

    def test_progress_on_a_terminal(self):
        """
        On a terminal the command shows its progress on one line of
        standard error, rewritten in place and blanked at the end; piped,
        it prints nothing there.
        """
        path = self.write("p.m3u", playlist(12_000))
        err = TerminalIO()
        self.assertEqual(cli_main(["import-m3u", path, "--source", "a", "--db", self.db],
                                  out=io.StringIO(), err=err), 0)
        text = err.getvalue()
        self.assertIn("\r", text)
        self.assertIn("5,000 of 12,000 entries written", text)
        self.assertIn("12,000 of 12,000 entries written", text)
        self.assertNotIn("\n", text)
        self.assertTrue(text.endswith("\r"))
        err = io.StringIO()
        self.assertEqual(cli_main(["import-m3u", path, "--source", "a", "--db", self.db],
                                  out=io.StringIO(), err=err), 0)
        self.assertEqual(err.getvalue(), "")
