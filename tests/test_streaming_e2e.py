"""
End-to-end streaming tests: the whole service tree (store, channel manager,
web site) started in-process on 127.0.0.1, real ffmpeg and ffprobe children,
and the fake IPTV provider of L{tests.upstream} as the upstream.

Each test builds its own database and configuration, starts the services,
and on clean-up stops them and checks the invariants every run must keep:
no child process of ours left, no provider slot held, no segment folder left.
"""

import json
import os

import treq
from twisted.internet import defer, endpoints, protocol, reactor, task
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from streamproxy.config import parse_config
from streamproxy.processes import command_line, find_leftovers
from streamproxy.tap import build_services

from .helpers import make_database, row
from .test_daemon import free_port
from .upstream import FFMPEG, Fault, Upstream, refused_url, wait_until

# Seconds of media a healthy upstream sends at once when a client connects,
# as real providers do: the first segment (cut at the keyframe at 2 s) is
# then ready at once, which keeps starts fast and start timeouts reliable.
BURST = 3.0

# Settings every test starts from: short segments and timeouts.
BASE_SETTINGS = {
    "hls_time": 2,
    "stream_start_timeout": 8,
    "ffprobe_timeout": 5,
    "inactivity_timeout": 60,
    # The fixed discovery ports (65001, 1900) stay free for the tests of
    # discovery itself (tests/test_clients_e2e.py).
    "hdhomerun": {"discovery": False},
}


def sleep(seconds):
    """
    A Deferred firing after ``seconds`` of reactor time.
    """
    return deferLater(reactor, seconds, lambda: None)


def parse_live_playlist(text):
    """
    ``(media_sequence, [(sequence, name, discontinuity_before)])`` of one of
    our live playlists.
    """
    sequence = None
    entries = []
    pending = False
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            pending = True
        elif line and not line.startswith("#"):
            entries.append((line, pending))
            pending = False
    return sequence, [(sequence + i, name, disc) for i, (name, disc) in enumerate(entries)]


def segment_names(text):
    """
    The segment names of a playlist, in order.
    """
    return [name for _, name, _ in parse_live_playlist(text)[1]]


def attempt_prefix(name):
    """
    The attempt prefix of a segment name (``<prefix>_00003.ts``).
    """
    return name.rsplit("_", 1)[0]


class _RawResponse(protocol.Protocol):
    def __init__(self):
        self.data = b""
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.done.callback(self.data)


@defer.inlineCallbacks
def raw_get(port, path):
    """
    GET ``path`` (bytes, sent exactly as given: no client-side
    normalisation of ``..`` or ``%2F``) with HTTP/1.0; returns
    ``(status, body)``.
    """
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    proto = yield endpoints.connectProtocol(endpoint, _RawResponse())
    proto.transport.write(b"GET " + path + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    timer = reactor.callLater(10, proto.transport.abortConnection)
    data = yield proto.done
    if timer.active():
        timer.cancel()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class HLSClient(protocol.ProcessProtocol):
    """
    A real HLS client: ffmpeg reading our playlist and copying what it gets
    into an MPEG-TS file; ``-progress`` reports arrive on stdout.
    """

    def __init__(self, url, output):
        self.url = url
        self.output = output
        self.stderr = b""
        self.out_times = []
        self._buffer = b""
        self.exited = False
        self.ended = defer.Deferred()
        self.transport = None
        self.loglevel = "error"

    def start(self):
        argv = [
            FFMPEG, "-nostdin", "-hide_banner", "-loglevel", self.loglevel,
            "-i", self.url, "-c", "copy", "-f", "mpegts",
            "-progress", "pipe:1", "-stats_period", "0.5", "-y", self.output,
        ]
        argv = command_line(argv)  # dies with us if the test run is killed
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        reactor.spawnProcess(self, argv[0], argv, env=env, childFDs={0: "w", 1: "r", 2: "r"})

    def outReceived(self, data):
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if line.startswith(b"out_time_us=") and line[12:].strip().lstrip(b"-").isdigit():
                self.out_times.append((reactor.seconds(), int(line[12:]) / 1e6))

    def errReceived(self, data):
        self.stderr += data

    def processEnded(self, reason):
        self.exited = True
        self.ended.callback(None)

    def size(self):
        try:
            return os.path.getsize(self.output)
        except OSError:
            return 0

    def out_time(self):
        return self.out_times[-1][1] if self.out_times else None

    @defer.inlineCallbacks
    def finish(self):
        """
        Stop ffmpeg the way a user does (INT), so its output file ends
        with whole packets, and wait for it to exit.
        """
        if not self.exited:
            self.transport.signalProcess("INT")
            killer = reactor.callLater(5, self.kill)
            yield self.ended
            if killer.active():
                killer.cancel()

    @defer.inlineCallbacks
    def kill(self):
        if not self.exited:
            self.transport.signalProcess("KILL")
        yield self.ended
        # Let the server notice the closed connection.
        yield sleep(0.1)


class StreamingTestCase(TestCase):
    """
    Runs the service tree against an L{Upstream}; helpers for requests and
    for waiting on channel states.
    """

    timeout = 60

    def setUp(self):
        self.upstream = Upstream()
        self.upstream.start(reactor)
        # Clean-ups run last-in first-out: the daemon stops before the upstream.
        self.addCleanup(self.upstream.stop)
        self.root = None

    def add(self, name, fault=None, burst=BURST, media="av"):
        """
        An upstream stream named ``name``; returns it.
        """
        return self.upstream.add_stream(name, media=media, fault=fault, burst=burst)

    def live(self, name):
        return self.upstream.live_url(name)

    @defer.inlineCallbacks
    def serve(self, rows, **settings):
        """
        Build a database of ``rows`` and start the daemon's services with
        ``settings`` over the base settings.
        """
        self.segment_dir = os.path.abspath(self.mktemp())
        folder = os.path.abspath(self.mktemp())
        db = make_database(os.path.join(folder, "streams.db"), rows)
        values = dict(BASE_SETTINGS)
        port = free_port()
        while any(f":{port}/" in r["stream-url"] for r in rows):
            port = free_port()  # not the port of a refused_url() candidate
        values.update(db_path=db, port=port, interface="127.0.0.1", segment_dir=self.segment_dir)
        values.update(settings)
        self.config = parse_config(values)
        self.port = self.config.port
        self.root, self.parts = build_services(self.config, reactor)
        self.channels = self.parts["channels"]
        self.slots = self.parts["slots"]
        self.root.startService()
        self.addCleanup(self.shutdown)
        store = self.parts["store"]
        yield wait_until(lambda: len(store.catalog.candidates) == len(rows), timeout=10)
        # The slate is made by an ffmpeg of its own at start: let it finish,
        # so the children a test counts are the channels' alone.
        slate = self.parts["slate"]
        yield wait_until(lambda: slate is None or not slate.making, timeout=15)

    @defer.inlineCallbacks
    def shutdown(self):
        """
        Stop the services, then check that nothing of ours is left running,
        held or on disk.
        """
        if self.root.running:
            yield self.root.stopService()
        leftovers = find_leftovers(self.segment_dir)
        for pid in leftovers:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        self.assertEqual(leftovers, [], "ffmpeg/ffprobe children left running")
        self.assertEqual(self.in_use(), {}, "provider slots still held after shutdown")
        left = [e for e in os.listdir(self.segment_dir) if e.startswith("ch")]
        self.assertEqual(left, [], "segment folders left after shutdown")

    # Requests.

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    @defer.inlineCallbacks
    def fetch(self, path, method="GET", timeout=20):
        """
        ``(response, body)`` of one request to the daemon.
        """
        response = yield treq.request(method, self.url(path), timeout=timeout, persistent=False)
        body = yield response.content()
        return response, body

    @defer.inlineCallbacks
    def tune(self, channel_id, timeout=20):
        """
        Request the channel's playlist as a player does; assert it plays.
        """
        response, body = yield self.fetch(f"/channel/{channel_id}/stream.m3u8", timeout=timeout)
        self.assertEqual(response.code, 200, body)
        return body.decode("ascii")

    @defer.inlineCallbacks
    def api_status(self):
        response, body = yield self.fetch("/api/status")
        self.assertEqual(response.code, 200)
        return json.loads(body)

    @defer.inlineCallbacks
    def channel_status(self, channel_id):
        """
        The channel's entry in ``/api/status``, or None.
        """
        status = yield self.api_status()
        for entry in status["channels"]:
            if entry["channel_id"] == channel_id:
                return entry
        return None

    # States.

    def in_use(self):
        return {source: used for source, (used, _) in self.slots.usage().items() if used}

    def live_on(self, channel_id, source):
        """
        Whether the channel is live with segments from ``source``.
        """
        session = self.channels.session(channel_id)
        if session is None:
            return False
        status = session.status()
        current = status["current"]
        return status["state"] == "live" and current["phase"] == "live" and current["source"] == source

    @defer.inlineCallbacks
    def wait_live_on(self, channel_id, source, timeout=25):
        try:
            yield wait_until(lambda: self.live_on(channel_id, source), timeout=timeout)
        except TimeoutError:
            session = self.channels.session(channel_id)
            self.fail(
                f"channel {channel_id} not live on {source} within {timeout} s: "
                f"{session.status() if session else 'no session'} "
                f"(tried: {session.tried if session else None})"
            )


class BestCandidateTests(StreamingTestCase):
    """
    Choosing the best candidate and serving it as HLS.
    """

    @defer.inlineCallbacks
    def test_plays_the_preferred_source(self):
        """
        With two sources for a channel and ``source_priority`` putting the
        second row's source first, the channel plays from that source only;
        the playlist is HLS (type, no-cache, at least one segment) and a
        segment downloads as MPEG-TS.
        """
        a, b = self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_b", "prov_a"],
        )
        response, body = yield self.fetch("/channel/1/stream.m3u8")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/vnd.apple.mpegurl"]
        )
        self.assertEqual(response.headers.getRawHeaders(b"cache-control"), [b"no-cache"])
        text = body.decode("ascii")
        self.assertTrue(text.startswith("#EXTM3U\n"), text)
        names = segment_names(text)
        self.assertGreaterEqual(len(names), 1, text)

        entry = yield self.channel_status("1")
        self.assertEqual(entry["state"], "live")
        self.assertEqual(entry["current"]["source"], "prov_b")
        self.assertEqual(entry["failovers"], 0)
        yield wait_until(lambda: b.open == 1, timeout=10)  # the probe has finished
        self.assertEqual((a.open, a.requests), (0, 0))

        response, segment = yield self.fetch(f"/channel/1/{names[0]}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"video/mp2t"])
        self.assertGreater(len(segment), 188 * 10)
        self.assertEqual(segment[0], 0x47)
        self.assertEqual(len(segment) % 188, 0)


class FailoverTests(StreamingTestCase):
    """
    Every kind of upstream failure moves the channel to its second
    candidate.  Faults given as ``at_start`` are there before the first
    request; ``mid_stream`` faults are switched on once the channel is live
    on the first candidate.
    """

    @defer.inlineCallbacks
    def check_failover(self, expect, at_start=None, mid_stream=None, refused=False, **settings):
        """
        Play channel 1 (candidates prov_a, then prov_b) with the fault on
        prov_a; assert it ends up live on prov_b, with the failure reason
        matching the regular expression ``expect``.
        """
        a, b = self.add("a", fault=at_start), self.add("b")
        url_a = refused_url() if refused else self.live("a")
        yield self.serve(
            [row(1, url_a, source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
            **settings,
        )
        first = yield self.tune("1", timeout=30)
        self.assertTrue(segment_names(first))
        if mid_stream is not None:
            self.assertTrue(self.live_on("1", "prov_a"), self.channels.session("1").status())
            self.upstream.set_fault("a", mid_stream)
        yield self.wait_live_on("1", "prov_b")

        entry = yield self.channel_status("1")
        self.assertEqual(entry["state"], "live")
        self.assertEqual(entry["current"]["source"], "prov_b")
        if mid_stream is not None:
            # A failover the viewer lived through is on the status page.
            self.assertEqual(entry["failovers"], 1, entry)
            self.assertEqual(entry["last_failover"]["from"], "prov_a/1 (row 1)")
            reason = entry["last_failover"]["reason"]
        else:
            # A candidate that failed before any media is not a failover
            # of the viewer; its reason is remembered for ranking.
            self.assertEqual(entry["failovers"], 0, entry)
            reason = self.channels.failures.reason(1)
        self.assertRegex(reason or "", expect)
        self.assertNotIn("http://", reason)  # no URL (credentials) in reasons

        # prov_a's connections are all closed; prov_b has ffmpeg's only.
        yield wait_until(lambda: a.open == 0 and b.open == 1, timeout=10)
        self.assertEqual(self.in_use(), {"prov_b": 1})
        # And the channel still serves media: soon a segment of prov_b's
        # attempt (cut after hls_time of its media).
        prefix = self.channels.session("1").attempt.prefix
        texts = []

        @defer.inlineCallbacks
        def has_new_segment():
            texts.append((yield self.tune("1")))
            return [n for n in segment_names(texts[-1]) if n.startswith(prefix)]

        for _ in range(40):
            if (yield has_new_segment()):
                break
            yield sleep(0.25)
        self.assertTrue([n for n in segment_names(texts[-1]) if n.startswith(prefix)], texts[-1])

    def test_http_404(self):
        """
        A candidate answering 404 fails over, with the status in the reason.
        """
        return self.check_failover(r"HTTP 404", at_start=Fault.status(404))

    def test_http_500(self):
        """
        A candidate answering 500 fails over, with the status in the reason.
        """
        return self.check_failover(r"HTTP 500", at_start=Fault.status(500))

    def test_connection_refused(self):
        """
        A candidate whose server refuses connections fails over.
        """
        return self.check_failover(r"(?i)refused", refused=True)

    def test_garbage(self):
        """
        A candidate sending bytes that are not MPEG-TS fails over (at the
        latest when its start timeout strikes).
        """
        return self.check_failover(
            r"(?i)no media within 5 s|invalid data|ffprobe",
            at_start=Fault.garbage(),
            stream_start_timeout=5,
        )

    def test_audio_only(self):
        """
        A candidate carrying audio but no video fails over, saying so.
        """
        return self.check_failover(r"audio only", at_start=Fault.audio_only())

    def test_stall_mid_stream(self):
        """
        A live candidate that stops sending (connection kept open) fails
        over: at QUICK_STALL_SECONDS_TS of quiet when the next candidate,
        started alongside, is ready by then (the reason names it), else
        after the stall watchdog's STALL_SECONDS_TS.
        """
        return self.check_failover(
            r"^stalled: no new media for ([23]\.[0-9] s \(prov_b/1 \(row 2\) was ready\)|[4-9] s)$",
            mid_stream=Fault.stall(),
        )

    def test_close_mid_stream(self):
        """
        A live candidate whose connection drops mid-stream fails over.
        """
        return self.check_failover(r"ffmpeg exited \(0\)", mid_stream=Fault.close())

    def test_slow_mid_stream(self):
        """
        A live candidate delivering at half real time collects buffering
        events at the health checks and fails over on buffer_threshold.
        """
        # A check interval of 3 s, not 1: shorter intervals flag healthy
        # streams too (see HealthCheckTests).
        return self.check_failover(
            r"buffering: \d+ events in a minute \(.*real time",
            mid_stream=Fault.slow(0.5),
            buffer_check_interval=3,
            buffer_threshold=2,
        )

    @defer.inlineCallbacks
    def test_stall_within_a_full_source(self):
        """
        When both candidates are on one source at its limit of 1, failing
        over from one to the other never opens a second connection to the
        provider: the old stream's slot is given back before the new one
        connects.
        """
        a, b = self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_a")],
            source_limits={"prov_a": 1},
        )
        yield self.tune("1")
        self.assertEqual(self.channels.session("1").attempt.candidate.rowid, 1)
        most = []
        watch = task.LoopingCall(lambda: most.append(a.open + b.open))
        watch.start(0.02)
        self.upstream.set_fault("a", Fault.stall())
        try:
            yield wait_until(
                lambda: self.live_on("1", "prov_a")
                and self.channels.session("1").attempt.candidate.rowid == 2,
                timeout=20,
            )
        finally:
            watch.stop()
        self.assertEqual(max(most), 1, most)
        entry = yield self.channel_status("1")
        self.assertRegex(entry["last_failover"]["reason"], "stalled")
        self.assertEqual((a.open, b.open), (0, 1))
        self.assertEqual(self.in_use(), {"prov_a": 1})


class HealthCheckTests(StreamingTestCase):
    """
    The periodic health check on streams that are fine.
    """

    @defer.inlineCallbacks
    def test_healthy_stream_is_not_buffering(self):
        """
        A stream delivered at exactly real time is not counted as buffering,
        whatever the (valid) buffer_check_interval: with 1 s checks and a
        threshold of 2 it keeps playing on its first candidate without a
        single buffering event.
        """
        self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
            buffer_check_interval=1,
            buffer_threshold=2,
        )
        yield self.tune("1")
        session = self.channels.session("1")
        for _ in range(10):
            yield sleep(1.0)
            yield self.tune("1")  # a player polling
        events = [f["reason"] for f in session.failovers]
        if session.attempt is not None:
            events += [why for _, why in session.attempt.buffer_events]
        self.assertEqual(events, [], "a healthy real-time stream was flagged as buffering")
        self.assertEqual(session.attempt_count, 1)


class PlaylistWatcher:
    """
    Polls a channel's playlist as fast as a nervous player would, keeping
    every answer, until stopped.
    """

    def __init__(self, case, channel_id, interval=0.25):
        self.case = case
        self.path = f"/channel/{channel_id}/stream.m3u8"
        self.interval = interval
        self.polls = []
        self.errors = []
        self.running = True
        self.done = self._run()

    @defer.inlineCallbacks
    def _run(self):
        while self.running:
            response, body = yield self.case.fetch(self.path, timeout=10)
            if response.code == 200:
                self.polls.append((reactor.seconds(), body.decode("ascii")))
            else:
                self.errors.append((response.code, body))
            yield sleep(self.interval)

    def stop(self):
        self.running = False
        return self.done


class ViewerTests(StreamingTestCase):
    """
    What a real player sees while the channel fails over.
    """

    @defer.inlineCallbacks
    def test_viewer_does_not_notice_a_failover(self):
        """
        A real HLS client (ffmpeg reading the channel's playlist) keeps
        running through a stall of the first upstream and keeps receiving
        media from the second one.  Meanwhile the playlist's media sequence
        never goes backwards, a segment name always keeps its sequence
        number, and an #EXT-X-DISCONTINUITY precedes the first segment of
        the new stream.
        """
        a, b = self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
        )
        yield self.tune("1")
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        client = HLSClient(self.url("/channel/1/stream.m3u8"), os.path.join(folder, "watched.ts"))
        client.start()
        self.addCleanup(client.kill)
        yield wait_until(lambda: client.size() > 0 and client.out_time(), timeout=15)
        watcher = PlaylistWatcher(self, "1")
        self.addCleanup(watcher.stop)
        yield sleep(1.0)
        old_prefix = self.channels.session("1").attempt.prefix

        self.upstream.set_fault("a", Fault.stall())
        stalled_at = reactor.seconds()
        yield self.wait_live_on("1", "prov_b")
        switched_at = reactor.seconds()
        new_prefix = self.channels.session("1").attempt.prefix
        size_at_switch, time_at_switch = client.size(), client.out_time()

        # Several seconds of watching the second upstream.
        for _ in range(14):
            yield sleep(0.5)
            self.assertFalse(client.exited, client.stderr)
        yield watcher.stop()
        ended_at = reactor.seconds()
        self.assertFalse(client.exited, client.stderr)
        self.assertEqual(client.stderr, b"", "the player reported errors")
        self.assertLess(switched_at - stalled_at, 10)
        self.assertEqual(a.open, 0)
        self.assertEqual(b.open, 1)
        # The output file kept growing after the switch (ffmpeg writes it in
        # 256 kB blocks, so its size alone is coarse) ...
        self.assertGreater(client.size(), size_at_switch)
        # ... and the client's media clock kept advancing through it, by
        # seconds of new media, up to the end.
        after = [(when, out) for when, out in client.out_times if when > switched_at]
        self.assertTrue(after, client.out_times)
        self.assertGreater(after[-1][1], time_at_switch + 4, client.out_times)
        advancing = [
            when for (when, out), (_, before) in zip(after, [(0, time_at_switch)] + after)
            if out > before
        ]
        self.assertGreater(advancing[-1], ended_at - 3.5, (ended_at, client.out_times))

        # The playlist as the player saw it.
        self.assertEqual(watcher.errors, [])
        self.assertGreater(len(watcher.polls), 20)
        sequences, by_name, by_sequence = [], {}, {}
        breaks = []
        for _, text in watcher.polls:
            media_sequence, entries = parse_live_playlist(text)
            sequences.append(media_sequence)
            previous = None
            for sequence, name, discontinuity in entries:
                self.assertEqual(by_name.setdefault(name, sequence), sequence, name)
                self.assertEqual(by_sequence.setdefault(sequence, name), name, sequence)
                if discontinuity:
                    breaks.append((previous, name))
                previous = name
        self.assertEqual(sequences, sorted(sequences), "media sequence went backwards")
        old = sorted(s for n, s in by_name.items() if attempt_prefix(n) == old_prefix)
        new = sorted(s for n, s in by_name.items() if attempt_prefix(n) == new_prefix)
        self.assertTrue(old and new, by_name)
        self.assertLess(old[-1], new[0])
        self.assertEqual({attempt_prefix(n) for n in by_name}, {old_prefix, new_prefix})
        self.assertIn(new_prefix, {attempt_prefix(name) for _, name in breaks}, breaks)
        first_new = by_sequence[new[0]]
        self.assertIn((by_sequence[old[-1]], first_new), breaks)


class ForceSwitchTests(StreamingTestCase):
    """
    Switching streams by request.
    """

    @defer.inlineCallbacks
    def test_force_switch_moves_to_the_other_candidate(self):
        """
        POST /force_switch/<id> ends the playing stream and the channel goes
        live on the other candidate; the stream left is not penalised.  A
        channel that is not running answers 404.
        """
        a, b = self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
        )
        yield self.tune("1")
        self.assertTrue(self.live_on("1", "prov_a"))
        response, body = yield self.fetch("/force_switch/1", method="POST")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body), {"channel_id": "1", "switched_from": "prov_a/1 (row 1)"})
        yield self.wait_live_on("1", "prov_b")
        entry = yield self.channel_status("1")
        self.assertEqual(entry["current"]["source"], "prov_b")
        self.assertEqual(entry["failovers"], 1)
        self.assertEqual(entry["last_failover"]["reason"], "switched by request")
        self.assertIsNone(self.channels.failures.reason(1))
        yield wait_until(lambda: a.open == 0 and b.open == 1, timeout=10)
        self.assertEqual(self.in_use(), {"prov_b": 1})

        response, body = yield self.fetch("/force_switch/2", method="POST")
        self.assertEqual(response.code, 404, body)

    @defer.inlineCallbacks
    def test_switched_away_stream_leaves_no_files(self):
        """
        Once the segments of a stream that was switched away from have left
        the playlist (and the grace period for clients that just read it has
        passed), none of that stream's files remain in the channel's folder.
        """
        self.add("a"), self.add("b")
        yield self.serve(
            [row(1, self.live("a"), source="prov_a"), row(1, self.live("b"), source="prov_b")],
            source_priority=["prov_a", "prov_b"],
            hls_list_size=1,
        )
        yield self.tune("1")
        session = self.channels.session("1")
        old = session.attempt.prefix
        yield wait_until(lambda: len(session.playlist.names()) and session.playlist.next_sequence >= 2, timeout=10)
        yield self.fetch("/force_switch/1", method="POST")
        yield self.wait_live_on("1", "prov_b")
        # Old segments leave the window once the new stream's segments
        # hold three target durations; each is deleted its own duration plus
        # the playlist's duration (and a margin) after it left.
        yield wait_until(
            lambda: not [n for n in session.playlist.names() if n.startswith(old)], timeout=15
        )
        left_at = reactor.seconds()
        kept = [n for n in os.listdir(session.folder) if n.startswith(old)]
        self.assertTrue(kept, "a segment that just left the playlist must still be there")
        yield wait_until(
            lambda: not [n for n in os.listdir(session.folder) if n.startswith(old)], timeout=20
        )
        self.assertGreater(reactor.seconds() - left_at, session.playlist.duration)


class SourceLimitTests(StreamingTestCase):
    """
    Provider connection limits across channels.
    """

    def two_channels(self, **settings):
        self.add("one"), self.add("two")
        return self.serve(
            [row(1, self.live("one"), source="prov_a"), row(2, self.live("two"), source="prov_a")],
            source_limits={"prov_a": 1},
            **settings,
        )

    @defer.inlineCallbacks
    def test_second_channel_waits_for_the_first_to_stop(self):
        """
        With source_limits {prov_a: 1}, tuning a second channel on prov_a
        waits (no second provider connection) until the first channel is
        stopped with POST /stop/<id>; then it starts and plays.
        """
        yield self.two_channels()
        one, two = self.upstream.streams["one"], self.upstream.streams["two"]
        yield self.tune("1")
        self.assertEqual(self.in_use(), {"prov_a": 1})
        waiting = self.fetch("/channel/2/stream.m3u8", timeout=30)
        yield wait_until(lambda: self.slots.waiting() == 1, timeout=5)
        status = yield self.api_status()
        self.assertEqual(status["waiting_for_slot"], 1)
        self.assertEqual(status["sources"], {"prov_a": {"in_use": 1, "limit": 1}})
        yield sleep(1.0)
        self.assertFalse(waiting.called)
        self.assertEqual((two.requests, one.open), (0, 1))

        response, body = yield self.fetch("/stop/1", method="POST")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(json.loads(body), {"channel_id": "1", "stopped": True})
        response, body = yield waiting
        self.assertEqual(response.code, 200, body)
        self.assertTrue(segment_names(body.decode("ascii")))
        self.assertTrue(self.live_on("2", "prov_a"))
        self.assertIsNone(self.channels.session("1"))
        yield wait_until(lambda: one.open == 0 and two.open == 1, timeout=10)
        self.assertEqual(self.in_use(), {"prov_a": 1})

        response, body = yield self.fetch("/stop/2", method="POST")
        self.assertEqual(response.code, 200, body)
        self.assertEqual(self.in_use(), {})
        self.assertEqual(self.slots.waiting(), 0)

    @defer.inlineCallbacks
    def test_waiting_gives_up_naming_the_full_source(self):
        """
        When nothing frees a slot within stream_start_timeout, the waiting
        request gets 503 naming the full source and its usage.
        """
        yield self.two_channels(stream_start_timeout=3)
        yield self.tune("1")
        started = reactor.seconds()
        response, body = yield self.fetch("/channel/2/stream.m3u8", timeout=15)
        took = reactor.seconds() - started
        self.assertEqual(response.code, 503, body)
        self.assertIn(b"prov_a 1/1", body)
        self.assertIn(b"full", body)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"10"])
        self.assertTrue(2.5 <= took < 8, took)
        self.assertEqual(self.upstream.streams["two"].requests, 0)
        yield wait_until(lambda: self.channels.session("2") is None, timeout=5)
        self.assertTrue(self.live_on("1", "prov_a"))
        self.assertEqual(self.slots.waiting(), 0)
        yield self.fetch("/stop/1", method="POST")
        self.assertEqual(self.in_use(), {})


class StartFailureTests(StreamingTestCase):
    """
    Channels that cannot start.
    """

    @defer.inlineCallbacks
    def test_start_timeout(self):
        """
        An upstream that accepts the request and never answers, as the only
        candidate, gives 503 after about stream_start_timeout, and its slot
        and processes are given back.
        """
        self.add("h", fault=Fault.hang())
        yield self.serve([row(1, self.live("h"), source="prov_a")], stream_start_timeout=3)
        started = reactor.seconds()
        response, body = yield self.fetch("/channel/1/stream.m3u8", timeout=15)
        took = reactor.seconds() - started
        self.assertEqual(response.code, 503, body)
        self.assertIn(b"no media within 3 s", body)
        self.assertTrue(2.5 <= took < 7, took)
        yield wait_until(lambda: not self.in_use() and not find_leftovers(self.segment_dir), timeout=6)
        self.assertIsNone(self.channels.session("1"))

    @defer.inlineCallbacks
    def test_every_candidate_failing(self):
        """
        When every candidate fails (audio only, 404, refused) the request
        gets 503 with a short reason naming each failure; no slot stays held
        and no upstream connection stays open.
        """
        audio = self.add("audio", fault=Fault.audio_only())
        self.add("missing", fault=Fault.status(404))
        yield self.serve(
            [
                row(1, self.live("audio"), source="prov_a"),
                row(1, self.live("missing"), source="prov_b"),
                row(1, refused_url(), source="prov_c"),
            ],
            source_priority=["prov_a", "prov_b", "prov_c"],
        )
        response, body = yield self.fetch("/channel/1/stream.m3u8", timeout=20)
        self.assertEqual(response.code, 503, body)
        text = body.decode("utf-8")
        self.assertTrue(text.startswith("channel 1: every candidate failed"), text)
        self.assertIn("audio only", text)
        self.assertIn("HTTP 404", text)
        self.assertRegex(text, "(?i)refused")
        self.assertNotIn("http://", text)
        self.assertLess(len(text), 400, text)
        yield wait_until(lambda: not self.in_use() and audio.open == 0, timeout=6)
        yield wait_until(lambda: self.channels.session("1") is None, timeout=6)
        self.assertEqual(find_leftovers(self.segment_dir), [])


class LifecycleTests(StreamingTestCase):
    """
    Channels ending: nobody watching, and the daemon shutting down.
    """

    @defer.inlineCallbacks
    def test_unwatched_channel_stops(self):
        """
        A channel nobody requests for inactivity_timeout stops by itself:
        gone from /api/status (listed as recently ended), its folder removed,
        its upstream connection closed.
        """
        stream = self.add("a")
        yield self.serve([row(1, self.live("a"), source="prov_a")], inactivity_timeout=3)
        yield self.tune("1")
        folder = self.channels.session("1").folder
        self.assertTrue(os.path.isdir(folder))
        yield wait_until(lambda: self.channels.session("1") is None, timeout=12)
        status = yield self.api_status()
        self.assertEqual(status["channels"], [])
        self.assertEqual([e["channel_id"] for e in status["recently_ended"]], ["1"])
        self.assertIn("no request for", status["recently_ended"][0]["reason"])
        self.assertFalse(os.path.exists(folder))
        self.assertEqual(self.in_use(), {})
        yield wait_until(lambda: stream.open == 0, timeout=5)

    @defer.inlineCallbacks
    def test_shutdown_with_streams_running(self):
        """
        Stopping the service tree with two channels playing ends every
        ffmpeg/ffprobe child before its Deferred fires, removes the segment
        folders, gives every slot back, and leaves none of the sessions'
        timers behind.
        """
        one, two = self.add("one"), self.add("two")
        yield self.serve(
            [row(1, self.live("one"), source="prov_a"), row(2, self.live("two"), source="prov_b")]
        )
        yield defer.gatherResults([self.tune("1"), self.tune("2")])
        sessions = [self.channels.session("1"), self.channels.session("2")]
        attempts = [s.attempt for s in sessions]
        processes = [a.process for a in attempts]
        self.assertEqual(len(find_leftovers(self.segment_dir)), 2 + sum(a.probe is not None for a in attempts))
        yield self.root.stopService()
        pending = [
            call
            for call in reactor.getDelayedCalls()
            if call.active() and getattr(call.func, "__self__", None) in sessions
        ]
        yield sleep(0.2)  # let them run, so a failure below is not also a dirty reactor
        self.assertTrue(all(p.exited for p in processes))
        self.assertTrue(all(a.probe is None or a.probe.exited for a in attempts))
        self.assertEqual(find_leftovers(self.segment_dir), [])
        self.assertEqual([s.state.value for s in sessions], ["stopped", "stopped"])
        self.assertFalse([f for f in os.listdir(self.segment_dir) if f.startswith("ch")])
        self.assertEqual(self.in_use(), {})
        yield wait_until(lambda: one.open == 0 and two.open == 0, timeout=5)
        self.assertEqual(
            [(c.func.__name__, c.args) for c in pending], [],
            "session timers still pending after stopService() fired",
        )


class PathSafetyTests(StreamingTestCase):
    """
    Requests for files outside a channel's segments, through the real server.
    """

    @defer.inlineCallbacks
    def test_paths_outside_the_segments_are_404(self):
        """
        Traversal attempts (raw ``..``, encoded slashes, absolute paths), a
        temporary file name, an unknown segment and an unknown channel are
        all 404 and never reveal a file; a real segment is served.
        """
        self.add("a")
        yield self.serve([row(1, self.live("a"), source="prov_a")])
        text = yield self.tune("1")
        session = self.channels.session("1")
        real = segment_names(text)[0]
        status, body = yield raw_get(self.port, f"/channel/1/{real}".encode())
        self.assertEqual((status, body[:1]), (200, b"\x47"))
        # The segment ffmpeg is writing now, if any, under its real name.
        writing = [n for n in os.listdir(session.folder) if n.endswith(".tmp")]
        paths = [
            b"/channel/1/..%2F..%2Fetc%2Fpasswd",
            b"/channel/1/..%2F..%2F..%2F..%2Fetc%2Fpasswd.ts",
            b"/channel/1/../x.ts",
            b"/channel/1/../../../../etc/passwd",
            b"/channel/1/%2Fetc%2Fpasswd.ts",
            b"/channel/1//etc/passwd.ts",
            b"/channel/1/a.ts.tmp",
            b"/channel/1/%2e%2e%2f" + real.encode(),
            b"/channel/1/" + f"{session.attempt.prefix}.m3u8".encode(),
            b"/channel/1/nosuchsegment.ts",
            b"/channel/1/" + real.encode() + b".tmp",
            b"/channel/2/" + real.encode(),
            b"/channel/2/stream.m3u8",
            b"/channel/99/stream.m3u8",
        ] + [b"/channel/1/" + n.encode() for n in writing]
        for path in paths:
            status, body = yield raw_get(self.port, path)
            self.assertEqual(status, 404, (path, body))
            self.assertNotIn(b"root:", body)
            self.assertNotIn(b"#EXTM3U", body)


class InputKindTests(StreamingTestCase):
    """
    Upstreams other than a copyable MPEG-TS stream.
    """

    @defer.inlineCallbacks
    def test_mpeg2_video_is_transcoded(self):
        """
        A stream whose video HLS cannot carry (MPEG-2) is restarted with
        H.264 transcoding on the same slot, and its segments hold H.264.
        """
        self.add("m", media="mpeg2")
        yield self.serve([row(1, self.live("m"), source="prov_m")], source_limits={"prov_m": 1})
        yield self.tune(1, timeout=30)
        status = yield self.channel_status("1")
        self.assertEqual(status["current"]["encoding"], "transcode video")
        self.assertEqual(self.upstream.streams["m"].open, 1)
        session = self.channels.session("1")
        path = session.segment_path(session.playlist.names()[0])
        out, err, code = yield getProcessOutputAndValue(
            "/usr/bin/ffprobe",
            ["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", path],
        )
        self.assertIn(b"h264", out)
        self.assertNotIn(b"mpeg2video", out)

    @defer.inlineCallbacks
    def test_hls_upstream(self):
        """
        An HLS upstream (a live .m3u8) is played like a TS one.
        """
        self.add("h")
        yield self.serve([row(1, self.upstream.hls_url("h"), source="prov_h")])
        text = yield self.tune(1, timeout=30)
        self.assertIn("#EXTINF", text)
        status = yield self.channel_status("1")
        self.assertEqual(status["current"]["video"], "h264")
