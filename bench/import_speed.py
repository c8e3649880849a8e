"""
How fast ``python -m streamproxy import-m3u`` fills the table.

A provider playlist of 10,000 and then 100,000 entries (Xtream-style URLs,
full ``tvg-*`` attributes, one in fifty a channel the table already has
under another provider) is imported into a fresh database holding a second
provider's 10,000 rows, through the command's own ``main``; then the
100,000 again, which leaves every row unchanged (compared, not rewritten),
and once more with a new logo on every entry, which updates every row.  Each figure is entries per second
over the whole command (reading, parsing, matching, writing).

    python bench/import_speed.py            (from the repository root)
"""

import io
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

SIZES = (10_000, 100_000)
TARGET_SECONDS_100K = 30.0
OTHER_PROVIDER_ROWS = 10_000
GROUPS = ("News", "Sports", "Movies", "Kids", "Music", "Local")


def playlist(count, host="a.example.net", logos="logos.example.com"):
    """
    The text of a provider playlist of ``count`` entries, logos on ``logos``.
    """
    lines = ["#EXTM3U"]
    for number in range(1, count + 1):
        group = GROUPS[number % len(GROUPS)]
        # One in fifty is a channel the other provider has too (same tvg-id).
        guide = f"shared{number}.us" if number % 50 == 0 else f"ch{number}.a"
        lines.append(
            f'#EXTINF:-1 tvg-id="{guide}" tvg-name="{group} {number} HD" '
            f'tvg-logo="https://{logos}/{number}.png" group-title="{group}" '
            f'tvg-chno="{number}",{group} Channel {number}'
        )
        lines.append(f"http://{host}:8080/live/user7/secret11/{number}.ts")
    return "\n".join(lines) + "\n"


def seed(db):
    """
    A database holding another provider's rows, as a real table would.
    """
    from streamproxy.store import prepare_database

    prepare_database(db)
    connection = sqlite3.connect(db)
    with connection:
        connection.executemany(
            'INSERT INTO LiveStreams ("Channel-id", "Stream-name", "stream-url", "Source", '
            '"Stream-quality", "M3U", "TV-guide-id") VALUES (?, ?, ?, ?, ?, ?, ?)',
            [
                (n, f"Channel {n}", f"http://b.example.org/live/u/p/{n}.ts", "provider_b", "2", "main",
                 f"shared{n}.us" if n % 50 == 0 else f"ch{n}.b")
                for n in range(1, OTHER_PROVIDER_ROWS + 1)
            ],
        )
    connection.close()


def timed_import(path, db):
    """
    Seconds one ``import-m3u`` of ``path`` into ``db`` takes, and its summary line.
    """
    from streamproxy.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    status = main(["import-m3u", path, "--source", "provider_a", "--m3u", "main", "--db", db],
                  out=out, err=err)
    elapsed = time.perf_counter() - started
    if status != 0:
        raise RuntimeError(f"import-m3u failed: {err.getvalue().strip()}")
    return elapsed, out.getvalue().strip().splitlines()[0]


def main():
    """
    Print the header and one line per figure.
    """
    _common.header(
        "import_speed: python -m streamproxy import-m3u on large provider playlists",
        [f"playlists of {', '.join(f'{n:,}' for n in SIZES)} entries into a table holding "
         f"{OTHER_PROVIDER_ROWS:,} rows of another provider; then the largest again (all unchanged) "
         f"and with new logos (all updated)",
         f"target: {SIZES[-1]:,} entries in under {TARGET_SECONDS_100K:.0f} s"],
    )
    scratch = _common.Scratch("import")
    try:
        for count in SIZES:
            path = os.path.join(scratch.path, f"provider_{count}.m3u")
            with open(path, "w", encoding="utf-8") as f:
                f.write(playlist(count))
            db = os.path.join(scratch.path, f"streams_{count}.db")
            seed(db)
            elapsed, line = timed_import(path, db)
            verdict = ""
            if count == SIZES[-1]:
                verdict = " -> OK" if elapsed < TARGET_SECONDS_100K else " -> MISSED"
            print(f"{count:>7,} entries (new): {elapsed:6.2f} s, {count / elapsed:>9,.0f} entries/s{verdict}")
            print(f"          {line.split(': ', 1)[1].split(' in ')[0]}")
            sys.stdout.flush()
        elapsed, line = timed_import(path, db)
        print(f"{SIZES[-1]:>7,} entries (again): {elapsed:6.2f} s, {SIZES[-1] / elapsed:>9,.0f} entries/s")
        print(f"          {line.split(': ', 1)[1].split(' in ')[0]}")
        with open(path, "w", encoding="utf-8") as f:
            f.write(playlist(SIZES[-1], logos="cdn.logos.example.com"))
        elapsed, line = timed_import(path, db)
        print(f"{SIZES[-1]:>7,} entries (new logos): {elapsed:6.2f} s, {SIZES[-1] / elapsed:>9,.0f} entries/s")
        print(f"          {line.split(': ', 1)[1].split(' in ')[0]}")
    finally:
        scratch.cleanup()


if __name__ == "__main__":
    main()
