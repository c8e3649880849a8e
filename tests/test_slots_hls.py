"""
Tests for source slot accounting and the channel's own live HLS playlist
(pure logic, no reactor).
"""

from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from streamproxy.hls import LivePlaylist, parse_media_playlist
from streamproxy.slots import SourceSlots


class SlotTests(SynchronousTestCase):
    """
    Slots are counted exactly against each source's limit.
    """

    def test_limits(self):
        """
        A limited source gives out that many slots; an unlisted one is
        unlimited.
        """
        slots = SourceSlots({"a": 2})
        first = slots.acquire("a", "x")
        second = slots.acquire("a", "y")
        self.assertIsNotNone(first)
        self.assertIsNotNone(second)
        self.assertIsNone(slots.acquire("a", "z"))
        self.assertEqual(slots.in_use("a"), 2)
        many = [slots.acquire("b", i) for i in range(50)]
        self.assertNotIn(None, many)
        self.assertEqual(slots.usage(), {"a": (2, 2), "b": (50, None)})

    def test_release_is_idempotent(self):
        """
        Releasing a slot twice gives back one connection, not two.
        """
        slots = SourceSlots({"a": 1})
        slot = slots.acquire("a", "x")
        slot.release()
        slot.release()
        self.assertEqual(slots.in_use("a"), 0)
        again = slots.acquire("a", "y")
        self.assertIsNotNone(again)
        self.assertIsNone(slots.acquire("a", "z"))

    def test_zero_limit(self):
        """
        A limit of 0 turns a source off.
        """
        self.assertIsNone(SourceSlots({"a": 0}).acquire("a", "x"))

    def test_waiters_are_served_in_order(self):
        """
        Starts waiting for a full source are told in arrival order, one per
        freed slot.
        """
        slots = SourceSlots({"a": 1, "b": 1})
        held_a = slots.acquire("a", "x")
        held_b = slots.acquire("b", "y")
        told = []
        first = slots.wait_for_room(["a", "b"])
        first.addCallback(lambda source: told.append(("first", source)))
        second = slots.wait_for_room(["a"])
        second.addCallback(lambda source: told.append(("second", source)))
        self.assertEqual(slots.waiting(), 2)
        held_a.release()
        self.assertEqual(told, [("first", "a")])
        held_b.release()
        self.assertEqual(told, [("first", "a")])
        slots.acquire("a", "first")  # what the first waiter would do
        self.assertEqual(slots.waiting(), 1)

    def test_cancelled_waiter_is_forgotten(self):
        """
        A cancelled wait is removed from the list and never fires.
        """
        slots = SourceSlots({"a": 1})
        held = slots.acquire("a", "x")
        d = slots.wait_for_room(["a"])
        d.addErrback(lambda f: f.trap(defer.CancelledError))
        d.cancel()
        self.assertEqual(slots.waiting(), 0)
        held.release()
        self.assertEqual(slots.in_use("a"), 0)

    def test_shortage_is_announced(self):
        """
        on_shortage learns which sources someone waits for (so idle streams
        can make room).
        """
        slots = SourceSlots({"a": 1})
        slots.acquire("a", "x")
        heard = []
        slots.on_shortage = heard.append
        slots.wait_for_room(["a"])
        self.assertEqual(heard, [frozenset({"a"})])


class LivePlaylistTests(SynchronousTestCase):
    """
    The channel's playlist stays one continuous live playlist.
    """

    def test_window_and_sequence(self):
        """
        The window keeps the last list_size segments and the media sequence
        counts the ones that left.
        """
        playlist = LivePlaylist(6, 3)
        gone = []
        for i in range(5):
            gone += playlist.add(f"a_{i:05d}.ts", 6.0)
        self.assertEqual(gone, ["a_00000.ts", "a_00001.ts"])
        self.assertEqual(playlist.names(), ["a_00002.ts", "a_00003.ts", "a_00004.ts"])
        text = playlist.render()
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:2\n", text)
        self.assertIn("#EXT-X-TARGETDURATION:6\n", text)
        self.assertTrue(text.startswith("#EXTM3U\n"))
        self.assertNotIn("#EXT-X-ENDLIST", text)

    def test_discontinuity(self):
        """
        A switch is marked before the first segment of the new run, and
        counted in the discontinuity sequence once it leaves the window.
        """
        playlist = LivePlaylist(6, 3)
        playlist.add("a_00000.ts", 2.0)
        playlist.add("a_00001.ts", 6.0)
        playlist.mark_discontinuity()
        playlist.add("b_00000.ts", 2.0)
        lines = playlist.render().splitlines()
        self.assertEqual(lines[lines.index("b_00000.ts") - 2], "#EXT-X-DISCONTINUITY")
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:0", lines)
        playlist.add("b_00001.ts", 6.0)
        playlist.add("b_00002.ts", 6.0)
        lines = playlist.render().splitlines()
        self.assertEqual(lines[5:7], ["#EXTINF:2.000,", "b_00000.ts"])
        self.assertNotIn("#EXT-X-DISCONTINUITY", lines)
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:1", lines)
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:2", lines)

    def test_discontinuity_before_any_media_is_not_marked(self):
        """
        A failure before the first segment leaves nothing to separate.
        """
        playlist = LivePlaylist(6, 3)
        playlist.mark_discontinuity()
        playlist.add("b_00000.ts", 2.0)
        self.assertNotIn("#EXT-X-DISCONTINUITY\n", playlist.render())

    def test_target_duration_never_drops(self):
        """
        The target duration is hls_time from the start, even while the first
        segments are shorter, and rises for a longer segment.
        """
        playlist = LivePlaylist(6, 3)
        playlist.add("a_00000.ts", 1.0)
        self.assertIn("#EXT-X-TARGETDURATION:6\n", playlist.render())
        playlist.add("a_00001.ts", 8.4)
        self.assertIn("#EXT-X-TARGETDURATION:8\n", playlist.render())
        playlist.add("a_00002.ts", 2.0)
        self.assertIn("#EXT-X-TARGETDURATION:8\n", playlist.render())

    def test_parse_ffmpeg_playlist(self):
        """
        Segments and durations are read from ffmpeg's playlist; a trailing
        EXTINF without its URI (a file caught mid-write) is ignored.
        """
        text = (
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:4\n"
            "#EXTINF:2.002000,\nx_00004.ts\n#EXTINF:6.000000,\nx_00005.ts\n#EXTINF:6.0,\n"
        )
        self.assertEqual(parse_media_playlist(text), [("x_00004.ts", 2.002), ("x_00005.ts", 6.0)])
