"""
Tests for streamproxy.timeline: splicing sources into one continuous
output stream.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.mpegts import PAT, PES, PMT, TSReader
from streamproxy.timeline import ACCESS, FRAME, Piece, Timeline, unwrap

from . import tsgen
from .tsgen import AUDIO_PID, MODULO, PAT_PID, PMT_PID, SECOND_AUDIO_PID, SDT_PID, VIDEO_PID

F = 3600  # one frame at 25 fps, in 90 kHz ticks
WRAP = 1 << 33


def read_units(data):
    """
    The units of a whole stream.
    """
    reader = TSReader()
    return reader.feed(data) + reader.flush()


def feed(timeline, units):
    """
    Push ``units`` and return the pieces that come out.
    """
    pieces = []
    for unit in units:
        pieces += timeline.push(unit)
    return pieces


def splice_in(timeline, data, source):
    """
    Splice a new source and push all of ``data`` (a whole stream).
    """
    timeline.splice(source)
    return feed(timeline, read_units(data))


def packets_of(pieces):
    """
    The packets of the output ``pieces``.
    """
    return tsgen.read_packets(b"".join(p.data for p in pieces))


def video(packets):
    """
    ``(pts, dts)`` of each video PES in ``packets``, unwrapped.
    """
    starts = [p for p in packets if p.pid == VIDEO_PID and p.pusi]
    return list(zip(tsgen.unwrapped([p.pts for p in starts]), tsgen.unwrapped([p.dts for p in starts])))


def audio_pts(packets, pid=AUDIO_PID):
    """
    The unwrapped PTS of each audio PES on ``pid``.
    """
    return tsgen.unwrapped([p.pts for p in packets if p.pid == pid and p.pusi])


def frames_in(packets, pid=VIDEO_PID):
    """
    The numbers of the frames whose PES start in ``packets`` on ``pid``.
    """
    out = []
    for p in packets:
        if p.pid == pid and p.pusi:
            body = p.payload[9 + p.payload[8] :]
            out.append(tsgen.frame_number(body))
    return out


class UnwrapTests(SynchronousTestCase):
    """
    unwrap: a 33-bit value taken nearest an unbounded reference.
    """

    def test_unwrap(self):
        """
        Values come out as the unbounded timestamp nearest the reference, on
        either side of a wrap and far past 2**33.
        """
        self.assertEqual(unwrap(100, 0), 100)
        self.assertEqual(unwrap(WRAP - 100, 0), -100)
        self.assertEqual(unwrap(100, WRAP - 50), WRAP + 100)
        self.assertEqual(unwrap(WRAP - 100, WRAP + 50), WRAP - 100)
        self.assertEqual(unwrap(5, 7 * WRAP + 3), 7 * WRAP + 5)
        self.assertEqual(unwrap(5, 7 * WRAP - 3), 7 * WRAP + 5)
        self.assertEqual(unwrap(0, (1 << 32) - 1), 0)
        self.assertEqual(unwrap(0, (1 << 32) + 1), WRAP)


class SingleSourceTests(SynchronousTestCase):
    """
    One source: passed through from its first access point.
    """

    def setUp(self):
        """
        A 2 s source (keyframe every second, PAT/PMT every fifth frame)
        spliced in as source 3 of a fresh timeline.
        """
        self.data = tsgen.stream(seconds=2, gop=1, audio=1, psi_every=5)
        self.timeline = Timeline()
        self.pieces = splice_in(self.timeline, self.data, 3)
        self.packets = packets_of(self.pieces)

    def test_timestamps_unchanged(self):
        """
        The first source keeps its own clock: PTS, DTS and PCR as they came.
        """
        source = tsgen.read_packets(self.data)
        self.assertEqual(video(self.packets), video(source))
        self.assertEqual([p.pcr for p in self.packets if p.pcr is not None],
                         [p.pcr for p in source if p.pcr is not None])
        self.assertEqual(self.timeline.splices, 0)

    def test_first_piece_is_access_point(self):
        """
        The first piece starts with PAT and PMT, then the keyframe; it is
        marked as an access point, a splice, from the source given, at the
        keyframe's DTS in seconds.
        """
        first = self.pieces[0]
        self.assertEqual((first.mark, first.splice, first.source), (ACCESS, True, 3))
        self.assertEqual(first.time, 126_000 / 90_000)
        packets = tsgen.read_packets(first.data)
        self.assertEqual([p.pid for p in packets[:3]], [PAT_PID, PMT_PID, VIDEO_PID])
        self.assertTrue(packets[2].rai)
        self.assertTrue(all(p.pid == VIDEO_PID for p in packets[2:]))

    def test_marks(self):
        """
        Each video frame is a piece of its own: keyframes ACCESS, others
        FRAME, with their DTS in seconds; only the first is a splice; audio
        and tables between frames come in unmarked pieces.
        """
        marked = [p for p in self.pieces if p.mark is not None]
        self.assertEqual([p.mark for p in marked], ([ACCESS] + [FRAME] * 24) * 2)
        self.assertEqual([p.time for p in marked], [(126_000 + F * i) / 90_000 for i in range(50)])
        self.assertEqual([p.splice for p in self.pieces], [True] + [False] * (len(self.pieces) - 1))
        self.assertEqual({p.source for p in self.pieces}, {3})
        for piece in self.pieces:
            pids = {p.pid for p in tsgen.read_packets(piece.data)}
            if piece.mark is None:
                self.assertNotIn(VIDEO_PID, pids)
                self.assertIsNone(piece.time)

    def test_units_before_access_point_dropped(self):
        """
        The SDT and the audio before the first keyframe are dropped; the
        PAT and PMT in front of it are kept; nothing after it is lost.
        """
        self.assertEqual(self.packets[0].pid, PAT_PID)
        self.assertNotIn(SDT_PID, {p.pid for p in self.packets})
        self.assertEqual(frames_in(self.packets), list(range(50)))
        source_audio = audio_pts(tsgen.read_packets(self.data))
        self.assertEqual(audio_pts(self.packets), source_audio[1:])  # the first came before the keyframe
        self.assertEqual(self.timeline.dropped_units, 1)

    def test_starts_mid_gop(self):
        """
        A source picked up between keyframes is dropped up to its next
        keyframe, however it is cut.
        """
        units = read_units(self.data)
        second_key = next(i for i, u in enumerate(units) if u.key and i > 10)
        timeline = Timeline()
        timeline.splice(0)
        pieces = feed(timeline, units[10:])
        packets = packets_of(pieces)
        self.assertEqual(frames_in(packets), list(range(25, 50)))
        self.assertEqual(pieces[0].mark, ACCESS)
        dropped = [u for u in units[10:second_key] if u.kind == PES]
        self.assertEqual(timeline.dropped_units, len(dropped))

    def test_counters_continuous(self):
        """
        Every PID's continuity counter steps by one over packets with
        payload, PSI included.
        """
        self.assertEqual(tsgen.continuity_errors(self.packets), [])
        self.assertEqual([p.cc for p in self.packets if p.pid == PAT_PID][:3], [0, 1, 2])

    def test_tables_between_frames_kept(self):
        """
        PAT and PMT repeated between keyframes come out before the frame
        they preceded, with the current PMT version and a right CRC.
        """
        source_tables = [p.pid for p in tsgen.read_packets(self.data) if p.pid in (PAT_PID, PMT_PID)]
        tables = [p for p in self.packets if p.pid in (PAT_PID, PMT_PID)]
        self.assertEqual(len(tables), len(source_tables))
        for p in tables:
            self.assertTrue(tsgen.section_crc_ok(p.table))
            if p.pid == PMT_PID:
                self.assertEqual(tsgen.section_version(p.table), 0)

    def test_end(self):
        """
        end is right after the last frame: its DTS plus a frame (the frame
        interval measured), in ticks and seconds; None before any frame.
        """
        self.assertIsNone(Timeline().end)
        self.assertIsNone(Timeline().end_seconds)
        self.assertEqual(self.timeline.end, 126_000 + 50 * F)
        self.assertEqual(self.timeline.end_seconds, (126_000 + 50 * F) / 90_000)

    def test_end_counts_reordered_frames(self):
        """
        With B-frames the end is after the latest presentation time, not
        only after the last DTS.
        """
        timeline = Timeline()
        pieces = splice_in(timeline, tsgen.stream(seconds=1, gop=1, fps=50, audio=0, bframes=True), 0)
        times = video(packets_of(pieces))
        self.assertEqual(timeline.end, max(max(times)) + 1800)

    def test_psi_prefix(self):
        """
        psi_prefix gives copies of the current PAT and PMT numbered on from
        the last ones sent, afresh on each call.
        """
        self.assertEqual(Timeline().psi_prefix(), b"")
        last = {pid: [p.cc for p in self.packets if p.pid == pid][-1] for pid in (PAT_PID, PMT_PID)}
        for step in (1, 2):
            prefix = tsgen.read_packets(self.timeline.psi_prefix())
            self.assertEqual([p.pid for p in prefix], [PAT_PID, PMT_PID])
            self.assertEqual([p.cc for p in prefix], [(last[PAT_PID] + step) % 16, (last[PMT_PID] + step) % 16])
            self.assertEqual(prefix[0].table, tsgen.Muxer().pat()[5:21])
            self.assertEqual(tsgen.section_version(prefix[1].table), 0)
            self.assertTrue(tsgen.section_crc_ok(prefix[1].table))
        # The stream goes on counting after the prefixes.
        more = feed(self.timeline, read_units(tsgen.stream(seconds=0.2, start=126_000 + 50 * F, sdt=False)))
        prefix_counters = {PAT_PID: (last[PAT_PID] + 2) % 16, PMT_PID: (last[PMT_PID] + 2) % 16}
        self.assertEqual(tsgen.continuity_errors(packets_of(more), dict(prefix_counters)), [])

    def test_other_tables_after_start(self):
        """
        A table other than PAT/PMT met after the start is passed on in
        order, before the next frame, with its own counters.
        """
        mux = tsgen.Muxer()
        data = (
            mux.pat() + mux.pmt() + mux.pes(VIDEO_PID, 0xE0, tsgen.frame_payload(0, 500), 0, 0, key=True)
            + mux.sdt() + mux.pes(VIDEO_PID, 0xE0, tsgen.frame_payload(1, 100), F, F) + mux.pat()
        )
        timeline = Timeline()
        pieces = splice_in(timeline, data, 0)
        self.assertEqual([p.mark for p in pieces], [ACCESS, None, FRAME])
        self.assertEqual([p.pid for p in tsgen.read_packets(pieces[1].data)], [SDT_PID])


class SpliceTests(SynchronousTestCase):
    """
    Successive sources made one stream.
    """

    def check_continuous(self, packets):
        """
        Video DTS, audio PTS and PCR strictly increase; counters run on.
        """
        times = video(packets)
        dts = [d for _, d in times]
        self.assertEqual(dts, sorted(set(dts)))
        for pid in (AUDIO_PID, SECOND_AUDIO_PID):
            pts = audio_pts(packets, pid)
            self.assertEqual(pts, sorted(set(pts)))
        pcr = tsgen.unwrapped([p.pcr for p in packets if p.pcr is not None])
        self.assertEqual(pcr, sorted(set(pcr)))
        self.assertEqual(tsgen.continuity_errors(packets), [])

    def test_two_sources_video_only(self):
        """
        The second source's first keyframe comes one frame after the first
        source's last frame, whatever its own clock said; its PCR keeps its
        distance to the DTS; counters and frames run on.
        """
        timeline = Timeline()
        first = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=0), 0)
        second = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=0, start=5_000_000, first_frame=50), 1)
        packets = packets_of(first + second)
        self.check_continuous(packets)
        dts = [d for _, d in video(packets)]
        self.assertEqual(dts, [126_000 + F * i for i in range(100)])
        self.assertEqual(frames_in(packets), list(range(100)))
        for p in packets:
            if p.pcr is not None:
                self.assertEqual(p.pcr, (p.dts - tsgen.PCR_DELAY) % MODULO)
        self.assertEqual((second[0].mark, second[0].splice, second[0].source), (ACCESS, True, 1))
        self.assertEqual(second[0].time, (126_000 + 50 * F) / 90_000)
        self.assertEqual(timeline.splices, 1)

    def test_pmt_version_per_splice(self):
        """
        Each splice bumps the PMT version (mod 32) on every PMT sent from
        then on, the CRC recomputed; the PAT is untouched.
        """
        timeline = Timeline()
        for source in range(34):
            pieces = splice_in(timeline, tsgen.stream(seconds=0.4, gop=0.4, audio=0, psi_every=4), source)
            packets = packets_of(pieces)
            pmts = [p for p in packets if p.pid == PMT_PID]
            self.assertEqual(len(pmts), 3)
            self.assertEqual({tsgen.section_version(p.table) for p in pmts}, {source % 32})
            self.assertTrue(all(tsgen.section_crc_ok(p.table) for p in pmts))
            self.assertEqual({p.table for p in packets if p.pid == PAT_PID}, {tsgen.Muxer().pat()[5:21]})
            prefix = tsgen.read_packets(timeline.psi_prefix())
            self.assertEqual(tsgen.section_version(prefix[1].table), source % 32)
        self.assertEqual(timeline.splices, 33)

    def test_three_sources_across_the_wrap(self):
        """
        A source whose clock wraps past 2**33 mid-stream, then one whose
        clock starts earlier than the last ended: the output runs on
        without a step, its written values wrapping modulo 2**33.
        """
        timeline = Timeline()
        pieces = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=0), 0)
        pieces += splice_in(
            timeline, tsgen.stream(seconds=3, gop=1, audio=0, start=WRAP - 90_000, first_frame=50), 1
        )
        pieces += splice_in(timeline, tsgen.stream(seconds=2, gop=0.5, audio=0, start=0, first_frame=125), 2)
        packets = packets_of(pieces)
        self.check_continuous(packets)
        dts = [d for _, d in video(packets)]
        self.assertEqual(dts, [126_000 + F * i for i in range(175)])
        self.assertEqual(frames_in(packets), list(range(175)))
        marked = [p for p in pieces if p.mark]
        self.assertEqual([p.time for p in marked], [(126_000 + F * i) / 90_000 for i in range(175)])
        self.assertEqual(timeline.splices, 2)

    def test_output_wraps(self):
        """
        An output clock that passes 2**33 is written modulo 2**33 while
        piece times and end keep counting.
        """
        timeline = Timeline()
        start = WRAP - 25 * F
        pieces = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=1, start=start), 0)
        pieces += splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=1, start=7_000, first_frame=50), 1)
        packets = packets_of(pieces)
        self.check_continuous(packets)
        raw = [p.dts for p in packets if p.pid == VIDEO_PID and p.pusi]
        self.assertEqual(raw[24:27], [WRAP - F, 0, F])
        self.assertTrue(all(0 <= value < WRAP for value in raw))
        marked = [p.time for p in pieces if p.mark]
        self.assertEqual(marked, sorted(set(marked)))
        self.assertGreater(timeline.end, WRAP)

    def test_b_frames(self):
        """
        With reordered frames the new source's keyframe is shown after every
        frame before it, and decoded after them.
        """
        timeline = Timeline()
        first = splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=0, bframes=True), 0)
        before = video(packets_of(first))
        second = splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=0, bframes=True, start=777_777), 1)
        both = video(packets_of(first + second))
        after = both[len(before) :]
        self.assertGreater(after[0][0], max(pts for pts, _ in before))
        self.assertGreater(after[0][1], before[-1][1])
        self.assertEqual(len({pts for pts, _ in both}), len(both))
        dts = [d for _, d in both]
        self.assertEqual(dts, sorted(set(dts)))

    def test_b_frames_keyframe_straddling_the_wrap(self):
        """
        A new source whose first keyframe has its DTS just before 2**33 and
        its PTS (two frames later) just after is placed by the true PTS-DTS
        distance: the output goes on one frame after the last one.
        """
        timeline = Timeline()
        first = splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=1), 0)
        second = splice_in(
            timeline, tsgen.stream(seconds=1, gop=1, audio=1, bframes=True, start=WRAP - F, first_frame=25), 1
        )
        packets = packets_of(first + second)
        self.check_continuous(packets)
        dts = [d for _, d in video(packets)]
        last_audio = audio_pts(packets_of(first))[-1]
        # Presentation of the new keyframe (DTS + 2 frames) follows the old
        # audio's end; its DTS follows the old last frame.
        expected = max(126_000 + 25 * F, last_audio + 3840 - 2 * F)
        self.assertEqual(dts[25], expected)
        self.assertEqual(second[0].time, expected / 90_000)
        last_time = [p.time for p in first if p.mark][-1]
        self.assertLess(second[0].time - last_time, 0.1)

    def test_audio_overlap_dropped(self):
        """
        The new source's first keyframe is presented after the old audio
        ends; new audio that would start before that end is dropped, and
        all later audio is kept, so audio time never goes back.
        """
        timeline = Timeline()
        first = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=1, audio_offset=9_000), 0)
        old_audio = audio_pts(packets_of(first))
        audio_end = old_audio[-1] + 3840
        dropped_before = timeline.dropped_units
        data = tsgen.stream(seconds=2, gop=1, audio=1, audio_offset=-18_000, start=3_000_000, first_frame=50)
        second = splice_in(timeline, data, 1)
        packets = packets_of(first + second)
        self.check_continuous(packets)
        new_video = video(packets_of(second))
        self.assertEqual(new_video[0][1], audio_end)  # later than the video's end: the audio ran ahead
        self.assertGreater(audio_end, 126_000 + 50 * F)
        offset = audio_end - 3_000_000
        source_audio = [pts + offset for pts in audio_pts(tsgen.read_packets(data))]
        kept = audio_pts(packets_of(second))
        self.assertEqual(kept, [pts for pts in source_audio if pts >= audio_end])
        # Dropped: the audio before the keyframe and the overlap after it.
        self.assertEqual(timeline.dropped_units - dropped_before, len(source_audio) - len(kept))
        self.assertGreater(len(source_audio) - len(kept), 2)

    def test_two_audio_tracks(self):
        """
        Two audio tracks whose PES interleave are both passed on whole:
        each track's clock is its own.
        """
        timeline = Timeline()
        data = tsgen.stream(seconds=2, gop=1, audio=2)
        packets = packets_of(splice_in(timeline, data, 0))
        source = tsgen.read_packets(data)
        for pid in (AUDIO_PID, SECOND_AUDIO_PID):
            self.assertEqual(audio_pts(packets, pid), audio_pts(source, pid)[1:])
        self.check_continuous(packets)

    def test_two_audio_tracks_across_splice(self):
        """
        After a splice both tracks continue, neither going back in time.
        """
        timeline = Timeline()
        pieces = splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=2), 0)
        pieces += splice_in(timeline, tsgen.stream(seconds=2, gop=1, audio=2, start=900_000, first_frame=50), 1)
        packets = packets_of(pieces)
        self.check_continuous(packets)
        for pid in (AUDIO_PID, SECOND_AUDIO_PID):
            self.assertGreater(len(audio_pts(packets, pid)), 45)

    def test_counters_continue_across_sources(self):
        """
        Counters of every PID run on across splices although each source
        starts its own at zero, PCR-only packets (no payload) not counting.
        """
        timeline = Timeline()
        pieces = []
        for source in range(4):
            data = tsgen.stream(seconds=0.9, gop=0.3, audio=1, pcr_only=True, psi_every=2,
                                start=100_000 * source)
            pieces += splice_in(timeline, data, source)
        packets = packets_of(pieces)
        self.assertEqual(tsgen.continuity_errors(packets), [])
        self.assertTrue(any(p.payload is None for p in packets))
        pcr = tsgen.unwrapped([p.pcr for p in packets if p.pcr is not None])
        self.assertEqual(pcr, sorted(pcr))

    def test_new_source_tables_replace_held_ones(self):
        """
        Before its first keyframe a source's PAT/PMT repeats are kept only
        as the latest pair, and its other tables and media are dropped.
        """
        timeline = Timeline()
        pieces = splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=0), 0)
        units = read_units(tsgen.stream(seconds=2, gop=1, audio=1, psi_every=5, start=0))
        first_key = next(i for i, u in enumerate(units) if u.key)
        second_key = next(i for i, u in enumerate(units) if u.key and i > first_key)
        timeline.splice(1)
        out = feed(timeline, units[first_key + 1 : second_key + 1])
        self.assertEqual(len(out), 1)
        self.assertEqual([p.pid for p in tsgen.read_packets(out[0].data)[:3]], [PAT_PID, PMT_PID, VIDEO_PID])
        # Four repeats in the GOP, then the pair before the keyframe.
        self.assertEqual(len([u for u in units[first_key + 1 : second_key] if u.kind in (PAT, PMT)]), 10)
        self.assertEqual(tsgen.continuity_errors(packets_of(pieces + out)), [])

    def test_source_without_keyframe(self):
        """
        A source that never reaches a keyframe adds nothing and leaves the
        timeline where it was.
        """
        timeline = Timeline()
        splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=0), 0)
        end = timeline.end
        units = read_units(tsgen.stream(seconds=0.8, gop=1, audio=1, start=0))
        timeline.splice(1)
        self.assertEqual(feed(timeline, [u for u in units if not u.key]), [])
        self.assertEqual(timeline.end, end)
        self.assertEqual(timeline.splices, 0)

    def test_splice_without_pmt_uses_stored_tables(self):
        """
        A new source whose keyframe comes without PAT/PMT in front of it
        gets the stored ones, already carrying the new version.
        """
        timeline = Timeline()
        splice_in(timeline, tsgen.stream(seconds=1, gop=1, audio=0), 0)
        units = [u for u in read_units(tsgen.stream(seconds=1, gop=1, audio=0, start=0)) if u.kind == PES]
        timeline.splice(1)
        pieces = feed(timeline, units)
        head = tsgen.read_packets(pieces[0].data)
        self.assertEqual([p.pid for p in head[:2]], [PAT_PID, PMT_PID])
        self.assertEqual(tsgen.section_version(head[1].table), 1)
        self.assertTrue(tsgen.section_crc_ok(head[1].table))


class PieceTests(SynchronousTestCase):
    """
    The Piece record.
    """

    def test_defaults(self):
        """
        A piece is unmarked, untimed, not a splice and from source 0 unless
        told otherwise.
        """
        self.assertEqual(Piece(b"x"), Piece(b"x", None, None, False, 0))
