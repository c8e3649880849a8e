"""
Unit tests of what a channel does about streams that are up but useless
(black, frozen, silent), of the slate while every candidate fails, and of
what it counts for the metrics.  ffmpeg is played by hand through the fake
process reactor, including the lines its check branch prints; time is a
Clock.
"""

import os
import random

from twisted.internet import defer

from streamproxy.attempt import STALL_SECONDS_TS
from streamproxy.health import HealthListener
from streamproxy.metrics import MetricsListener
from streamproxy.mpegts import PES, VIDEO, TSReader
from streamproxy.session import SLATE_SOURCE, ChannelOutput, ChannelState, ChannelUnavailable
from streamproxy.slate import Slate

from . import tsgen
from .helpers import candidate
from .test_session import Harness, two_sources

FAST = {"black_seconds": 4, "freeze_seconds": 4, "silence_seconds": 6}


def tick(process, seconds):
    """
    The check branch reports a keyframe at ``seconds``.
    """
    process.stderr(f"[Parsed_metadata_3 @ 0x5600] [info] frame:{round(seconds)}    "
                   f"pts:{round(seconds * 90000)}  pts_time:{seconds:g}\n")


def meta(process, key, seconds):
    """
    The check branch reports ``lavfi.<key>=<seconds>`` on a keyframe.
    """
    process.stderr(f"[Parsed_metadata_3 @ 0x5600] [info] lavfi.{key}={seconds:g}\n")


def silence(process, edge, seconds):
    """
    silencedetect reports ``silence_<edge>``.
    """
    tail = f" | silence_duration: {seconds:g}" if edge == "end" else ""
    process.stderr(f"[silencedetect @ 0x5601] [info] silence_{edge}: {seconds:g}{tail}\n")


class Recorder:
    """
    Records every call made on it as ``(name, args)`` (a health or metrics
    listener).
    """

    def __init__(self, base):
        self.calls = []
        self._base = base

    def __getattr__(self, name):
        if not hasattr(self._base, name):
            raise AttributeError(name)

        def record(*args):
            self.calls.append((name,) + args)

        return record

    def named(self, name):
        return [call[1:] for call in self.calls if call[0] == name]


class Pieces(ChannelOutput):
    """
    An output keeping every piece a channel puts out.
    """

    def __init__(self):
        self.pieces = []
        self.ended = None

    def channel_piece(self, piece):
        self.pieces.append(piece)

    def channel_ended(self, reason):
        self.ended = reason

    def video_times(self):
        reader = TSReader()
        units = reader.feed(b"".join(p.data for p in self.pieces))
        return [u.dts for u in units if u.kind == PES and u.stream == VIDEO and u.dts is not None]


class ContentHarness(Harness):
    """
    A live channel with content checks on short limits.
    """

    def live(self, candidates=None, limits=None, checks=FAST, **settings):
        manager = self.make(candidates or two_sources(), source_limits=limits or {"a": 1, "b": 1},
                            content_checks=checks, **settings)
        self.health = Recorder(HealthListener())
        self.metrics = Recorder(MetricsListener())
        manager.health = self.health
        manager.metrics = self.metrics
        d = self.tune("7")
        self.ffmpeg = self.ffmpegs()[0]
        self.go_live(self.ffmpeg, self.probes()[0] if self.probes() else None)
        self.successResultOf(d)
        return manager.session("7")

    def black_for(self, process, start, end, step=2):
        """
        A black picture from ``start`` and keyframes every ``step`` up to
        ``end``.
        """
        tick(process, start)
        meta(process, "black_start", start)
        t = start
        while t < end:
            t += step
            tick(process, t)


class ContentFaultTests(ContentHarness):
    """
    A fault past its limit fails the candidate over, with the reason.
    """

    def test_black_fails_over_to_a_standby_ready_alongside(self):
        """
        Nearly at its limit, the black stream gets the next candidate
        started alongside; at the limit the channel goes over to it with
        no gap; the reason is on the status page, the stream's health says
        black, and the metrics count it.
        """
        session = self.live()
        self.black_for(self.ffmpeg, 0, 2)
        self.assertEqual(len(self.ffmpegs()), 2, "no standby started alongside")
        standby = self.ffmpegs()[1]
        self.assertIn("http://127.0.0.1:2/b7.ts", standby.command)
        self.go_live(standby)
        self.assertEqual(session.status()["current"]["source"], "a")
        self.assertEqual(session.status()["current"]["content"], {"black": 2.0})
        tick(self.ffmpeg, 4)
        self.assertTrue(self.ffmpeg.exited)
        self.assertEqual(session.state, ChannelState.LIVE)
        self.assertEqual(session.status()["current"]["source"], "b")
        failover = session.failovers[-1]
        self.assertEqual(failover["reason"], "black picture for 4 s")
        self.assertLess(failover["gap"], 0.1)
        self.assertEqual(self.manager.failures.reason(1), "black picture for 4 s")
        self.assertEqual([c[0].rowid for c in self.health.named("stream_content_fault")], [1])
        self.assertEqual(self.health.named("stream_content_fault")[0][1:], ("black", 4.0))
        self.assertIn(("a", "black"), self.metrics.named("content_fault"))
        self.assertIn(("a", "black picture for 4 s"), self.metrics.named("failover"))
        self.assertEqual(self.in_use(), {"b": 1})

    def test_fault_that_ends_drops_the_standby(self):
        """
        A black picture that ends before its limit fails nothing; the
        candidate started alongside is stopped and not penalised.
        """
        session = self.live()
        self.black_for(self.ffmpeg, 0, 2)
        standby = self.ffmpegs()[1]
        meta(self.ffmpeg, "black_end", 3)
        tick(self.ffmpeg, 4)
        self.assertTrue(standby.exited)
        self.assertIsNone(session.standby)
        tick(self.ffmpeg, 10)
        self.assertFalse(self.ffmpeg.exited)
        self.assertEqual(session.failovers, [])
        self.assertIsNone(self.manager.failures.reason(2))

    def test_without_a_standby_the_slow_way(self):
        """
        With no connection to spare alongside, the black stream is let go
        at its limit and the next candidate started on its connection.
        """
        manager = self.make([candidate(1, "7", source="a", url="http://127.0.0.1:1/1.ts"),
                             candidate(2, "7", source="a", url="http://127.0.0.1:1/2.ts")],
                            source_limits={"a": 1}, content_checks=FAST)
        self.tune("7")
        first = self.ffmpegs()[0]
        self.go_live(first)
        self.black_for(first, 0, 4)
        self.assertTrue(first.exited)
        second = self.ffmpegs()[0]
        self.assertIn("http://127.0.0.1:1/2.ts", second.command)
        self.assertEqual(manager.session("7").state, ChannelState.SWITCHING)

    def test_kept_when_nothing_else_can_start(self):
        """
        When no other candidate can get a connection, the stream is kept
        (a picture beats none) and judged again a limit later.
        """
        session = self.live(limits={"a": 1, "b": 0})
        self.black_for(self.ffmpeg, 0, 4)
        self.assertFalse(self.ffmpeg.exited)
        self.assertEqual(session.failovers, [])
        self.black_for(self.ffmpeg, 4, 12)
        self.assertFalse(self.ffmpeg.exited)
        self.assertEqual(len(self.metrics.named("content_fault")), 3)

    def test_frozen_and_silent(self):
        """
        A held picture and silence are judged on their own limits; a black
        picture is not also a frozen one.
        """
        session = self.live(limits={"a": 1, "b": 0})
        tick(self.ffmpeg, 0)
        meta(self.ffmpeg, "black_start", 0)
        meta(self.ffmpeg, "freezedetect.freeze_start", 0)
        silence(self.ffmpeg, "start", 0.5)
        tick(self.ffmpeg, 2)
        self.assertEqual(session.attempt.content.lasting(), {"black": 2.0, "silent": 1.5})
        meta(self.ffmpeg, "black_end", 3)
        tick(self.ffmpeg, 4)
        faults = [c[1] for c in self.metrics.named("content_fault")]
        self.assertEqual(faults, ["frozen"])
        tick(self.ffmpeg, 6.5)
        self.assertEqual([c[1] for c in self.metrics.named("content_fault")], ["frozen", "silent"])

    def test_spurious_freeze_pairs_and_jumps(self):
        """
        freezedetect's start-and-end on one keyframe (keyframes further
        apart than its minimum) is no freeze, and a clock that jumps (an
        upstream restarting its timestamps) counts as no time.
        """
        session = self.live()
        for t in (0, 2, 4, 6, 8):
            tick(self.ffmpeg, t)
            meta(self.ffmpeg, "freezedetect.freeze_start", t - 2)
            meta(self.ffmpeg, "freezedetect.freeze_end", t)
        self.assertEqual(session.failovers, [])
        tick(self.ffmpeg, 10)
        meta(self.ffmpeg, "black_start", 10)
        tick(self.ffmpeg, 3600)
        tick(self.ffmpeg, 3601)
        self.assertEqual(session.attempt.content.lasting(), {"black": 1.0})
        self.assertFalse(self.ffmpeg.exited)


class OptOutTests(ContentHarness):
    """
    Channels that really are black or silent.
    """

    def test_every_candidate_shows_the_same(self):
        """
        When the next candidate shows the same fault, it is kept: the kind
        is the channel's content, not judged on the channel for a while,
        also at the next tune (whose ffmpeg runs no blackdetect).
        """
        session = self.live(limits={"a": 1, "b": 0})
        self.slots.set_limits({"a": 1, "b": 1})
        self.black_for(self.ffmpeg, 0, 4)
        second = [p for p in self.ffmpegs() if "http://127.0.0.1:2/b7.ts" in p.command][0]
        self.assertTrue(self.ffmpeg.exited)
        self.go_live(second)
        self.black_for(second, 0, 4)
        self.assertFalse(second.exited)
        self.assertEqual(session.tolerated, {"black"})
        self.assertEqual(session.status()["content_tolerated"], ["black"])
        self.black_for(second, 4, 20)
        self.assertFalse(second.exited)
        self.assertEqual(len(session.failovers), 1)
        self.manager.stop_channel("7")
        self.reactor.advance(5)
        self.tune("7")
        argv = " ".join(self.ffmpegs()[0].command)
        self.assertNotIn("blackdetect", argv)
        self.assertIn("freezedetect", argv)
        self.assertEqual([t["kind"] for t in self.manager.status()["content_checks"]["tolerated"]], ["black"])

    def test_single_candidate_is_kept(self):
        """
        A channel's only candidate is never failed for its content.
        """
        session = self.live(candidates=[candidate(1, "7", source="a")], limits={"a": 1})
        silence(self.ffmpeg, "start", 0)
        for t in range(0, 20, 2):
            tick(self.ffmpeg, t)
        self.assertFalse(self.ffmpeg.exited)
        self.assertEqual(session.tolerated, {"silent"})

    def test_skip_channels(self):
        """
        A channel in skip_channels runs no check output at all.
        """
        self.live(checks=dict(FAST, skip_channels=["7"]))
        self.assertNotIn("null", self.ffmpeg.command)
        self.assertNotIn("-skip_frame:v:0", self.ffmpeg.command)

    def test_zero_limits(self):
        """
        A limit of 0 drops that detector from the command; all three at 0
        drop the check output.
        """
        self.live(checks={"black_seconds": 0, "freeze_seconds": 4, "silence_seconds": 0})
        argv = " ".join(self.ffmpeg.command)
        self.assertIn("freezedetect", argv)
        self.assertNotIn("blackdetect", argv)
        self.assertNotIn("silencedetect", argv)

    def test_all_limits_zero(self):
        """
        With every limit at 0 nothing is checked.
        """
        self.live(checks={"black_seconds": 0, "freeze_seconds": 0, "silence_seconds": 0})
        self.assertNotIn("null", self.ffmpeg.command)


class SlateTests(ContentHarness):
    """
    The slate while every candidate fails.
    """

    def live_with_slate(self, **settings):
        session = self.live(**settings)
        self.slate = Slate(tsgen.stream(seconds=1.0, gop=1.0, start=900_000))
        self.manager.slate = lambda: self.slate
        session._slate = self.manager.slate
        self.output = Pieces()
        session.add_output(self.output)
        self.media(self.ffmpeg, 2.0)
        return session

    def test_slate_loops_while_retrying_and_the_clock_runs_on(self):
        """
        Every candidate failing puts the slate on (its own source number),
        one pass a second, with the timestamps running on from the stream
        before; when a candidate plays again the slate stops and the
        stream's media follows, the clock still running on.
        """
        session = self.live_with_slate()
        self.ffmpeg.exit(1)
        self.ffmpegs()[0].exit(1)
        self.assertEqual(session.state, ChannelState.RETRYING)
        self.assertIsNotNone(session.status()["slate_for"])
        slate_pieces = [p for p in self.output.pieces if p.source == SLATE_SOURCE]
        self.assertTrue(slate_pieces and slate_pieces[0].splice)
        for _ in range(4):
            self.reactor.advance(1)
            if session.state is ChannelState.SWITCHING and self.ffmpegs():
                self.ffmpegs()[0].exit(1)
        self.assertEqual(session.state, ChannelState.RETRYING)
        times = [p.time for p in self.output.pieces if p.time is not None]
        self.assertTrue(all(b > a for a, b in zip(times, times[1:])), "the clock went back")
        slate_frames = [p for p in self.output.pieces if p.source == SLATE_SOURCE and p.time is not None]
        self.assertGreaterEqual(len(slate_frames), 4 * 25)
        self.assertGreater(len(session.playlist), 3)
        self.reactor.advance(2.1)
        back = self.ffmpegs()[0]
        self.go_live(back)
        self.assertEqual(session.state, ChannelState.LIVE)
        self.assertIsNone(session.status()["slate_for"])
        count = len(self.output.pieces)
        self.reactor.advance(3)
        self.assertFalse([p for p in self.output.pieces[count:] if p.source == SLATE_SOURCE])
        times = [p.time for p in self.output.pieces if p.time is not None]
        self.assertTrue(all(b > a for a, b in zip(times, times[1:])), "the clock went back")
        self.assertIsNone(self.output.ended)

    def test_no_slate_when_turned_off_or_never_played(self):
        """
        ``slate: false`` shows nothing while retrying; a channel that never
        played fails as before.
        """
        session = self.live_with_slate(slate=False)
        self.ffmpeg.exit(1)
        self.ffmpegs()[0].exit(1)
        self.assertEqual(session.state, ChannelState.RETRYING)
        count = len(self.output.pieces)
        self.reactor.advance(1.5)
        self.assertEqual(len(self.output.pieces), count)
        self.assertIsNone(session.status()["slate_for"])


class MetricsTests(ContentHarness):
    """
    What a channel counts for /metrics.
    """

    def test_tune_outcomes(self):
        """
        A tune that plays counts ``live`` with its seconds; one whose every
        candidate fails ``unavailable``; one that finds no connection
        ``no_slot``; one stopped before playing ``abandoned``.
        """
        self.live()
        outcomes = self.metrics.named("tune_outcome")
        self.assertEqual([o[0] for o in outcomes], ["live"])
        self.manager.stop_channel("7")
        self.reactor.advance(5)
        self.tune("7")
        self.ffmpegs()[0].exit(1)
        self.ffmpegs()[0].exit(1)
        self.manager.slots.set_limits({"a": 0, "b": 0})
        self.tune("7")
        self.reactor.advance(self.config.stream_start_timeout + 1)
        self.manager.slots.set_limits({"a": 1, "b": 1})
        self.tune("7")
        self.manager.stop_channel("7")
        self.assertEqual([o[0] for o in self.metrics.named("tune_outcome")],
                         ["live", "unavailable", "no_slot", "abandoned"])

    def test_failovers_buffering_and_gaps(self):
        """
        A stall counts a failover of its source with its reason, and the
        gap once the next stream plays; buffering events count with theirs.
        """
        session = self.live(limits={"a": 1, "b": 0})
        self.ffmpeg.stderr("[info] Will reconnect at 100 in 1 second(s), error=End of file.\n")
        self.assertEqual(self.metrics.named("buffering"), [("a", "reconnect (End of file)")])
        self.slots.set_limits({"a": 1, "b": 1})
        self.reactor.advance(STALL_SECONDS_TS + 0.1)
        self.assertEqual(self.metrics.named("failover")[0][0], "a")
        self.assertTrue(self.metrics.named("failover")[0][1].startswith("stalled"))
        self.go_live(self.ffmpegs()[0])
        self.assertEqual(len(self.metrics.named("failover_gap")), 1)
        self.assertEqual(session.state, ChannelState.LIVE)


class ContentInterleavingTests(Harness):
    """
    Slot counts stay exact through random interleavings that include
    content faults (with candidates started alongside near the limit) and
    the slate.
    """

    def test_random_interleavings_with_content_faults(self):
        """
        For seeded random runs over three channels on two limited sources,
        with black pictures and silences coming and going, the held slots
        equal the running children plus kept slots after every step.
        """
        for seed in range(int(os.environ.get("INTERLEAVING_SEEDS", 30))):
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
        manager = self.make(candidates, source_limits={"a": 2, "b": 2}, stream_start_timeout=6,
                            content_checks=FAST)
        manager.slate = lambda: Slate(tsgen.stream(seconds=1.0, gop=1.0))
        clocks = {}
        waiting = []
        for step in range(80):
            action = rng.choice(["tune", "report", "probe", "media", "media", "tick", "tick", "black", "clear",
                                 "exit", "stall", "switch", "stop", "time"])
            ffmpegs = self.ffmpegs()
            if action == "tune":
                d = self.tune(rng.choice("123"))
                d.addErrback(lambda f: f.trap(ChannelUnavailable, defer.CancelledError))
                waiting.append(d)
            elif action == "report" and ffmpegs:
                self.report(rng.choice(ffmpegs))
            elif action == "probe" and self.probes():
                self.probe_ok(rng.choice(self.probes()))
            elif action == "media" and ffmpegs:
                self.media(rng.choice(ffmpegs), rng.choice([0.5, 1.0, 2.0]))
            elif action in ("tick", "black", "clear") and ffmpegs:
                live = [p for p in ffmpegs if any(
                    s.attempt is not None and s.attempt.process is p.protocol and s.attempt.phase.value == "live"
                    for s in manager.sessions.values())]
                process = rng.choice(live if live and rng.random() < 0.8 else ffmpegs)
                clocks[process] = clocks.get(process, 0.0) + rng.choice([1.0, 2.0, 3.0])
                if action == "black":
                    meta(process, rng.choice(["black_start", "freezedetect.freeze_start"]), clocks[process])
                elif action == "clear":
                    meta(process, "black_end", clocks[process])
                tick(process, clocks[process])
            elif action == "exit" and self.reactor.running():
                rng.choice(self.reactor.running()).exit(rng.choice([0, 1]))
            elif action == "stall":
                self.reactor.advance(STALL_SECONDS_TS + 0.5)
            elif action == "switch" and manager.sessions:
                manager.force_switch(rng.choice(list(manager.sessions)))
            elif action == "stop" and manager.sessions:
                manager.stop_channel(rng.choice(list(manager.sessions)))
            elif action == "time":
                self.reactor.advance(rng.choice([0.1, 1, 3]))
            try:
                self.assertSlotsMatchProcesses()
            except Exception:
                print("SEED", seed, "STEP", step, action)
                raise
        d = manager.stopService()
        self.reactor.advance(5)
        self.successResultOf(d)
        self.assertEqual(self.reactor.running(), [])
        self.assertEqual(self.in_use(), {}, f"seed {seed}")
