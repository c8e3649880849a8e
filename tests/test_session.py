"""
Unit tests of channel sessions and the manager: candidate choice, failover,
stall and buffering detection, slot waiting, stopping.  ffmpeg and ffprobe
are played by hand through a fake process reactor; time is a Clock.
"""

import os
import random

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from streamproxy.channels import Catalog, Ranking
from streamproxy.config import parse_config
from streamproxy.manager import ChannelManager, UnknownChannel
from streamproxy.processes import MARKER
from streamproxy.session import STALL_SECONDS_TS, ChannelUnavailable
from streamproxy.slots import SourceSlots

from .fakes import FakeProcessReactor
from .helpers import candidate

REPORT = """[info] Input #0, mpegts, from '{url}':
[info]   Duration: N/A, start: 1.400000, bitrate: N/A
[info]   Stream #0:0[0x100]: Video: {video} (Main) ([27][0][0][0] / 0x001B), yuv420p(progressive), 320x180 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
[info]   Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 65 kb/s
[info] Output #0, hls, to '/x/out.m3u8':
"""
AUDIO_ONLY_REPORT = """[info] Input #0, mpegts, from '{url}':
[info]   Duration: N/A, start: 1.400000, bitrate: N/A
[info]   Stream #0:0[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 65 kb/s
[error] Stream map '0:v:0' matches no streams.
"""
PROBE_JSON = """{"streams": [
 {"index": 0, "codec_name": "h264", "codec_type": "video", "width": 320, "height": 180, "r_frame_rate": "25/1"},
 {"index": 1, "codec_name": "aac", "codec_type": "audio"}]}"""


class FakeStore:
    """
    A store holding a fixed catalog.
    """

    def __init__(self, candidates):
        self.catalog = Catalog.build(candidates)


class Harness(TestCase):
    """
    A manager over a fake process reactor, with helpers that play ffmpeg.
    """

    def make(self, candidates, **settings):
        self.segment_dir = os.path.abspath(self.mktemp())
        values = {"segment_dir": self.segment_dir, "buffer_check_interval": 5, "buffer_threshold": 3}
        values.update(settings)
        self.config = parse_config(values)
        self.reactor = FakeProcessReactor()
        self.slots = SourceSlots(self.config.source_limits)
        self.manager = ChannelManager(
            self.config,
            FakeStore(candidates),
            Ranking(self.config.source_priority, self.config.quality_priority),
            self.slots,
            reactor=self.reactor,
        )
        self.manager.startService()
        self.addCleanup(self.shutdown)
        return self.manager

    def tune(self, channel_id):
        """
        Request the channel's playlist, as a client would.  A failure left
        unconsumed by the test (a channel stopped at clean-up) is absorbed.
        """
        d = self.manager.playlist(channel_id)
        def absorb():
            d.addErrback(lambda f: f.trap(ChannelUnavailable))

        self.addCleanup(absorb)
        return d

    def shutdown(self):
        if self.manager.running:
            d = self.manager.stopService()
            self.reactor.advance(10)
            return d

    # Playing the children.

    def ffmpegs(self):
        return self.reactor.running("ffmpeg")

    def probes(self):
        return self.reactor.running("ffprobe")

    def url_of(self, process):
        return process.command[process.command.index("-i") + 1] if process.program == "ffmpeg" else process.command[-1]

    def report(self, process, video="h264"):
        process.stderr(REPORT.format(url=self.url_of(process), video=video))

    def probe_ok(self, process):
        process.protocol.outReceived(PROBE_JSON.encode())
        process.exit(0)

    def segment(self, process, index, duration=2.0):
        """
        ffmpeg finishes segment ``index``: the file and its playlist entry
        appear, announced by an "Opening ... for writing" line.
        """
        command = process.command
        playlist = command[-1]
        folder = os.path.dirname(playlist)
        prefix = os.path.basename(playlist)[: -len(".m3u8")]
        with open(os.path.join(folder, f"{prefix}_{index:05d}.ts"), "wb") as f:
            f.write(b"\x47" * 188)
        entries = "".join(f"#EXTINF:{duration:.6f},\n{prefix}_{i:05d}.ts\n" for i in range(max(0, index - 5), index + 1))
        with open(playlist + ".tmp", "w") as f:
            f.write(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:6\n{entries}")
        os.replace(playlist + ".tmp", playlist)
        # A new mtime even within the same clock tick of the filesystem.
        stat = os.stat(playlist)
        os.utime(playlist, ns=(stat.st_atime_ns, stat.st_mtime_ns + index + 1))
        process.stderr(f"[hls @ 0x1] [info] Opening '{folder}/{prefix}_{index + 1:05d}.ts' for writing\n")
        self.reactor.advance(0.1)

    def progress(self, process, seconds):
        process.write_fd(3, f"frame=1\nout_time_us={int(seconds * 1e6)}\nspeed=1x\nprogress=continue\n")

    def go_live(self, process, probe=None):
        """
        Bring the attempt of ``process`` to its first segment.
        """
        self.report(process)
        if probe is not None:
            self.probe_ok(probe)
        self.progress(process, 1.0)
        self.segment(process, 0)

    def in_use(self):
        return {source: used for source, (used, _) in self.slots.usage().items() if used}

    def assertSlotsMatchProcesses(self):
        """
        Every held slot is a running child connected to that source, and
        the other way round.
        """
        expected = {}
        for process in self.reactor.running():
            source = self.source_of[self.url_of(process)]
            expected[source] = expected.get(source, 0) + 1
        self.assertEqual(self.in_use(), expected)


def two_sources(**extra):
    return [
        candidate(1, "7", source="a", url="http://127.0.0.1:1/live/user/pass/7.ts", **extra),
        candidate(2, "7", source="b", url="http://127.0.0.1:2/b7.ts", **extra),
    ]


class StartTests(Harness):
    """
    Tuning a channel.
    """

    def test_unknown_channel(self):
        """
        A channel the table does not have raises UnknownChannel.
        """
        manager = self.make(two_sources())
        self.assertRaises(UnknownChannel, manager.playlist, "99")

    def test_first_segment_answers_every_waiting_client(self):
        """
        The best candidate is started once however many clients ask; they
        are all answered with the playlist when the first segment is ready.
        """
        manager = self.make(two_sources(), source_priority=["b", "a"])
        first = self.tune("7")
        second = self.tune("7")
        self.assertEqual(len(self.ffmpegs()), 1)
        ffmpeg = self.ffmpegs()[0]
        self.assertIn("http://127.0.0.1:2/b7.ts", ffmpeg.command)
        self.assertEqual(ffmpeg.env[MARKER], self.segment_dir)
        self.assertNoResult(first)
        self.go_live(ffmpeg, self.probes()[0])
        text = self.successResultOf(first)
        self.assertEqual(self.successResultOf(second), text)
        self.assertIn("#EXTINF:2.000,\n", text)
        self.assertEqual(manager.session("7").state, "live")
        self.assertEqual(self.successResultOf(self.tune("7")), text)

    def test_probe_overlaps_and_can_veto(self):
        """
        ffprobe runs alongside ffmpeg; its finding that the stream has no
        video fails the candidate before any segment is published.
        """
        manager = self.make(two_sources())
        d = self.tune("7")
        probe = self.probes()[0]
        ffmpeg = self.ffmpegs()[0]
        probe.protocol.outReceived(b'{"streams": [{"index": 0, "codec_type": "audio", "codec_name": "aac"}]}')
        probe.exit(0)
        self.assertTrue(ffmpeg.exited)
        self.assertEqual(ffmpeg.signals, ["TERM"])
        self.assertEqual(len(self.ffmpegs()), 1)
        self.assertIn("http://127.0.0.1:2/b7.ts", self.ffmpegs()[0].command)
        self.assertNoResult(d)
        self.assertIn("audio only", self.manager.failures.reason(1))

    def test_segments_wait_for_validation(self):
        """
        Segments ffmpeg writes before the stream is validated are published
        only once it is.
        """
        manager = self.make(two_sources())
        d = self.tune("7")
        ffmpeg, probe = self.ffmpegs()[0], self.probes()[0]
        self.segment(ffmpeg, 0)
        self.reactor.advance(1)
        self.assertNoResult(d)
        self.report(ffmpeg)
        self.assertNoResult(d)
        self.probe_ok(probe)
        self.assertIn("_00000.ts", self.successResultOf(d))

    def test_no_probe_when_the_source_is_at_its_limit(self):
        """
        A source with one slot gets no second connection for ffprobe;
        ffmpeg's own stream report validates it.
        """
        manager = self.make(two_sources(), source_limits={"a": 1})
        d = self.tune("7")
        self.assertEqual(self.probes(), [])
        ffmpeg = self.ffmpegs()[0]
        self.report(ffmpeg)
        self.segment(ffmpeg, 0)
        self.successResultOf(d)
        self.assertEqual(self.in_use(), {"a": 1})

    def test_audio_only_fails_over(self):
        """
        ffmpeg's report of an audio-only stream fails the candidate.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1})
        self.tune("7")
        ffmpeg = self.ffmpegs()[0]
        ffmpeg.stderr(AUDIO_ONLY_REPORT.format(url="http://127.0.0.1:1/live/user/pass/7.ts"))
        ffmpeg.exit(1)
        self.assertEqual(self.manager.failures.reason(1), "audio only (no video stream)")
        self.assertIn("http://127.0.0.1:2/b7.ts", self.ffmpegs()[0].command)

    def test_transcode_keeps_the_slot(self):
        """
        A stream whose video HLS cannot carry is restarted with libx264 on
        the same connection slot, after the first ffmpeg has exited.
        """
        manager = self.make(two_sources(), source_limits={"a": 1})
        d = self.tune("7")
        first = self.ffmpegs()[0]
        self.reactor.obedient = False
        self.report(first, video="mpeg2video")
        self.assertEqual(first.signals, ["TERM"])
        self.assertEqual(self.ffmpegs(), [first])
        self.assertEqual(self.in_use(), {"a": 1})
        first.exit(signal=15)
        second = self.ffmpegs()[0]
        self.assertIsNot(second, first)
        self.assertIn("libx264", second.command)
        self.assertIn("5M", second.command)
        self.assertEqual(self.in_use(), {"a": 1})
        self.reactor.obedient = True
        self.report(second, video="mpeg2video")
        self.segment(second, 0)
        self.successResultOf(d)
        self.assertEqual(manager.session("7").status()["current"]["encoding"], "transcode video")


class FailoverTests(Harness):
    """
    Switching to the next candidate while the viewer keeps playing.
    """

    def live_channel(self, **settings):
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1}, **settings)
        d = self.tune("7")
        self.ffmpeg = self.ffmpegs()[0]
        self.go_live(self.ffmpeg)
        self.successResultOf(d)
        return manager.session("7")

    def test_ffmpeg_exit_fails_over_with_a_discontinuity(self):
        """
        ffmpeg exiting (even with status 0) switches to the next candidate;
        the playlist goes on with a discontinuity, a growing media sequence
        and new names.
        """
        session = self.live_channel()
        self.segment(self.ffmpeg, 1)
        self.ffmpeg.stderr("[error] http://127.0.0.1:1/live/user/pass/7.ts: Connection reset by peer\n")
        self.ffmpeg.exit(0)
        self.assertEqual(session.state, "switching")
        self.assertEqual(self.in_use(), {"b": 1})
        reason = session.failovers[-1]["reason"]
        self.assertIn("ffmpeg exited (0)", reason)
        self.assertIn("Connection reset by peer", reason)
        self.assertNotIn("pass", reason)
        second = self.ffmpegs()[0]
        self.go_live(second)
        text = session.playlist.render()
        names = session.playlist.names()
        self.assertEqual(len(names), len(set(names)))
        self.assertIn("#EXT-X-DISCONTINUITY\n", text)
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:0\n", text)
        self.assertEqual(session.state, "live")
        self.assertEqual(session.status()["current"]["source"], "b")

    def test_stall_fails_over(self):
        """
        No new media for STALL_SECONDS_TS switches stream; progress that
        keeps advancing does not.
        """
        session = self.live_channel()
        for second in range(2, 12):
            self.reactor.advance(1)
            self.progress(self.ffmpeg, second)
        self.assertIs(session.attempt.process, self.ffmpeg.protocol)
        self.reactor.advance(STALL_SECONDS_TS + 0.1)
        self.assertTrue(self.ffmpeg.exited)
        self.assertIn("stalled", session.failovers[-1]["reason"])
        self.assertEqual(session.state, "switching")

    def test_slow_output_counts_as_buffering(self):
        """
        Output advancing at half real time between health checks counts a
        buffering event each time; buffer_threshold of them switch stream.
        """
        session = self.live_channel(buffer_check_interval=2, buffer_threshold=3)
        media_time = 1.0
        for _ in range(20):
            if session.attempt is None or session.attempt.process is not self.ffmpeg.protocol:
                break
            self.reactor.advance(0.5)
            media_time += 0.25
            self.progress(self.ffmpeg, media_time)
        self.assertEqual(len(session.failovers), 1)
        self.assertIn("buffering: 3 events", session.failovers[0]["reason"])
        self.assertIn("real time", session.failovers[0]["reason"])

    def test_reconnect_lines_count_as_buffering(self):
        """
        ffmpeg's reconnect and timeout lines are buffering events.
        """
        session = self.live_channel(buffer_threshold=2)
        self.ffmpeg.stderr("[http @ 0x1] [warning] Will reconnect at 1000 in 0 second(s), error=Connection reset by peer.\n")
        self.ffmpeg.stderr("[http @ 0x1] [warning] Will reconnect at 2000 in 1 second(s), error=Connection timed out.\n")
        for second in range(2, 8):
            self.reactor.advance(1)
            self.progress(self.ffmpeg, second)
        self.assertIn("buffering: 2 events", session.failovers[0]["reason"])

    def test_start_timeout(self):
        """
        A candidate that produces no segment within stream_start_timeout is
        killed and the next one tried.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1}, stream_start_timeout=8)
        d = self.tune("7")
        first = self.ffmpegs()[0]
        self.report(first)
        self.reactor.advance(8)
        self.assertTrue(first.exited)
        self.assertIn("no first segment within 8 s", manager.failures.reason(1))
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(d)

    def test_force_switch(self):
        """
        A forced switch moves to the next candidate without marking the
        first one as failed; with one candidate left it comes back round.
        """
        session = self.live_channel()
        left = self.manager.force_switch("7")
        self.assertEqual(left, "a/1 (row 1)")
        self.assertIsNone(self.manager.failures.reason(1))
        second = self.ffmpegs()[0]
        self.assertIn("http://127.0.0.1:2/b7.ts", second.command)
        self.go_live(second)
        self.manager.force_switch("7")
        self.reactor.advance(2.5)
        third = self.ffmpegs()[0]
        self.assertIn("http://127.0.0.1:1/live/user/pass/7.ts", third.command)
        self.assertEqual(session.status()["failovers"], 2)

    def test_every_candidate_failing(self):
        """
        When every candidate fails before any media, waiting clients get
        ChannelUnavailable listing each reason, and every slot is free.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1})
        d = self.tune("7")
        self.ffmpegs()[0].stderr("[http @ 0x1] [error] HTTP error 404 Not Found\n")
        self.ffmpegs()[0].exit(1)
        self.ffmpegs()[0].stderr("[tcp @ 0x1] [error] Connection to tcp://127.0.0.1:2 failed: Connection refused\n")
        self.ffmpegs()[0].exit(1)
        failure = self.failureResultOf(d, ChannelUnavailable)
        message = str(failure.value)
        self.assertIn("every candidate failed", message)
        self.assertIn("a/1 (row 1): ffmpeg exited (1): HTTP 404", message)
        self.assertIn("Connection refused", message)
        self.assertEqual(self.in_use(), {})
        self.assertIsNone(manager.session("7"))
        self.assertFalse(os.path.exists(os.path.join(self.segment_dir, "ch7")))

    def test_failed_candidates_rank_last_on_the_next_tune(self):
        """
        A candidate that just failed is not the first one tried next time.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1})
        d = self.tune("7")
        self.ffmpegs()[0].exit(1)
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(d)
        manager.stop_channel("7")
        self.assertIsNone(manager.session("7"))
        self.tune("7")
        self.assertIn("http://127.0.0.1:2/b7.ts", self.ffmpegs()[0].command)


class SlotWaitTests(Harness):
    """
    Tunes waiting for a provider slot.
    """

    def setUp(self):
        self.make(
            [
                candidate(1, "1", source="a", url="http://127.0.0.1:1/1.ts"),
                candidate(2, "2", source="a", url="http://127.0.0.1:1/2.ts"),
            ],
            source_limits={"a": 1},
            stream_start_timeout=10,
        )

    def test_waits_then_starts_when_a_slot_frees(self):
        """
        With the source full the tune waits; stopping the other channel
        frees the slot and the waiting channel starts.
        """
        one = self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(one)
        two = self.tune("2")
        self.assertEqual(len(self.ffmpegs()), 1)
        self.assertEqual(self.slots.waiting(), 1)
        self.reactor.advance(5)
        self.manager.stop_channel("1")
        self.assertEqual(len(self.ffmpegs()), 1)
        self.assertIn("http://127.0.0.1:1/2.ts", self.ffmpegs()[0].command)
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(two)

    def test_gives_up_naming_the_full_source(self):
        """
        When no slot frees within stream_start_timeout the tune fails with
        a reason naming the full source and its count.
        """
        one = self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(one)
        for second in range(2, 12):
            self.reactor.advance(1)
            self.progress(self.ffmpegs()[0], second)
            self.manager.session("1").touch()
        two = self.tune("2")
        for second in range(12, 23):
            self.reactor.advance(1)
            self.progress(self.ffmpegs()[0], second)
        failure = self.failureResultOf(two, ChannelUnavailable)
        self.assertIn("source(s) full: a 1/1", str(failure.value))
        self.assertEqual(self.slots.waiting(), 0)
        self.assertEqual(self.in_use(), {"a": 1})


class StopTests(Harness):
    """
    Stopping channels gives everything back.
    """

    def test_stop_escalates_to_kill(self):
        """
        A child that ignores TERM is killed after the grace period; the slot
        is given back and the folder removed only once it has exited.
        """
        manager = self.make(two_sources(), source_limits={"a": 1})
        self.tune("7")
        ffmpeg = self.ffmpegs()[0]
        self.go_live(ffmpeg)
        self.reactor.obedient = False
        folder = os.path.join(self.segment_dir, "ch7")
        d = manager.stop_channel("7")
        self.assertEqual(ffmpeg.signals, ["TERM"])
        self.assertEqual(self.in_use(), {"a": 1})
        self.reactor.advance(2.9)
        self.assertEqual(ffmpeg.signals, ["TERM"])
        self.assertTrue(os.path.isdir(folder))
        self.assertNoResult(d)
        self.reactor.advance(0.1)
        self.assertEqual(ffmpeg.signals, ["TERM", "KILL"])
        self.successResultOf(d)
        self.assertEqual(self.in_use(), {})
        self.assertFalse(os.path.exists(folder))
        self.assertIsNone(manager.session("7"))

    def test_inactivity(self):
        """
        A channel without requests for inactivity_timeout is stopped; one
        that keeps being requested is not.
        """
        manager = self.make(
            [candidate(1, "1", url="http://127.0.0.1:1/1.ts"), candidate(2, "2", url="http://127.0.0.1:1/2.ts")],
            inactivity_timeout=20,
        )
        self.tune("1")
        self.tune("2")
        for process in self.ffmpegs():
            self.go_live(process)
        for second in range(2, 30):
            self.reactor.advance(1)
            for process in self.ffmpegs():
                self.progress(process, second)
            self.tune("2")
        self.assertIsNone(manager.session("1"))
        self.assertIsNotNone(manager.session("2"))
        self.assertIn("no request for 2", manager.ended[-1]["reason"])

    def test_watched_channels_stay(self):
        """
        A channel Channels DVR reports as watched is not stopped for lack
        of requests.
        """
        manager = self.make([candidate(1, "1", url="http://127.0.0.1:1/1.ts")], inactivity_timeout=10)
        manager.is_watched = lambda channel_id: channel_id == "1"
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        for second in range(2, 30):
            self.reactor.advance(1)
            self.progress(self.ffmpegs()[0], second)
        self.assertIsNotNone(manager.session("1"))

    def test_shutdown_waits_for_every_child(self):
        """
        Stopping the manager stops every channel and fires only once every
        child has exited.
        """
        manager = self.make(
            [candidate(1, "1", url="http://127.0.0.1:1/1.ts"), candidate(2, "2", url="http://127.0.0.1:1/2.ts")]
        )
        self.tune("1")
        self.tune("2")
        self.reactor.obedient = False
        d = manager.stopService()
        self.assertNoResult(d)
        for process in list(self.reactor.running()):
            process.exit(signal=15)
        self.successResultOf(d)
        self.assertEqual(self.in_use(), {})
        self.assertEqual(os.listdir(self.segment_dir), [])


class InterleavingTests(Harness):
    """
    Slot counts stay exact through random interleavings of start, failure,
    failover, force switch and stop.
    """

    def test_random_interleavings(self):
        """
        For many seeded random runs over three channels sharing two limited
        sources, after every step the held slots equal the running children
        of each source, and once everything is stopped every count is zero.
        """
        for seed in range(40):
            self.run_interleaving(seed)

    def run_interleaving(self, seed):
        rng = random.Random(seed)
        candidates = []
        self.source_of = {}
        rowid = 0
        for channel in ("1", "2", "3"):
            for source in ("a", "b"):
                rowid += 1
                url = f"http://127.0.0.1:1/{source}/{channel}.ts"
                self.source_of[url] = source
                candidates.append(candidate(rowid, channel, source=source, url=url))
        manager = self.make(candidates, source_limits={"a": 2, "b": 1}, stream_start_timeout=6)
        waiting = []
        for step in range(60):
            action = rng.choice(["tune", "tune", "report", "probe", "segment", "exit", "stall",
                                 "switch", "stop", "time", "obey"])
            running = self.reactor.running()
            if action == "tune":
                d = self.tune(rng.choice("123"))
                d.addErrback(lambda f: f.trap(ChannelUnavailable, defer.CancelledError))
                waiting.append(d)
            elif action == "report" and self.ffmpegs():
                self.report(rng.choice(self.ffmpegs()))
            elif action == "probe" and self.probes():
                probe = rng.choice(self.probes())
                if rng.random() < 0.5:
                    self.probe_ok(probe)
                else:
                    probe.exit(1)
            elif action == "segment" and self.ffmpegs():
                process = rng.choice(self.ffmpegs())
                self.progress(process, step)
                self.segment(process, step)
            elif action == "exit" and running:
                rng.choice(running).exit(rng.choice([0, 1]))
            elif action == "stall":
                self.reactor.advance(STALL_SECONDS_TS + 0.5)
            elif action == "switch" and manager.sessions:
                manager.force_switch(rng.choice(list(manager.sessions)))
            elif action == "stop" and manager.sessions:
                manager.stop_channel(rng.choice(list(manager.sessions)))
            elif action == "time":
                self.reactor.advance(rng.choice([0.1, 1, 3]))
            elif action == "obey":
                self.reactor.obedient = not self.reactor.obedient
            self.assertSlotsMatchProcesses()
        d = manager.stopService()
        self.reactor.advance(5)
        self.successResultOf(d)
        self.assertEqual(self.reactor.running(), [])
        self.assertEqual(self.in_use(), {}, f"seed {seed}")
        self.assertEqual(self.slots.waiting(), 0)
        for d in waiting:
            self.assertTrue(d.called)
