"""
Tests for streamproxy.segmenter: where segments end, and the files and
playlist entries the segmenter makes; plus a seeded property test of the
whole pipeline (reader, timeline, segmenter, playlist).
"""

import os
import random

from twisted.trial.unittest import SynchronousTestCase

from streamproxy.hls import LivePlaylist
from streamproxy.mpegts import PES, VIDEO, TSReader
from streamproxy.segmenter import TOLERANCE_SECONDS, CutPolicy, Segmenter
from streamproxy.timeline import ACCESS, FRAME, Piece, Timeline

from . import tsgen
from .tsgen import AUDIO_PID, PAT_PID, PMT_PID, SECOND_AUDIO_PID, VIDEO_PID


class CutPolicyTests(SynchronousTestCase):
    """
    CutPolicy.should_cut, a pure decision.
    """

    policy = CutPolicy(goal=6, target=6)

    def test_only_frames_end_segments(self):
        """
        Pieces that start no video frame never end a segment, however long.
        """
        for mark in (None, "other"):
            self.assertFalse(self.policy.should_cut(100.0, mark, 5, 0.04, 2.0))
            self.assertFalse(self.policy.should_cut(100.0, mark, 0, 0.04, 2.0))

    def test_first_segment(self):
        """
        The channel's first segment ends after ``first`` seconds at any
        frame; later segments do not.
        """
        self.assertFalse(self.policy.should_cut(0.96, FRAME, 0, 0.04, None))
        self.assertTrue(self.policy.should_cut(1.0, FRAME, 0, 0.04, None))
        self.assertTrue(self.policy.should_cut(1.0, ACCESS, 0, 0.04, None))
        self.assertFalse(self.policy.should_cut(1.0, FRAME, 1, 0.04, None))
        self.assertTrue(CutPolicy(6, 6, first=2.5).should_cut(2.5, FRAME, 0, 0.04, None))
        self.assertFalse(CutPolicy(6, 6, first=2.5).should_cut(2.4, FRAME, 0, 0.04, None))

    def test_goal_at_keyframe(self):
        """
        Once the goal is reached (within half a frame) a keyframe ends the
        segment; a plain frame does not.
        """
        self.assertFalse(self.policy.should_cut(5.96, ACCESS, 3, 0.04, None))
        self.assertTrue(self.policy.should_cut(5.98, ACCESS, 3, 0.04, None))
        self.assertTrue(self.policy.should_cut(6.0, ACCESS, 3, 0.04, 2.0))
        self.assertFalse(self.policy.should_cut(6.0, FRAME, 3, 0.04, 2.0))

    def test_forced_cut(self):
        """
        A frame that would take the segment past target + 0.25 s ends it
        first, keyframe or not.
        """
        self.assertFalse(self.policy.should_cut(6.20, FRAME, 3, 0.04, 7.0))
        self.assertTrue(self.policy.should_cut(6.24, FRAME, 3, 0.04, 7.0))
        self.assertTrue(self.policy.should_cut(6.24, FRAME, 0, 0.04, None))
        self.assertTrue(CutPolicy(4.5, 5).should_cut(5.2, FRAME, 3, 0.1, None))
        self.assertFalse(CutPolicy(4.5, 5).should_cut(5.1, FRAME, 3, 0.1, None))
        self.assertEqual(TOLERANCE_SECONDS, 0.25)

    def test_early_cut(self):
        """
        A keyframe ends the segment early when waiting for the next one
        (a GOP later) would pass target + 0.25 s, but not before 1 s of
        media and not while the GOP is unknown.
        """
        self.assertTrue(self.policy.should_cut(4.0, ACCESS, 3, 0.04, 4.0))
        self.assertTrue(self.policy.should_cut(2.3, ACCESS, 3, 0.04, 4.0))
        self.assertFalse(self.policy.should_cut(2.2, ACCESS, 3, 0.04, 4.0))
        self.assertFalse(self.policy.should_cut(4.0, ACCESS, 3, 0.04, 2.0))
        self.assertTrue(self.policy.should_cut(5.0, ACCESS, 3, 0.04, 2.0))
        self.assertFalse(self.policy.should_cut(4.0, ACCESS, 3, 0.04, None))
        self.assertFalse(self.policy.should_cut(0.96, ACCESS, 3, 0.04, 7.0))
        self.assertTrue(self.policy.should_cut(1.0, ACCESS, 3, 0.04, 7.0))
        self.assertFalse(self.policy.should_cut(4.0, FRAME, 3, 0.04, 4.0))


class Run:
    """
    A channel's output machinery in ``folder``: timeline, segmenter and
    playlist (which keeps every segment unless told otherwise), and what
    went through them.
    """

    def __init__(self, folder, hls_time=6, target=6, min_segments=10**6, tag="ch"):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.playlist = LivePlaylist(target, min_segments)
        self.timeline = Timeline()
        self.segmenter = Segmenter(folder, tag, self.playlist, CutPolicy(hls_time, target), self.timeline)
        self.pieces = []
        self.gone = []
        self.added = []
        add = self.playlist.add

        def recording_add(name, duration, discontinuity=False, size=0):
            # Every segment ever listed, for checks after it left.
            self.added.append((name, duration, discontinuity, size))
            return add(name, duration, discontinuity, size)

        self.playlist.add = recording_add

    def source(self, data, number, chunks=None, flush_first=True):
        """
        Splice in a whole stream, as the session does: flush the segment
        under way, splice, then feed what the reader makes of ``data`` fed
        in pieces of the sizes ``chunks`` gives (all at once when None).
        """
        if flush_first:
            self.gone += self.segmenter.flush()
        self.timeline.splice(number)
        reader = TSReader()
        at = 0
        while at < len(data):
            size = len(data) if chunks is None else next(chunks)
            self.units(reader.feed(data[at : at + size]))
            at += size
        self.units(reader.flush())

    def units(self, units):
        """
        Push ``units`` through the timeline and the segmenter.
        """
        for unit in units:
            for piece in self.timeline.push(unit):
                self.feed(piece)

    def feed(self, piece):
        """
        Feed one piece to the segmenter and keep it as sent on.
        """
        self.gone += self.segmenter.feed(piece)
        self.pieces.append(piece)

    def finish(self):
        """
        Flush the last segment.
        """
        self.gone += self.segmenter.flush()

    @property
    def durations(self):
        """
        Every finished segment's duration, rounded to the millisecond.
        """
        return [round(duration, 3) for _, duration, _, _ in self.added]

    def file(self, name):
        """
        The bytes of segment ``name``.
        """
        with open(os.path.join(self.folder, name), "rb") as f:
            return f.read()


class SegmenterTests(SynchronousTestCase):
    """
    Segments cut from a channel's output.
    """

    def run_stream(self, seconds, gop, hls_time=6, target=6, **kwargs):
        """
        A finished Run of one generated stream.
        """
        run = Run(self.mktemp(), hls_time, target)
        run.source(tsgen.stream(seconds=seconds, gop=gop, **kwargs), 0)
        run.finish()
        return run

    def test_gop_2_hls_time_6(self):
        """
        Keyframes every 2 s and hls_time 6: a first segment of 1 s, then one
        that ends at the keyframe at 6 s (5 s, the next keyframe would make
        it 7), then 6 s segments; the end flushed as it is.
        """
        run = self.run_stream(40, 2)
        self.assertEqual(run.durations, [1.0, 5.0, 6.0, 6.0, 6.0, 6.0, 6.0, 4.0])

    def test_gop_4(self):
        """
        Keyframes every 4 s: each segment ends at the next keyframe (4 s),
        because the one after would pass the target.
        """
        run = self.run_stream(30, 4)
        self.assertEqual(run.durations, [1.0, 3.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 2.0])

    def test_gop_7_forced_cuts(self):
        """
        Keyframes every 7 s with target 6: segments are cut between
        keyframes, never above target + 0.25; each segment that starts
        between keyframes starts with PAT and PMT.
        """
        run = self.run_stream(36, 7)
        self.assertEqual(run.durations, [1.0, 6.0, 6.24, 6.24, 1.52, 6.24, 6.24, 1.52, 1.0])
        self.assertTrue(all(d <= 6 + TOLERANCE_SECONDS for d in run.durations))
        for name, _, _, _ in run.added:
            packets = tsgen.read_packets(run.file(name))
            self.assertEqual([p.pid for p in packets[:3]], [PAT_PID, PMT_PID, VIDEO_PID])
            self.assertTrue(tsgen.section_crc_ok(packets[1].table))
        keyed = [tsgen.read_packets(run.file(name))[2].rai for name, _, _, _ in run.added]
        self.assertEqual(keyed, [True, False, True, False, False, True, False, False, True])

    def test_fractional_hls_time(self):
        """
        hls_time 4.5 under target 5: keyframes every 1.5 s give 4.5 s
        segments (the second one, from 1 s to the keyframe at 6 s, 5 s).
        """
        run = self.run_stream(30, 1.5, hls_time=4.5, target=5, fps=30)
        self.assertEqual(run.durations[:5], [1.0, 5.0, 4.5, 4.5, 4.5])

    def test_first_segment_about_a_second(self):
        """
        The first segment ends at the first frame one second in, whatever
        the GOP and frame rate.
        """
        for fps, gop in ((25, 2), (30, 10), (50, 0.5)):
            run = Run(self.mktemp())
            run.source(tsgen.stream(seconds=3, gop=gop, fps=fps, audio=0), 0)
            self.assertEqual(round(run.added[0][1], 3), 1.0)

    def test_names(self):
        """
        Segments are named <tag><source:02d>_<sequence:05d>.ts.
        """
        run = Run(self.mktemp(), tag="abc")
        run.source(tsgen.stream(seconds=8, gop=2, audio=0), 7)
        run.source(tsgen.stream(seconds=8, gop=2, audio=0, start=0), 12)
        run.finish()
        names = [name for name, _, _, _ in run.added]
        self.assertEqual(names[:3], ["abc07_00000.ts", "abc07_00001.ts", "abc07_00002.ts"])
        self.assertEqual(names[3:5], ["abc12_00003.ts", "abc12_00004.ts"])
        self.assertEqual(sorted(os.listdir(run.folder)), sorted(names))

    def test_splice_ends_segment_and_marks_discontinuity(self):
        """
        The first piece of a new source ends the segment under way (also
        when nobody flushed it) and its segment is marked discontinuous;
        the very first segment never is.
        """
        for flush_first in (True, False):
            run = Run(self.mktemp())
            run.source(tsgen.stream(seconds=3.6, gop=1, audio=0), 0)
            run.source(tsgen.stream(seconds=3.6, gop=1, audio=0, start=0), 1, flush_first=flush_first)
            run.finish()
            self.assertEqual([d for _, _, d, _ in run.added], [False, False, True])
            self.assertEqual(run.durations, [1.0, 2.6, 3.6])
            self.assertEqual([name for name, _, _, _ in run.added], ["ch00_00000.ts", "ch00_00001.ts", "ch01_00002.ts"])

    def test_splice_at_the_start(self):
        """
        A splice before any segment was listed is no discontinuity, and the
        first segment is still cut short.
        """
        run = Run(self.mktemp())
        data = tsgen.stream(seconds=0.8, gop=1, audio=0)
        run.timeline.splice(0)
        run.units([u for u in TSReader().feed(data) if not u.key])  # no keyframe: nothing starts
        run.source(tsgen.stream(seconds=3, gop=1, audio=0), 1)
        run.finish()
        self.assertEqual([d for _, _, d, _ in run.added], [False, False])
        self.assertEqual(run.durations, [1.0, 2.0])

    def test_flush(self):
        """
        flush ends the segment under way at the timeline's end (or the
        time given) and lists it; with nothing under way it does nothing.
        """
        run = Run(self.mktemp())
        run.source(tsgen.stream(seconds=2.4, gop=1, audio=0), 0)
        self.assertAlmostEqual(run.segmenter.pending_seconds, 1.4)
        self.assertEqual(run.segmenter.flush(), [])
        self.assertEqual(run.durations, [1.0, 1.4])
        self.assertEqual(run.segmenter.pending_seconds, 0.0)
        self.assertEqual(run.segmenter.flush(), [])
        self.assertEqual(len(run.added), 2)
        run = Run(self.mktemp())
        run.source(tsgen.stream(seconds=2.4, gop=1, audio=0), 0)
        run.segmenter.flush(end=126_000 / 90_000 + 3.0)
        self.assertEqual(run.durations, [1.0, 2.0])

    def test_flushed_segment_within_target(self):
        """
        A segment flushed just before it would have been force-cut lasts
        what its frames last (6.24 s here), neither counting the old
        source's B-frames shown after its last DTS nor, when the new
        source's first piece ends it, the gap up to where the new source is
        placed after audio that ran ahead (which gave 6.32 s and 6.527 s,
        an #EXTINF rounding to 7 under target 6).
        """
        for bframes in (False, True):
            for audio_offset in (0, 27_000):
                for flush_first in (True, False):
                    run = Run(self.mktemp())
                    old = tsgen.stream(seconds=13.24, gop=7, bframes=bframes, audio_offset=audio_offset)
                    run.source(old, 0)
                    run.source(tsgen.stream(seconds=3, gop=1, start=0), 1, flush_first=flush_first)
                    run.finish()
                    self.assertEqual(run.durations, [1.0, 6.0, 6.24, 3.0])

    def test_flush_returns_what_left(self):
        """
        What a finished segment pushes out of the window is returned by
        feed and flush.
        """
        run = Run(self.mktemp(), min_segments=1)
        run.source(tsgen.stream(seconds=40, gop=2, audio=0), 0)
        run.finish()
        # 1, 5, 6, 6, 6, 6, 6, 4 s: the window keeps at least 18 s.
        self.assertEqual([name for name, _ in run.gone], [name for name, _, _, _ in run.added[:4]])
        self.assertEqual(run.playlist.names(), [name for name, _, _, _ in run.added[4:]])

    def test_close_removes_partial_file(self):
        """
        close drops the segment under way and its file; listed segments
        stay; closing again does nothing.
        """
        run = Run(self.mktemp())
        run.source(tsgen.stream(seconds=3, gop=1, audio=0), 0)
        files = sorted(os.listdir(run.folder))
        self.assertEqual(len(files), 2)
        run.segmenter.close()
        self.assertEqual(sorted(os.listdir(run.folder)), sorted(name for name, _, _, _ in run.added))
        self.assertEqual(len(run.added), 1)
        run.segmenter.close()
        self.assertEqual(run.segmenter.flush(), [])

    def test_files_hold_exactly_the_pieces(self):
        """
        The segment files, in order, hold exactly the bytes of the pieces as
        passed on (with the tables put in front of segments that start
        between keyframes); sizes and bytes_written agree.
        """
        run = Run(self.mktemp())
        run.source(tsgen.stream(seconds=20, gop=7, audio=1, psi_every=5), 0)
        run.source(tsgen.stream(seconds=20, gop=3, audio=1, start=0), 1)
        run.finish()
        files = b"".join(run.file(name) for name, _, _, _ in run.added)
        self.assertEqual(files, b"".join(p.data for p in run.pieces))
        self.assertEqual([size for _, _, _, size in run.added],
                         [len(run.file(name)) for name, _, _, _ in run.added])
        self.assertEqual(run.segmenter.bytes_written, len(files))

    def test_files_parse_back(self):
        """
        Every file reads back as PAT, PMT, a video frame and more; every
        counter runs on from file to file; the video in each file spans its
        listed duration.
        """
        run = Run(self.mktemp())
        run.source(tsgen.stream(seconds=20, gop=7, audio=1), 0)
        run.source(tsgen.stream(seconds=20, gop=3, audio=1, start=0), 1)
        run.finish()
        counters = {}
        for name, duration, _, _ in run.added:
            data = run.file(name)
            reader = TSReader()
            units = reader.feed(data) + reader.flush()
            self.assertEqual([u.kind for u in units[:2]], ["pat", "pmt"])
            self.assertEqual((units[2].kind, units[2].stream), (PES, VIDEO))
            self.assertEqual(reader.skipped, 0)
            self.assertEqual(tsgen.continuity_errors(tsgen.read_packets(data), counters), [])
            dts = [u.dts for u in units if u.stream == VIDEO]
            self.assertAlmostEqual((dts[-1] - dts[0] + 3600) / 90_000, duration, places=6)

    def test_unmarked_pieces_wait_for_a_frame(self):
        """
        Pieces that start no frame (audio, tables) before any segment are
        not written: a segment starts with a video frame.
        """
        run = Run(self.mktemp())
        gone = run.segmenter.feed(Piece(b"\x47" + b"\x00" * 187))
        self.assertEqual(gone, [])
        self.assertEqual(os.listdir(run.folder), [])
        self.assertEqual(run.segmenter.bytes_written, 0)


def spec_for(rng, number, start):
    """
    A random source: frame rate, GOP, B-frames, audio tracks and offsets,
    PSI repeats, clock start (sometimes right before the wrap).
    """
    fps = rng.choice((25, 30, 50))
    return tsgen.Spec(
        seconds=rng.uniform(0.5, 25),
        fps=fps,
        gop=rng.choice((0.5, 1, 2, 3.2, 4, 6, 7, 10)),
        start=start,
        audio=rng.choice((0, 1, 1, 2)),
        audio_frames=rng.choice((1, 2, 5)),
        audio_offset=rng.randint(-20_000, 20_000),
        bframes=rng.random() < 0.4,
        psi_every=rng.choice((None, None, 3, 5)),
        pcr_only=rng.random() < 0.3,
        sdt=rng.random() < 0.5,
        key_size=rng.choice((300, 3000)),
        frame_size=rng.choice((50, 300)),
        first_frame=number * 100_000,
        rng=rng,
    )


def random_chunks(rng):
    """
    Endless random chunk sizes, mostly small, sometimes large.
    """
    while True:
        yield rng.choice((rng.randint(1, 200), rng.randint(1, 5000), 188, 65536))


class PipelinePropertyTests(SynchronousTestCase):
    """
    Random sources spliced at random points and fed in random chunks: the
    output is always one valid continuous stream and HLS-compliant.
    """

    SEEDS = range(24)

    def test_random_splices(self):
        """
        For every seed: video DTS and each audio track's PTS strictly
        increase over the whole output; a new source's pictures are shown
        after all earlier ones; PCR never goes back; every PID's counter
        steps by one mod 16 over packets with payload (tables put in front
        of segments included); every segment lasts at most target + 0.25 s
        and the files are the output.
        """
        for seed in self.SEEDS:
            self.check_seed(seed)

    def check_seed(self, seed):
        """
        Build, run and check the random channel of ``seed``.
        """
        rng = random.Random(seed)
        hls_time = rng.choice((2, 4, 6, 6, 10))
        run = Run(self.mktemp(), hls_time=hls_time, target=hls_time)
        sources = rng.randint(1, 4)
        inputs = []
        for number in range(sources):
            start = rng.choice(
                (
                    0,
                    126_000,
                    rng.randrange(1 << 33),
                    (1 << 33) - rng.randint(1, 900_000),
                    (1 << 33) - rng.randint(1, 7_200),  # a first keyframe's PTS and DTS either side of the wrap
                )
            )
            data = tsgen.stream(spec_for(rng, number, start))
            # Splice at a random point: cut the source short, and sometimes
            # pick it up at an arbitrary byte (a standby buffered mid-GOP).
            end = rng.randint(len(data) // 3, len(data))
            begin = rng.choice((0, 0, rng.randrange(len(data) // 4)))
            inputs.append(tsgen.read_packets(data)[-(-begin // 188) : end // 188])
            run.source(data[begin:end], number, random_chunks(rng), flush_first=rng.random() < 0.7)
        run.finish()
        context = f"seed {seed}"
        output = b"".join(p.data for p in run.pieces)
        packets = tsgen.read_packets(output)
        self.check_content(run, inputs, context)

        # Timestamps.
        starts = [p for p in packets if p.pusi and p.pts is not None]
        video = [p for p in starts if p.pid == VIDEO_PID]
        dts = tsgen.unwrapped([p.dts for p in video])
        self.assertEqual(dts, sorted(set(dts)), context)
        for pid in (AUDIO_PID, SECOND_AUDIO_PID):
            pts = tsgen.unwrapped([p.pts for p in starts if p.pid == pid])
            self.assertEqual(pts, sorted(set(pts)), context)
        pcr = tsgen.unwrapped([p.pcr for p in packets if p.pcr is not None])
        self.assertEqual(pcr, sorted(pcr), context)
        # Presentation: each source's pictures after every earlier source's.
        shown = tsgen.unwrapped([p.pts for p in video])
        splice_frames = []
        index = 0
        for piece in run.pieces:
            if piece.mark is not None:
                if piece.splice:
                    splice_frames.append(index)
                index += 1
        for at in splice_frames[1:]:
            self.assertGreater(shown[at], max(shown[:at]), context)

        # Counters.
        self.assertEqual(tsgen.continuity_errors(packets), [], context)

        # Segments.
        target = run.playlist.target_duration
        self.assertEqual(target, hls_time)
        for name, duration, _, _ in run.added:
            self.assertLessEqual(duration, target + TOLERANCE_SECONDS, f"{context}: {name}")
        files = b"".join(run.file(name) for name, _, _, _ in run.added)
        self.assertEqual(files, output, context)
        for name, _, _, _ in run.added:
            # Each file can be read on its own.
            reader = TSReader()
            head = (reader.feed(run.file(name)) + reader.flush())[:3]
            self.assertEqual([(u.kind, u.stream) for u in head], [("pat", "other"), ("pmt", "other"), (PES, VIDEO)],
                             f"{context}: {name}")
        self.assertIn(f"#EXT-X-TARGETDURATION:{target}\n", run.playlist.render())

    def check_content(self, run, inputs, context):
        """
        Nothing is lost but what must go: each source's video from its first
        keyframe on, every frame; each audio track from there on, less at
        most a run at its start that overlaps the audio before the splice.
        """
        out = {}
        for piece in run.pieces:
            for p in tsgen.read_packets(piece.data):
                if p.pusi and p.pts is not None:
                    out.setdefault(piece.source, []).append(p)
        last_audio = None  # the latest audio PTS before each source
        for number, source in enumerate(inputs):
            # The reader knows the video PID from the first PMT after a PAT.
            pat = next((i for i, p in enumerate(source) if p.pid == PAT_PID), len(source))
            pmt = next((i for i, p in enumerate(source) if p.pid == PMT_PID and i > pat), len(source))
            starts = [p for p in source[pmt:] if p.pusi and p.pts is not None]
            key = next((i for i, p in enumerate(starts) if p.pid == VIDEO_PID and p.rai), None)
            got = out.get(number, [])
            if key is None:
                self.assertEqual(got, [], context)
                continue
            starts = starts[key:]
            for pid in (VIDEO_PID, AUDIO_PID, SECOND_AUDIO_PID):
                sent = [_number(p) for p in starts if p.pid == pid]
                kept = [_number(p) for p in got if p.pid == pid]
                where = f"{context}, source {number}, PID {pid:#x}"
                if pid == VIDEO_PID or last_audio is None:
                    self.assertEqual(kept, sent, where)
                    continue
                # A suffix of what was sent, the rest overlapping old audio.
                self.assertEqual(kept, sent[len(sent) - len(kept) :], where)
                if len(kept) < len(sent):
                    dropped = [p for p in starts if p.pid == pid][: len(sent) - len(kept)]
                    first_kept = [p for p in got if p.pid == pid][:1]
                    if first_kept:
                        # Dropped ones lie before the first kept one by at
                        # most their count (and then some: up to 0.5 s).
                        span = (first_kept[0].pts - _out_pts(dropped[-1], got, starts)) % (1 << 33)
                        self.assertLess(span, 45_000 * len(dropped) + 45_000, where)
            audio = [p.pts for p in got if p.pid in (AUDIO_PID, SECOND_AUDIO_PID)]
            if audio:
                last_audio = audio[-1]


def _number(packet):
    """
    The frame number in a PES start packet made by tsgen.
    """
    body = packet.payload[9 + packet.payload[8] :]
    return tsgen.frame_number(body)


def _out_pts(packet, got, starts):
    """
    Where ``packet`` (an input PES start) would have been put in the
    output: shifted like the source's first keyframe.
    """
    shift = got[[p.pid for p in got].index(VIDEO_PID)].dts - next(p.dts for p in starts if p.pid == VIDEO_PID)
    return (packet.pts + shift) % (1 << 33)
