"""
Tests for L{tests.upstream}, the fake IPTV provider, against real ffprobe.
"""

import json
import os

import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase
from twisted.web.client import ResponseNeverReceived

from tests.upstream import (FFPROBE, Fault, Upstream, live_playlist, make_media,
                            refused_url, wait_until)


def sleep(seconds):
    """A Deferred that fires after C{seconds} of reactor time."""
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def ffprobe(url, *extra):
    """Run ffprobe on C{url} without blocking the reactor; return (json, exit code)."""
    args = ["-v", "error", "-probesize", "500000", "-analyzeduration", "1000000",
            "-rw_timeout", "5000000", "-of", "json", "-show_streams", *extra, url]
    out, err, code = yield getProcessOutputAndValue(FFPROBE, args, env=os.environ)
    return (json.loads(out) if code == 0 else {"error": err.decode()}), code


class Collector(Protocol):
    """Counts the bytes of a response body and when they arrived."""

    def __init__(self):
        self.data = bytearray()
        self.last_data = None
        self.done = Deferred()
        self.reason = None

    def dataReceived(self, data):
        self.data += data
        self.last_data = reactor.seconds()

    def connectionLost(self, reason):
        self.reason = reason
        self.done.callback(None)

    def disconnect(self):
        """Hang up (if still connected) and wait until the connection is gone."""
        if not self.done.called:
            self.transport.stopProducing()
        return self.done


class UpstreamTests(TestCase):
    """The fixture behaves like a live provider, faults included."""

    timeout = 30

    def setUp(self):
        self.media = make_media("av")
        self.upstream = Upstream()
        self.upstream.add_stream("x")
        self.upstream.start()
        self.addCleanup(self.upstream.stop)

    @inlineCallbacks
    def connect(self, name):
        """Start reading live stream C{name}; return a L{Collector}."""
        response = yield treq.get(self.upstream.live_url(name), persistent=False, unbuffered=True)
        self.assertEqual(response.code, 200)
        collector = Collector()
        response.deliverBody(collector)
        self.addCleanup(collector.disconnect)
        return collector

    def seconds_of_media(self, collector, media=None):
        """How many seconds of media the collector has received."""
        return len(collector.data) / (media or self.media).byte_rate

    @inlineCallbacks
    def test_media_gop_is_two_seconds(self):
        """The generated av media has a keyframe exactly every 2 s, ~400 kb/s video."""
        out, _, code = yield getProcessOutputAndValue(FFPROBE, [
            "-v", "error", "-select_streams", "v", "-show_entries", "packet=pts_time,flags",
            "-of", "csv=p=0", self.media.path], env=os.environ)
        self.assertEqual(code, 0)
        keys = [float(line.split(",")[0]) for line in out.decode().split() if "K" in line]
        gaps = {round(b - a, 3) for a, b in zip(keys, keys[1:])}
        self.assertEqual(gaps, {2.0})
        self.assertTrue(40_000 < self.media.byte_rate < 100_000, self.media.byte_rate)

    def test_media_kinds(self):
        """Each media kind has the codecs its name promises."""
        codecs = {kind: [s["codec_name"] for s in make_media(kind).streams]
                  for kind in ("av", "audio", "mpeg2")}
        self.assertEqual(codecs, {"av": ["h264", "aac"], "audio": ["aac"],
                                  "mpeg2": ["mpeg2video", "aac"]})

    @inlineCallbacks
    def test_live_probe(self):
        """ffprobe reading /live/x.ts finds H.264 video and AAC audio."""
        info, code = yield ffprobe(self.upstream.live_url("x"))
        self.assertEqual(code, 0, info)
        self.assertEqual(sorted(s["codec_name"] for s in info["streams"]), ["aac", "h264"])
        yield wait_until(lambda: self.upstream.streams["x"].open == 0)

    @inlineCallbacks
    def test_pacing_real_time_and_slow(self):
        """Live bytes arrive at about the media's real-time rate; Fault.slow halves it."""
        self.upstream.add_stream("slow", fault=Fault.slow())
        normal = yield self.connect("x")
        slow = yield self.connect("slow")
        started = reactor.seconds()
        yield sleep(3)
        wall = reactor.seconds() - started
        self.assertTrue(0.7 * wall < self.seconds_of_media(normal) < 1.6 * wall + 0.5,
                        (wall, self.seconds_of_media(normal)))
        self.assertTrue(0.3 * wall < self.seconds_of_media(slow) < 0.7 * wall + 0.3,
                        (wall, self.seconds_of_media(slow)))

    @inlineCallbacks
    def test_burst(self):
        """A stream with burst=N sends N seconds of media right away."""
        self.upstream.add_stream("b", burst=5)
        collector = yield self.connect("b")
        yield sleep(0.3)
        self.assertGreater(self.seconds_of_media(collector), 4.9)

    @inlineCallbacks
    def test_status_faults(self):
        """Fault.status(code) answers with that code; unknown streams give 404."""
        for code in (404, 403, 500):
            self.upstream.add_stream(f"s{code}", fault=Fault.status(code))
            response = yield treq.get(self.upstream.live_url(f"s{code}"), persistent=False)
            yield response.content()
            self.assertEqual(response.code, code)
        response = yield treq.get(self.upstream.hls_url("s403"), persistent=False)
        yield response.content()
        self.assertEqual(response.code, 403)
        response = yield treq.get(self.upstream.live_url("nope"), persistent=False)
        yield response.content()
        self.assertEqual(response.code, 404)

    def test_reset(self):
        """Fault.reset drops the connection before any response."""
        self.upstream.add_stream("r", fault=Fault.reset())
        d = treq.get(self.upstream.live_url("r"), persistent=False)
        return self.assertFailure(d, ResponseNeverReceived)

    @inlineCallbacks
    def test_hang_and_stall_at_connect(self):
        """Fault.hang never answers; Fault.stall() at connect answers 200 and sends nothing."""
        self.upstream.add_stream("h", fault=Fault.hang())
        self.upstream.add_stream("s", fault=Fault.stall())
        hung = treq.get(self.upstream.live_url("h"), persistent=False)
        answered = []
        hung.addBoth(lambda result: answered.append(result) or result)
        stalled = yield self.connect("s")
        yield sleep(0.5)
        self.assertEqual(answered, [])
        self.assertEqual(len(stalled.data), 0)
        self.assertEqual(self.upstream.streams["h"].requests, 1)
        yield self.upstream.stop()
        yield self.assertFailure(hung, ResponseNeverReceived)

    def test_refused_url(self):
        """refused_url() points at a port where connecting is refused."""
        return self.assertFailure(treq.get(refused_url(), persistent=False), ConnectError)

    @inlineCallbacks
    def test_audio_only(self):
        """Fault.audio_only (and media='audio') serve a stream without video."""
        # A burst so ffprobe needn't wait for the slow audio-only byte rate.
        self.upstream.add_stream("a", fault=Fault.audio_only(), burst=3)
        self.upstream.add_stream("a2", media="audio", burst=3)
        for name in ("a", "a2"):
            info, code = yield ffprobe(self.upstream.live_url(name))
            self.assertEqual(code, 0, info)
            self.assertEqual([s["codec_type"] for s in info["streams"]], ["audio"])

    @inlineCallbacks
    def test_stall_after(self):
        """Fault.stall(after=1) sends ~1 s of media, then nothing, but stays connected."""
        self.upstream.add_stream("st", fault=Fault.stall(after=1))
        collector = yield self.connect("st")
        started = reactor.seconds()
        yield sleep(2.5)
        self.assertLess(collector.last_data - started, 1.6)
        self.assertTrue(0.5 < self.seconds_of_media(collector) < 2, self.seconds_of_media(collector))
        self.assertFalse(collector.done.called)
        self.assertEqual(self.upstream.streams["st"].open, 1)

    @inlineCallbacks
    def test_stall_switched_at_runtime(self):
        """Setting a stall on a running stream freezes connected clients; clearing it resumes them."""
        collector = yield self.connect("x")
        yield sleep(1)
        self.upstream.set_fault("x", Fault.stall())
        yield sleep(0.3)  # let bytes already in flight land
        frozen = len(collector.data)
        yield sleep(1)
        self.assertEqual(len(collector.data), frozen)
        self.upstream.set_fault("x", None)
        yield sleep(0.5)
        self.assertGreater(len(collector.data), frozen)

    @inlineCallbacks
    def test_close_after(self):
        """Fault.close(after=1) ends the connection after ~1 s of media."""
        self.upstream.add_stream("c", fault=Fault.close(after=1))
        collector = yield self.connect("c")
        started = reactor.seconds()
        yield collector.done
        self.assertTrue(0.8 < reactor.seconds() - started < 3)
        self.assertTrue(0.5 < self.seconds_of_media(collector) < 2, self.seconds_of_media(collector))
        self.assertEqual(self.upstream.streams["c"].open, 0)

    @inlineCallbacks
    def test_garbage(self):
        """Fault.garbage sends live-paced bytes without a single TS sync byte."""
        self.upstream.add_stream("g", fault=Fault.garbage(), burst=1)
        collector = yield self.connect("g")
        yield sleep(0.5)
        self.assertGreater(self.seconds_of_media(collector), 1)
        self.assertNotIn(0x47, collector.data)

    @inlineCallbacks
    def test_hls_live_playlist(self):
        """The HLS playlist is live (no ENDLIST), probes as h264+aac, and slides forward."""
        url = self.upstream.hls_url("x")
        first = yield (yield treq.get(url, persistent=False)).text()
        self.assertTrue(first.startswith("#EXTM3U"))
        self.assertNotIn("#EXT-X-ENDLIST", first)
        self.assertIn("#EXT-X-TARGETDURATION:2", first)
        self.assertEqual(first.count("#EXTINF"), 5)
        info, code = yield ffprobe(url)
        self.assertEqual(code, 0, info)
        self.assertEqual(sorted(s["codec_name"] for s in info["streams"]), ["aac", "h264"])
        yield sleep(2.2)
        later = yield (yield treq.get(url, persistent=False)).text()

        def sequence(playlist):
            return int(playlist.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0])

        self.assertGreater(sequence(later), sequence(first))

    def test_playlist_wraps_with_discontinuity(self):
        """Where the segment loop wraps, the playlist marks a discontinuity and keeps counting."""
        segments = [("a", 2.0), ("b", 2.0), ("c", 1.0)]
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:0\n", live_playlist(segments, 0, window=2))
        text = live_playlist(segments, 4.5, window=2)  # segments 0..3 produced
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:2\n", text)
        self.assertEqual(text.split("#EXT-X-MEDIA-SEQUENCE:2\n")[1],
                         "#EXT-X-DISCONTINUITY-SEQUENCE:0\n#EXTINF:1.000,\n2.ts\n"
                         "#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n3.ts\n")
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:3\n", live_playlist(segments, 16, window=2))

    def test_hls_clock_follows_faults(self):
        """The HLS broadcast clock runs at real time, at half speed when slow, and stops when stalled."""
        clock = Clock()
        upstream = Upstream(clock=clock)
        stream = upstream.add_stream("h")
        self.assertEqual(upstream.hls_position(stream), 0)
        clock.advance(4)
        self.assertEqual(upstream.hls_position(stream), 4)
        upstream.set_fault("h", Fault.slow())
        clock.advance(4)
        self.assertEqual(upstream.hls_position(stream), 6)
        upstream.set_fault("h", Fault.stall(after=1))
        clock.advance(4)
        self.assertEqual(upstream.hls_position(stream), 7)
        upstream.set_fault("h", None)
        clock.advance(1)
        self.assertEqual(upstream.hls_position(stream), 8)

    @inlineCallbacks
    def test_connection_counts(self):
        """open counts live connections as they come and go; requests only grows."""
        stream = self.upstream.streams["x"]
        one = yield self.connect("x")
        two = yield self.connect("x")
        yield wait_until(lambda: stream.open == 2)
        self.assertEqual(stream.requests, 2)
        yield one.disconnect()
        yield wait_until(lambda: stream.open == 1)
        yield two.disconnect()
        yield wait_until(lambda: stream.open == 0)
        self.assertEqual(stream.requests, 2)

    @inlineCallbacks
    def test_stop_drops_clients(self):
        """stop() closes connected clients and then refuses new connections."""
        collector = yield self.connect("x")
        url = self.upstream.live_url("x")
        yield self.upstream.stop()
        yield collector.done
        yield self.assertFailure(treq.get(url, persistent=False), ConnectError)
