"""
Reading XMLTV sources in bounded memory and writing our playlists' guides
(pure functions; ``tv_validate_file`` checks the written guides in
``test_clients_e2e``).
"""

import gzip
import io
import lzma
import tracemalloc
from xml.etree import ElementTree as ET

from twisted.trial.unittest import SynchronousTestCase

from streamproxy import xmltv
from streamproxy.channels import Ranking
from streamproxy.xmltv import GuideError, gzipped_guide, parse_guide, write_guide

from . import guidegen
from .helpers import candidate


def parse(data, **options):
    """
    The SourceGuide of guide bytes ``data``.
    """
    return parse_guide(io.BytesIO(data), **options)


def written(channels, sources, ranking=Ranking()):
    """
    Our guide of ``channels`` from ``sources``, parsed back.
    """
    out = io.BytesIO()
    write_guide(channels, ranking, sources, out.write)
    return ET.fromstring(out.getvalue())


SMALL = b"""<?xml version="1.0" encoding="ISO-8859-1"?>
<tv>
  <channel id="abc.us"><display-name>ABC</display-name><icon src="http://i/abc.png"/></channel>
  <channel id="Nbc.us"><display-name>NBC</display-name></channel>
  <programme start="20240501120000 +0000" stop="20240501130000 +0000" channel="abc.us">
    <title>News &amp; Weather</title><desc>Caf\xe9 talk</desc>
  </programme>
  <programme start="20240501130000 +0000" channel="abc.us"><title>Later</title></programme>
  <programme start="20240501120000 +0000" channel="Nbc.us"><title>Show</title></programme>
  <programme start="bad" channel="abc.us"><title>Bad time</title></programme>
  <programme start="20240501140000" channel="abc.us"><desc>no title</desc></programme>
  <programme start="20240501150000 +0000" stop="soon" channel="abc.us"><title>Odd stop</title></programme>
</tv>
"""


class ParseTests(SynchronousTestCase):
    """
    Reading a source's guide.
    """

    def test_channels_and_programmes(self):
        """
        Channels keep their first display name and icon; programmes are
        kept per channel without their channel attribute; a programme
        without a title or with a malformed start is left out, a malformed
        stop is dropped; other encodings are read.
        """
        guide = parse(SMALL)
        self.assertEqual(guide.channels["abc.us"], ("ABC", "http://i/abc.png"))
        self.assertEqual(guide.channels["Nbc.us"], ("NBC", ""))
        self.assertEqual(guide.programmes, 4)
        self.assertEqual(guide.counts, {"abc.us": 3, "Nbc.us": 1})
        text = guide.programmes_of("abc.us").decode("utf-8")
        self.assertNotIn("channel=", text)
        self.assertIn("News &amp; Weather", text)
        self.assertIn("Caf\u00e9 talk", text)
        self.assertNotIn("Bad time", text)
        self.assertNotIn("no title", text)
        self.assertIn("<programme start=\"20240501150000 +0000\">", text)

    def test_ids_match_exactly_else_ignoring_case(self):
        """
        A guide id is found as it is, else ignoring case; unknown ids are None.
        """
        guide = parse(SMALL)
        self.assertEqual(guide.find("abc.us"), "abc.us")
        self.assertEqual(guide.find("nbc.US"), "Nbc.us")
        self.assertIsNone(guide.find("cbs.us"))

    def test_gzip_xz_and_double_gzip(self):
        """
        gzip and xz files are read, and a gzip file sent gzip-encoded again.
        """
        for data in (gzip.compress(SMALL), lzma.compress(SMALL), gzip.compress(gzip.compress(SMALL))):
            self.assertEqual(parse(data).programmes, 4)

    def test_not_a_guide(self):
        """
        HTML, broken XML, an empty answer, a guide without channels or
        programmes and broken gzip are refused with a sentence.
        """
        cases = {
            b"<html><body>Login</body></html>": "not an XMLTV guide",
            b"<tv><channel id='a'>": "not well-formed",
            b"": "not well-formed",
            b"<tv></tv>": "no channels and no programmes",
            b"\x1f\x8b\x08\x00garbage": "cannot be read",
        }
        for data, expected in cases.items():
            with self.assertRaises(GuideError) as caught:
                parse(data)
            self.assertIn(expected, str(caught.exception), data)

    def test_size_bound(self):
        """
        A guide larger than the bound once unpacked is refused (a gzip bomb
        stops there).
        """
        data = gzip.compress(guidegen.guide_bytes(channels=20, days=1))
        with self.assertRaises(GuideError) as caught:
            parse(data, max_bytes=50_000)
        self.assertIn("larger than", str(caught.exception))

    def test_check_can_stop_a_parse(self):
        """
        The ``check`` callable is called while reading and may stop it.
        """
        calls = []

        def check():
            calls.append(1)
            raise KeyboardInterrupt

        data = guidegen.guide_bytes(channels=10, days=20, minutes=30)
        self.assertRaises(KeyboardInterrupt, parse, data, check=check)
        self.assertEqual(len(calls), 1)

    def test_guide_ordered_by_time(self):
        """
        A guide ordered by time rather than by channel is read whole, its
        waiting programmes compressed once they pass the pending bound.
        """
        self.patch(xmltv, "PENDING_LIMIT_BYTES", 20_000)
        data = guidegen.guide_bytes(channels=30, days=2, minutes=60, by_time=True)
        guide = parse(data)
        self.assertEqual(guide.programmes, 30 * 48)
        self.assertEqual(guide.counts[guidegen.channel_id(7)], 48)
        self.assertEqual(guide.programmes_of(guidegen.channel_id(7)).count(b"<programme "), 48)

    def test_memory_stays_below_the_guide(self):
        """
        Reading a guide of several MB holds far less than the guide: the
        programmes are compressed as they come and the tree is cleared.
        """
        data = guidegen.guide_bytes(channels=60, days=7, minutes=30)
        self.assertGreater(len(data), 5_000_000)
        tracemalloc.start()
        try:
            guide = parse(data)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertEqual(guide.programmes, 60 * 7 * 48)
        kept = guide.stored_bytes()
        self.assertLess(kept, len(data) / 4)
        # What is kept, plus a bounded working set (buffers, one channel's
        # programmes waiting to be compressed), whatever the guide's size.
        self.assertLess(peak - kept, 1_500_000, f"peak {peak}, kept {kept}, guide {len(data)} bytes")
        self.assertLess(peak, len(data) / 3)


class WriteTests(SynchronousTestCase):
    """
    Writing a playlist's guide.
    """

    def test_channels_and_rewritten_programmes(self):
        """
        A channel per playlist channel, its id the channel number, its name,
        number and logo; the programmes of its TV-guide-id under our id;
        a channel without a guide id or programmes is listed alone.
        """
        channels = {
            "7": (candidate(1, "7", uniform_name="Seven", guide_id="abc.us", logo="http://l/7.png"),),
            "9.1": (candidate(2, "9.1", name="Nine", guide_id="NBC.US"),),
            "12": (candidate(3, "12", name="Twelve"),),
        }
        tv = written(channels, [parse(SMALL)])
        ids = [c.get("id") for c in tv.findall("channel")]
        self.assertEqual(ids, ["7", "9.1", "12"])
        seven = tv.find("channel[@id='7']")
        self.assertEqual([d.text for d in seven.findall("display-name")], ["Seven", "7"])
        self.assertEqual(seven.find("icon").get("src"), "http://l/7.png")
        nine = tv.find("channel[@id='9.1']")
        self.assertIsNone(nine.find("icon"))
        self.assertEqual([p.get("channel") for p in tv.findall("programme")], ["7", "7", "7", "9.1"])
        self.assertEqual(tv.find("programme").find("title").text, "News & Weather")
        self.assertEqual(tv.find("programme").get("stop"), "20240501130000 +0000")

    def test_source_icon_when_the_channel_has_no_logo(self):
        """
        A channel without a logo takes its guide channel's icon.
        """
        tv = written({"7": (candidate(1, "7", guide_id="abc.us"),)}, [parse(SMALL)])
        self.assertEqual(tv.find("channel/icon").get("src"), "http://i/abc.png")

    def test_first_source_wins(self):
        """
        With two sources for one guide id, the first one's programmes are
        used alone (no duplicates).
        """
        other = parse(b'<tv><programme start="20240501000000" channel="abc.us"><title>Other</title>'
                      b"</programme></tv>")
        channels = {"7": (candidate(1, "7", guide_id="abc.us"),)}
        self.assertEqual([p.find("title").text for p in written(channels, [other, parse(SMALL)])
                          .findall("programme")], ["Other"])
        self.assertEqual(len(written(channels, [parse(SMALL), other]).findall("programme")), 3)

    def test_without_sources(self):
        """
        Without sources the guide still lists the channels; names are escaped.
        """
        tv = written({"1": (candidate(1, "1", uniform_name="A <&> B"),)}, [])
        self.assertEqual(tv.find("channel/display-name").text, "A <&> B")
        self.assertEqual(tv.findall("programme"), [])

    def test_gzipped(self):
        """
        The gzip form unpacks to the same document and counts its programmes.
        """
        channels = {"7": (candidate(1, "7", guide_id="abc.us"),)}
        data, count = gzipped_guide(channels, Ranking(), [parse(SMALL)])
        out = io.BytesIO()
        write_guide(channels, Ranking(), [parse(SMALL)], out.write)
        self.assertEqual(gzip.decompress(data), out.getvalue())
        self.assertEqual(count, 3)
