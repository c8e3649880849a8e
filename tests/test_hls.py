"""
Tests for streamproxy.hls: the live playlist's window, tags and retention
(RFC 8216).
"""

from dataclasses import FrozenInstanceError

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.hls import MIN_WINDOW_TARGETS, RETENTION_MARGIN_SECONDS, LivePlaylist, Segment, target_duration_for


def fill(playlist, durations, start=0, prefix="s", discontinuities=()):
    """
    Add segments of ``durations`` named ``<prefix><n>`` from ``start``;
    those at indexes in ``discontinuities`` marked discontinuous.  Returns
    everything that left.
    """
    gone = []
    for i, duration in enumerate(durations, start):
        gone += playlist.add(f"{prefix}{i}", duration, i in discontinuities, size=1000)
    return gone


def tags(playlist):
    """
    The rendered lines, with the segment lines only.
    """
    return playlist.render().splitlines()


class TargetDurationTests(SynchronousTestCase):
    """
    target_duration_for: whole seconds, rounded up.
    """

    def test_rounds_up(self):
        """
        hls_time rounds up to whole seconds, never below 1.
        """
        self.assertEqual(target_duration_for(6), 6)
        self.assertEqual(target_duration_for(6.0), 6)
        self.assertEqual(target_duration_for(4.5), 5)
        self.assertEqual(target_duration_for(6.001), 7)
        self.assertEqual(target_duration_for(0.5), 1)
        self.assertEqual(target_duration_for(0), 1)


class WindowTests(SynchronousTestCase):
    """
    Which segments are listed.
    """

    def test_grows_to_three_targets_then_slides(self):
        """
        The window keeps every segment until the ones that would stay last
        three target durations; from then on one leaves per one added.
        """
        playlist = LivePlaylist(6, min_segments=1)
        self.assertEqual(MIN_WINDOW_TARGETS, 3)
        self.assertEqual(fill(playlist, [6, 6, 6]), [])
        self.assertEqual(playlist.names(), ["s0", "s1", "s2"])
        gone = fill(playlist, [6], start=3)
        self.assertEqual([name for name, _ in gone], ["s0"])
        self.assertEqual(playlist.names(), ["s1", "s2", "s3"])
        self.assertEqual(playlist.duration, 18)
        self.assertEqual(playlist.media_sequence, 1)

    def test_short_segments(self):
        """
        With 2 s segments under target 6 the window holds 18 s: nine
        segments.
        """
        playlist = LivePlaylist(6, min_segments=3)
        gone = fill(playlist, [2] * 9)
        self.assertEqual(gone, [])
        gone = fill(playlist, [2] * 5, start=9)
        self.assertEqual([name for name, _ in gone], ["s0", "s1", "s2", "s3", "s4"])
        self.assertEqual(len(playlist), 9)
        self.assertEqual(playlist.duration, 18)

    def test_never_below_three_targets(self):
        """
        Whatever the durations, once the window has held three target
        durations it never lists less; and it never keeps a segment it
        could let go.
        """
        playlist = LivePlaylist(4, min_segments=1)
        durations = [1.0, 3.0, 4.2, 0.5, 4.25, 2.0, 4.0, 4.0, 1.0, 3.9, 0.04, 4.2, 4.2, 4.2, 2.5]
        reached = False
        for i, duration in enumerate(durations):
            playlist.add(f"s{i}", duration)
            listed = sum(s.duration for s in playlist.segments)
            self.assertAlmostEqual(playlist.duration, listed)
            reached = reached or listed >= 12
            if reached:
                self.assertGreaterEqual(listed + 1e-9, 12)
            self.assertLess(listed - playlist.segments[0].duration, 12)

    def test_min_segments(self):
        """
        The window never lists fewer than min_segments, even when three
        target durations would allow it.
        """
        playlist = LivePlaylist(6, min_segments=5)
        fill(playlist, [6] * 12)
        self.assertEqual(playlist.names(), ["s7", "s8", "s9", "s10", "s11"])
        self.assertEqual(playlist.duration, 30)
        self.assertEqual(LivePlaylist(6, min_segments=0).min_segments, 1)

    def test_sequence_counts_what_left(self):
        """
        The media sequence is the first listed segment's number: it counts
        the segments that left, only grows, and names are never reused.
        """
        playlist = LivePlaylist(6, min_segments=3)
        self.assertEqual(playlist.media_sequence, 0)
        self.assertEqual(playlist.next_sequence, 0)
        sequences = []
        for i in range(20):
            playlist.add(f"s{i}", 6)
            sequences.append(playlist.media_sequence)
        self.assertEqual(sequences, [0, 0, 0] + list(range(1, 18)))
        self.assertEqual([s.sequence for s in playlist.segments], [17, 18, 19])
        self.assertEqual(playlist.next_sequence, 20)

    def test_segment_is_frozen(self):
        """
        A listed segment cannot be changed behind the playlist's back.
        """
        playlist = LivePlaylist(6)
        playlist.add("a", 6, size=10)
        self.assertEqual(playlist.segments[0], Segment("a", 6, 0, False, 10))
        with self.assertRaises(FrozenInstanceError):
            playlist.segments[0].duration = 1


class RetentionTests(SynchronousTestCase):
    """
    How long a segment that left must stay fetchable.
    """

    def test_keep_seconds(self):
        """
        A segment that leaves is kept for its own duration plus the duration
        of the playlist it leaves behind plus the margin; with a steady
        window that is its duration plus the longest playlist that listed
        it (RFC 8216, 6.2.2), plus the margin.
        """
        playlist = LivePlaylist(6, min_segments=3)
        fill(playlist, [6, 6, 6])
        self.assertEqual(fill(playlist, [6], start=3), [("s0", 6 + 18 + RETENTION_MARGIN_SECONDS)])
        self.assertEqual(RETENTION_MARGIN_SECONDS, 2.0)

    def test_several_leave_at_once(self):
        """
        When one long segment lets several short ones go, each is kept for
        its duration plus what stays after it left.
        """
        playlist = LivePlaylist(6, min_segments=1)
        fill(playlist, [1, 5, 6, 6])
        gone = fill(playlist, [6], start=4)
        self.assertEqual(gone, [("s0", 1 + 23 + 2.0), ("s1", 5 + 18 + 2.0)])
        self.assertEqual(playlist.names(), ["s2", "s3", "s4"])


class DiscontinuityTests(SynchronousTestCase):
    """
    #EXT-X-DISCONTINUITY and #EXT-X-DISCONTINUITY-SEQUENCE.
    """

    def test_first_segment_never_discontinuous(self):
        """
        A discontinuity on the channel's very first segment separates
        nothing and is not marked.
        """
        playlist = LivePlaylist(6)
        playlist.add("a", 1, discontinuity=True)
        self.assertFalse(playlist.segments[0].discontinuity)
        self.assertNotIn("#EXT-X-DISCONTINUITY", tags(playlist))

    def test_tag_stays_while_listed(self):
        """
        The tag stays in front of its segment as long as it is listed, also
        as the first in the window; the sequence counts only tags that
        left with their segments.
        """
        playlist = LivePlaylist(6, min_segments=3)
        fill(playlist, [6, 6, 6, 6, 6, 6, 6], discontinuities={2, 4})
        lines = tags(playlist)
        self.assertEqual(playlist.names(), ["s4", "s5", "s6"])
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:1", lines)
        self.assertEqual(lines[5:8], ["#EXT-X-DISCONTINUITY", "#EXTINF:6.000,", "s4"])
        self.assertEqual(lines.count("#EXT-X-DISCONTINUITY"), 1)
        fill(playlist, [6], start=7)
        lines = tags(playlist)
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:2", lines)
        self.assertNotIn("#EXT-X-DISCONTINUITY", lines)
        self.assertEqual(playlist.discontinuity_sequence, 2)

    def test_sequence_unchanged_by_plain_segments_leaving(self):
        """
        Segments without a tag leaving do not move the sequence.
        """
        playlist = LivePlaylist(6, min_segments=3)
        fill(playlist, [6] * 10, discontinuities={8})
        self.assertEqual(playlist.discontinuity_sequence, 0)
        self.assertIn("#EXT-X-DISCONTINUITY", tags(playlist))


class RenderTests(SynchronousTestCase):
    """
    The text served.
    """

    def test_exact_text(self):
        """
        Header tags, then per segment its discontinuity tag (here on the
        first listed one), #EXTINF with three decimals and its name; no
        #EXT-X-ENDLIST (it is live).
        """
        playlist = LivePlaylist(6, min_segments=3)
        playlist.add("ch00_00000.ts", 1.0)
        playlist.add("ch00_00001.ts", 5.0)
        playlist.add("ch01_00002.ts", 6.24, discontinuity=True)
        playlist.add("ch01_00003.ts", 5.9996)
        playlist.add("ch01_00004.ts", 6.0)
        self.assertEqual(
            playlist.render(),
            "#EXTM3U\n"
            "#EXT-X-VERSION:3\n"
            "#EXT-X-TARGETDURATION:6\n"
            "#EXT-X-MEDIA-SEQUENCE:2\n"
            "#EXT-X-DISCONTINUITY-SEQUENCE:0\n"
            "#EXT-X-DISCONTINUITY\n"
            "#EXTINF:6.240,\n"
            "ch01_00002.ts\n"
            "#EXTINF:6.000,\n"
            "ch01_00003.ts\n"
            "#EXTINF:6.000,\n"
            "ch01_00004.ts\n",
        )

    def test_empty(self):
        """
        Before any segment the playlist is its header alone.
        """
        self.assertEqual(
            LivePlaylist(4).render(),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n"
            "#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n",
        )

    def test_target_duration_never_changes(self):
        """
        The target duration is fixed when the playlist is made: short first
        segments do not lower it and a longer one (the segmenter never cuts
        one) does not raise it.
        """
        playlist = LivePlaylist(6.0)
        for duration in (1.0, 0.2, 8.4, 6.25):
            playlist.add("x", duration)
            self.assertIn("#EXT-X-TARGETDURATION:6\n", playlist.render())
        self.assertEqual(playlist.target_duration, 6)

    def test_cached_until_change(self):
        """
        The text is built once per change.
        """
        playlist = LivePlaylist(6)
        playlist.add("a", 6)
        text = playlist.render()
        self.assertIs(playlist.render(), text)
        playlist.add("b", 6)
        self.assertIsNot(playlist.render(), text)
        self.assertIn("b\n", playlist.render())


class BitrateTests(SynchronousTestCase):
    """
    bitrate_kbps.
    """

    def test_newest_segments(self):
        """
        The bitrate is bits over seconds of the newest ``count`` segments,
        in kbit/s, rounded; None with nothing (or nothing long) listed.
        """
        playlist = LivePlaylist(6)
        self.assertIsNone(playlist.bitrate_kbps())
        playlist.add("a", 0.0, size=1000)
        self.assertIsNone(playlist.bitrate_kbps())
        playlist.add("b", 2.0, size=250_000)
        playlist.add("c", 2.0, size=500_000)
        playlist.add("d", 4.0, size=1_000_000)
        self.assertEqual(playlist.bitrate_kbps(), round((250_000 + 500_000 + 1_000_000) * 8 / 1000 / 8))
        self.assertEqual(playlist.bitrate_kbps(count=1), 2000)
        self.assertEqual(playlist.bitrate_kbps(count=10), round(1_751_000 * 8 / 1000 / 8))
