"""
MPEG-TS viewers: one HTTP response per viewer, fed from the channel's one
output stream.

A :class:`TSViewer` is an output of a :class:`~streamproxy.session.
ChannelSession`: it starts with the channel's current GOP (PAT, PMT and
everything from the latest keyframe on), so a viewer joining a running
channel sees a picture at once, then gets every piece the channel puts
out, across failovers, in the same response.

Flow control: the viewer is the push producer of its own response.  When
the socket cannot take more, the transport pauses it and pieces wait in
the viewer's own queue; a viewer whose queue holds more than
:data:`MAX_QUEUED_SECONDS` of stream (or :data:`MAX_QUEUED_BYTES`) is
dropped, so a stuck client never slows the others nor grows memory.
"""

from collections import deque

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from .mpegts import null_packet
from .session import ChannelOutput, ChannelUnavailable

log = Logger()

# A paused viewer is dropped once its queue spans this many seconds of
# stream; with what the socket buffers itself that stays under a minute.
MAX_QUEUED_SECONDS = 30.0

# ... or holds this many bytes, whatever the stream's timing says.
MAX_QUEUED_BYTES = 48 * 1024 * 1024

# While no media flows (a channel starting or switching), null packets are
# sent after this many seconds of silence and then as often, so a client
# such as Channels DVR (which gives up after 20 s without data) stays.
KEEPALIVE_SECONDS = 5.0
KEEPALIVE = null_packet() * 7

TS_TYPE = b"video/mp2t"


@implementer(IPushProducer)
class TSViewer(ChannelOutput):
    """
    One viewer's MPEG-TS response to ``request`` for ``session``.

    :meth:`start` returns a Deferred that fires when the response is over
    (the viewer left, was dropped, or the channel ended) and fails with
    :class:`ChannelUnavailable` when the channel ends before anything was
    sent, so the caller can still answer 503.
    """

    def __init__(self, request, session, reactor, address):
        self.request = request
        self.session = session
        self.reactor = reactor
        self.address = address
        self.connected_at = reactor.seconds()
        self.bytes_sent = 0
        self.dropped = None
        self._queue = deque()
        self._queued_bytes = 0
        self._clock = None
        self._paused = False
        self._started = False
        self._done = None
        self._keepalive = None
        self._closed = False

    # Life.

    def start(self):
        """
        Join the channel; see the class docstring for the Deferred.
        """
        self._done = defer.Deferred(lambda _: self._leave("the viewer left"))
        self.request.setHeader(b"content-type", TS_TYPE)
        self.request.setHeader(b"cache-control", b"no-cache, no-store")
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addBoth(lambda _: self._leave("the viewer left"))
        head = self.session.add_output(self)
        if head:
            self._send(head)
        self._arm_keepalive()
        log.info(
            "channel {channel_id}: TS viewer {address} joined ({count} watching as TS)",
            channel_id=self.session.channel_id, address=self.address,
            count=len(self.session.outputs),
        )
        return self._done

    def _leave(self, why, error=None):
        if self._closed:
            return
        self._closed = True
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.cancel()
        self._queue.clear()
        self._queued_bytes = 0
        self.session.remove_output(self)
        try:
            self.request.unregisterProducer()
        except Exception:
            pass  # the connection is already gone
        log.info(
            "channel {channel_id}: TS viewer {address} left after {seconds:.0f} s: {why}",
            channel_id=self.session.channel_id, address=self.address,
            seconds=self.reactor.seconds() - self.connected_at, why=why,
        )
        done, self._done = self._done, None
        if done is None or done.called:
            return
        if error is not None and not self._started:
            done.errback(error)
        else:
            done.callback(None)

    # What the channel sends.

    def channel_piece(self, piece):
        if self._closed:
            return
        if piece.time is not None:
            self._clock = piece.time
        if self._paused or self._queue:
            # Each piece waits with the stream time it belongs to.
            self._queue.append((piece.data, self._clock))
            self._queued_bytes += len(piece.data)
            self._check_queue()
            return
        self._send(piece.data)

    def channel_ended(self, reason):
        self._leave(f"the channel ended ({reason})", ChannelUnavailable(reason))

    # IPushProducer: the transport's flow control.

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        while self._queue and not self._paused and not self._closed:
            data, _ = self._queue.popleft()
            self._queued_bytes -= len(data)
            self._send(data)

    def stopProducing(self):
        self._leave("the connection closed")

    def _check_queue(self):
        oldest, newest = self._queue[0][1], self._queue[-1][1]
        span = newest - oldest if oldest is not None and newest is not None else 0.0
        if span > MAX_QUEUED_SECONDS or self._queued_bytes > MAX_QUEUED_BYTES:
            self.dropped = f"{span:.0f} s ({self._queued_bytes // 1024} KiB) of stream waiting for it"
            log.warn(
                "channel {channel_id}: dropping TS viewer {address}, which reads too slowly: {what}",
                channel_id=self.session.channel_id, address=self.address, what=self.dropped,
            )
            self.session.viewer_dropped()
            transport = self.request.transport
            self._leave("too slow")
            if transport is not None:
                transport.abortConnection()

    # Writing.

    def _send(self, data):
        self._started = True
        self.bytes_sent += len(data)
        self.session.count_served("ts", len(data))
        self.request.write(data)
        self._arm_keepalive()

    def _arm_keepalive(self):
        if self._keepalive is not None and self._keepalive.active():
            self._keepalive.reset(KEEPALIVE_SECONDS)
        else:
            self._keepalive = self.reactor.callLater(KEEPALIVE_SECONDS, self._keep_alive)

    def _keep_alive(self):
        self._keepalive = None
        if self._closed:
            return
        if not self._paused and not self._queue:
            self._send(KEEPALIVE)
        else:
            self._arm_keepalive()

    def status(self, now):
        """
        What the status page shows of this viewer.
        """
        return {
            "format": "ts",
            "address": self.address,
            "connected_for": round(now - self.connected_at, 1),
            "bytes_sent": self.bytes_sent,
            "queued_bytes": self._queued_bytes,
        }
