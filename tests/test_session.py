"""
Unit tests of channel sessions and the manager: candidate choice, failover
(with and without a stream started alongside), stall and buffering
detection, slot keeping and waiting, stopping.  ffmpeg and ffprobe are
played by hand through a fake process reactor (ffmpeg's media is
synthetic MPEG-TS from :mod:`tests.tsgen`); time is a Clock.
"""

import os
import random

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from streamproxy.attempt import QUICK_STALL_SECONDS_TS, QUIET_SECONDS_TS, STALL_SECONDS_TS
from streamproxy.channels import Catalog, Ranking
from streamproxy.config import parse_config
from streamproxy.manager import ChannelManager, UnknownChannel
from streamproxy.processes import MARKER
from streamproxy.session import TRANSITIONS, ChannelState, ChannelUnavailable
from streamproxy.slots import SourceSlots

from . import tsgen
from .fakes import FakeProcessReactor
from .helpers import candidate

REPORT = """[info] Input #0, mpegts, from '{url}':
[info]   Duration: N/A, start: 1.400000, bitrate: N/A
[info]   Stream #0:0[0x100]: Video: {video} (Main) ([27][0][0][0] / 0x001B), yuv420p(progressive), 320x180 [SAR 1:1 DAR 16:9], 25 fps, 25 tbr, 90k tbn
[info]   Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 65 kb/s
[info] Output #0, mpegts, to 'pipe:1':
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
        values = {"segment_dir": self.segment_dir, "buffer_check_interval": 5, "buffer_threshold": 3,
                  "hls_time": 2}
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
        self.clocks = {}
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

    def media(self, process, seconds=1.0):
        """
        ffmpeg writes the next ``seconds`` of its MPEG-TS output (1 s
        keyframes, 25 fps, audio) to its standard output.
        """
        position = self.clocks.get(process, 0.0)
        data = tsgen.stream(seconds=seconds, gop=1.0, start=126_000 + round(position * 90_000),
                            first_frame=round(position * 25))
        self.clocks[process] = position + seconds
        process.protocol.childDataReceived(1, data)

    def progress(self, process, seconds):
        """
        ffmpeg's output has reached ``seconds`` of media (written now if
        it was behind).
        """
        behind = seconds - self.clocks.get(process, 0.0)
        if behind > 0:
            self.media(process, behind)

    def segment(self, process, index=None):
        """
        ffmpeg writes enough media for the channel to cut a segment.
        """
        self.media(process, 2.0)

    def go_live(self, process, probe=None):
        """
        Bring the attempt of ``process`` on air: its stream report (and the
        probe's verdict) and two seconds of media.
        """
        self.report(process)
        if probe is not None:
            self.probe_ok(probe)
        self.media(process, 2.0)

    def in_use(self):
        return {source: used for source, (used, _) in self.slots.usage().items() if used}

    def accounts_in_use(self):
        return {account: used for account, (used, _) in self.slots.account_usage().items() if used}

    def assertSlotsMatchProcesses(self):
        """
        Every held slot is a running child connected to that source (and
        provider account, when ``account_of`` names one) or a slot a
        switching channel keeps for its next candidate, and the other way
        round; no account is over its limit.
        """
        expected = {}
        accounts = {}
        account_of = getattr(self, "account_of", {})
        for process in self.reactor.running():
            url = self.url_of(process)
            source = self.source_of[url]
            expected[source] = expected.get(source, 0) + 1
            if account_of.get(url) is not None:
                accounts[account_of[url]] = accounts.get(account_of[url], 0) + 1
        for session in self.manager.sessions.values():
            if session._kept_slot is not None:
                source = session._kept_slot.source
                expected[source] = expected.get(source, 0) + 1
                account = session._kept_slot.account
                if account is not None:
                    accounts[account] = accounts.get(account, 0) + 1
        self.assertEqual(self.in_use(), expected)
        self.assertEqual(self.accounts_in_use(), accounts)
        for account, (used, limit) in self.slots.account_usage().items():
            if limit is not None:
                self.assertLessEqual(used, limit, account)


def two_sources(**extra):
    return [
        candidate(1, "7", source="a", url="http://127.0.0.1:1/live/user/pass/7.ts", **extra),
        candidate(2, "7", source="b", url="http://127.0.0.1:2/b7.ts", **extra),
    ]


class StateTableTests(TestCase):
    """
    The channel's states and their moves are one table.
    """

    def test_ended_states_have_no_way_out(self):
        """
        Failed and stopped are final; every other state can be stopped.
        """
        self.assertEqual(TRANSITIONS[ChannelState.FAILED], set())
        self.assertEqual(TRANSITIONS[ChannelState.STOPPED], set())
        for state, moves in TRANSITIONS.items():
            if moves:
                self.assertIn(ChannelState.STOPPED, moves, state)
        self.assertEqual(set(TRANSITIONS), set(ChannelState))


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
        are all answered with the playlist once its first segment (cut
        after about a second of media) is ready.
        """
        manager = self.make(two_sources(), source_priority=["b", "a"])
        first = self.tune("7")
        second = self.tune("7")
        self.assertEqual(len(self.ffmpegs()), 1)
        ffmpeg = self.ffmpegs()[0]
        self.assertIn("http://127.0.0.1:2/b7.ts", ffmpeg.command)
        self.assertEqual(ffmpeg.command[-1], "pipe:1")
        self.assertEqual(ffmpeg.env[MARKER], self.segment_dir)
        self.assertNoResult(first)
        self.go_live(ffmpeg, self.probes()[0])
        text = self.successResultOf(first)
        self.assertEqual(self.successResultOf(second), text)
        self.assertIn("#EXTINF:1.000,\n", text)
        self.assertIn("#EXT-X-TARGETDURATION:2\n", text)
        self.assertEqual(manager.session("7").state, ChannelState.LIVE)
        self.assertEqual(self.successResultOf(self.tune("7")), text)

    def test_probe_overlaps_and_can_veto(self):
        """
        ffprobe runs alongside ffmpeg; its finding that the stream has no
        video fails the candidate before anything is published.
        """
        self.make(two_sources())
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

    def test_media_waits_for_validation(self):
        """
        Media ffmpeg writes before the stream is validated goes out only
        once it is, all of it from its first keyframe (so the viewer
        starts with a buffer).
        """
        manager = self.make(two_sources())
        d = self.tune("7")
        ffmpeg, probe = self.ffmpegs()[0], self.probes()[0]
        self.media(ffmpeg, 3.0)
        self.reactor.advance(1)
        self.assertNoResult(d)
        self.report(ffmpeg)
        self.assertNoResult(d)
        self.assertEqual(manager.session("7").state, ChannelState.STARTING)
        self.probe_ok(probe)
        self.assertEqual(manager.session("7").state, ChannelState.LIVE)
        self.assertIn("_00000.ts", self.successResultOf(d))
        session = manager.session("7")
        self.assertGreater(session.playlist.duration + session.segmenter.pending_seconds, 2.9)

    def test_no_probe_when_the_source_is_at_its_limit(self):
        """
        A source with one slot gets no second connection for ffprobe;
        ffmpeg's own stream report validates it.
        """
        self.make(two_sources(), source_limits={"a": 1})
        d = self.tune("7")
        self.assertEqual(self.probes(), [])
        ffmpeg = self.ffmpegs()[0]
        self.go_live(ffmpeg)
        self.successResultOf(d)
        self.assertEqual(self.in_use(), {"a": 1})

    def test_audio_only_fails_over(self):
        """
        ffmpeg's report of an audio-only stream fails the candidate.
        """
        self.make(two_sources(), source_limits={"a": 1, "b": 1})
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
        self.media(second, 2.0)
        self.successResultOf(d)
        self.assertEqual(manager.session("7").status()["current"]["encoding"], "transcode video")

    def test_failed_spawn_fails_the_attempt_and_frees_its_slot(self):
        """
        A spawn that raises (too many open files) fails that candidate
        like any other failure: its slot is given back and the next one is
        tried; with nothing left the tune fails and shutdown completes.
        """
        self.make(two_sources(), source_limits={"a": 1, "b": 1})
        spawn = self.reactor.spawnProcess
        calls = []

        def failing(protocol, executable, args=(), **kwargs):
            calls.append(args)
            if len(calls) == 1:
                raise OSError(24, "Too many open files")
            return spawn(protocol, executable, args, **kwargs)

        self.reactor.spawnProcess = failing
        d = self.tune("7")
        self.assertIn("Too many open files", self.manager.failures.reason(1))
        self.assertEqual(self.in_use(), {"b": 1})
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(d)
        self.reactor.spawnProcess = lambda *a, **k: (_ for _ in ()).throw(OSError(24, "Too many open files"))
        self.manager.stop_channel("7")
        d = self.tune("7")
        failure = self.failureResultOf(d, ChannelUnavailable)
        self.assertIn("could not start ffmpeg", str(failure.value))
        self.assertEqual(self.in_use(), {})
        self.successResultOf(self.manager.stopService())


class FailoverTests(Harness):
    """
    Switching to the next candidate while the viewer keeps playing.
    """

    def live_channel(self, **settings):
        limits = settings.pop("source_limits", {"a": 1, "b": 1})
        manager = self.make(two_sources(), source_limits=limits, **settings)
        d = self.tune("7")
        self.ffmpeg = self.ffmpegs()[0]
        self.go_live(self.ffmpeg, self.probes()[0] if self.probes() else None)
        self.successResultOf(d)
        return manager.session("7")

    def test_ffmpeg_exit_fails_over_with_a_discontinuity(self):
        """
        ffmpeg exiting (even with status 0) switches to the next candidate;
        the playlist goes on with a discontinuity, a growing media sequence
        and new names, and its timestamps continue.
        """
        session = self.live_channel()
        self.media(self.ffmpeg, 4.0)
        self.ffmpeg.stderr("[error] http://127.0.0.1:1/live/user/pass/7.ts: Connection reset by peer\n")
        self.ffmpeg.exit(0)
        self.assertEqual(session.state, ChannelState.SWITCHING)
        self.assertEqual(self.in_use(), {"b": 1})
        reason = session.failovers[-1]["reason"]
        self.assertIn("ffmpeg exited (0)", reason)
        self.assertIn("Connection reset by peer", reason)
        self.assertNotIn("pass", reason)
        end = session.timeline.end_seconds
        second = self.ffmpegs()[0]
        self.go_live(second)
        self.media(second, 3.0)
        text = session.playlist.render()
        names = session.playlist.names()
        self.assertEqual(len(names), len(set(names)))
        self.assertIn("#EXT-X-DISCONTINUITY\n", text)
        self.assertEqual(session.state, ChannelState.LIVE)
        self.assertEqual(session.status()["current"]["source"], "b")
        # The second stream's clock starts where the first one's ended.
        self.assertLess(abs(session.timeline.end_seconds - end - 5.0), 0.1)

    def test_stall_fails_over(self):
        """
        No new media for STALL_SECONDS_TS switches stream; media that keeps
        coming does not.
        """
        session = self.live_channel(source_limits={"a": 1, "b": 0})
        for _ in range(10):
            self.reactor.advance(1)
            self.media(self.ffmpeg, 1.0)
        self.assertIs(session.attempt.process, self.ffmpeg.protocol)
        self.reactor.advance(STALL_SECONDS_TS + 0.1)
        self.assertTrue(self.ffmpeg.exited)
        self.assertIn("stalled", session.failovers[-1]["reason"])

    def test_quiet_stream_gets_its_successor_started_alongside(self):
        """
        A stream quiet for QUIET_SECONDS_TS gets the next candidate started
        on a spare slot; once that one is ready the channel goes over to it
        at QUICK_STALL_SECONDS_TS of quiet, before the full stall verdict,
        and the slots are the two streams' own.
        """
        session = self.live_channel()
        self.assertEqual(self.in_use(), {"a": 1})
        self.reactor.advance(QUIET_SECONDS_TS + 0.1)
        self.assertEqual(len(self.ffmpegs()), 2)
        standby = self.ffmpegs()[1]
        self.assertIn("http://127.0.0.1:2/b7.ts", standby.command)
        self.assertEqual(self.in_use(), {"a": 1, "b": 1})
        self.go_live(standby)
        self.assertEqual(session.status()["current"]["source"], "a")
        self.reactor.advance(QUICK_STALL_SECONDS_TS - QUIET_SECONDS_TS - 0.2)
        self.assertFalse(self.ffmpeg.exited)
        self.reactor.advance(0.2)
        self.assertLess(QUICK_STALL_SECONDS_TS, STALL_SECONDS_TS)
        self.assertTrue(self.ffmpeg.exited)
        self.assertEqual(session.state, ChannelState.LIVE)
        self.assertEqual(session.status()["current"]["source"], "b")
        self.assertEqual(self.in_use(), {"b": 1})
        self.assertIn("was ready", session.failovers[-1]["reason"])
        self.assertLessEqual(abs(session.failovers[-1]["gap"] - QUICK_STALL_SECONDS_TS), 0.11)

    def test_stream_that_delivers_again_drops_its_successor(self):
        """
        When the quiet stream delivers again before the verdict, the
        candidate started alongside is stopped and not penalised.
        """
        session = self.live_channel()
        self.reactor.advance(QUIET_SECONDS_TS + 0.1)
        standby = self.ffmpegs()[1]
        self.media(self.ffmpeg, 1.0)
        self.assertTrue(standby.exited)
        self.assertIsNone(session.standby)
        self.assertIsNone(self.manager.failures.reason(2))
        self.assertEqual(self.in_use(), {"a": 1})

    def test_slow_media_counts_as_buffering(self):
        """
        Media arriving at half real time counts a buffering event at each
        health check; buffer_threshold of them switch stream.
        """
        session = self.live_channel(buffer_check_interval=2, buffer_threshold=3)
        for _ in range(40):
            if session.attempt is None or session.attempt.process is not self.ffmpeg.protocol:
                break
            self.reactor.advance(0.5)
            self.media(self.ffmpeg, 0.25)
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
        for _ in range(8):
            self.reactor.advance(1)
            self.media(self.ffmpeg, 1.0)
        self.assertIn("buffering: 2 events", session.failovers[0]["reason"])

    def test_start_timeout(self):
        """
        A candidate that produces no media within stream_start_timeout is
        killed and the next one tried.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1}, stream_start_timeout=8)
        d = self.tune("7")
        first = self.ffmpegs()[0]
        self.report(first)
        self.reactor.advance(8)
        self.assertTrue(first.exited)
        self.assertIn("no media within 8 s", manager.failures.reason(1))
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(d)

    def test_force_switch_alongside(self):
        """
        With a spare slot, a forced switch starts the next candidate while
        the current one plays and goes over once it is ready: no gap, and
        the stream left is not marked as failed.
        """
        session = self.live_channel()
        left = self.manager.force_switch("7")
        self.assertEqual(left, "a/1 (row 1)")
        self.assertEqual(session.state, ChannelState.LIVE)
        self.assertFalse(self.ffmpeg.exited)
        second = self.ffmpegs()[1]
        self.assertIn("http://127.0.0.1:2/b7.ts", second.command)
        self.go_live(second)
        self.assertTrue(self.ffmpeg.exited)
        self.assertEqual(session.status()["current"]["source"], "b")
        self.assertEqual(session.failovers[-1]["gap"], 0.0)
        self.assertIsNone(self.manager.failures.reason(1))
        self.assertEqual(self.in_use(), {"b": 1})

    def test_force_switch_without_a_spare_slot(self):
        """
        With every source full, a forced switch lets the current stream go
        first; the other candidate's source being full, the stream left is
        restarted on its own slot rather than waiting.
        """
        manager = self.make(two_sources(), source_limits={"a": 1, "b": 1})
        self.tune("7")
        self.go_live(self.ffmpegs()[0])
        other = [candidate(3, "8", source="b", url="http://127.0.0.1:2/b8.ts")]
        manager.store.catalog = Catalog.build(two_sources() + other)
        self.tune("8")
        self.go_live(self.ffmpegs()[1])
        session = manager.session("7")
        manager.force_switch("7")
        self.assertEqual(session.state, ChannelState.SWITCHING)
        self.assertEqual(len(self.ffmpegs()), 2)
        self.assertIn("http://127.0.0.1:1/live/user/pass/7.ts", self.ffmpegs()[-1].command)
        self.assertEqual(self.slots.waiting(), 0)
        self.assertEqual(self.in_use(), {"a": 1, "b": 1})

    def test_force_switch_on_a_single_candidate_restarts_it_at_once(self):
        """
        On a channel with one candidate and no spare slot, a forced switch
        restarts that candidate on its own slot at once: no retry pause,
        no "every candidate failed" warning.
        """
        manager = self.make([candidate(1, "7", source="a", url="http://127.0.0.1:1/7.ts")],
                            source_limits={"a": 1})
        self.tune("7")
        first = self.ffmpegs()[0]
        self.go_live(first)
        warnings = []
        from twisted.logger import globalLogPublisher
        observer = lambda event: warnings.append(event) if "every candidate" in event.get("log_format", "") else None
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        manager.force_switch("7")
        self.assertTrue(first.exited)
        second = self.ffmpegs()[0]
        self.assertIsNot(second, first)
        self.assertEqual(self.in_use(), {"a": 1})
        self.assertEqual(manager.session("7").state, ChannelState.SWITCHING)
        self.go_live(second)
        self.assertEqual(manager.session("7").state, ChannelState.LIVE)
        self.assertEqual(warnings, [])

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

    def test_a_channel_that_played_retries_every_candidate(self):
        """
        When every candidate fails on a channel that had been playing, it
        waits ROUND_RETRY_SECONDS (keeping its slot) and tries them again.
        """
        session = self.live_channel(source_limits={"a": 1, "b": 1})
        self.ffmpeg.exit(1)
        self.ffmpegs()[0].exit(1)
        self.assertEqual(session.state, ChannelState.RETRYING)
        self.assertEqual(self.ffmpegs(), [])
        self.assertEqual(sum(self.in_use().values()), 1, "the last stream's slot is kept")
        self.reactor.advance(2.1)
        self.assertEqual(session.state, ChannelState.SWITCHING)
        self.assertEqual(len(self.ffmpegs()), 1)

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


class SlotTests(Harness):
    """
    Tunes waiting for a provider slot, and slots kept through a switch.
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
        for _ in range(10):
            self.reactor.advance(1)
            self.media(self.ffmpegs()[0], 1.0)
            self.manager.session("1").touch()
        two = self.tune("2")
        for _ in range(11):
            self.reactor.advance(1)
            self.media(self.ffmpegs()[0], 1.0)
            self.manager.session("1").touch()
        failure = self.failureResultOf(two, ChannelUnavailable)
        self.assertIn("source(s) full: a 1/1", str(failure.value))
        self.assertEqual(self.slots.waiting(), 0)
        self.assertEqual(self.in_use(), {"a": 1})

    def test_a_switching_channel_keeps_its_slot(self):
        """
        A channel whose stream fails over to a candidate of the same source
        keeps that source's slot for it, even with a tune waiting for the
        source: the watched channel goes on, the waiting tune keeps waiting.
        """
        self.manager.store.catalog = Catalog.build([
            candidate(1, "1", source="a", url="http://127.0.0.1:1/1.ts"),
            candidate(3, "1", source="a", url="http://127.0.0.1:1/1b.ts"),
            candidate(2, "2", source="a", url="http://127.0.0.1:1/2.ts"),
        ])
        one = self.tune("1")
        first = self.ffmpegs()[0]
        self.go_live(first)
        self.successResultOf(one)
        two = self.tune("2")
        self.assertEqual(self.slots.waiting(), 1)
        self.reactor.obedient = False
        first.stderr("[error] boom\n")
        first.exit(1)
        self.assertEqual(len(self.ffmpegs()), 1)
        self.assertIn("http://127.0.0.1:1/1b.ts", self.ffmpegs()[0].command)
        self.assertEqual(self.slots.waiting(), 1)
        self.assertNoResult(two)
        self.reactor.obedient = True

class AccountTests(Harness):
    """
    Pooled provider accounts: a slot is taken for the candidate's source
    and its account, so every account stays within its own limit, a kept
    slot serves only its own account, and a tune waits for room in an
    account it can use.
    """

    def pooled(self, channels, account_limits, source_limits=None, **settings):
        """
        A manager over ``channels`` (``{channel: [(rowid, account), ...]}``,
        every row of source ``p``, best first) with ``account_limits``.
        """
        candidates = []
        self.account_of = {}
        self.source_of = {}
        for channel, rows in channels.items():
            for rowid, account in rows:
                url = f"http://127.0.0.1:1/live/{account or 'own'}/pw/{rowid}.ts"
                self.account_of[url] = account
                self.source_of[url] = "p"
                candidates.append(candidate(rowid, channel, source="p", url=url, account=account))
        manager = self.make(candidates, source_limits=source_limits or {}, **settings)
        self.slots.set_limits(account_limits=account_limits)
        return manager

    def url(self, rowid):
        return next(url for url in self.account_of if url.endswith(f"/{rowid}.ts"))

    def live(self, channel_id):
        """
        Tune ``channel_id`` and bring its ffmpeg (the newest) on air.
        """
        d = self.tune(channel_id)
        process = self.ffmpegs()[-1]
        self.go_live(process, self.probes()[-1] if self.probes() else None)
        self.successResultOf(d)
        return process

    def test_tunes_through_the_account_with_room(self):
        """
        A channel whose first candidate's account is full plays through the
        candidate of the pooled account that has room.
        """
        self.pooled({"7": [(1, "p#1"), (2, "p#2")], "8": [(3, "p#1")]}, {"p#1": 1, "p#2": 1})
        self.live("8")
        self.live("7")
        self.assertIn(self.url(2), self.ffmpegs()[-1].command)
        self.assertEqual(self.accounts_in_use(), {"p#1": 1, "p#2": 1})
        self.assertSlotsMatchProcesses()

    def test_probe_counts_against_the_account(self):
        """
        ffprobe's second connection is taken from the candidate's account:
        run when the account has room for it, left out when it has not.
        """
        self.pooled({"7": [(1, "p#1")], "8": [(2, "p#2")]}, {"p#1": 2, "p#2": 1})
        self.tune("7")
        self.assertEqual(len(self.probes()), 1)
        self.assertEqual(self.accounts_in_use(), {"p#1": 2})
        self.probe_ok(self.probes()[0])
        self.tune("8")
        self.assertEqual(len(self.probes()), 0)
        self.assertEqual(self.accounts_in_use(), {"p#1": 1, "p#2": 1})

    def test_kept_slot_serves_only_its_account(self):
        """
        After a failure the slot kept from the failed stream goes to the
        next candidate of the same account, not to a better-ranked one of
        another account (the provider would see a connection on an account
        whose limit was never checked).
        """
        self.pooled({"1": [(1, "p#1"), (2, "p#2"), (3, "p#1")], "9": [(4, "p#2")]},
                    {"p#1": 1, "p#2": 1})
        self.live("9")
        first = self.live("1")
        first.stderr("[error] boom\n")
        first.exit(1)
        self.assertIn(self.url(3), self.ffmpegs()[-1].command)
        self.assertEqual(self.accounts_in_use(), {"p#1": 1, "p#2": 1})
        self.assertSlotsMatchProcesses()

    def test_kept_slot_of_another_account_goes_back(self):
        """
        When only candidates of another account of the same source remain
        and the kept slot is what fills the source, it is given back and the
        other account's candidate starts at once instead of waiting.
        """
        self.pooled({"1": [(1, "p#1"), (2, "p#2")]}, {"p#1": 1, "p#2": 1}, source_limits={"p": 1},
                    stream_start_timeout=10)
        first = self.live("1")
        first.stderr("[error] boom\n")
        first.exit(1)
        self.assertIn(self.url(2), self.ffmpegs()[-1].command)
        self.assertEqual(self.slots.waiting(), 0)
        self.assertEqual(self.accounts_in_use(), {"p#2": 1})
        self.assertSlotsMatchProcesses()

    def test_waits_for_its_own_account(self):
        """
        A tune whose only candidate's account is full waits: another account
        of the source freeing a slot does not wake it, its own account
        does; giving up names the full account.
        """
        self.pooled({"1": [(1, "p#1")], "2": [(2, "p#1")], "3": [(3, "p#2")]}, {"p#1": 1, "p#2": 1},
                    stream_start_timeout=10)
        self.live("1")
        self.live("3")
        two = self.tune("2")
        self.assertEqual(self.slots.waiting(), 1)
        self.manager.stop_channel("3")
        self.assertEqual(self.slots.waiting(), 1)
        self.assertNoResult(two)
        self.manager.stop_channel("1")
        self.assertIn(self.url(2), self.ffmpegs()[-1].command)
        self.assertEqual(self.slots.waiting(), 0)
        self.go_live(self.ffmpegs()[-1])
        self.successResultOf(two)
        one = self.tune("1")
        for _ in range(11):
            self.reactor.advance(1)
            self.media(self.ffmpegs()[0], 1.0)
            self.manager.session("2").touch()
        failure = self.failureResultOf(one, ChannelUnavailable)
        self.assertIn("source(s) full: p 1/unlimited; accounts p#1 1/1", str(failure.value))
        self.assertSlotsMatchProcesses()

    def test_force_switch_alongside_through_another_account(self):
        """
        A forced switch starts the next candidate alongside only when its
        own account has room; with that account full, the stream is
        restarted on its own account's slot.
        """
        self.pooled({"7": [(1, "p#1"), (2, "p#2")], "8": [(3, "p#2")]}, {"p#1": 1, "p#2": 1})
        first = self.live("7")
        self.manager.force_switch("7")
        second = self.ffmpegs()[-1]
        self.assertIn(self.url(2), second.command)
        self.assertFalse(first.exited)
        self.go_live(second)
        self.assertTrue(first.exited)
        self.assertEqual(self.accounts_in_use(), {"p#2": 1})
        self.manager.stop_channel("7")
        self.live("8")
        self.live("7")
        self.manager.force_switch("7")
        self.assertEqual(self.slots.waiting(), 0)
        self.assertIn(self.url(1), self.ffmpegs()[-1].command)
        self.assertEqual(self.accounts_in_use(), {"p#1": 1, "p#2": 1})
        self.assertSlotsMatchProcesses()


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
        for _ in range(28):
            self.reactor.advance(1)
            for process in self.ffmpegs():
                self.media(process, 1.0)
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
        for _ in range(28):
            self.reactor.advance(1)
            self.media(self.ffmpegs()[0], 1.0)
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

    def test_a_waiting_request_is_activity(self):
        """
        A request still waiting for its channel to start keeps it from
        being stopped as unused, by the inactivity rule and by the takeover
        of idle streams for a tune waiting for the same source.
        """
        self.make(
            [candidate(1, "1", source="a", url="http://127.0.0.1:1/1.ts"),
             candidate(2, "2", source="a", url="http://127.0.0.1:1/2.ts")],
            source_limits={"a": 1}, stream_start_timeout=30, inactivity_timeout=10,
        )
        d = self.tune("1")
        session = self.manager.session("1")
        self.report(self.ffmpegs()[0])
        two = self.tune("2")
        self.reactor.advance(20)
        self.assertIs(self.manager.session("1"), session)
        self.assertEqual(session.idle_seconds(self.reactor.seconds()), 0.0)
        self.assertNoResult(d)
        self.assertNoResult(two)

    def test_periodic_jobs_survive_a_failing_run(self):
        """
        A health check that raises is logged and the checks go on.
        """
        manager = self.make([candidate(1, "1", url="http://127.0.0.1:1/1.ts")])
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        session = manager.session("1")
        calls = []

        def broken():
            calls.append(1)
            raise RuntimeError("boom")

        session.check = broken
        for _ in range(3 * int(self.config.buffer_check_interval)):
            self.reactor.advance(1)
            self.media(self.ffmpegs()[0], 1.0)
        self.assertEqual(len(calls), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)


class InterleavingTests(Harness):
    """
    Slot counts stay exact through random interleavings of start, failure,
    failover, force switch and stop.
    """

    def test_random_interleavings(self):
        """
        For many seeded random runs over three channels sharing two limited
        sources, after every step the held slots equal the running children
        of each source plus the slots switching channels keep, and once
        everything is stopped every count is zero.
        """
        for seed in range(int(os.environ.get("INTERLEAVING_SEEDS", 40))):
            self.run_interleaving(seed)

    def test_random_interleavings_with_pooled_accounts(self):
        """
        The same with source ``a`` pooled from two provider accounts of one
        slot each: the held slots of every account also equal its running
        children and kept slots, and no account is ever over its limit.
        """
        for seed in range(int(os.environ.get("INTERLEAVING_SEEDS", 40))):
            self.run_interleaving(seed, pooled=True)

    def run_interleaving(self, seed, pooled=False):
        rng = random.Random(seed)
        candidates = []
        self.source_of = {}
        self.account_of = {}
        rowid = 0
        ways = (("a", "a#1"), ("a", "a#2"), ("b", None)) if pooled else (("a", None), ("b", None))
        for channel in ("1", "2", "3"):
            for source, account in ways:
                rowid += 1
                url = f"http://127.0.0.1:1/{source}/{account or 'own'}/{channel}.ts"
                self.source_of[url] = source
                self.account_of[url] = account
                candidates.append(candidate(rowid, channel, source=source, url=url, account=account))
        manager = self.make(candidates, source_limits={"a": 2, "b": 1}, stream_start_timeout=6)
        if pooled:
            self.slots.set_limits(account_limits={"a#1": 1, "a#2": 1})
        waiting = []
        for step in range(60):
            action = rng.choice(["tune", "tune", "report", "probe", "media", "media", "exit", "stall",
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
            elif action == "media" and self.ffmpegs():
                self.media(rng.choice(self.ffmpegs()), rng.choice([0.5, 1.0, 2.0]))
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
            try:
                self.assertSlotsMatchProcesses()
            except Exception:
                import sys
                print("SEED", seed, "STEP", step, action, file=sys.stderr)
                for sess in manager.sessions.values():
                    print(sess.channel_id, sess.state, sess.attempt and (sess.attempt.candidate.source, sess.attempt.phase), sess.standby and (sess.standby.candidate.source, sess.standby.phase), sess._kept_slot, sess._kept_for, sess._kept_pending, file=sys.stderr)
                print(self.slots.held(), file=sys.stderr)
                print([(p.program, p.command[-2] if p.program=='ffprobe' else self.url_of(p)) for p in self.reactor.running()], file=sys.stderr)
                raise
        d = manager.stopService()
        self.reactor.advance(5)
        self.successResultOf(d)
        self.assertEqual(self.reactor.running(), [])
        self.assertEqual(self.in_use(), {}, f"seed {seed}")
        self.assertEqual(self.slots.waiting(), 0)
        for d in waiting:
            self.assertTrue(d.called)
