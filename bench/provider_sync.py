"""
How long a provider sync of a 50,000-entry playlist takes, and the memory
it needs.

A provider on 127.0.0.1 (in this process) serves one M3U playlist of
50,000 channels with realistic metadata; a real ChannelStore (SQLite through
adbapi) holding 2,000 rows of another source, the real HTTP client and the
real ProviderSync then sync it three times: the first sync (every row
added), a second with nothing changed, and a third after the provider rotated
every URL (every row updated).  Each time covers fetching, parsing,
matching, the transaction and the catalog reload.  Then ``import-m3u``'s
shared code imports the same playlist into a fresh database.

    python bench/provider_sync.py            (from the repository root)
"""

import os
import resource
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

ENTRIES = 50_000
TARGET_SECONDS = 10.0
GROUPS = ("News", "Sports", "Movies", "Kids", "Documentary", "Music", "Entertainment", "Local")


def playlist(generation):
    """
    The provider's playlist as bytes; ``generation`` is the rotating part
    of every stream URL.
    """
    lines = ["#EXTM3U"]
    for n in range(1, ENTRIES + 1):
        group = GROUPS[n % len(GROUPS)]
        name = f"{group} Channel {n}"
        lines.append(
            f'#EXTINF:-1 tvg-id="ch{n}.bench" tvg-name="{name}" tvg-chno="{n}" '
            f'tvg-logo="http://logos.bench/{n}.png" group-title="{group}",US: {name} HD'
        )
        lines.append(f"http://streams.bench:8080/live/benchuser/tok{generation}/{100000 + n}.ts")
    return ("\n".join(lines) + "\n").encode()


def peak_rss_mb():
    """
    The process's peak resident memory so far, in MB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def main(reactor, scratch):
    """
    Serve the playlist, sync it three times, import it once; print figures.
    """
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    from streamproxy.config import parse_config
    from streamproxy.providers import ProviderSync
    from streamproxy.slots import SourceSlots
    from streamproxy.store import ChannelStore, prepare_database
    from streamproxy.tap import _http_client

    bodies = {1: playlist(1), 2: playlist(2)}
    served = {"generation": 1}

    class Playlist(Resource):
        isLeaf = True

        def render_GET(self, request):
            request.setHeader(b"content-type", b"audio/x-mpegurl")
            return bodies[served["generation"]]

    class QuietSite(Site):
        def log(self, request):
            pass

    listener = reactor.listenTCP(0, QuietSite(Playlist()), interface="127.0.0.1")
    url = f"http://127.0.0.1:{listener.getHost().port}/get.php?username=benchuser&password=benchpass"
    db = os.path.join(scratch.sub("db"), "streams.db")
    prepare_database(db)
    connection = sqlite3.connect(db)
    with connection:
        connection.executemany(
            'INSERT INTO LiveStreams ("Channel-id", "Stream-name", "stream-url", "Source", "M3U", "TV-guide-id") '
            "VALUES (?, ?, ?, 'other', 'main', ?)",
            [(n, f"Other {n}", f"http://other.bench/{n}.ts", f"ch{n}.bench" if n % 2 else "") for n in range(1, 2001)],
        )
    connection.close()
    config = parse_config({"db_path": db, "providers": [{"name": "bench", "m3u_url": url}]})
    store = ChannelStore(db)
    await store.startService()
    sync = ProviderSync(config.providers, store, SourceSlots({}), _http_client(reactor), reactor=reactor)
    baseline = peak_rss_mb()
    print(f"   playlist {len(bodies[1]) / 1e6:.1f} MB, {ENTRIES} entries; process peak RSS before syncing "
          f"{baseline:.0f} MB (both playlist bodies held by the bench's provider)")
    results = []
    for label, generation in (("first sync (all added)", 1), ("unchanged", 1), ("rotated URLs (all updated)", 2)):
        served["generation"] = generation
        started = time.perf_counter()
        status = await sync.sync("bench")
        seconds = time.perf_counter() - started
        last = status["last_sync"]
        if last["result"] != "ok":
            raise RuntimeError(f"sync failed: {last}")
        results.append(seconds)
        verdict = "OK" if seconds < TARGET_SECONDS else "MISSED"
        print(
            f"   {label}: {seconds:.2f} s, {ENTRIES / seconds:,.0f} entries/s "
            f"(+{last['added']} ~{last['updated']} -{last['removed']} ={last['unchanged']}); "
            f"catalog {len(store.catalog.candidates)} streams; peak RSS {peak_rss_mb():.0f} MB "
            f"[{verdict}: target under {TARGET_SECONDS:g} s]"
        )
    # ChannelStore.stopService closes its pool at once and returns None.
    store.stopService()
    await listener.stopListening()
    print(f"   peak memory of the syncs: {peak_rss_mb() - baseline:.0f} MB above the {baseline:.0f} MB before "
          f"(process peak {peak_rss_mb():.0f} MB)")

    from streamproxy.m3u_import import import_entries, parse_m3u

    fresh = os.path.join(scratch.sub("import"), "streams.db")
    prepare_database(fresh)
    connection = sqlite3.connect(fresh)
    started = time.perf_counter()
    entries = parse_m3u(bodies[1].decode())
    result = import_entries(connection, entries, "bench", "1", "main")
    seconds = time.perf_counter() - started
    connection.close()
    print(f"   import-m3u (shared parser and matcher) of the same playlist: {seconds:.2f} s, "
          f"{ENTRIES / seconds:,.0f} entries/s ({result.added} added)")
    return results


def run():
    _common.header(
        "provider sync",
        [f"a {ENTRIES:,}-entry M3U provider synced from 127.0.0.1: fetch, parse, match, one transaction, "
         "catalog reload", "entries per second and peak memory (RSS)"],
    )
    events = _common.quiet_twisted_logs()
    scratch = _common.Scratch("providers")
    from twisted.internet import defer

    try:
        _common.react(lambda reactor: defer.ensureDeferred(main(reactor, scratch)), events)
    finally:
        scratch.cleanup()


if __name__ == "__main__":
    run()
