"""
A fake IPTV provider for integration tests.

L{make_media} renders small test streams with ffmpeg (once, cached on disk),
and L{Upstream} serves them over HTTP on 127.0.0.1 the way a provider does:
live-paced MPEG-TS at C{/live/<name>.ts} and a sliding-window live HLS
playlist at C{/hls/<name>/index.m3u8}, with faults (L{Fault}) that tests can
switch on and off while clients are connected.
"""

import hashlib
import json
import math
import os
import random
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass

from zope.interface import implementer

from twisted.internet.defer import gatherResults, inlineCallbacks, maybeDeferred, succeed, Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

FFMPEG = "/usr/bin/ffmpeg"
FFPROBE = "/usr/bin/ffprobe"
TS_PACKET = 188
TICK = 0.1  # pacing granularity, seconds

_log = Logger()

# ffmpeg input/codec arguments per media kind.  The GOP is pinned to exactly
# 2 s (50 frames at 25 fps, no scene-cut keyframes) so tests can reason about
# segment boundaries; nal-hrd=cbr keeps the byte rate steady so pacing by
# "file size / duration" is close to the true instantaneous rate.
_VIDEO_IN = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"]
_AUDIO_IN = ["-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000"]
_GOP = ["-g", "50", "-keyint_min", "50", "-sc_threshold", "0"]
_AAC = ["-c:a", "aac", "-b:a", "64k", "-ac", "2"]
_H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *_GOP,
         "-b:v", "400k", "-maxrate", "400k", "-bufsize", "400k", "-x264-params", "nal-hrd=cbr"]

# Streams that are up but useless (content checks): a black picture, a held
# frame, silence; the "_later" ones are the normal test picture and tone
# until CONTENT_FAULT_AT seconds, then the fault until the end.
CONTENT_FAULT_AT = 12.0
_BLACK_IN = ["-f", "lavfi", "-i", "color=c=black:size=320x180:rate=25"]
_HELD_IN = ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25,trim=end_frame=1,tpad=stop=-1:stop_mode=clone"]
_SILENCE_IN = ["-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]


def _later(video="", audio=""):
    """
    Inputs that are the normal picture and tone, with ``video`` / ``audio``
    filters (``enable``'d from CONTENT_FAULT_AT on) appended.
    """
    return ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25" + video,
            "-f", "lavfi", "-i", "sine=frequency=440:beep_factor=4:sample_rate=48000" + audio]


_FROM_FAULT = f"enable='gte(t,{CONTENT_FAULT_AT:g})'"
_RECIPES = {
    "av": _VIDEO_IN + _AUDIO_IN + ["-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *_GOP,
        "-b:v", "400k", "-maxrate", "400k", "-bufsize", "400k",
        "-x264-params", "nal-hrd=cbr", *_AAC],
    "audio": _AUDIO_IN + ["-map", "0:a", *_AAC],
    # What a provider's HD channel weighs: 720p at 5 Mbit/s (for benches).
    "hd": ["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25"] + _AUDIO_IN + ["-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *_GOP,
        "-b:v", "5M", "-maxrate", "5M", "-bufsize", "5M",
        "-x264-params", "nal-hrd=cbr", "-c:a", "aac", "-b:a", "128k", "-ac", "2"],
    "black": _BLACK_IN + _AUDIO_IN + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    "frozen": _HELD_IN + _AUDIO_IN + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    "silent": _VIDEO_IN + _SILENCE_IN + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    "black_later": _later(video=f",drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:{_FROM_FAULT}")
        + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    # The picture at CONTENT_FAULT_AT, held: the frames before it, then that
    # one for as long as the stream lasts.
    "frozen_later": ["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25,"
                     f"trim=end_frame={round(CONTENT_FAULT_AT * 25) + 1},tpad=stop=-1:stop_mode=clone"]
        + _AUDIO_IN + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    "silent_later": _later(audio=f",volume=volume=0:{_FROM_FAULT}")
        + ["-map", "0:v", "-map", "1:a", *_H264, *_AAC],
    # A codec browsers/HLS players can't take: forces the proxy to transcode.
    "mpeg2": _VIDEO_IN + _AUDIO_IN + ["-map", "0:v", "-map", "1:a",
        "-c:v", "mpeg2video", "-pix_fmt", "yuv420p", *_GOP,
        "-b:v", "800k", "-maxrate", "800k", "-bufsize", "800k", *_AAC],
}
MEDIA_KINDS = tuple(_RECIPES)

_media_cache = {}


class Media:
    """
    One generated test stream: a looping-friendly MPEG-TS file plus the same
    content cut into ~2 s HLS segments.

    @ivar kind: one of L{MEDIA_KINDS}.
    @ivar length: the duration that was asked of L{make_media}.
    @ivar path: the MPEG-TS file.
    @ivar duration: its duration in seconds, as ffprobe measures it.
    @ivar byte_rate: average bytes per second (file size / duration); live
        pacing sends at this rate.
    @ivar segments: C{[(path, duration)]} of the HLS cut, in order.
    @ivar streams: ffprobe's C{streams} list for the file.
    """

    def __init__(self, kind, length, directory, info):
        self.kind = kind
        self.length = length
        self.path = os.path.join(directory, "media.ts")
        self.duration = info["duration"]
        self.size = os.path.getsize(self.path)
        self.byte_rate = self.size / self.duration
        self.segments = [(os.path.join(directory, "hls", name), d) for name, d in info["segments"]]
        self.streams = info["streams"]
        with open(self.path, "rb") as f:
            self.data = f.read()


def make_media(kind="av", duration=30, directory=None):
    """
    Return the L{Media} of the given kind, generating it with ffmpeg if needed.

    Results are cached in-process and on disk under C{directory} (default
    C{$TMPDIR/streamproxy-test-media}) in a folder named after a hash of the
    ffmpeg recipe, so a changed recipe regenerates and parallel trial workers
    never see half-written files (each renders into a private folder, then
    renames it into place).

    @param kind: one of L{MEDIA_KINDS}.
    @param duration: length in seconds.
    """
    directory = directory or os.path.join(tempfile.gettempdir(), "streamproxy-test-media")
    args = _RECIPES[kind] + ["-t", str(duration), "-f", "mpegts"]
    digest = hashlib.sha1(json.dumps(args).encode()).hexdigest()[:10]
    final = os.path.join(directory, f"{kind}-{duration}s-{digest}")
    if final in _media_cache:
        return _media_cache[final]
    if not os.path.exists(os.path.join(final, "info.json")):
        os.makedirs(directory, exist_ok=True)
        work = tempfile.mkdtemp(dir=directory, prefix=".partial-")
        os.chmod(work, 0o755)  # mkdtemp's 0700 would lock out other users
        try:
            _render(args, work)
            os.rename(work, final)
        except OSError:
            if not os.path.exists(os.path.join(final, "info.json")):
                raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    with open(os.path.join(final, "info.json")) as f:
        media = _media_cache[final] = Media(kind, duration, final, json.load(f))
    return media


def _render(args, work):
    """Run ffmpeg/ffprobe to fill C{work} with media.ts, hls/ and info.json."""
    run = lambda cmd: subprocess.run(cmd, check=True, capture_output=True, timeout=60).stdout
    quiet = ["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    ts = os.path.join(work, "media.ts")
    run([FFMPEG, *quiet, *args, ts])
    os.mkdir(os.path.join(work, "hls"))
    run([FFMPEG, *quiet, "-i", ts, "-c", "copy", "-f", "hls", "-hls_time", "2",
         "-hls_list_size", "0", "-hls_segment_filename", os.path.join(work, "hls", "%03d.ts"),
         os.path.join(work, "hls", "index.m3u8")])
    probe = json.loads(run([FFPROBE, "-v", "error", "-of", "json", "-show_format", "-show_streams", ts]))
    segments, extinf = [], None
    with open(os.path.join(work, "hls", "index.m3u8")) as f:
        for line in f.read().splitlines():
            if line.startswith("#EXTINF:"):
                extinf = float(line[len("#EXTINF:"):].split(",")[0])
            elif line and not line.startswith("#"):
                segments.append((line, extinf))
    info = {"duration": float(probe["format"]["duration"]), "streams": probe["streams"],
            "segments": segments}
    with open(os.path.join(work, "info.json"), "w") as f:
        json.dump(info, f)


@dataclass(frozen=True)
class Fault:
    """
    A misbehaviour of one upstream stream; build one with the class methods.

    C{stall}, C{close}, C{garbage} and C{slow} also act on live clients that
    are already connected; the others only affect new requests.  Timed
    faults count C{after} seconds from the later of "client connected" and
    "fault was set", so flipping a running stream to C{Fault.stall()}
    freezes its current clients at once.

    @ivar kind: which fault (one of the class-method names).
    @ivar after: seconds of normal service before a timed fault strikes.
    @ivar code: HTTP status for C{status}.
    @ivar speed: real-time factor for C{slow}.
    """

    kind: str
    after: float = 0.0
    code: int = 0
    speed: float = 1.0

    @classmethod
    def status(cls, code):
        """Answer every request (live and HLS) with this HTTP status."""
        return cls("status", code=code)

    @classmethod
    def reset(cls):
        """Abort the TCP connection as soon as a request arrives."""
        return cls("reset")

    @classmethod
    def hang(cls):
        """Accept the request and never answer it (not even headers)."""
        return cls("hang")

    @classmethod
    def stall(cls, after=0.0):
        """Keep live connections open but stop sending; freeze the HLS window."""
        return cls("stall", after=after)

    @classmethod
    def close(cls, after=0.0):
        """Close live connections mid-stream (no clean end of the body)."""
        return cls("close", after=after)

    @classmethod
    def garbage(cls):
        """Send live-paced random bytes that are not MPEG-TS (HLS segments too)."""
        return cls("garbage")

    @classmethod
    def audio_only(cls):
        """Serve the audio-only media to new requests."""
        return cls("audio_only")

    @classmethod
    def slow(cls, speed=0.5):
        """Deliver at C{speed} times real time (live bytes and the HLS clock)."""
        return cls("slow", speed=speed)


class Stream:
    """
    A named upstream stream and its counters.

    @ivar requests: total HTTP requests received for this stream.
    @ivar connections: live responses currently being sent.
    """

    def __init__(self, name, media, fault, burst):
        self.name = name
        self.media = media
        self.burst = burst
        self.fault = fault
        self.fault_since = 0.0
        self.requests = 0
        self.connections = set()
        self.hls_position = None  # seconds of HLS "broadcast" so far
        self.hls_started = self.hls_updated = 0.0

    @property
    def open(self):
        """Number of live connections currently open."""
        return len(self.connections)

    def media_for_request(self):
        """The media a new request gets, honouring C{Fault.audio_only}."""
        if self.fault and self.fault.kind == "audio_only":
            return make_media("audio", self.media.length)
        return self.media


def _garbage(rng, n):
    # No 0x47 anywhere, so nothing can ever look like a TS sync byte.
    return rng.randbytes(n).replace(b"\x47", b"\x00")


@implementer(IPushProducer)
class _LiveSender:
    """Feeds one live response at the media's byte rate, applying faults."""

    def __init__(self, stream, request, clock):
        self.stream = stream
        self.request = request
        self.media = stream.media_for_request()
        self.clock = clock
        self.started = self._last = clock.seconds()
        self.sent = 0
        self._pos = 0
        self._budget = stream.burst * self.media.byte_rate
        self._paused = False
        self._rng = random.Random(self.started)
        self._loop = LoopingCall(self._tick)
        self._loop.clock = clock

    def start(self):
        self.stream.connections.add(self)
        self.request.registerProducer(self, True)
        self.request.write(b"")  # headers now, like a provider, even if stalled
        self.request.notifyFinish().addBoth(lambda _: self.stop())
        _log.debug("live {name}: client connected, {n} open", name=self.stream.name, n=self.stream.open)
        self._loop.start(TICK, now=True)

    def stop(self):
        if self in self.stream.connections:
            self.stream.connections.discard(self)
            _log.debug("live {name}: client gone after {sent} bytes, {n} open",
                       name=self.stream.name, sent=self.sent, n=self.stream.open)
        if self._loop.running:
            self._loop.stop()

    def pauseProducing(self):
        # While the client can't keep up we stop the clock for it rather
        # than buffer unboundedly; a real provider would drop data.
        self._paused = True

    def resumeProducing(self):
        self._paused = False

    def stopProducing(self):
        self.stop()

    def _tick(self):
        now = self.clock.seconds()
        elapsed, self._last = now - self._last, now
        fault = self.stream.fault
        timed_out = fault and now >= max(self.started, self.stream.fault_since) + fault.after
        if fault and fault.kind == "close" and timed_out:
            self.stop()
            self.request.transport.loseConnection()
            return
        if self._paused or (fault and fault.kind == "stall" and timed_out):
            return
        speed = fault.speed if fault and fault.kind == "slow" else 1.0
        self._budget += self.media.byte_rate * speed * elapsed
        n = int(self._budget) // TS_PACKET * TS_PACKET
        if not n:
            return
        self._budget -= n
        self.sent += n
        if fault and fault.kind == "garbage":
            self.request.write(_garbage(self._rng, n))
            return
        data, chunks = self.media.data, []
        while n:
            take = min(n, len(data) - self._pos)
            chunks.append(data[self._pos:self._pos + take])
            self._pos = (self._pos + take) % len(data)
            n -= take
        self.request.write(b"".join(chunks))


def live_playlist(segments, position, window=5):
    """
    Render the live HLS playlist of looping C{segments} at C{position}.

    The broadcast starts with C{window} segments already available and then
    publishes one more each time C{position} passes a segment's duration;
    segment C{i} of the endless sequence is C{segments[i % len(segments)]},
    named C{"<i>.ts"}, with an C{#EXT-X-DISCONTINUITY} where the loop wraps.

    @param segments: C{[(anything, duration)]}.
    @param position: seconds since the stream went live.
    """
    n = len(segments)
    durations = [d for _, d in segments]
    total = sum(durations)
    end = position + sum(durations[i % n] for i in range(window))
    loops = int(end // total)
    count, rest = loops * n, end - loops * total
    for d in durations:
        if rest + 1e-6 < d:
            break
        count, rest = count + 1, rest - d
    first = max(0, count - window)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3",
             f"#EXT-X-TARGETDURATION:{math.ceil(max(durations))}",
             f"#EXT-X-MEDIA-SEQUENCE:{first}",
             f"#EXT-X-DISCONTINUITY-SEQUENCE:{first // n}"]
    for i in range(first, count):
        if i % n == 0 and i > first:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{durations[i % n]:.3f},", f"{i}.ts"]
    return "\n".join(lines) + "\n"


class _Root(Resource):
    """Routes /live/<name>.ts and /hls/<name>/<file> to the right stream."""

    isLeaf = True

    def __init__(self, upstream):
        super().__init__()
        self.upstream = upstream

    def render_GET(self, request):
        parts = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(parts) == 2 and parts[0] == "live" and parts[1].endswith(".ts"):
            name, leaf = parts[1][:-3], None
        elif len(parts) == 3 and parts[0] == "hls":
            name, leaf = parts[1], parts[2]
        else:
            return self._error(request, 404)
        stream = self.upstream.streams.get(name)
        if stream is None:
            return self._error(request, 404)
        stream.requests += 1
        fault = stream.fault
        if fault and fault.kind == "status":
            return self._error(request, fault.code)
        if fault and fault.kind == "reset":
            request.transport.abortConnection()
            return NOT_DONE_YET
        if fault and fault.kind == "hang":
            return NOT_DONE_YET
        if leaf is None:
            request.setHeader(b"content-type", b"video/mp2t")
            if request.method == b"HEAD":
                return b""
            _LiveSender(stream, request, self.upstream.clock).start()
            return NOT_DONE_YET
        return self._hls(request, stream, leaf)

    def _hls(self, request, stream, leaf):
        media = stream.media_for_request()
        if leaf == "index.m3u8":
            request.setHeader(b"content-type", b"application/vnd.apple.mpegurl")
            position = self.upstream.hls_position(stream)
            return live_playlist(media.segments, position, self.upstream.hls_window).encode()
        index = leaf[:-3]
        if not (leaf.endswith(".ts") and index.isdigit()):
            return self._error(request, 404)
        path, _ = media.segments[int(index) % len(media.segments)]
        with open(path, "rb") as f:
            body = f.read()
        if stream.fault and stream.fault.kind == "garbage":
            body = _garbage(random.Random(index), len(body))
        request.setHeader(b"content-type", b"video/mp2t")
        return body

    render_HEAD = render_GET

    def _error(self, request, code):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain")
        return f"upstream fixture: {code}\n".encode()


class _TrackingFactory(WrappingFactory):
    """Remembers open connections so they can all be dropped at stop time."""

    noisy = False

    def __init__(self, wrapped):
        super().__init__(wrapped)
        self._idle = []

    def unregisterProtocol(self, p):
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def abort_all(self):
        """Abort every connection; fire once they have all gone."""
        if not self.protocols:
            return succeed(None)
        d = Deferred()
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class Upstream:
    """
    An HTTP server on 127.0.0.1 acting as an IPTV provider.

    Usage::

        upstream = Upstream()
        upstream.add_stream("a")
        upstream.add_stream("b", fault=Fault.status(403))
        upstream.start()
        self.addCleanup(upstream.stop)
        url = upstream.live_url("a")
        ...
        upstream.set_fault("a", Fault.stall())   # failover time

    @ivar streams: C{{name: Stream}}.
    @ivar port: the TCP port, once started.
    @ivar hls_window: segments per live HLS playlist.
    @ivar clock: the L{IReactorTime} used for pacing and the HLS clock.
    """

    def __init__(self, hls_window=5, clock=None):
        """
        @param clock: defaults to the reactor given to L{start}; pass a
            L{twisted.internet.task.Clock} to drive L{hls_position} by hand.
        """
        self.streams = {}
        self.hls_window = hls_window
        self.port = None
        self.clock = clock
        self._listener = None
        self._factory = None

    def add_stream(self, name, media="av", fault=None, burst=0.0, duration=30):
        """
        Serve a stream under C{name}; generates its media if needed.

        @param media: a L{MEDIA_KINDS} entry.
        @param burst: seconds of media sent at once when a live client connects.
        @return: the L{Stream}.
        """
        stream = self.streams[name] = Stream(name, make_media(media, duration), fault, burst)
        if fault and fault.kind == "audio_only":
            make_media("audio", duration)  # generate now, not inside a request
        return stream

    def set_fault(self, name, fault):
        """Switch stream C{name} to C{fault} (or back to normal with C{None})."""
        stream = self.streams[name]
        if fault and fault.kind == "audio_only":
            make_media("audio", stream.media.length)
        if self.clock is not None:
            self.hls_position(stream)  # settle the HLS clock under the old fault
            stream.fault_since = self.clock.seconds()
        stream.fault = fault

    def hls_position(self, stream):
        """
        Advance and return the stream's HLS broadcast clock, in seconds.

        It starts at the first playlist request and runs at real time,
        slower under C{slow}, and stops under C{stall}.
        """
        now = self.clock.seconds()
        if stream.hls_position is None:
            stream.hls_position, stream.hls_started = 0.0, now
            stream.hls_updated = now
        start, end, speed, fault = stream.hls_updated, now, 1.0, stream.fault
        if fault and fault.kind == "stall":
            stall_at = max(stream.hls_started, stream.fault_since) + fault.after
            end = min(now, max(start, stall_at))
        elif fault and fault.kind == "slow":
            speed = fault.speed
        stream.hls_position += speed * max(0.0, end - start)
        stream.hls_updated = now
        return stream.hls_position

    def start(self, reactor=None):
        """Listen on an ephemeral port of 127.0.0.1; return the port number."""
        if reactor is None:
            from twisted.internet import reactor
        self.clock = self.clock or reactor
        site = Site(_Root(self), reactor=reactor)
        site.noisy = False
        site.log = lambda request: None  # the access log only adds noise
        self._factory = _TrackingFactory(site)
        self._listener = reactor.listenTCP(0, self._factory, interface="127.0.0.1")
        self.port = self._listener.getHost().port
        return self.port

    def stop(self):
        """
        Stop listening, drop every client and stop all pacing timers.

        @return: a Deferred firing when the reactor is clean of us; safe to
            call more than once.
        """
        if self._listener is None:
            return succeed(None)
        for stream in self.streams.values():
            for sender in list(stream.connections):
                sender.stop()
        listener, self._listener = self._listener, None
        d = gatherResults([maybeDeferred(listener.stopListening), self._factory.abort_all()])
        # One more turn lets in-process clients notice the disconnect too.
        d.addCallback(lambda _: deferLater(self.clock, 0, lambda: None))
        return d

    def url(self, path):
        """Absolute URL of C{path} on this server."""
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def live_url(self, name):
        """URL of the live MPEG-TS stream C{name}."""
        return self.url(f"/live/{name}.ts")

    def hls_url(self, name):
        """URL of the live HLS playlist of stream C{name}."""
        return self.url(f"/hls/{name}/index.m3u8")


def refused_url(path="/live/x.ts"):
    """
    A URL on 127.0.0.1 where (almost certainly) nothing listens.

    The port was just bound and released, so connecting is refused unless
    another process grabs it in between, which is rare.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path.lstrip('/')}"


@inlineCallbacks
def wait_until(predicate, timeout=10.0, interval=0.05, clock=None):
    """
    Poll C{predicate} until it is true.

    @return: a Deferred firing with C{None}, or failing with C{TimeoutError}
        after C{timeout} seconds.
    """
    if clock is None:
        from twisted.internet import reactor as clock
    deadline = clock.seconds() + timeout
    while not predicate():
        if clock.seconds() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        yield deferLater(clock, interval, lambda: None)
