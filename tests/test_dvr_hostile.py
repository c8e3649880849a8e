"""
A hostile Channels DVR on a real socket: an event stream that sends one
endless line, and status answers of 50 MB.  The tracker talks to it over
127.0.0.1 with the real HTTP client; its timers run on a Clock, so the
back-off is checked without waiting for it.
"""

import json

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface import implementer

from streamproxy.dvr import EVENTS_RETRY_SECONDS, MAX_EVENT_BYTES, MAX_STATUS_BYTES, DVRTracker

from .upstream import wait_until

CHUNK = 64 * 1024
# What a hostile answer would send if nobody stopped reading.
HUGE = 50 * 1024 * 1024
# Bytes the server may get out before it notices the client has gone:
# the client's bound plus what the two sockets' buffers hold.
SENT_BOUND = 12 * 1024 * 1024


@implementer(IPullProducer)
class Flood:
    """
    Writes ``filler`` to a request chunk after chunk, as fast as the client
    reads, up to ``total`` bytes (then finishes), counting what it wrote.
    """

    def __init__(self, request, filler, total, head=b""):
        self.request = request
        self.filler = filler
        self.total = total
        self.sent = 0
        self.closed = False
        if head:
            request.write(head)
            self.sent += len(head)
        request.notifyFinish().addBoth(self._gone)
        request.registerProducer(self, False)

    def resumeProducing(self):
        """
        Write the next chunk, or finish.
        """
        if self.closed:
            return
        if self.sent >= self.total:
            self.request.unregisterProducer()
            self.request.finish()
            return
        self.request.write(self.filler)
        self.sent += len(self.filler)

    def stopProducing(self):
        """
        The connection went away.
        """
        self.closed = True

    def _gone(self, _):
        self.closed = True


class HostileDVR(Resource):
    """
    ``GET /dvr``: a normal status JSON, or 50 MB (``huge``; with a
    Content-Length when ``announce``); ``GET /dvr/events/subscribe``: an
    endless line.  ``floods`` keeps every flood it started.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.huge = False
        self.announce = False
        self.floods = []
        self.subscriptions = 0

    def render_GET(self, request):
        """
        Answer as configured.
        """
        path = request.path.rstrip(b"/")
        if path == b"/dvr":
            request.setHeader(b"content-type", b"application/json")
            if not self.huge:
                return json.dumps({"activity": {"s": "Watching ch7 ABC from Den"}}).encode()
            if self.announce:
                request.setHeader(b"content-length", b"%d" % HUGE)
            head = b'{"activity": {}, "junk": "'
            self.floods.append(Flood(request, b"j" * CHUNK, HUGE, head))
            return NOT_DONE_YET
        if path == b"/dvr/events/subscribe":
            self.subscriptions += 1
            request.setHeader(b"content-type", b"text/event-stream")
            self.floods.append(Flood(request, b"x" * CHUNK, HUGE, b"data: "))
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"no"


class HostileDVRTests(TestCase):
    """
    The tracker against a DVR that never ends a line or an answer.
    """

    timeout = 60

    def setUp(self):
        """
        Start the hostile DVR on 127.0.0.1 and a tracker of it whose timers
        run on a Clock; collect the tracker's log lines.
        """
        self.dvr = HostileDVR()
        self.port = reactor.listenTCP(0, Site(self.dvr), interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.clock = Clock()
        url = f"http://127.0.0.1:{self.port.getHost().port}/dvr"
        self.tracker = DVRTracker(url, 60, HTTPClient(Agent(reactor, pool=pool)), reactor=self.clock)
        self.lines = []

        def observe(event):
            if event.get("log_namespace", "").startswith("streamproxy.dvr"):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.addCleanup(self.stop)

    @defer.inlineCallbacks
    def stop(self):
        """
        Stop the tracker and wait until every flood has ended.
        """
        if self.tracker.running:
            self.tracker.stopService()
        for flood in self.dvr.floods:
            if not flood.closed:
                flood.request.transport.abortConnection()
        yield wait_until(lambda: all(flood.closed or flood.sent >= flood.total for flood in self.dvr.floods))

    def dropped(self):
        """
        The log lines saying the event stream was dropped for its line.
        """
        return [line for line in self.lines if "dropped: it sent a line over" in line]

    @defer.inlineCallbacks
    def test_endless_line_drops_the_stream_and_backs_off(self):
        """
        An event stream that never ends its line is dropped after the bound
        (the server gets to send only what the sockets buffer), logged
        once, and reopened after the back-off, which grows since the stream
        never delivered a line; polling carries on meanwhile.
        """
        self.tracker.startService()
        yield wait_until(lambda: self.dvr.floods and self.dvr.floods[-1].closed)
        flood = self.dvr.floods[-1]
        self.assertLess(flood.sent, SENT_BOUND)
        yield wait_until(lambda: self.tracker.events_state == "disconnected" and self.tracker.state == "ok")
        self.assertEqual(len(self.dropped()), 1, self.lines)
        self.assertIn(f"a line over {MAX_EVENT_BYTES} bytes", self.dropped()[0])
        self.assertTrue(self.tracker.is_watched("7"))
        [retry] = [call for call in self.clock.getDelayedCalls() if call.func == self.tracker._connect_events]
        self.assertEqual(retry.getTime() - self.clock.seconds(), EVENTS_RETRY_SECONDS)

        # The back-off runs out: reopened, dropped again, logged no more.
        self.clock.advance(EVENTS_RETRY_SECONDS)
        yield wait_until(lambda: self.dvr.subscriptions == 2 and self.dvr.floods[-1].closed)
        yield wait_until(lambda: self.tracker.events_state == "disconnected")
        self.assertEqual(len(self.dropped()), 1, self.lines)
        [retry] = [call for call in self.clock.getDelayedCalls() if call.func == self.tracker._connect_events]
        self.assertEqual(retry.getTime() - self.clock.seconds(), 2 * EVENTS_RETRY_SECONDS)
        self.assertFalse([line for line in self.lines if "event stream connected" in line])

    @defer.inlineCallbacks
    def test_huge_status_answer_is_cut(self):
        """
        A 50 MB status answer is read only up to the bound: the poll fails
        as an error naming the size, the server could not send it all, and
        polling goes on.
        """
        self.dvr.huge = True
        yield self.tracker.poll()
        self.assertEqual(self.tracker.current_state(), "error")
        self.assertIn(f"larger than {MAX_STATUS_BYTES} bytes", self.tracker.status()["last_error"])
        yield wait_until(lambda: self.dvr.floods[-1].closed)
        self.assertLess(self.dvr.floods[-1].sent, SENT_BOUND)
        self.dvr.huge = False
        yield self.tracker.poll()
        self.assertEqual(self.tracker.current_state(), "ok")

    @defer.inlineCallbacks
    def test_announced_huge_answer_is_not_read(self):
        """
        A status answer whose Content-Length is over the bound is refused
        without reading it.
        """
        self.dvr.huge = True
        self.dvr.announce = True
        yield self.tracker.poll()
        self.assertEqual(self.tracker.current_state(), "error")
        self.assertIn(f"({HUGE})", self.tracker.status()["last_error"])
        yield wait_until(lambda: self.dvr.floods[-1].closed)
        self.assertLess(self.dvr.floods[-1].sent, SENT_BOUND)
