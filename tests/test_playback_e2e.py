"""
A real player through a stall failover and two forced switches, with the
live playlist's rules (RFC 8216) and the served segments' timestamps
checked on what went over the wire.

ffmpeg plays the channel as an HLS client while the test polls the
playlist and fetches every segment the moment it is listed.  ffmpeg as a
client smooths a timestamp reset over, so the continuity of timestamps is
checked on the collected segments themselves.
"""

import json
import os

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.internet.utils import getProcessOutputAndValue

from .helpers import row
from .test_streaming_e2e import HLSClient, PlaylistWatcher, StreamingTestCase, sleep
from .upstream import FFPROBE, Fault, wait_until


def parse_playlist(text):
    """
    The tags and segments of one of our live playlists:
    ``{"target": int, "sequence": int, "discontinuity_sequence": int,
    "segments": [(sequence, name, duration, discontinuity)]}``.
    """
    answer = {"segments": []}
    duration = None
    tagged = False
    for line in text.splitlines():
        if line.startswith("#EXT-X-TARGETDURATION:"):
            answer["target"] = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            answer["sequence"] = int(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY-SEQUENCE:"):
            answer["discontinuity_sequence"] = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            tagged = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:"):].split(",", 1)[0])
        elif line and not line.startswith("#"):
            number = answer["sequence"] + len(answer["segments"])
            answer["segments"].append((number, line, duration, tagged))
            tagged = False
    return answer


class SegmentCollector:
    """
    Fetches every segment as soon as a playlist poll lists it, and again
    shortly before it may be deleted after leaving the playlist.
    """

    def __init__(self, case, channel_id):
        self.case = case
        self.channel_id = channel_id
        self.bodies = {}
        self.left = {}
        self.late_fetches = []
        self._pending = []

    def saw(self, when, playlist):
        listed = {name for _, name, _, _ in playlist["segments"]}
        for _, name, _, _ in playlist["segments"]:
            if name not in self.bodies:
                self.bodies[name] = None
                self._pending.append(self._fetch(name))
        listed_seconds = sum(duration for _, _, duration, _ in playlist["segments"])
        for name in list(self.bodies):
            if name not in listed and name not in self.left and self.bodies[name] is not None:
                self.left[name] = when
                duration = self.durations.get(name, 0)
                # RFC 8216 6.2.2: available for its duration plus the
                # playlist's duration after leaving it.
                self._pending.append(self._late(name, duration + listed_seconds - 0.5))

    durations = {}

    @defer.inlineCallbacks
    def _fetch(self, name):
        response, body = yield self.case.fetch(f"/channel/{self.channel_id}/{name}")
        self.bodies[name] = body if response.code == 200 else response.code

    @defer.inlineCallbacks
    def _late(self, name, delay):
        yield sleep(delay)
        response, body = yield self.case.fetch(f"/channel/{self.channel_id}/{name}")
        self.late_fetches.append((name, delay, response.code, body == self.bodies.get(name)))

    def done(self):
        return defer.DeferredList(self._pending, consumeErrors=True)


class PlaybackRulesTests(StreamingTestCase):
    """
    What a player gets across every kind of switch.
    """

    timeout = 150

    @defer.inlineCallbacks
    def test_player_through_a_stall_and_two_forced_switches(self):
        """
        ffmpeg plays channel 1 through a stall failover and two forced
        switches without an error.  Every playlist poll has the same target
        duration, no EXTINF rounding above it, at least three target
        durations listed once the channel had that much, a discontinuity
        tag in front of its segment for as long as it is listed and a
        discontinuity sequence counting the tags that left.  Segments stay
        fetchable for their duration plus the playlist's after leaving.
        The collected segments, played in order, have video and audio
        timestamps that never go back and never jump.
        """
        for name in "abc":
            self.add(name, burst=1.0)
        yield self.serve(
            [row(1, self.live(n), source=f"prov_{n}") for n in "abc"],
            source_priority=["prov_a", "prov_b", "prov_c"],
            hls_time=1,
            hls_list_size=3,
            stream_start_timeout=8,
        )
        yield self.tune("1")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        client = HLSClient(self.url("/channel/1/stream.m3u8"), os.path.join(folder, "watched.ts"))
        client.loglevel = "warning"
        client.start()
        self.addCleanup(client.kill)
        collector = SegmentCollector(self, "1")
        watcher = PlaylistWatcher(self, "1")
        self.addCleanup(watcher.stop)
        seen = []

        def observe():
            # Feed the collector from the watcher's polls as they come.
            while len(seen) < len(watcher.polls):
                when, text = watcher.polls[len(seen)]
                playlist = parse_playlist(text)
                seen.append((when, playlist))
                for _, name, duration, _ in playlist["segments"]:
                    collector.durations[name] = duration
                collector.saw(when, playlist)

        loop = LoopingCall(observe)
        loop.start(0.1)
        self.addCleanup(lambda: loop.running and loop.stop())
        yield wait_until(lambda: client.out_time(), timeout=15)
        yield sleep(7)

        playing = self.channels.session("1").status()["current"]["source"]
        self.upstream.set_fault(playing[len("prov_"):], Fault.stall())
        yield wait_until(lambda: self.channels.session("1").status()["failovers"] == 1, timeout=15)
        yield wait_until(lambda: self.channels.session("1").status()["state"] == "live", timeout=15)
        yield sleep(5)
        for switches in (2, 3):
            response, body = yield self.fetch("/force_switch/1", method="POST")
            self.assertEqual(response.code, 200, body)
            yield wait_until(lambda: self.channels.session("1").status()["failovers"] == switches, timeout=15)
            yield wait_until(lambda: self.channels.session("1").status()["state"] == "live", timeout=15)
            yield sleep(5)
        yield sleep(3)
        yield watcher.stop()
        loop.stop()
        observe()
        yield collector.done()
        self.assertFalse(client.exited, client.stderr)
        yield client.kill()

        # The player: no error, no corrupt packet, media kept coming.
        self.assertNotIn(b"orrupt", client.stderr)
        self.assertNotIn(b"Non-monoton", client.stderr)
        self.assertEqual(watcher.errors, [])

        # The playlist rules, poll by poll.
        targets = {p["target"] for _, p in seen}
        self.assertEqual(len(targets), 1, targets)
        target = targets.pop()
        self.assertEqual(target, 1)
        tags, flags, listed_enough = set(), {}, False
        for when, playlist in seen:
            segments = playlist["segments"]
            total = sum(d for _, _, d, _ in segments)
            for sequence, name, duration, tagged in segments:
                self.assertLessEqual(round(duration), target, (name, duration))
                self.assertEqual(flags.setdefault(name, tagged), tagged, f"{name}: tag came or went")
                if tagged:
                    tags.add(sequence)
            if total >= 3 * target:
                listed_enough = True
            elif listed_enough:
                self.fail(f"only {total:.2f} s listed at {when}: {playlist}")
            gone = [s for s in tags if s < playlist["sequence"]]
            self.assertEqual(playlist["discontinuity_sequence"], len(gone), playlist)
        self.assertTrue(listed_enough)
        self.assertGreaterEqual(len(tags), 3, "three switches, three discontinuities")

        # Segments that left were still there for their duration plus the
        # playlist's duration.
        self.assertTrue(collector.late_fetches)
        for name, delay, code, same in collector.late_fetches:
            self.assertEqual((code, same), (200, True), f"{name} {delay:.1f} s after it left")

        # The segments themselves, in order: one continuous timeline.
        ordered = sorted(
            (sequence, name) for _, p in seen for sequence, name, _, _ in p["segments"]
        )
        names = [name for _, name in dict(ordered).items()]
        self.assertEqual([s for s, _ in sorted(dict(ordered).items())],
                         list(range(ordered[0][0], ordered[-1][0] + 1)), "a sequence number was skipped")
        missing = [n for n in names if not isinstance(collector.bodies.get(n), bytes)]
        self.assertEqual(missing, [])
        joined = os.path.join(folder, "joined.ts")
        with open(joined, "wb") as f:
            for name in names:
                f.write(collector.bodies[name])
        out, err, code = yield getProcessOutputAndValue(
            FFPROBE,
            ["-v", "error", "-show_entries", "packet=stream_index,pts_time,dts_time", "-of", "json", joined],
        )
        self.assertEqual(code, 0, err)
        self.assertNotIn(b"orrupt", err)
        packets = json.loads(out)["packets"]
        by_stream = {}
        for packet in packets:
            if "dts_time" in packet:
                by_stream.setdefault(packet["stream_index"], []).append(float(packet["dts_time"]))
        self.assertEqual(len(by_stream), 2, "video and audio")
        for stream, times in by_stream.items():
            steps = [b - a for a, b in zip(times, times[1:])]
            self.assertGreater(min(steps), 0, f"stream {stream}: a timestamp went back")
            # Within a few frames: no hole a player would stall on.
            self.assertLess(max(steps), 0.12, f"stream {stream}: a timestamp jumped")
        media_seconds = by_stream[0][-1] - by_stream[0][0]
        self.assertGreater(media_seconds, 25)
