"""
Unit tests of provider accounts as sources: the shared M3U parser and channel
matcher, the Xtream answers, the side tables, the sync service (against the
fake provider through ``StubTreq``, time driven by a ``Clock``), the
``providers:`` configuration, and the web routes.
"""

import json
import os
import sqlite3

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from streamproxy import fetch as fetch_module, xtream
from streamproxy.channels import Catalog, Ranking
from streamproxy.config import ConfigError, Config, parse_config
from streamproxy.m3u_parser import StreamEntry, parse_m3u, stream_entries, stream_key
from streamproxy.matching import (
    BY_GUIDE_ID, BY_NAME, NEXT_FREE, PROVIDER_NUMBER, REMEMBERED, ChannelIndex, OwnedRow, normalize_name,
    plan_sync, row_values,
)
from streamproxy.provider_rows import OWNERS, read_owners, sync_accounts
from streamproxy.providers import ProviderSync, compute_limits, retry_delay, scrub, RETRY_FIRST_SECONDS
from streamproxy.slots import SourceSlots
from streamproxy.store import read_catalog
from streamproxy.urls import KnownUrls, display_url
from streamproxy.web import StreamProxyWeb

from . import fake_provider
from .fake_provider import FakeChannel, FakeProvider
from .helpers import make_database, row


def entry(key, name, url=None, guide_id="", number="", group=""):
    """
    A StreamEntry with a URL made from its key.
    """
    return StreamEntry(key=key, url=url or f"http://127.0.0.1:1/{key}.ts", name=name, guide_id=guide_id,
                       number=number, group=group)


class ParserTests(SynchronousTestCase):
    """
    The shared M3U parser and stream keys.
    """

    def test_stream_key_survives_rotation(self):
        """
        A URL whose last path component is a number is keyed by it (so a
        rotated user/password/token part keeps the key); other URLs by
        scheme, host and path without the query string.
        """
        self.assertEqual(stream_key("http://h:8080/live/u/p1/123.ts"), "id:123")
        self.assertEqual(stream_key("http://h:8080/live/u/p2/123.ts"), "id:123")
        self.assertEqual(stream_key("http://h/u/p/123"), "id:123")
        self.assertEqual(stream_key("http://h/play/abc.m3u8?token=1"), "url:http://h/play/abc.m3u8")
        self.assertEqual(stream_key("http://x:y@h/play/abc.m3u8?token=2"), "url:http://h/play/abc.m3u8")

    def test_entries_groups_and_duplicates(self):
        """
        Entries outside the wanted groups (case ignored) and repeats of a
        stream are left out and counted; attributes fill the entry.
        """
        parsed = parse_m3u(
            "#EXTM3U\n"
            '#EXTINF:-1 tvg-id="a.us" tvg-name="A" tvg-logo="http://l/a.png" group-title="News" tvg-chno="4",A HD\n'
            "http://h/live/u/p/1.ts\n"
            '#EXTINF:-1 group-title="news",A again\nhttp://h/live/u/p/1.ts\n'
            '#EXTINF:-1 group-title="Sports",B\nhttp://h/live/u/p/2.ts\n'
        )
        entries, duplicates, outside, disallowed = stream_entries(parsed, ["NEWS"])
        self.assertEqual((duplicates, outside, disallowed), (1, 1, {}))
        self.assertEqual(
            entries,
            [StreamEntry("id:1", "http://h/live/u/p/1.ts", "A HD", "a.us", "A", "http://l/a.png", "News", "4")],
        )

    def test_schemes_not_allowed_are_left_out(self):
        """
        Entries whose URL is not of an allowed_url_schemes scheme (local
        files, ffmpeg's concat:, a bare path, rtmp unless allowed) are left
        out and counted by scheme, as the table's own rows are.
        """
        parsed = parse_m3u(
            "#EXTM3U\n"
            "#EXTINF:-1,Good\nhttp://h/live/u/p/1.ts\n"
            "#EXTINF:-1,Local\nfile:///etc/passwd\n"
            "#EXTINF:-1,Concat\nconcat:http://h/live/u/p/1.ts|/etc/passwd\n"
            "#EXTINF:-1,Bare\n/var/lib/x.ts\n"
            "#EXTINF:-1,Rtmp\nrtmp://h/app/key\n"
        )
        entries, _, _, disallowed = stream_entries(parsed)
        self.assertEqual([e.url for e in entries], ["http://h/live/u/p/1.ts"])
        self.assertEqual(dict(disallowed), {"file": 1, "concat": 1, "no scheme": 1, "rtmp": 1})
        entries, _, _, disallowed = stream_entries(parsed, allowed_schemes=("http", "rtmp"))
        self.assertEqual([e.name for e in entries], ["Good", "Rtmp"])
        self.assertEqual(sum(disallowed.values()), 3)

    def test_linear(self):
        """
        Parsing 50,000 entries takes well under a second's worth of work
        per 10,000 (no quadratic step).
        """
        import time

        text = "#EXTM3U\n" + "".join(
            f'#EXTINF:-1 tvg-id="c{i}" group-title="G",Channel {i}\nhttp://h/live/u/p/{i}.ts\n' for i in range(50000)
        )
        started = time.perf_counter()
        entries, _, _, _ = stream_entries(parse_m3u(text))
        self.assertEqual(len(entries), 50000)
        self.assertLess(time.perf_counter() - started, 5.0)


class MatchingTests(SynchronousTestCase):
    """
    How a provider's stream finds its channel, and what a sync plans.
    """

    def test_normalize_name(self):
        """
        Country prefixes, quality words, punctuation, accents and case do
        not make two channels different; other words do.
        """
        for name in ("US: ABC HD", "abc", "A.B.C.", "[US] ABC FHD", "UK | abc 1080p"):
            self.assertEqual(normalize_name(name), "abc", name)
        self.assertEqual(normalize_name("Télé Québec"), "tele quebec")
        self.assertEqual(normalize_name("AT&T SportsNet"), "at and t sportsnet")
        self.assertNotEqual(normalize_name("ABC News"), normalize_name("ABC"))
        self.assertEqual(normalize_name("HD"), "hd")
        self.assertEqual(normalize_name(""), "")

    def test_rule_order(self):
        """
        Guide id first, then normalized name, then the channel remembered
        for this provider, then the provider's number when free, then the
        next free number.
        """
        index = ChannelIndex.from_rows([(7, "abc.us", "ABC", "ABC"), (9, "", "CNN", None), ("x", "", "bad", "")])
        plan = plan_sync(
            [
                entry("id:1", "Totally different", guide_id="abc.us"),
                entry("id:2", "US: CNN HD"),
                entry("id:3", "Gone and back", guide_id="gb.us"),
                entry("id:4", "Fresh", number="20"),
                entry("id:5", "Taken number", number="7"),
            ],
            {},
            index,
            "p",
            "1",
            "p",
            remembered={"guide:gb.us": "15"},
        )
        self.assertEqual(
            [(i.key, i.channel_id, i.matched) for i in plan.inserts],
            [
                ("id:1", "7", BY_GUIDE_ID),
                ("id:2", "9", BY_NAME),
                ("id:3", "15", REMEMBERED),
                ("id:4", "20", PROVIDER_NUMBER),
                ("id:5", "21", NEXT_FREE),
            ],
        )
        self.assertEqual(plan.remembered, {"name:fresh": "20", "name:taken number": "21"})

    def test_update_unchanged_remove(self):
        """
        A known key with a changed URL is an update keeping its row; an
        identical one is unchanged; a key no longer offered is removed.
        """
        old = entry("id:1", "A", url="http://h/live/u/old/1.ts")
        owned = {
            "id:1": OwnedRow(11, "5", row_values(old, "p", "1", "p")),
            "id:2": OwnedRow(12, "6", row_values(entry("id:2", "B"), "p", "1", "p")),
            "id:3": OwnedRow(13, "7", row_values(entry("id:3", "C"), "p", "1", "p")),
        }
        new = entry("id:1", "A", url="http://h/live/u/new/1.ts")
        plan = plan_sync([new, entry("id:2", "B")], owned, ChannelIndex(), "p", "1", "p")
        self.assertEqual(plan.updates, [(11, row_values(new, "p", "1", "p"))])
        self.assertEqual(plan.removes, [13])
        self.assertEqual(plan.counts, {"added": 0, "updated": 1, "removed": 1, "unchanged": 1})

    def test_second_provider_joins_first(self):
        """
        Two entries of one plan naming the same channel share it.
        """
        plan = plan_sync(
            [entry("id:1", "ABC", guide_id="abc.us"), entry("id:2", "ABC East", guide_id="abc.us"),
             entry("id:3", "abc hd")],
            {}, ChannelIndex(), "p", "1", "p",
        )
        self.assertEqual([i.channel_id for i in plan.inserts], ["1", "1", "1"])


class XtreamTests(SynchronousTestCase):
    """
    The Xtream Codes answers.
    """

    def test_account(self):
        """
        Numbers given as strings are read; auth 0 is refused with a sentence
        that holds no credential.
        """
        info = xtream.parse_account(
            {"user_info": {"auth": "1", "status": "Active", "exp_date": "1700000000", "max_connections": "3",
                           "active_cons": "1", "username": "bob", "password": "s3cret"}}
        )
        self.assertEqual(info, xtream.AccountInfo("Active", 1700000000.0, 3, 1))
        self.assertEqual(xtream.parse_account({"user_info": {"auth": 1, "exp_date": None}}).expires, None)
        with self.assertRaises(xtream.AuthRefused) as caught:
            xtream.parse_account({"user_info": {"auth": 0}})
        self.assertIn("auth 0", str(caught.exception))
        self.assertRaises(xtream.XtreamError, xtream.parse_account, [])

    def test_streams(self):
        """
        Streams become entries keyed by stream id with the category's name as
        group; URLs are ``<base>/live/U/P/<id>.ts``; bad and repeated ids and
        other groups are left out.
        """
        categories = xtream.parse_categories([{"category_id": 1, "category_name": "News"}, {"x": 1}])
        entries, unusable, outside, disallowed = xtream.stream_entries(
            [
                {"num": "3", "name": "ABC", "stream_id": "101", "stream_icon": "http://l/a.png",
                 "epg_channel_id": "abc.us", "category_id": "1"},
                {"name": "dup", "stream_id": 101, "category_id": "1"},
                {"name": "no id"},
                "junk",
                {"name": "Other", "stream_id": 102, "category_id": "2"},
            ],
            categories, "http://h:8080", "u s", "p/w", groups=["news"],
        )
        self.assertEqual((unusable, outside, disallowed), (3, 1, {}))
        self.assertEqual(
            entries,
            [StreamEntry("id:101", "http://h:8080/live/u%20s/p%2Fw/101.ts", "ABC", "abc.us", "ABC",
                         "http://l/a.png", "News", "3")],
        )

    def test_streams_of_a_scheme_not_allowed(self):
        """
        When the server's scheme is not in allowed_url_schemes, every stream
        is left out and counted under it.
        """
        streams = [{"name": "A", "stream_id": 1}, {"name": "B", "stream_id": 2}]
        entries, _, _, disallowed = xtream.stream_entries(streams, {}, "http://h:8080", "u", "p",
                                                          allowed_schemes=("https",))
        self.assertEqual((entries, dict(disallowed)), ([], {"http": 2}))
        entries, _, _, _ = xtream.stream_entries(streams, {}, "https://h", "u", "p", allowed_schemes=("https",))
        self.assertEqual([e.url for e in entries], ["https://h/live/u/p/1.ts", "https://h/live/u/p/2.ts"])

    def test_server_base(self):
        """
        A pasted ``player_api.php`` or trailing slash is dropped.
        """
        self.assertEqual(xtream.server_base("http://h:8080/player_api.php"), "http://h:8080")
        self.assertEqual(xtream.server_base("http://h:8080/"), "http://h:8080")


class HelperTests(SynchronousTestCase):
    """
    Limits, back-off, scrubbing and display URLs.
    """

    def test_limits(self):
        """
        Accounts' limits add up into their provider's; max_streams beats
        the panel's max_connections; source_limits beats both for the
        provider and drops the panel's number for its accounts.
        """
        config = parse_config({"providers": [
            {"name": "p", "m3u_url": "http://h/a", "max_streams": 2},
            {"name": "p", "xtream": {"url": "http://h", "username": "u", "password": "w"}},
            {"name": "q", "m3u_url": "http://h/b"},
            {"name": "r", "xtream": {"url": "http://h", "username": "u2", "password": "w"}},
        ]})
        limits, accounts = compute_limits(config.providers, {}, {"p#2": 3, "r#1": 4})
        self.assertEqual(limits, {"p": 5, "r": 4})
        self.assertEqual(accounts, {"p#1": 2, "p#2": 3, "r#1": 4})
        limits, accounts = compute_limits(config.providers, {"r": 9}, {"p#2": 3, "r#1": 4})
        self.assertEqual(limits, {"p": 5, "r": 9})
        self.assertEqual(accounts, {"p#1": 2, "p#2": 3})
        limits, _ = compute_limits(config.providers, {}, {})
        self.assertEqual(limits, {})

    def test_retry_delay(self):
        """
        Five minutes after a first failure, doubling, never past the schedule.
        """
        self.assertEqual(retry_delay(0, 86400), 86400)
        self.assertEqual(retry_delay(1, 86400), RETRY_FIRST_SECONDS)
        self.assertEqual(retry_delay(2, 86400), 2 * RETRY_FIRST_SECONDS)
        self.assertEqual(retry_delay(30, 86400), 86400)

    def test_scrub_and_display(self):
        """
        Known secrets and a secret URL's query values are hidden; the display
        form of a provider's own URL (urls.display_url with page_names_only)
        keeps host, port, a last path part that is a page name, and query
        names only.
        """
        secrets = ("http://h/get.php?username=bob&password=s3cret", "bob")
        self.assertEqual(scrub("bad s3cret for bob", secrets), "bad *** for ***")

        def shown(url):
            return display_url(url, page_names_only=True)

        self.assertEqual(
            shown("http://u:p@h:8080/a/b/get.php?username=x&password=y"), "http://h:8080/.../get.php?username&password"
        )
        self.assertEqual(shown("http://h"), "http://h")
        self.assertEqual(shown("http://h/get/bob/s3cret"), "http://h/.../***")
        self.assertEqual(shown("http://h/bob/s3cret/playlist.m3u"), "http://h/.../playlist.m3u")
        self.assertEqual(shown("https://[::1]:8443/get.php"), "https://[::1]:8443/get.php")
        # A stream URL's own display form shows its last part; a provider URL's does not.
        self.assertEqual(display_url("http://h/get/bob/s3cret"), "http://h/.../s3cret")

    def test_provider_urls_are_known(self):
        """
        A sync service gives its providers' playlist and API URLs to the
        known-URL table, so log text shows them only in their display form
        (exact match, whatever form the heuristics would miss).
        """
        known = KnownUrls()
        config = parse_config({"providers": [
            {"name": "p", "m3u_url": "http://h/get/bob/s3cret"},
            {"name": "q", "xtream": {"url": "http://x:8080", "username": "carol", "password": "pw9"}},
        ]})
        ProviderSync(config.providers, None, SourceSlots({}), None,
                     reactor=Clock(), known_urls=known)
        self.assertEqual(known.replace("GET http://h/get/bob/s3cret: refused"), "GET http://h/.../***: refused")
        api = "http://x:8080/player_api.php?username=carol&password=pw9&action=get_live_streams"
        self.assertEqual(known.replace(f"GET {api} failed"),
                         "GET http://x:8080/player_api.php?username&password&action failed")


class ConfigTests(SynchronousTestCase):
    """
    The ``providers:`` list in config.yaml.
    """

    def test_errors_name_the_key(self):
        """
        Each mistake names the entry and key.
        """
        cases = [
            ({"providers": {}}, "providers: must be a list"),
            ({"providers": [{"m3u_url": "http://h"}]}, "providers[0].name:"),
            ({"providers": [{"name": "a"}]}, "providers[0]: give either m3u_url or xtream"),
            ({"providers": [{"name": "a", "m3u_url": "ftp://h"}]}, "providers[0].m3u_url: must be an http"),
            ({"providers": [{"name": "a", "m3u_url": "http://h", "refresh_hour": 1}]},
             "providers[0]: unknown key 'refresh_hour'; did you mean 'refresh_hours'?"),
            ({"providers": [{"name": "a", "xtream": {"url": "http://h", "username": "u"}}]},
             "providers[0].xtream.password: must be text"),
            ({"providers": [{"name": "a", "m3u_url": "http://h", "max_streams": -1}]}, "providers[0].max_streams"),
            ({"providers": [{"name": "a", "m3u_url": "http://h", "refresh_hours": 0}]}, "providers[0].refresh_hours"),
            ({"providers": [{"name": "a", "m3u_url": "http://h", "groups": "News"}]}, "providers[0].groups"),
            ({"providers": [{"name": "a", "m3u_url": "http://h", "account": "x"},
                            {"name": "b", "m3u_url": "http://h", "account": "x"}]}, "providers[1].account"),
        ]
        for data, expected in cases:
            with self.assertRaises(ConfigError, msg=str(data)) as caught:
                parse_config(data)
            self.assertIn(expected, str(caught.exception))

    def test_defaults_and_no_secret_in_repr(self):
        """
        Accounts sharing a name are numbered; quality defaults to 1, the
        playlist to the name, refresh to 24 h; the repr hides URL and
        credentials.
        """
        config = parse_config({"providers": [
            {"name": "p", "m3u_url": "http://h/get.php?username=bob&password=s3cret"},
            {"name": "p", "xtream": {"url": "http://h", "username": "bob", "password": "s3cret"}, "quality": 2},
        ]})
        first, second = config.providers
        self.assertEqual((first.account, second.account), ("p#1", "p#2"))
        self.assertEqual((first.quality, first.playlist, first.refresh_hours), ("1", "p", 24.0))
        self.assertEqual(second.quality, "2")
        self.assertNotIn("s3cret", repr(config))
        self.assertNotIn("bob", repr(config))
        self.assertEqual(parse_config({}).providers, ())


class SyncedStore:
    """
    The store's surface a sync uses, over a plain sqlite3 connection, run
    synchronously: ``run_interaction`` as one transaction, ``refresh``.
    """

    def __init__(self, path):
        self.path = path
        self.connection = sqlite3.connect(path)
        self.catalog = read_catalog(self.connection)
        self.refreshes = 0
        self.fail_writes = False

    def run_interaction(self, function, *args):
        """
        ``function(cursor, *args)`` as one transaction, now.
        """
        if self.fail_writes:
            return defer.fail(sqlite3.OperationalError("database is locked"))
        cursor = self.connection.cursor()
        try:
            result = function(cursor, *args)
        except Exception:
            self.connection.rollback()
            return defer.fail()
        self.connection.commit()
        return defer.succeed(result)

    def refresh(self):
        """
        Reload the catalog (counted).
        """
        self.refreshes += 1
        self.catalog = read_catalog(self.connection)
        return defer.succeed(self.catalog)

    def rows(self, *columns):
        """
        The values of ``columns`` of every row, in table order.
        """
        names = ", ".join(f'"{c}"' for c in columns)
        return self.connection.execute(f"SELECT {names} FROM LiveStreams ORDER BY rowid").fetchall()

    def close(self):
        """
        Close the connection.
        """
        self.connection.close()


def synchronously(function, *args):
    """
    Run ``function`` now, as the sync's worker thread would.
    """
    return defer.maybeDeferred(function, *args)


CHANNELS = [
    FakeChannel(101, "ABC HD", "abc.us", "News", 7, "http://logos.test/abc.png"),
    FakeChannel(102, "NBC", "nbc.us", "News"),
    FakeChannel(103, "ESPN", "espn.us", "Sports"),
]


class SyncTestCase(SynchronousTestCase):
    """
    A sync service over the fake provider (StubTreq), a Clock and a real
    SQLite file holding one row no provider owns.
    """

    def setUp(self):
        self.provider = FakeProvider(list(CHANNELS), accounts={"alice": "hunter2", "bob": "s3cretpw"})
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.path = make_database(
            os.path.abspath(self.mktemp()),
            [row(7, "http://other.test/abc.ts", source="manual", name="ABC", tv_guide_id="abc.us",
                 stream_status="online", uptime=50)],
        )
        self.store = SyncedStore(self.path)
        self.addCleanup(self.store.close)
        self.slots = SourceSlots({})
        self.known = KnownUrls()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def service(self, entries, source_limits=None, allowed_schemes=("http", "https")):
        """
        A ProviderSync for ``entries`` (the providers: list), its URLs known
        to a known-URL table of the test's own.
        """
        config = parse_config({"providers": entries, "source_limits": source_limits or {}})
        return ProviderSync(
            config.providers, self.store, self.slots, StubTreq(self.provider),
            source_limits=config.source_limits, reactor=self.clock, run_in_thread=synchronously,
            allowed_schemes=allowed_schemes, known_urls=self.known,
        )

    def sync(self, service, name="p"):
        """
        Sync ``name`` and return its status entry.
        """
        return self.successResultOf(service.sync(name))

    def logged(self):
        """
        Every line logged during the test, as text.
        """
        return "\n".join(formatEvent(e) for e in self.events)

    def m3u(self, user="alice", **extra):
        """
        A providers: entry for ``user``'s M3U playlist.
        """
        return dict({"name": "p", "m3u_url": self.provider.m3u_url(user)}, **extra)

    def xtream(self, user="bob", **extra):
        """
        A providers: entry for ``user``'s Xtream account.
        """
        return dict(
            {"name": "p", "xtream": {"url": self.provider.base(), "username": user,
                                     "password": self.provider.accounts[user]}},
            **extra,
        )


class SyncTests(SyncTestCase):
    """
    What a sync changes in the table.
    """

    def test_first_sync_adds_and_matches(self):
        """
        A first sync adds a row per stream: ABC joins the existing channel
        7 by guide id, the others get new numbers; the row no provider owns
        is untouched; the catalog is reloaded with the rows' account.
        """
        status = self.sync(self.service([self.m3u()]))
        self.assertEqual(status["last_sync"]["result"], "ok")
        self.assertEqual((status["last_sync"]["added"], status["last_sync"]["removed"]), (3, 0))
        rows = self.store.rows("Channel-id", "Source", "stream-url", "Stream-status", "Uptime")
        self.assertEqual(rows[0], (7, "manual", "http://other.test/abc.ts", "online", 50))
        self.assertEqual([r[0] for r in rows[1:]], [7, 8, 9])
        self.assertEqual(self.store.refreshes, 1)
        catalog = self.store.catalog
        self.assertEqual([c.account for c in catalog.channels["7"]], [None, "p#1"])
        self.assertEqual(catalog.owners[2], ("p", "p#1", "tv-guide-id"))

    def test_rotation_updates_rows_keeping_health_and_channels(self):
        """
        When the provider rotates its URLs, the next sync updates the same
        rows (same rowids, channels and health columns), adds nothing and
        removes nothing.
        """
        service = self.service([self.m3u()])
        self.sync(service)
        self.store.connection.execute('UPDATE LiveStreams SET "Stream-status" = \'online\', "Uptime" = 99 WHERE rowid = 3')
        self.store.connection.commit()
        before = self.store.rows("rowid", "Channel-id", "stream-url")
        self.provider.generation += 1
        status = self.sync(service)
        self.assertEqual(
            {k: status["last_sync"][k] for k in ("added", "updated", "removed", "unchanged")},
            {"added": 0, "updated": 3, "removed": 0, "unchanged": 0},
        )
        after = self.store.rows("rowid", "Channel-id", "stream-url")
        self.assertEqual([r[:2] for r in after], [r[:2] for r in before])
        self.assertNotEqual(after[1][2], before[1][2])
        self.assertEqual(self.store.rows("Stream-status", "Uptime")[2], ("online", 99))
        self.assertEqual(self.sync(service)["last_sync"]["unchanged"], 3)

    def test_query_token_rotation(self):
        """
        Streams whose URL changes only in its query string (a rotating
        token) keep their rows too.
        """
        self.provider.rotation = "query"
        service = self.service([self.m3u()])
        self.sync(service)
        self.provider.generation += 1
        last = self.sync(service)["last_sync"]
        self.assertEqual((last["added"], last["updated"], last["removed"]), (0, 3, 0))

    def test_vanished_and_new_streams(self):
        """
        A stream the provider no longer lists loses its row; a new one gets
        a row; a stream that comes back gets its old channel number again.
        """
        service = self.service([self.m3u()])
        self.sync(service)
        self.provider.channels = [CHANNELS[0], CHANNELS[1], FakeChannel(104, "CNN", "cnn.us")]
        last = self.sync(service)["last_sync"]
        self.assertEqual((last["added"], last["removed"]), (1, 1))
        self.assertEqual(sorted(r[0] for r in self.store.rows("Channel-id")), [7, 7, 8, 10])
        self.provider.channels = list(CHANNELS)
        self.sync(service)
        espn = [r for r in self.store.rows("Channel-id", "Stream-name") if r[1] == "ESPN"]
        self.assertEqual(espn, [(9, "ESPN")])

    def test_schemes_not_allowed_are_left_out(self):
        """
        A playlist's file:// and rtmp:// streams are left out of the table
        and counted in the status and one log line; allowing rtmp takes it.
        """
        self.provider.channels = list(CHANNELS) + [
            FakeChannel(104, "Local", group="News", url="file:///etc/passwd"),
            FakeChannel(105, "Relay", group="News", url="rtmp://relay.test/app/key"),
        ]
        status = self.sync(self.service([self.m3u()]))
        self.assertEqual(status["last_sync"]["added"], 3)
        self.assertEqual(status["accounts"][0]["skipped"]["scheme_not_allowed"], {"file": 1, "rtmp": 1})
        self.assertNotIn("file:///etc/passwd", [r[0] for r in self.store.rows("stream-url")])
        self.assertIn("leaving out 2 streams whose URL scheme is not in allowed_url_schemes (http, https): "
                      "file: 1, rtmp: 1", self.logged())
        status = self.sync(self.service([self.m3u()], allowed_schemes=("http", "https", "rtmp")))
        self.assertEqual(status["last_sync"]["added"], 1)
        self.assertIn("rtmp://relay.test/app/key", [r[0] for r in self.store.rows("stream-url")])

    def test_only_streams_of_schemes_not_allowed(self):
        """
        A playlist with no stream of an allowed scheme is a failed sync that
        says why; the rows stay.
        """
        self.provider.channels = [FakeChannel(104, "Local", url="file:///etc/passwd")]
        status = self.sync(self.service([self.m3u()]))
        self.assertEqual(status["last_sync"]["result"], "error")
        self.assertIn("no streams whose URL scheme is in allowed_url_schemes (http, https); left out: file: 1",
                      status["last_sync"]["error"])

    def test_groups_and_quality(self):
        """
        Only the configured groups are taken; quality and playlist name
        fill their columns.
        """
        self.sync(self.service([self.m3u(groups=["sports"], quality="2", playlist="sport")]))
        rows = self.store.rows("Stream-name", "Stream-quality", "M3U")
        self.assertEqual(rows[1:], [("ESPN", "2", "sport")])

    def test_rows_changed_by_someone_else_are_left_alone(self):
        """
        A row whose URL another tool changed is no longer the provider's:
        the next sync neither updates nor removes it, and makes a new row.
        """
        service = self.service([self.m3u()])
        self.sync(service)
        self.store.connection.execute("UPDATE LiveStreams SET \"stream-url\" = 'http://mine.test/x.ts' WHERE rowid = 2")
        self.store.connection.commit()
        self.provider.channels = [CHANNELS[1], CHANNELS[2]]
        self.sync(service)
        urls = [r[0] for r in self.store.rows("stream-url")]
        self.assertIn("http://mine.test/x.ts", urls)
        self.assertEqual(len(urls), 4)

    def test_xtream_account(self):
        """
        An Xtream account's streams are built as /live/U/P/<id>.ts, its
        status, expiry and max_connections shown (the latter becomes its
        limit), with no credential in the status.
        """
        self.provider.max_connections["bob"] = 3
        service = self.service([self.xtream()])
        status = self.sync(service)
        account = status["accounts"][0]
        self.assertEqual(account["xtream"], {"status": "Active", "expires": 1_900_000_000.0,
                                             "max_connections": 3, "active_connections": 0})
        self.assertEqual((account["limit"], account["limit_from"], status["limit"]), (3, "max_connections", 3))
        self.assertEqual(self.slots.limit("p"), 3)
        urls = [r[0] for r in self.store.rows("stream-url")][1:]
        self.assertEqual(urls[0], f"{self.provider.base()}/live/bob/s3cretpw/101.ts")
        shown = json.dumps(service.status())
        self.assertNotIn("s3cretpw", shown)
        self.assertNotIn("bob", shown)

    def test_gzip(self):
        """
        Answers sent with Content-Encoding gzip, and playlists that are gzip
        files, are read.
        """
        self.provider.gzip_answers = True
        self.assertEqual(self.sync(self.service([self.xtream()]))["last_sync"]["added"], 3)
        self.provider.gzip_answers = False
        config = {"name": "q", "m3u_url": self.provider.m3u_url("alice", gz=True)}
        self.assertEqual(self.sync(self.service([config]), "q")["last_sync"]["added"], 3)


class FailureTests(SyncTestCase):
    """
    A provider that fails keeps its previous rows, shows the error and is
    retried with back-off.
    """

    def check_kept(self, service, fault, kinds, expected, entry=None):
        """
        After a good sync, make ``kinds`` answer with ``fault``: the next
        sync fails with ``expected`` in its error, the rows stay as they
        were, the error shows with its time, and nothing is reloaded.
        """
        self.sync(service)
        before = self.store.rows("rowid", "stream-url")
        refreshes = self.store.refreshes
        self.provider.generation += 1
        self.provider.set_fault(fault, *kinds)
        self.clock.advance(60)
        status = self.sync(service)
        self.assertEqual(status["last_sync"]["result"], "error")
        self.assertIn(expected, status["last_sync"]["error"])
        account = status["accounts"][0]
        self.assertEqual((account["result"], account["last_attempt"]), ("error", self.clock.seconds()))
        self.assertEqual(account["last_success"], self.clock.seconds() - 60)
        self.assertIn(expected, account["error"])
        self.assertEqual(self.store.rows("rowid", "stream-url"), before)
        self.assertEqual(self.store.refreshes, refreshes)
        text = json.dumps(status) + self.logged()
        for secret in ("hunter2", "s3cretpw"):
            self.assertNotIn(secret, text)
        self.assertIn("its previous rows are kept", self.logged())

    def test_http_errors(self):
        """
        401 and 500 answers are errors naming the status.
        """
        for code in (401, 500):
            self.provider.set_fault(None)
            self.check_kept(self.service([self.m3u()]), code, ["m3u"], f"HTTP {code}")

    def test_html_garbage_empty(self):
        """
        An HTML page, binary garbage and an empty playlist are errors.
        """
        cases = [
            (fake_provider.HTML, "HTML page"),
            (fake_provider.GARBAGE, "not an M3U playlist"),
            (fake_provider.EMPTY, "lists no streams"),
        ]
        for fault, expected in cases:
            self.provider.set_fault(None)
            self.check_kept(self.service([self.m3u()]), fault, ["m3u"], expected)

    def test_xtream_faults(self):
        """
        Xtream auth 0, and garbage or HTML for the stream list, are errors.
        """
        cases = [
            (fake_provider.AUTH0, ["account"], "auth 0"),
            (fake_provider.GARBAGE, ["streams"], "get_live_streams is not JSON"),
            (fake_provider.HTML, ["categories"], "get_live_categories is an HTML page"),
            (500, ["streams"], "HTTP 500"),
        ]
        for fault, kinds, expected in cases:
            self.provider.set_fault(None)
            self.check_kept(self.service([self.xtream()]), fault, kinds, expected)

    def test_hanging_provider_times_out(self):
        """
        A provider that never answers fails after the fetch deadline.
        """
        service = self.service([self.m3u()])
        self.provider.set_fault(fake_provider.HANG)
        d = service.sync("p")
        self.assertNoResult(d)
        self.clock.advance(91)
        status = self.successResultOf(d)
        self.assertIn("no complete answer within 90 s", status["last_sync"]["error"])

    def test_too_big(self):
        """
        An answer over the size bound is refused.
        """
        self.patch(fetch_module, "MAX_ANSWER_BYTES", 100)
        status = self.sync(self.service([self.m3u()]))
        self.assertIn("larger than", status["last_sync"]["error"])

    def test_database_failure(self):
        """
        A database that cannot be written is an error for the accounts
        fetched, and their rows stay.
        """
        self.store.fail_writes = True
        status = self.sync(self.service([self.m3u()]))
        self.assertIn("database could not be written", status["last_sync"]["error"])

    def test_schedule_and_back_off(self):
        """
        The service syncs at start and every refresh_hours; after a failure
        it retries after 5 min, then 10 min, and goes back to its schedule
        once a sync succeeds.
        """
        service = self.service([self.m3u(refresh_hours=2)])
        service.startService()
        self.addCleanup(service.stopService)
        self.clock.advance(0)
        self.assertEqual(service.status()["providers"][0]["last_sync"]["result"], "ok")
        requests = len(self.provider.requests)
        self.clock.advance(7199)
        self.assertEqual(len(self.provider.requests), requests)
        self.provider.set_fault(500)
        self.clock.advance(1)
        self.assertEqual(len(self.provider.requests), requests + 1)
        entry = service.status()["providers"][0]
        self.assertEqual(entry["next_sync"], self.clock.seconds() + 300)
        self.clock.advance(300)
        self.assertEqual(service.status()["providers"][0]["next_sync"], self.clock.seconds() + 600)
        self.provider.set_fault(None)
        self.clock.advance(600)
        entry = service.status()["providers"][0]
        self.assertEqual(entry["last_sync"]["result"], "ok")
        self.assertEqual(entry["next_sync"], self.clock.seconds() + 7200)

    def test_partial(self):
        """
        With two accounts of one provider, one failing: the other's rows
        are synced, the failing one's kept, the result is partial.
        """
        service = self.service([self.m3u(), self.xtream()])
        self.sync(service)
        self.provider.set_fault(500, "account")
        self.provider.channels = CHANNELS[:2]
        status = self.sync(service)
        self.assertEqual(status["last_sync"]["result"], "partial")
        self.assertEqual([a["result"] for a in status["accounts"]], ["ok", "error"])
        self.assertEqual(status["accounts"][0]["counts"]["removed"], 1)
        self.assertEqual(status["accounts"][1]["rows"], 3)


class PooledAccountTests(SyncTestCase):
    """
    Several accounts sharing a provider name.
    """

    def test_pooled_rows_and_limits(self):
        """
        Two accounts of one provider give each channel one candidate per
        account in the same channel; their limits add up; a tune uses
        whichever account has room.
        """
        self.provider.max_connections["bob"] = 1
        service = self.service([self.m3u(max_streams=1), self.xtream()])
        self.sync(service)
        catalog = self.store.catalog
        self.assertEqual(len(catalog.channels), 3)
        abc = [c for c in catalog.channels["7"] if c.account]
        self.assertEqual([c.account for c in abc], ["p#1", "p#2"])
        self.assertEqual(self.slots.limit("p"), 2)
        first = self.slots.acquire("p", "channel 7", account=abc[0].account)
        self.assertIsNotNone(first)
        self.assertIsNone(self.slots.acquire("p", "channel 8", account="p#1"))
        self.assertIsNotNone(self.slots.acquire("p", "channel 8", account="p#2"))
        self.assertFalse(self.slots.has_room("p"))
        status = service.status()["providers"][0]
        self.assertEqual((status["in_use"], status["limit"]), (2, 2))
        self.assertEqual([(a["in_use"], a["limit"]) for a in status["accounts"]], [(1, 1), (1, 1)])


class SlotAccountTests(SynchronousTestCase):
    """
    SourceSlots with accounts.
    """

    def test_waiting_on_a_full_account(self):
        """
        A tune whose rows are all on a full account is not woken by the
        other account of the same source having room; it is woken when its
        own account frees a slot, and when a raised limit makes room.
        """
        slots = SourceSlots({"p": 3}, {"p#1": 1, "p#2": 2})
        held = slots.acquire("p", "x", account="p#1")
        d = slots.wait_for_room(["p"], accounts={("p", "p#1")})
        self.assertNoResult(d)
        other = slots.acquire("p", "y", account="p#2")
        other.release()
        self.assertNoResult(d)
        held.release()
        self.assertEqual(self.successResultOf(d), "p")
        slots.acquire("p", "x", account="p#1")
        d = slots.wait_for_room(["p"], accounts={("p", "p#1")})
        slots.set_limits(account_limits={"p#1": 2, "p#2": 2})
        self.assertEqual(self.successResultOf(d), "p")

    def test_rows_without_account(self):
        """
        A row no provider owns counts against its source only.
        """
        slots = SourceSlots({"p": 2}, {"p#1": 1})
        self.assertIsNotNone(slots.acquire("p", "x", account="p#1"))
        self.assertIsNotNone(slots.acquire("p", "y"))
        self.assertIsNone(slots.acquire("p", "z"))
        self.assertEqual(slots.account_usage(), {"p#1": (1, 1)})


class SideTableTests(SynchronousTestCase):
    """
    The bookkeeping lives beside LiveStreams, which keeps its columns.
    """

    def test_old_database_untouched_until_a_sync(self):
        """
        Reading an old database without providers neither needs nor creates
        the side table; a sync creates it and LiveStreams keeps exactly its
        columns.
        """
        path = make_database(os.path.abspath(self.mktemp()), [row(1, "http://h/1.ts")], old_style=True)
        connection = sqlite3.connect(path)
        self.addCleanup(connection.close)
        columns = [r[1] for r in connection.execute("PRAGMA table_info(LiveStreams)")]
        catalog = read_catalog(connection)
        self.assertEqual(catalog.owners, {})
        self.assertEqual(read_owners(connection), {})
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.assertEqual(tables, {"LiveStreams"})
        cursor = connection.cursor()
        sync_accounts(cursor, "p", {"p#1": ("1", "p")}, [("p#1", [entry("id:1", "One")])])
        connection.commit()
        self.assertEqual([r[1] for r in connection.execute("PRAGMA table_info(LiveStreams)")], columns)
        tables = {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        self.assertEqual(tables, {"LiveStreams", OWNERS, "ProviderChannels"})
        self.assertEqual(read_catalog(connection).owners, {2: ("p", "p#1", "next-free")})


class FakeProviders:
    """
    The ProviderSync surface the web layer uses.
    """

    def __init__(self):
        self.synced = 0

    def status(self):
        """
        A status whose URL holds a password (the web layer must mask it).
        """
        return {"now": 1.0, "providers": [{"name": "p", "accounts": [
            {"account": "p#1", "server": "http://h/live/bob/s3cretpw/1.ts", "error": None}]}]}

    def sync_all(self):
        """
        Count the sync; answer the status.
        """
        self.synced += 1
        return defer.succeed(self.status())


class WebTests(TestCase):
    """
    GET /api/providers and POST /refresh_providers.
    """

    def setUp(self):
        self.providers = FakeProviders()
        store = SimpleStore()
        self.web = StreamProxyWeb(Config(), store, Ranking(), SimpleManager(store), reactor=Clock(),
                                  providers=self.providers)
        self.client = StubTreq(self.web.resource())

    @defer.inlineCallbacks
    def call(self, method, path, headers=None):
        """
        ``(response, body text)`` of one request.
        """
        response = yield self.client.request(method, f"http://127.0.0.1:9090{path}",
                                             headers=dict({"Host": "127.0.0.1:9090"}, **(headers or {})))
        body = yield response.text()
        return response, body

    @defer.inlineCallbacks
    def test_api_providers_masked(self):
        """
        /api/providers answers the status, with URLs masked again.
        """
        response, body = yield self.call("GET", "/api/providers")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body)["providers"][0]["name"], "p")
        self.assertNotIn("s3cretpw", body)

    @defer.inlineCallbacks
    def test_refresh_providers(self):
        """
        POST /refresh_providers syncs; a GET is 405; another site's page is
        refused.
        """
        response, body = yield self.call("POST", "/refresh_providers")
        self.assertEqual((response.code, self.providers.synced), (200, 1))
        response, _ = yield self.call("GET", "/refresh_providers")
        self.assertEqual(response.code, 405)
        response, _ = yield self.call("POST", "/refresh_providers", {"Origin": "http://evil.test"})
        self.assertEqual((response.code, self.providers.synced), (403, 1))

    @defer.inlineCallbacks
    def test_without_providers(self):
        """
        Without providers configured the API answers an empty list.
        """
        web = StreamProxyWeb(Config(), SimpleStore(), Ranking(), SimpleManager(SimpleStore()), reactor=Clock())
        response = yield StubTreq(web.resource()).get("http://127.0.0.1/api/providers")
        self.assertEqual(json.loads((yield response.text()))["providers"], [])


class SimpleStore:
    """
    A store with an empty catalog.
    """

    catalog = Catalog.build([])


class SimpleManager:
    """
    A channel manager with nothing running.
    """

    def __init__(self, store):
        self.store = store
        self.sessions = {}

    def status(self):
        """
        Nothing running.
        """
        return {"channels": [], "sources": {}, "waiting_for_slot": 0, "recently_ended": []}


class ShippedExampleTests(SynchronousTestCase):
    """
    The commented-out providers: example in the shipped config.yaml.
    """

    def test_example_is_valid(self):
        """
        Uncommented, the example loads: three accounts, two of them pooled
        under one name.
        """
        import yaml

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.yaml")
        with open(path) as f:
            lines = f.read().splitlines()
        start = lines.index("# providers:")
        block = []
        for line in lines[start:]:
            if not line.startswith("#"):
                break
            block.append(line[2:])
        providers = parse_config(yaml.safe_load("\n".join(block))).providers
        self.assertEqual([p.account for p in providers], ["provider_a#1", "provider_b#1", "provider_b#2"])
        self.assertEqual(providers[1].groups, ("News", "Sports"))


class ImportTests(SynchronousTestCase):
    """
    ``import-m3u`` on the shared parser and matcher.
    """

    def test_large_import_is_linear(self):
        """
        20,000 entries import in a few seconds (dict lookups and batched
        writes, not a query per entry); importing again changes nothing;
        a row no import made keeps its channel and gets company by guide id.
        """
        import time

        from streamproxy.m3u_import import import_entries

        path = make_database(os.path.abspath(self.mktemp()), [row(5, "http://h/x.ts", source="other", tv_guide_id="c7")])
        connection = sqlite3.connect(path)
        self.addCleanup(connection.close)
        text = "#EXTM3U\n" + "".join(
            f'#EXTINF:-1 tvg-id="c{i}" tvg-chno="{i + 1}",Channel {i}\nhttp://h/live/u/p/{i}.ts\n' for i in range(20000)
        )
        started = time.perf_counter()
        result = import_entries(connection, parse_m3u(text), "a", "1", "main")
        self.assertEqual((result.added, result.updated, result.unchanged), (20000, 0, 0))
        self.assertLess(time.perf_counter() - started, 10.0)
        result = import_entries(connection, parse_m3u(text), "a", "1", "main")
        self.assertEqual((result.added, result.updated, result.unchanged), (0, 0, 20000))
        channel = connection.execute('SELECT "Channel-id" FROM LiveStreams WHERE "TV-guide-id" = ? AND "Source" = ?',
                                     ("c7", "a")).fetchone()
        self.assertEqual(channel, (5,))
        self.assertEqual(read_owners(connection), {})
