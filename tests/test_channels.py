"""
Tests for candidate ranking, channel ids and M3U building (pure logic).
"""

import time

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.channels import (
    BadRow,
    Catalog,
    DisallowedScheme,
    Ranking,
    candidate_from_row,
    normalize_channel_id,
)
from streamproxy.m3u_import import parse_extinf, parse_m3u, M3UError
from streamproxy.playlists import build_m3u, clean

from .helpers import candidate


class ChannelIdTests(SynchronousTestCase):
    """
    Channel ids have one text form whatever the database stored.
    """

    def test_forms(self):
        """
        Integers, integral floats and padded text become the plain number;
        sub-channels keep their decimal part.
        """
        self.assertEqual(normalize_channel_id(7), "7")
        self.assertEqual(normalize_channel_id(7.0), "7")
        self.assertEqual(normalize_channel_id("007"), "7")
        self.assertEqual(normalize_channel_id(7.1), "7.1")
        self.assertEqual(normalize_channel_id("7.10"), "7.1")
        self.assertEqual(normalize_channel_id(" 12 "), "12")

    def test_rejects(self):
        """
        Anything that is not a channel number raises ValueError.
        """
        for value in (None, "", "abc", "-1", "7a", True, float("nan"), "1e5", "7.1.2"):
            self.assertRaises(ValueError, normalize_channel_id, value)


class CandidateRowTests(SynchronousTestCase):
    """
    Which rows become candidates, and how their URLs are shown.
    """

    def row(self, url):
        """
        A row of channel 7 with ``url``.
        """
        return {"Channel-id": 7, "stream-url": url, "Source": "a", "Stream-quality": "1", "M3U": "main"}

    def test_only_allowed_schemes(self):
        """
        http and https rows are candidates; file://, ffmpeg prefixes and
        other schemes are refused as DisallowedScheme naming the key,
        unless the scheme is allowed.
        """
        self.assertEqual(candidate_from_row(1, self.row("HTTPS://x.example/1.ts")).url, "HTTPS://x.example/1.ts")
        for url in ("file:///etc/passwd", "concat:http://x/1.ts|http://x/2.ts", "rtsp://cam/1", "pipe:0"):
            with self.assertRaises(DisallowedScheme, msg=url) as caught:
                candidate_from_row(1, self.row(url))
            self.assertIn("allowed_url_schemes", str(caught.exception))
        self.assertEqual(candidate_from_row(1, self.row("rtsp://cam/1"), ("http", "rtsp")).url, "rtsp://cam/1")
        with self.assertRaises(BadRow) as caught:
            candidate_from_row(1, self.row("/var/lib/x.ts"))
        self.assertNotIsInstance(caught.exception, DisallowedScheme)
        self.assertIn("no scheme", str(caught.exception))

    def test_display_url(self):
        """
        A candidate shows its URL without the account in it.
        """
        found = candidate_from_row(1, self.row("http://u:p@x.example:8080/live/alice/hunter2/1001.ts?token=t"))
        self.assertEqual(found.display_url, "http://x.example:8080/.../1001.ts?token")


class RankingTests(SynchronousTestCase):
    """
    Candidates are ordered by source priority, then quality, then health.
    """

    def test_source_then_quality(self):
        """
        Source priority decides first; within a source, quality priority.
        """
        ranking = Ranking(("b", "a"), ("1", "2", "3"))
        candidates = [
            candidate(1, source="a", quality="1"),
            candidate(2, source="b", quality="3"),
            candidate(3, source="b", quality="1"),
            candidate(4, source="a", quality="2"),
        ]
        self.assertEqual([c.rowid for c in ranking.rank(candidates)], [3, 2, 1, 4])

    def test_unlisted_rank_last_in_stable_order(self):
        """
        Sources and qualities not listed rank after the listed ones, and
        ties keep table order.
        """
        ranking = Ranking(("a",), ("1",))
        candidates = [
            candidate(1, source="x", quality="1"),
            candidate(2, source="y", quality="1"),
            candidate(3, source="a", quality="9"),
            candidate(4, source="a", quality="1"),
            candidate(5, source="x", quality="1"),
        ]
        self.assertEqual([c.rowid for c in ranking.rank(candidates)], [4, 3, 1, 2, 5])

    def test_penalised_go_last(self):
        """
        A recently failed candidate ranks after every other one.
        """
        ranking = Ranking(("a", "b"), ())
        candidates = [candidate(1, source="a"), candidate(2, source="b")]
        self.assertEqual([c.rowid for c in ranking.rank(candidates, penalised={1})], [2, 1])

    def test_health_breaks_ties(self):
        """
        Within one source and quality, a working stream beats a failing one,
        and an unchecked one sits between them; health never beats priority.
        """
        ranking = Ranking(("a", "b"), ("1",))
        candidates = [
            candidate(1, source="a", status="offline", uptime=10, downtime=90),
            candidate(2, source="a"),
            candidate(3, source="a", status="online", uptime=90, downtime=10),
            candidate(4, source="b", status="online"),
        ]
        self.assertEqual([c.rowid for c in ranking.rank(candidates)], [3, 2, 1, 4])


class M3UTests(SynchronousTestCase):
    """
    Building the M3U text Channels DVR reads.
    """

    def test_entry(self):
        """
        Each channel carries the best candidate's metadata as tvg attributes,
        channel-id/number, a station id for numeric guide ids, and an
        absolute stream URL.
        """
        ranking = Ranking(("a", "b"), ())
        channels = {
            "7": (
                candidate(1, "7", source="b", uniform_name="Worse", logo="http://l/b.png"),
                candidate(
                    2, "7", source="a", uniform_name="ABC", guide_id="10001", guide_name="ABC HD",
                    group="News",
                ),
            )
        }
        text = build_m3u(channels, ranking, "http://host:9090")
        self.assertEqual(
            text,
            "#EXTM3U\n"
            '#EXTINF:-1 channel-id="7" channel-number="7" tvg-id="10001" tvg-name="ABC HD" '
            'tvg-logo="http://l/b.png" group-title="News" tvc-guide-stationid="10001",ABC\n'
            "http://host:9090/channel/7/stream.m3u8\n",
        )

    def test_display_name_falls_back_to_stream_name(self):
        """
        Without a uniform name the stream name is shown; no station id for
        a non-numeric guide id.
        """
        channels = {"9": (candidate(1, "9", name="Nine", guide_id="nine.us"),)}
        text = build_m3u(channels, Ranking(), "http://h")
        self.assertIn(",Nine\n", text)
        self.assertIn('tvg-id="nine.us"', text)
        self.assertNotIn("tvc-guide-stationid", text)

    def test_escaping(self):
        """
        Quotes, commas and newlines in names cannot break the line.
        """
        self.assertEqual(clean('Say "Hi", all\nnow'), "Say 'Hi' all now")
        channels = {"1": (candidate(1, uniform_name='A "B", C', group='x",y'),)}
        text = build_m3u(channels, Ranking(), "http://h")
        extinf = text.splitlines()[1]
        self.assertEqual(extinf.count('"') % 2, 0)
        self.assertEqual(extinf.count(","), 1)
        self.assertTrue(extinf.endswith(",A 'B' C"))
        self.assertEqual(len(text.splitlines()), 3)

    def test_twenty_thousand_channels_quickly(self):
        """
        A 20,000-channel playlist builds in well under 100 ms (a generous
        bound here; bench/playlist_speed.py prints the real figure).
        """
        candidates = [
            candidate(i, str(i), source="ab"[i % 2], uniform_name=f"Channel {i}", logo="http://l/x.png")
            for i in range(1, 20001)
        ]
        catalog = Catalog.build(candidates)
        started = time.perf_counter()
        text = build_m3u(catalog.find_playlist("main"), Ranking(("a", "b"), ()), "http://h:1")
        elapsed = time.perf_counter() - started
        self.assertEqual(text.count("#EXTINF"), 20000)
        self.assertLess(elapsed, 1.0)


class ProviderM3UParsingTests(SynchronousTestCase):
    """
    Reading a provider's M3U for import-m3u.
    """

    def test_extinf_attributes(self):
        """
        Attributes are read even when a value holds a comma; the display
        name is what follows the attributes.
        """
        attributes, name = parse_extinf(
            '-1 tvg-id="a.us" tvg-name="A, B" group-title="News",A Channel, East'
        )
        self.assertEqual(attributes, {"tvg-id": "a.us", "tvg-name": "A, B", "group-title": "News"})
        self.assertEqual(name, "A Channel, East")

    def test_playlist(self):
        """
        Entries pair an EXTINF with the next URL line, skipping other tags.
        """
        entries = parse_m3u(
            "\ufeff#EXTM3U\n#EXTINF:-1 tvg-chno=\"5\",Five\n#EXTVLCOPT:x=y\nhttp://h/5.ts\n\nhttp://h/6.ts\n"
        )
        self.assertEqual([(e.name, e.url) for e in entries], [("Five", "http://h/5.ts"), ("http://h/6.ts", "http://h/6.ts")])
        self.assertEqual(entries[0].attributes, {"tvg-chno": "5"})

    def test_not_m3u(self):
        """
        A file that is not M3U is refused with a reason.
        """
        self.assertRaises(M3UError, parse_m3u, "<html>")
