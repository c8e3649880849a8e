"""
How long serving one big M3U playlist takes.

A catalog of 20,000 channels with two candidates each (two providers,
realistic metadata) is built in memory; then ``build_m3u`` is timed on its
one playlist, then the same playlist through the real Klein resource with
``treq.testing.StubTreq`` (routing, headers, encoding; no sockets), and
finally over a real loopback socket from a real service tree whose database
holds the same 40,000 rows.

    python bench/playlist_speed.py            (from the repository root)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time  # noqa: E402

import _common  # noqa: E402  (bench/ is on the path as the script's folder)

CHANNELS = 20_000
RUNS = 20
TARGET_MS = 100.0

GROUPS = ("News", "Sports", "Movies", "Kids", "Documentary", "Music", "Entertainment",
          "Local", "Lifestyle", "International")
COUNTRIES = ("USA", "GBR", "CAN", "DEU", "FRA", "ESP", "ITA", "AUS")


def rows():
    """
    ``(rowid, row mapping)`` of every LiveStreams row: two providers per
    channel, the second in a lower quality, with logos, guide ids, health
    figures, and the odd value a real table holds (commas, quotes, gaps).
    """
    rowid = 0
    for number in range(1, CHANNELS + 1):
        group = GROUPS[number % len(GROUPS)]
        country = COUNTRIES[number % len(COUNTRIES)]
        base = f"{group} Channel {number}"
        if number % 97 == 0:
            base += ', "The" Network'  # characters the M3U writer must clean
        station = str(10_000 + number) if number % 3 else f"ch{number}.{country.lower()}"
        for source, quality, host in (("provider_a", "1", "a.example.net"),
                                      ("provider_b", "2", "b.example.org")):
            rowid += 1
            yield rowid, {
                "Channel-id": number,
                "Stream-name": f"{country}: {base} {'HD' if quality == '1' else 'SD'}",
                "stream-url": f"http://{host}:8080/live/user{number % 7}/secret{number % 11}/{rowid}.ts",
                "Source": source,
                "Stream-quality": quality,
                "M3U": "main",
                "TV-Logo": "" if (number + rowid) % 13 == 0 else
                           f"https://logos.example.com/{group.lower()}/{number}.png",
                "Group-title": group,
                "Uniform-name": base if source == "provider_a" or number % 5 else "",
                "ISO3": country,
                "TV-guide-id": station,
                "TV-guide-name": f"{base} ({country})",
                "Stream-status": ("online", "online", "buffering", "offline", "")[rowid % 5],
                "Last-checked-time": "2024-05-01 12:00:00",
                "Uptime": 86_400 - (rowid % 600),
                "Downtime": rowid % 600,
            }


def ms(seconds):
    return seconds * 1000.0


def time_runs(function, runs=RUNS):
    """
    Call ``function`` ``runs`` times (after one warm-up); the times in ms and
    the last result.
    """
    result = function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = function()
        times.append(ms(time.perf_counter() - start))
    return times, result


def verdict(median_ms):
    return "OK" if median_ms < TARGET_MS else "MISSED"


def stub_treq_figure(catalog, ranking):
    """
    The playlist through the Klein application with StubTreq.
    """
    from treq.testing import StubTreq

    from streamproxy.web import StreamProxyWeb

    class Store:
        loaded = True
        load_error = None

    store = Store()
    store.catalog = catalog
    config = _common.make_config(_SCRATCH, 9, os.path.join(_SCRATCH.path, "unused.db"))
    web = StreamProxyWeb(config, store, ranking, channels=None)
    stub = StubTreq(web.resource())

    def one():
        responses = []
        d = stub.get("http://127.0.0.1:9090/m3u/main.m3u")
        d.addCallback(lambda r: (responses.append(r.code), r)[1])
        d.addCallback(lambda r: r.content())
        d.addCallback(responses.append)
        stub.flush()
        if len(responses) != 2 or responses[0] != 200:
            raise RuntimeError(f"StubTreq answered {responses[:1]}")
        return responses[1]

    return time_runs(one)


_SCRATCH = None


def main():
    global _SCRATCH
    _common.header(
        "playlist_speed: one M3U playlist of a large channel table",
        [f"{CHANNELS:,} channels x 2 candidates (2 providers, full metadata), one playlist 'main'",
         f"{RUNS} timed runs after one warm-up; target: median well under {TARGET_MS:.0f} ms"],
    )
    _SCRATCH = _common.Scratch("playlist")
    try:
        from streamproxy.channels import Catalog, Ranking, candidate_from_row
        from streamproxy.playlists import build_m3u

        rows_list = list(rows())
        start = time.perf_counter()
        candidates = [candidate_from_row(rowid, r) for rowid, r in rows_list]
        catalog = Catalog.build(candidates)
        print(f"catalog build ({len(candidates):,} rows -> {len(catalog):,} channels): "
              f"{ms(time.perf_counter() - start):.0f} ms (once per table load)")
        ranking = Ranking(("provider_a", "provider_b"), ("1", "2", "3", "4", "5"))
        channels = catalog.find_playlist("main")

        times, text = time_runs(lambda: build_m3u(channels, ranking, "http://127.0.0.1:9090"))
        med, lo, hi = _common.summary(times)
        entries = text.count("#EXTINF")
        print(f"build_m3u: median {med:.1f} ms, max {hi:.1f} ms (min {lo:.1f}) for {entries:,} "
              f"entries, {len(text) / 1e6:.1f} MB -> {verdict(med)}")

        # Where build_m3u's time goes: ranking each channel's candidates, and
        # writing the entries (cleaning values, formatting attributes).
        from streamproxy.playlists import entry_lines

        ranked = {k: ranking.rank(v) for k, v in channels.items()}
        rank_times, _ = time_runs(lambda: [ranking.rank(v) for v in channels.values()], 5)
        line_times, _ = time_runs(
            lambda: [entry_lines(k, v, "http://127.0.0.1:9090") for k, v in ranked.items()], 5)
        print(f"  of which: ranking candidates ~{_common.summary(rank_times)[0]:.0f} ms, "
              f"entry lines ~{_common.summary(line_times)[0]:.0f} ms "
              f"(~{1000 * med / entries:.1f} us per channel)")

        times, body = stub_treq_figure(catalog, ranking)
        med, lo, hi = _common.summary(times)
        print(f"GET /m3u/main.m3u via Klein+StubTreq: median {med:.1f} ms, max {hi:.1f} ms "
              f"(min {lo:.1f}), {len(body) / 1e6:.1f} MB -> {verdict(med)}")
        sys.stdout.flush()

        # The real socket figure runs last: task.react owns the reactor.
        real_socket(rows_list)
    finally:
        _SCRATCH.cleanup()


def real_socket(rows_list):
    import treq
    from twisted.internet import defer, task

    from streamproxy.tap import build_services
    from tests.helpers import make_database

    db = os.path.join(_SCRATCH.path, "streams.db")
    start = time.perf_counter()
    make_database(db, [r for _, r in rows_list])
    print(f"(database of {len(rows_list):,} rows written in "
          f"{time.perf_counter() - start:.1f} s; not part of any figure)")
    port = _common.free_port()
    config = _common.make_config(_SCRATCH, port, db)
    _common.quiet_twisted_logs()

    @defer.inlineCallbacks
    def run(reactor):
        root, parts = build_services(config, reactor)
        t0 = time.perf_counter()
        root.startService()
        try:
            while len(parts["store"].catalog) < CHANNELS:
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("the catalog did not load within 60 s")
                yield task.deferLater(reactor, 0.005, lambda: None)
            load = time.perf_counter() - t0
            print(f"table load at start (SQLite read + catalog build, in the db thread): "
                  f"{ms(load):.0f} ms")
            url = f"http://127.0.0.1:{port}/m3u/main.m3u"
            times, body = [], b""
            for i in range(RUNS + 1):
                t1 = time.perf_counter()
                response = yield treq.get(url, persistent=False)
                body = yield response.content()
                if response.code != 200:
                    raise RuntimeError(f"GET {url} answered {response.code}")
                if i:
                    times.append(ms(time.perf_counter() - t1))
            med, lo, hi = _common.summary(times)
            print(f"GET /m3u/main.m3u over loopback TCP (twistd service tree): median {med:.1f} ms, "
                  f"max {hi:.1f} ms (min {lo:.1f}), {len(body) / 1e6:.1f} MB -> {verdict(med)}")
        finally:
            yield root.stopService()

    try:
        task.react(run)
    except SystemExit as e:
        if e.code:
            raise


if __name__ == "__main__":
    main()
