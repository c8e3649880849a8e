"""
Unit tests of the content checks' pure parts: the ffmpeg options, reading
the check branch's lines (captured from ffmpeg 5.1), the verdict, the
memory of excused channels, the slate's units, and the config block.
"""

from twisted.trial.unittest import SynchronousTestCase

from streamproxy import mpegts
from streamproxy.config import ConfigError, parse_config
from streamproxy.content import (
    BLACK, CLOCK, FROZEN, SILENT, ContentChecks, ContentEvent, ContentMemory, ContentMonitor,
    describe, idle_verdict, input_options, is_check_line, is_decoding_complaint, output_options, parse_line,
)
from streamproxy.ffmpeg import Encoding, ffmpeg_command
from streamproxy.slate import Slate, SlateError, shift_unit, slate_command

from . import tsgen

# Lines ffmpeg 5.1 printed for the check branch (-loglevel repeat+level+info).
CAPTURED = {
    "[Parsed_metadata_3 @ 0x5575c04aafc0] [info] frame:1    pts:181920  pts_time:2.02133": (CLOCK, False, 2.02133),
    "[Parsed_metadata_3 @ 0x5575c04aafc0] [info] lavfi.black_start=6.02133": (BLACK, True, 6.02133),
    "[Parsed_metadata_2 @ 0x557c11396440] [info] lavfi.black_end=16.0213": (BLACK, False, 16.0213),
    "[Parsed_metadata_4 @ 0x564e09c1a940] [info] lavfi.freezedetect.freeze_start=12": (FROZEN, True, 12.0),
    "[Parsed_metadata_2 @ 0x557c11396440] [info] lavfi.freezedetect.freeze_end=16.0213": (FROZEN, False, 16.0213),
    "[silencedetect @ 0x557c1133b4c0] [info] silence_start: 4.03515": (SILENT, True, 4.03515),
    "[silencedetect @ 0x557c1133b4c0] [info] silence_end: 16.0424 | silence_duration: 12.0073":
        (SILENT, False, 16.0424),
}
IGNORED = (
    "[Parsed_metadata_2 @ 0x557c11396440] [info] lavfi.freezedetect.freeze_duration=10",
    "[Parsed_metadata_3 @ 0x5575c04aafc0] [info] streamproxy.tick=1",
    "[freezedetect @ 0x557c113e6640] [info] lavfi.freezedetect.freeze_start: 2.02133",
    "[blackdetect @ 0x557c1133e640] [info] black_start:6.02133 black_end:16.0213 black_duration:10",
    "[Parsed_metadata_3 @ 0x5575c04aafc0] [info] frame:3    pts:NOPTS  pts_time:NOPTS",
    "[info]   Stream #0:0[0x100]: Video: h264 (Constrained Baseline), yuv420p, 320x180, 25 fps",
    "[http @ 0x55dd69325100] [warning] HTTP error 503 Service Unavailable",
)


class OptionsTests(SynchronousTestCase):
    """
    The options the checks add to the ingest ffmpeg.
    """

    def test_keyframes_only_on_one_thread(self):
        """
        The video decoder decodes keyframes only, on one thread; nothing
        when checks are off or the video is transcoded (its decoder feeds
        the encoder).
        """
        checks = ContentChecks()
        self.assertEqual(input_options(checks), ["-skip_frame:v:0", "nokey", "-threads:v:0", "1"])
        self.assertEqual(input_options(None), [])
        self.assertEqual(input_options(checks, decoding_all=True), [])

    def test_second_output_writes_nothing(self):
        """
        The check output maps the first video and (if any) first audio
        stream through the detectors into the null muxer, what leaves them
        made tiny; a transcoded
        stream's frames are thinned to keyframes by a filter instead.
        """
        argv = output_options(ContentChecks())
        self.assertEqual(argv[-3:], ["-f", "null", "-"])
        video = argv[argv.index("-vf") + 1]
        self.assertTrue(video.startswith("blackdetect=d=0:"), video)
        self.assertIn("freezedetect=n=-50dB:d=1", video)
        self.assertTrue(video.endswith("metadata=mode=add:key=streamproxy.tick:value=1,metadata=mode=print,"
                                       "scale=16:16:flags=neighbor"))
        self.assertIn("0:a:0?", argv)
        self.assertTrue(argv[argv.index("-af") + 1].startswith("silencedetect=n=-60dB:d=1,"))
        self.assertTrue(output_options(ContentChecks(), decoding_all=True)[3].startswith("select=key,"))
        self.assertEqual(output_options(None), [])

    def test_ffmpeg_command(self):
        """
        With checks, the ingest command carries the check output before the
        MPEG-TS one, which stays a copy to pipe:1; an idle check's command
        reads a bounded time.
        """
        settings = parse_config({})
        argv = ffmpeg_command(settings, "http://h/1.ts", Encoding(), ContentChecks())
        self.assertEqual(argv[-1], "pipe:1")
        self.assertLess(argv.index("-skip_frame:v:0"), argv.index("-i"))
        self.assertLess(argv.index("null"), argv.index("mpegts"))
        self.assertEqual(argv[argv.index("-c:v", argv.index("null")) + 1], "copy")
        plain = ffmpeg_command(settings, "http://h/1.ts", Encoding())
        self.assertNotIn("null", plain)
        timed = ffmpeg_command(settings, "http://h/1.ts", Encoding(), ContentChecks(), seconds=8)
        self.assertEqual(timed[timed.index("-t") + 1], "8")
        self.assertLess(timed.index("-t"), timed.index("-i"))

    def test_checks_for_a_channel(self):
        """
        Skipped channels get none; tolerated kinds are dropped; nothing
        left to check is None.
        """
        checks = ContentChecks(skip_channels=("7",))
        self.assertIsNone(checks.for_channel("7"))
        self.assertEqual(checks.for_channel("8", {BLACK}).kinds, (FROZEN, SILENT))
        self.assertIsNone(checks.for_channel("8", {BLACK, FROZEN, SILENT}))
        self.assertEqual(describe(SILENT, 20.4), "no sound for 20 s")


class ParseTests(SynchronousTestCase):
    """
    Reading the check branch's stderr lines.
    """

    def test_captured_lines(self):
        """
        Keyframe times and the starts and ends of each fault are read.
        """
        for line, (kind, started, at) in CAPTURED.items():
            event = parse_line(line)
            self.assertEqual((event.kind, event.started), (kind, started), line)
            self.assertAlmostEqual(event.at, at)

    def test_other_lines(self):
        """
        Durations, the tick key, the detectors' own lines and everything
        else are not events; the detectors' lines are still check lines.
        """
        for line in IGNORED:
            self.assertIsNone(parse_line(line), line)
        self.assertTrue(is_check_line(IGNORED[2]))
        self.assertTrue(is_check_line(IGNORED[3]))
        self.assertFalse(is_check_line(IGNORED[-1]))

    def test_decoding_complaints(self):
        """
        Decoders' complaints are told apart from other errors.
        """
        self.assertTrue(is_decoding_complaint(
            "[aac @ 0x558890565e00] [error] decode_band_types: Input buffer exhausted before END element found"))
        self.assertTrue(is_decoding_complaint(
            "[error] Error while decoding stream #0:1: Invalid data found when processing input"))
        self.assertFalse(is_decoding_complaint("[http @ 0x55dd69325100] [warning] HTTP error 503"))


def events(monitor, *items):
    for kind, started, at in items:
        monitor.feed(ContentEvent(kind, started, at))


class MonitorTests(SynchronousTestCase):
    """
    The verdict of one stream's content.
    """

    def test_fault_at_its_limit_once(self):
        """
        A black picture is a fault once it lasted black_seconds of the
        stream's own clock, reported once until it ends and comes back.
        """
        monitor = ContentMonitor(ContentChecks(black_seconds=10))
        events(monitor, (CLOCK, False, 100.0), (BLACK, True, 100.0))
        for t in (102.0, 104.0, 106.0, 108.0):
            events(monitor, (CLOCK, False, t))
            self.assertIsNone(monitor.fault())
        self.assertEqual(monitor.nearing(3), BLACK)
        events(monitor, (CLOCK, False, 110.0))
        fault = monitor.fault()
        self.assertEqual((fault.kind, fault.reason), (BLACK, "black picture for 10 s"))
        events(monitor, (CLOCK, False, 112.0))
        self.assertIsNone(monitor.fault())
        events(monitor, (BLACK, False, 113.0), (CLOCK, False, 114.0), (BLACK, True, 114.0))
        events(monitor, (CLOCK, False, 124.0))
        self.assertEqual(monitor.fault().kind, BLACK)

    def test_reported_late_counts_from_its_start(self):
        """
        A freeze reported at a later keyframe counts from the time ffmpeg
        says it started.
        """
        monitor = ContentMonitor(ContentChecks(freeze_seconds=10))
        events(monitor, (CLOCK, False, 0.0), (CLOCK, False, 2.0), (CLOCK, False, 4.0), (FROZEN, True, 2.0))
        self.assertEqual(monitor.lasting(), {FROZEN: 2.0})

    def test_snooze_and_tolerate(self):
        """
        A snoozed fault is reported again a limit later; a tolerated kind
        never.
        """
        monitor = ContentMonitor(ContentChecks(silence_seconds=5))
        events(monitor, (CLOCK, False, 0.0), (SILENT, True, 0.0), (CLOCK, False, 5.0))
        self.assertEqual(monitor.fault().kind, SILENT)
        monitor.snooze(SILENT)
        events(monitor, (CLOCK, False, 9.0))
        self.assertIsNone(monitor.fault())
        events(monitor, (CLOCK, False, 10.0))
        self.assertEqual(monitor.fault().kind, SILENT)
        monitor.tolerate(SILENT)
        events(monitor, (CLOCK, False, 30.0))
        self.assertIsNone(monitor.fault())
        self.assertIsNone(monitor.nearing(3))
        self.assertEqual(monitor.status(), {})

    def test_unchecked_kinds_are_ignored(self):
        """
        A kind whose limit is 0 is never lasting nor a fault.
        """
        monitor = ContentMonitor(ContentChecks(black_seconds=0))
        events(monitor, (CLOCK, False, 0.0), (BLACK, True, 0.0), (CLOCK, False, 60.0))
        self.assertEqual(monitor.lasting(), {})
        self.assertIsNone(monitor.fault())

    def test_idle_verdict(self):
        """
        An idle check's sample is judged by share: a fault over most of it
        counts, a short one does not.
        """
        checks = ContentChecks()
        monitor = ContentMonitor(checks)
        events(monitor, (CLOCK, False, 0.0), (BLACK, True, 0.0), (CLOCK, False, 8.0))
        self.assertEqual(idle_verdict(checks, monitor, 8.0).kind, BLACK)
        monitor = ContentMonitor(checks)
        events(monitor, (CLOCK, False, 0.0), (CLOCK, False, 4.0), (SILENT, True, 5.0), (CLOCK, False, 8.0))
        self.assertIsNone(idle_verdict(checks, monitor, 8.0))


class MemoryTests(SynchronousTestCase):
    """
    The kinds each channel is excused from.
    """

    def test_remembered_for_a_while(self):
        """
        A kind is excused for ``seconds`` and then judged again.
        """
        memory = ContentMemory(seconds=100)
        memory.tolerate("7", BLACK, 1000)
        self.assertEqual(memory.tolerated("7", 1050), {BLACK})
        self.assertEqual(memory.tolerated("8", 1050), set())
        self.assertEqual(memory.status(1050), [{"channel_id": "7", "kind": BLACK, "until": 1100}])
        self.assertEqual(memory.tolerated("7", 1101), set())


class SlateUnitTests(SynchronousTestCase):
    """
    The slate's units and its loop.
    """

    def test_loop_moves_every_clock_on(self):
        """
        Each pass is the same units with PTS, DTS and PCR one slate length
        later, and the slate lasts its frames.
        """
        slate = Slate(tsgen.stream(seconds=1.0, gop=1.0, start=900_000))
        self.assertAlmostEqual(slate.seconds, 1.0)
        first, third = slate.loop(0), slate.loop(2)
        self.assertEqual(len(first), len(third))
        for a, b in zip(first, third):
            if a.dts is not None:
                self.assertEqual(b.dts - a.dts, 2 * slate.ticks)
                self.assertEqual(b.pts - a.pts, 2 * slate.ticks)
                start = mpegts.payload_offset(b.data)
                pts, dts, _ = mpegts.pes_timestamps(b.data, start)
                self.assertEqual((pts, dts), (b.pts, b.dts))
            for offset in range(0, len(a.data), mpegts.PACKET_SIZE):
                pcr = mpegts.pcr_offset(a.data, offset)
                if pcr is not None:
                    self.assertEqual(mpegts.read_pcr_base(b.data, pcr) - mpegts.read_pcr_base(a.data, pcr),
                                     2 * slate.ticks)
        self.assertIsNot(first[0].data, slate.units[0].data)

    def test_audio_never_overlaps_the_next_pass(self):
        """
        Audio frames that would run into the next pass are left out.
        """
        slate = Slate(tsgen.stream(seconds=1.0, gop=1.0))
        audio = [u for u in slate.units if u.kind == mpegts.PES and u.stream == mpegts.AUDIO]
        step = audio[1].pts - audio[0].pts
        self.assertLessEqual(audio[-1].pts - audio[0].pts + step, slate.ticks)

    def test_no_keyframe(self):
        """
        Bytes without a video keyframe are no slate.
        """
        with self.assertRaises(SlateError):
            Slate(b"")

    def test_command(self):
        """
        One second of H.264 and AAC without B-frames, to standard output;
        the text only when asked.
        """
        argv = slate_command(parse_config({}))
        self.assertEqual(argv[-1], "pipe:1")
        self.assertIn("-bf", argv)
        self.assertIn("drawtext", " ".join(argv))
        self.assertNotIn("drawtext", " ".join(slate_command(parse_config({}), text=False)))

    def test_shift_wraps(self):
        """
        Timestamps wrap at 2**33 like the real clock.
        """
        unit = Slate(tsgen.stream(seconds=1.0, gop=1.0, start=mpegts.TIMESTAMP_MODULO - 45_000)).units
        video = [u for u in unit if u.dts is not None][0]
        moved = shift_unit(video, 90_000)
        self.assertEqual(moved.dts, (video.dts + 90_000) % mpegts.TIMESTAMP_MODULO)


class ConfigTests(SynchronousTestCase):
    """
    The content_checks block, idle_check_hours and slate in config.yaml.
    """

    def test_defaults(self):
        """
        10 s black, 10 s frozen, 20 s silent; idle checks every 24 h; slate on.
        """
        config = parse_config({})
        self.assertEqual(config.content_checks, ContentChecks(10, 10, 20, ()))
        self.assertEqual((config.idle_check_hours, config.slate), (24, True))

    def test_values(self):
        """
        Limits, skipped channels in their canonical form, 0 for off.
        """
        config = parse_config({"content_checks": {"black_seconds": 0, "silence_seconds": 30.5,
                                                  "skip_channels": [7, "013.10"]},
                               "idle_check_hours": 0, "slate": False})
        self.assertEqual(config.content_checks, ContentChecks(0, 10, 30.5, ("7", "13.1")))
        self.assertEqual((config.idle_check_hours, config.slate), (0, False))

    def test_mistakes_name_the_key(self):
        """
        Each mistake is one sentence naming the key.
        """
        cases = [
            ({"content_checks": {"black_second": 3}},
             "content_checks: unknown key 'black_second'; did you mean 'black_seconds'?"),
            ({"content_checks": {"freeze_seconds": -1}}, "content_checks.freeze_seconds: must be a number"),
            ({"content_checks": {"skip_channels": ["abc"]}}, "content_checks.skip_channels: 'abc' is not a channel"),
            ({"content_checks": [1]}, "content_checks: must be a mapping"),
            ({"idle_check_hours": "often"}, "idle_check_hours: must be a number of hours"),
            ({"slate": "yes"}, "slate: must be true or false"),
        ]
        for data, text in cases:
            with self.assertRaises(ConfigError) as caught:
                parse_config(data)
            self.assertIn(text, str(caught.exception))
