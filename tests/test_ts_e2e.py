"""
MPEG-TS output end to end: viewers of ``/channel/<id>/stream.ts`` over real
sockets, real ffmpeg as the ingest and as a player, the fake provider of
L{tests.upstream} as the upstream.
"""

import os
import socket

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.utils import getProcessOutputAndValue

from streamproxy import fanout
from streamproxy.mpegts import TSReader

from .helpers import row
from .test_streaming_e2e import HLSClient, StreamingTestCase, sleep
from .upstream import FFMPEG, FFPROBE, Fault, wait_until


class TSViewerClient(protocol.Protocol):
    """
    A raw HTTP/1.0 client of a TS stream: records when each byte of the
    body arrived.  With ``read`` false it stops reading after the headers,
    like a stuck player.
    """

    def __init__(self, path, read=True):
        self.path = path
        self.read = read
        self.head = b""
        self.body = bytearray()
        self.status = None
        self.first_byte_at = None
        self.sent_at = None
        self.closed = defer.Deferred()
        self.lost = False

    def connectionMade(self):
        if not self.read:
            # A small receive buffer: the stuck viewer backs up quickly.
            self.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sent_at = reactor.seconds()
        self.transport.write(b"GET " + self.path + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")

    def dataReceived(self, data):
        if self.status is None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            self.head, _, data = self.head.partition(b"\r\n\r\n")
            self.status = int(self.head.split(b" ", 2)[1])
            if not self.read:
                self.transport.pauseProducing()
        if data and self.first_byte_at is None:
            self.first_byte_at = reactor.seconds()
        self.body += data

    def connectionLost(self, reason):
        self.lost = True
        self.closed.callback(None)

    def seconds_to_first_byte(self):
        return None if self.first_byte_at is None else self.first_byte_at - self.sent_at

    def close(self):
        if not self.lost:
            self.transport.abortConnection()
        return self.closed


def first_units(data, count=6):
    """
    The kinds of the first units of a TS body (``pat``, ``pmt``, ``pes``
    with ``key`` for a keyframe).
    """
    reader = TSReader()
    units = reader.feed(bytes(data))
    return [(u.kind, u.stream, u.key) for u in units[:count]]


class TSOutputTests(StreamingTestCase):
    """
    Serving channels as MPEG-TS.
    """

    timeout = 120

    @defer.inlineCallbacks
    def connect(self, path, read=True):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)
        client = yield endpoints.connectProtocol(endpoint, TSViewerClient(path, read))
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_cold_and_warm_starts_begin_at_a_keyframe(self):
        """
        The first viewer of a channel that is not running gets its first
        bytes within 1.5 s (upstream bursting 1 s, 2 s keyframes), a
        second viewer of the running channel within 0.3 s; both streams
        begin with PAT, PMT and a video keyframe, and ffprobe reads them.
        """
        self.add("a", burst=1.0)
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        cold = yield self.connect(b"/channel/1/stream.ts")
        yield wait_until(lambda: len(cold.body) > 188 * 50, timeout=10)
        self.assertEqual(cold.status, 200)
        self.assertIn(b"video/mp2t", cold.head.lower())
        self.assertNotIn(b"content-length", cold.head.lower())
        self.assertLess(cold.seconds_to_first_byte(), 1.5)
        self.assertEqual(first_units(cold.body, 3), [("pat", "other", False), ("pmt", "other", False),
                                                      ("pes", "video", True)])
        yield sleep(2.5)
        warm = yield self.connect(b"/channel/1/stream.ts")
        yield wait_until(lambda: len(warm.body) > 188 * 50, timeout=5)
        self.assertLess(warm.seconds_to_first_byte(), 0.3)
        self.assertEqual(first_units(warm.body, 3)[2], ("pes", "video", True))
        yield sleep(2)
        path = os.path.join(self.mktemp() + ".ts")
        with open(path, "wb") as f:
            f.write(warm.body)
        out, err, code = yield getProcessOutputAndValue(
            FFPROBE, ["-v", "error", "-select_streams", "v", "-show_entries", "packet=flags",
                      "-of", "csv=p=0", "-read_intervals", "%+#1", path])
        self.assertEqual(out.strip().split(b"\n")[0][:1], b"K", out)
        self.assertEqual(self.upstream.streams["a"].open, 1)

    @defer.inlineCallbacks
    def test_ten_viewers_and_an_hls_player_share_one_upstream(self):
        """
        Ten TS viewers and an HLS player of one channel are served from one
        upstream connection and one ffmpeg, each TS viewer at real-time
        pace; /api/status lists them by format with their addresses.
        """
        a = self.add("a", burst=1.0)
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        viewers = []
        for _ in range(10):
            viewers.append((yield self.connect(b"/channel/1/stream.ts")))
        yield self.tune("1")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        client = HLSClient(self.url("/channel/1/stream.m3u8"), os.path.join(folder, "hls.ts"))
        client.start()
        self.addCleanup(client.kill)
        yield wait_until(lambda: all(len(v.body) > 0 for v in viewers), timeout=10)
        sizes = [len(v.body) for v in viewers]
        yield sleep(6)
        grown = [len(v.body) - before for v, before in zip(viewers, sizes)]
        rate = a.media.byte_rate
        for bytes_in_six_seconds in grown:
            self.assertGreater(bytes_in_six_seconds, rate * 6 * 0.7)
        self.assertEqual(a.requests, 2, "ffmpeg's connection and ffprobe's, nothing more")
        self.assertEqual(a.open, 1)
        self.assertEqual(len([p for p in self.channels.session("1").status()["viewers"]["ts"]]), 10)
        entry = yield self.channel_status("1")
        self.assertEqual(len(entry["viewers"]["ts"]), 10)
        self.assertEqual([v["address"] for v in entry["viewers"]["hls"]], ["127.0.0.1"])
        self.assertTrue(all(v["address"].startswith("127.0.0.1:") for v in entry["viewers"]["ts"]))

    @defer.inlineCallbacks
    def test_stuck_viewer_is_dropped_and_the_others_keep_pace(self):
        """
        A viewer that stops reading is dropped once its queue passes the
        bound (lowered here), with a count on the status; the viewers that
        read keep receiving at real-time pace meanwhile.
        """
        self.patch(fanout, "MAX_QUEUED_SECONDS", 2.0)
        a = self.add("a", burst=1.0)
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        good = yield self.connect(b"/channel/1/stream.ts")
        yield wait_until(lambda: len(good.body) > 0, timeout=10)
        yield self.connect(b"/channel/1/stream.ts", read=False)
        session = self.channels.session("1")
        yield wait_until(lambda: len(session.outputs) == 2, timeout=5)
        viewer = session.outputs[-1]
        viewer.request.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        before = len(good.body)
        started = reactor.seconds()
        yield wait_until(lambda: session.slow_viewers_dropped == 1, timeout=30)
        elapsed = reactor.seconds() - started
        self.assertGreater(len(good.body) - before, a.media.byte_rate * elapsed * 0.7)
        self.assertEqual(len(session.outputs), 1)
        self.assertIsNotNone(viewer.dropped)
        entry = yield self.channel_status("1")
        self.assertEqual(entry["slow_viewers_dropped"], 1)

    @defer.inlineCallbacks
    def test_viewer_reads_through_a_stall_failover(self):
        """
        ffmpeg reading the TS URL keeps going through a stall of the first
        upstream: the same response carries the second upstream's media,
        and the recording decodes without an error.
        """
        self.add("a", burst=1.0), self.add("b", burst=1.0)
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
        )
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        recording = os.path.join(folder, "watched.ts")
        client = HLSClient(self.url("/channel/1/stream.ts"), recording)
        client.loglevel = "warning"
        client.start()
        self.addCleanup(client.kill)
        raw = yield self.connect(b"/channel/1/stream.ts")
        yield wait_until(lambda: client.out_time(), timeout=15)
        yield sleep(3)
        self.upstream.set_fault("a", Fault.stall())
        yield wait_until(lambda: self.live_on("1", "prov_b"), timeout=20)
        at_switch = client.out_time()
        yield sleep(6)
        self.assertFalse(client.exited, client.stderr)
        self.assertGreater(client.out_time(), at_switch + 4)
        yield client.finish()
        self.assertNotIn(b"orrupt", client.stderr)
        self.assertNotIn(b"Non-monoton", client.stderr)
        served = os.path.join(folder, "served.ts")
        with open(served, "wb") as f:
            f.write(raw.body)
        for path in (served, recording):
            out, err, code = yield getProcessOutputAndValue(
                FFMPEG, ["-v", "error", "-i", path, "-f", "null", "-"])
            self.assertEqual(err.strip(), b"", (path, err))

    @defer.inlineCallbacks
    def test_errors_and_playlist_format(self):
        """
        An unknown channel is 404 and a channel with nothing playable 503
        with the reason, as for HLS; the M3U lists TS URLs with
        ?format=ts, rejects other formats, and HEAD starts nothing.
        """
        self.add("a", fault=Fault.status(404))
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        response, body = yield self.fetch("/channel/9/stream.ts")
        self.assertEqual(response.code, 404, body)
        response, body = yield self.fetch("/channel/1/stream.ts", method="HEAD")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"video/mp2t"])
        self.assertIsNone(self.channels.session("1"))
        response, body = yield self.fetch("/channel/1/stream.ts")
        self.assertEqual(response.code, 503, body)
        self.assertIn(b"HTTP 404", body)
        response, body = yield self.fetch("/m3u/main.m3u?format=ts")
        self.assertIn(b"/channel/1/stream.ts\n", body)
        response, body = yield self.fetch("/m3u/main.m3u")
        self.assertIn(b"/channel/1/stream.m3u8\n", body)
        response, body = yield self.fetch("/m3u/main.m3u?format=flv")
        self.assertEqual(response.code, 400, body)

    @defer.inlineCallbacks
    def test_last_viewer_leaving_lets_the_channel_stop(self):
        """
        A connected TS viewer keeps its channel running without any other
        request; once it leaves, the inactivity timeout stops the channel.
        """
        self.add("a", burst=1.0)
        yield self.serve([row(1, self.live("a"), source="prov_a")], inactivity_timeout=3)
        viewer = yield self.connect(b"/channel/1/stream.ts")
        yield wait_until(lambda: len(viewer.body) > 0, timeout=10)
        yield sleep(6)
        self.assertIsNotNone(self.channels.session("1"))
        yield viewer.close()
        yield wait_until(lambda: self.channels.session("1") is None, timeout=15)
