"""
Tests of Channels DVR awareness: parsing activity sentences, the status
JSON and the event stream, the stop decision, and the tracker against a
fake Channels DVR (a Twisted resource) through StubTreq, with a Clock.

The sentences are the forms Channels DVR is seen to produce in public
projects that read it (see README, "Channels DVR awareness"); the manager
tests at the end drive a channel manager (fake processes) with a stub DVR.
"""

import json
import time

from treq.testing import StubTreq
from twisted.internet import defer, error
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from streamproxy.dvr import (
    EVENTS_RETRY_SECONDS,
    MAX_EVENT_BYTES,
    REQUEST_TIMEOUT_SECONDS,
    ActivityInfo,
    DVRTracker,
    EventStreamParser,
    UnexpectedAnswer,
    activities_from_status,
    activity_event,
    idle_decision,
    parse_activity,
)
from streamproxy.manager import TAKEOVER_MIN_IDLE_SECONDS
from streamproxy.session import ChannelUnavailable

from .helpers import candidate
from .test_session import Harness

DVR_URL = "http://127.0.0.1:8089/dvr"


class FakeDVR(Resource):
    """
    A Channels DVR as far as streamproxy sees it: ``GET /dvr`` answers the
    status JSON with ``activity``, ``GET /dvr/events/subscribe`` streams
    ``activities.set`` events.  Tests change ``code``/``body``/``hang`` to
    make it misbehave; ``requests`` counts status requests.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.activity = {}
        self.code = 200
        self.body = None
        self.hang = False
        self.events_code = 200
        self.requests = 0
        self.subscribers = []
        self.hanging = []

    def render_GET(self, request):
        """
        Answer the status JSON, the event stream, or 404.
        """
        path = request.path.rstrip(b"/")
        if path == b"/dvr":
            self.requests += 1
            if self.hang:
                self.hanging.append(request)
                return NOT_DONE_YET
            request.setResponseCode(self.code)
            request.setHeader(b"content-type", b"application/json")
            if self.body is not None:
                return self.body
            return json.dumps({"version": "2024.01.01", "activity": self.activity}).encode()
        if path == b"/dvr/events/subscribe":
            if self.events_code != 200:
                request.setResponseCode(self.events_code)
                return b"no"
            request.setHeader(b"content-type", b"text/event-stream")
            request.write(b'data: {"Type":"hello"}\n\n')
            self.subscribers.append(request)
            request.notifyFinish().addBoth(lambda _: self._gone(request))
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"not found"

    def _gone(self, request):
        if request in self.subscribers:
            self.subscribers.remove(request)

    def send(self, data):
        """
        Write raw bytes to every open event stream.
        """
        for request in list(self.subscribers):
            request.write(data)

    def set_activity(self, session, sentence):
        """
        Start (or, with an empty ``sentence``, end) an activity, as the
        status JSON and as an ``activities.set`` event.
        """
        if sentence:
            self.activity[session] = sentence
        else:
            self.activity.pop(session, None)
        event = {"Type": "activities.set", "Name": session, "Value": sentence or ""}
        self.send(b"data: " + json.dumps(event).encode() + b"\n\n")

    def close_streams(self):
        """
        End every open event stream, as a restarting DVR would.
        """
        for request in list(self.subscribers):
            request.finish()

    def release(self):
        """
        Drop hanging status requests.
        """
        for request in self.hanging:
            request.transport.abortConnection()
        self.hanging = []


class RefusingClient:
    """
    An HTTP client for a DVR that is not running: every request is refused.
    """

    def __init__(self):
        self.calls = 0

    def get(self, url, **kwargs):
        """
        Refuse the connection (checking a timeout was given).
        """
        self.calls += 1
        assert "timeout" in kwargs
        return defer.fail(error.ConnectionRefusedError("Connection refused"))


class ParseActivityTests(SynchronousTestCase):
    """
    Turning Channels DVR activity sentences into channels.
    """

    def test_watching(self):
        """
        The live-TV sentence gives the channel, the client's name and address,
        whatever follows the address.
        """
        for sentence in (
            "Watching ch7 ABC from Living Room (192.168.1.100) - 1080p",
            "Watching ch7 ABC from Living Room (192.168.1.100): buf=0% drop=0%",
            "Watching ch7 ABC from Living Room (192.168.1.100)",
        ):
            self.assertEqual(
                parse_activity(sentence),
                ActivityInfo("watching", "7", "Living Room", "192.168.1.100"),
                sentence,
            )

    def test_watching_without_channel_name_or_address(self):
        """
        Sentences without a channel name, or without an address, still parse.
        """
        self.assertEqual(
            parse_activity("Watching ch5 from Living Room (192.0.2.10)"),
            ActivityInfo("watching", "5", "Living Room", "192.0.2.10"),
        )
        self.assertEqual(
            parse_activity("Watching ch6001 Custom from Den"),
            ActivityInfo("watching", "6001", "Den", None),
        )

    def test_decimal_channels(self):
        """
        Sub-channels keep their decimals, in our canonical form.
        """
        self.assertEqual(parse_activity("Watching ch13.1 PBS from Bedroom").channel_id, "13.1")
        self.assertEqual(parse_activity("Recording ch7.1 KGO-HD").channel_id, "7.1")
        self.assertEqual(parse_activity("Watching ch007.10 X from Den").channel_id, "7.1")

    def test_recording(self):
        """
        A recording counts as recording its channel; one whose sentence names
        no channel takes it from its job id.
        """
        self.assertEqual(
            parse_activity("Recording ch5.1 WNEM-HD for Lucky Dog until 11:30AM: buf=0% drop=0%"),
            ActivityInfo("recording", "5.1", None, None),
        )
        self.assertEqual(
            parse_activity("Recording Lucky Dog until 11:30AM", "1688223633-ch5.1"),
            ActivityInfo("recording", "5.1", None, None),
        )
        self.assertEqual(
            parse_activity("Recording Lucky Dog until 11:30AM", "some-session"),
            ActivityInfo("other", None, None, None),
        )

    def test_odd_spacing_and_case(self):
        """
        Extra spaces, a space after "ch", and any case are accepted.
        """
        self.assertEqual(
            parse_activity("  watching   CH 7   ABC   from  Living  Room  (192.168.1.100) "),
            ActivityInfo("watching", "7", "Living Room", "192.168.1.100"),
        )
        self.assertEqual(parse_activity("RECORDING ch9").channel_id, "9")

    def test_recorded_files_are_not_channels(self):
        """
        Playing a recording ("... at 4m1s") is other activity, even when the
        title holds something like a channel.
        """
        for sentence in (
            "Watching Brooklyn Nine-Nine - Season 3, Episode 20 from TV at 4m1s",
            "Watching file from Living Room (192.168.1.100) at 1h15m42s",
            "Watching Chicago Fire ch7 Special from TV at 0s",
        ):
            info = parse_activity(sentence)
            self.assertEqual(info.kind, "other", sentence)
            self.assertIsNone(info.active_channel)

    def test_unknown_forms(self):
        """
        Anything that is not a Watching/Recording sentence is not understood.
        """
        for sentence in ("", "   ", "Transcoding ch7", "ch7 watching", "Streaming", None, 7, ["Watching ch7"]):
            self.assertIsNone(parse_activity(sentence), repr(sentence))

    def test_malformed_channel_numbers(self):
        """
        A number that is not a channel number does not become one.
        """
        self.assertIsNone(parse_activity("Watching ch7.1.2 X from Den").channel_id)
        self.assertIsNone(parse_activity("Watching ch from Den").channel_id)


class StatusDocumentTests(SynchronousTestCase):
    """
    Reading the activity out of the status JSON of ``GET /dvr``.
    """

    def test_activity(self):
        """
        The ``activity`` mapping is returned; non-text entries are left out.
        """
        document = {
            "version": "2024.01.01",
            "activity": {"6-stream-ch7": "Watching ch7 ABC from Den", "odd": 5},
        }
        self.assertEqual(activities_from_status(document), {"6-stream-ch7": "Watching ch7 ABC from Den"})

    def test_empty_and_null(self):
        """
        No activity, or null, is an empty mapping.
        """
        self.assertEqual(activities_from_status({"activity": {}}), {})
        self.assertEqual(activities_from_status({"activity": None}), {})

    def test_other_shapes(self):
        """
        Documents of another shape are rejected with a sentence saying how.
        """
        for document, words in (
            ([], "a list"),
            ("Watching", "text"),
            ({"status": "ok"}, "no 'activity'"),
            ({"activity": ["Watching ch7"]}, "'activity' is a list"),
        ):
            with self.assertRaises(UnexpectedAnswer) as caught:
                activities_from_status(document)
            self.assertIn(words, str(caught.exception))


EVENTS = (
    b': keep-alive\n\n'
    b'event: message\ndata: {"Type":"hello"}\n\n'
    b'data: {"Type":"activities.set","Name":"s1","Value":"Watching ch7 ABC from Den"}\r\n\r\n'
    b'{"Type":"activities.set","Name":"s2","Value":"Recording ch9"}\n'
    b'id: 5\ndata: {"Type":"activities.set",\ndata: "Name":"s1","Value":""}\n\n'
)
EXPECTED = [
    '{"Type":"hello"}',
    '{"Type":"activities.set","Name":"s1","Value":"Watching ch7 ABC from Den"}',
    '{"Type":"activities.set","Name":"s2","Value":"Recording ch9"}',
    '{"Type":"activities.set",\n"Name":"s1","Value":""}',
]


class EventStreamTests(SynchronousTestCase):
    """
    Splitting the event stream into events, and reading them.
    """

    def test_whole(self):
        """
        Data events, bare JSON lines, comments and other fields.
        """
        self.assertEqual(EventStreamParser().feed(EVENTS), EXPECTED)

    def test_split_anywhere(self):
        """
        Whatever the chunking, including between "\\r" and "\\n", the same
        events come out, each as soon as it is complete.
        """
        for cut in range(1, len(EVENTS)):
            parser = EventStreamParser()
            events = parser.feed(EVENTS[:cut]) + parser.feed(EVENTS[cut:])
            self.assertEqual(events, EXPECTED, f"cut at {cut}")
        parser = EventStreamParser()
        events = []
        for index in range(len(EVENTS)):
            events += parser.feed(EVENTS[index : index + 1])
        self.assertEqual(events, EXPECTED)

    def test_incomplete_event_waits(self):
        """
        An event without its blank line is not delivered yet.
        """
        parser = EventStreamParser()
        self.assertEqual(parser.feed(b'data: {"Type":"x"}\n'), [])
        self.assertEqual(parser.feed(b"\n"), ['{"Type":"x"}'])

    def test_line_over_the_bound(self):
        """
        A line longer than the bound, in one chunk or many, ends the
        parsing with a reason; the events before it are still delivered and
        nothing is kept of the long line.
        """
        for chunk in (MAX_EVENT_BYTES + 10, 4096, 1):
            parser = EventStreamParser()
            events = parser.feed(b'data: {"Type":"a"}\n\n')
            endless = b"x" * (MAX_EVENT_BYTES + 10)
            for index in range(0, len(endless), chunk):
                events += parser.feed(endless[index : index + chunk])
                if parser.overflow:
                    break
            self.assertEqual(events, ['{"Type":"a"}'])
            self.assertEqual(parser.overflow, f"a line over {MAX_EVENT_BYTES} bytes")
            self.assertEqual(len(parser._buffer), 0)
            self.assertEqual(parser.feed(b"\n\ndata: {}\n\n"), [])

    def test_line_at_the_bound_passes(self):
        """
        A line of exactly the bound is still taken.
        """
        parser = EventStreamParser(max_bytes=100)
        line = b"data: " + b"y" * 94
        self.assertEqual(parser.feed(line + b"\n\n"), ["y" * 94])
        self.assertIsNone(parser.overflow)

    def test_event_over_the_bound(self):
        """
        An event of many short data lines that never ends is bounded too.
        """
        parser = EventStreamParser(max_bytes=1000)
        for _ in range(200):
            parser.feed(b"data: 0123456789\n")
        self.assertEqual(parser.overflow, "an event over 1000 bytes")
        self.assertEqual(parser._data, [])

    def test_linear(self):
        """
        Long lines arriving in small chunks cost time in proportion to the
        bytes: 8 MB of 60 KB lines in 1 KB chunks parse in well under a
        second (rescanning the buffer on every chunk took minutes).
        """
        parser = EventStreamParser()
        line = b"data: " + b"z" * (60 * 1024) + b"\n\n"
        stream = line * (8 * 1024 * 1024 // len(line))
        started = time.perf_counter()
        count = 0
        for index in range(0, len(stream), 1024):
            count += len(parser.feed(stream[index : index + 1024]))
        elapsed = time.perf_counter() - started
        self.assertEqual(count, len(stream) // len(line))
        self.assertIsNone(parser.overflow)
        self.assertLess(elapsed, 1.0)

    def test_many_lines_in_one_chunk(self):
        """
        Many short lines in one large chunk are split in one pass.
        """
        chunk = b'data: {"Type":"x"}\r\n\r\n' * 50_000
        started = time.perf_counter()
        events = EventStreamParser().feed(chunk)
        self.assertEqual(len(events), 50_000)
        self.assertLess(time.perf_counter() - started, 1.0)

    def test_activity_events(self):
        """
        ``activities.set`` gives the session and sentence; an empty or missing
        Value ends the session; other types and broken JSON are ignored.
        """
        self.assertEqual(activity_event(EXPECTED[1]), ("s1", "Watching ch7 ABC from Den"))
        self.assertEqual(activity_event(EXPECTED[3]), ("s1", None))
        self.assertEqual(activity_event('{"Type":"activities.set","Name":"s1"}'), ("s1", None))
        self.assertIsNone(activity_event(EXPECTED[0]))
        self.assertIsNone(activity_event('{"Type":"jobs.created","Name":"j","Value":"x"}'))
        self.assertIsNone(activity_event('{"Type":"activities.set","Value":"Watching ch7"}'))
        self.assertIsNone(activity_event("not json"))
        self.assertIsNone(activity_event("[1, 2]"))


class IdleDecisionTests(SynchronousTestCase):
    """
    The table deciding whether an idle channel stops, and how it says why.
    """

    def test_table(self):
        """
        Requests within the timeout or DVR activity keep a channel; otherwise
        it stops, with a reason naming what the DVR said.
        """
        table = [
            # idle, state, dvr active -> stop, reason
            (5, "ok", False, False, "requested 5 s ago"),
            (5, "off", False, False, "requested 5 s ago"),
            (31, "ok", True, False, "active in Channels DVR"),
            (31, "ok", False, True, "not watched in Channels DVR and no request for 31 s"),
            (31, "off", False, True, "no request for 31 s (Channels DVR not configured)"),
            (31, "unreachable", False, True, "no request for 31 s (Channels DVR unreachable)"),
            (31, "error", False, True, "no request for 31 s (Channels DVR answers with errors)"),
            (31, None, False, True, "no request for 31 s (Channels DVR has not answered yet)"),
        ]
        for idle, state, active, stop, reason in table:
            self.assertEqual(idle_decision(idle, 30, state, active), (stop, reason), (idle, state, active))

    def test_boundary(self):
        """
        Exactly the timeout without a request stops the channel.
        """
        self.assertTrue(idle_decision(30, 30, "ok", False)[0])
        self.assertFalse(idle_decision(29.9, 30, "ok", False)[0])


class TrackerHarness(SynchronousTestCase):
    """
    A tracker polling a :class:`FakeDVR` through StubTreq on a Clock, with
    its log lines collected.
    """

    interval = 30

    def make(self, client=None, url=DVR_URL):
        """
        A tracker of the fake DVR (or ``client``), its log lines collected.
        """
        self.clock = Clock()
        self.dvr = FakeDVR()
        self.stub = StubTreq(self.dvr)
        self.tracker = DVRTracker(url, self.interval, client or self.stub, reactor=self.clock)
        self.lines = []

        def observe(event):
            """
            Keep the formatted log lines of the tracker.
            """
            if event.get("log_namespace", "").startswith("streamproxy.dvr"):
                self.lines.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.addCleanup(self._stop)
        return self.tracker

    def _stop(self):
        if self.tracker.running:
            self.tracker.stopService()
        self.dvr.release()
        self.stub.flush()

    def start(self):
        """
        Start the tracker and deliver the first answers.
        """
        self.tracker.startService()
        self.stub.flush()

    def step(self, seconds=None):
        """
        Let ``seconds`` (one poll interval by default) pass, delivering what
        the fake DVR sent.
        """
        remaining = self.interval if seconds is None else seconds
        while remaining > 0:
            # In small steps: StubTreq delivers only on flush.
            tick = min(1.0, remaining)
            self.clock.advance(tick)
            self.stub.flush()
            remaining -= tick

    def warnings(self):
        """
        The warnings about the DVR state logged so far.
        """
        return [line for line in self.lines if "Channels DVR at" in line and "answers" not in line]


class TrackerPollTests(TrackerHarness):
    """
    Polling the status of Channels DVR, and every way it can answer.
    """

    def test_good_answer(self):
        """
        Watched and recorded channels are reported; others and recorded-file
        playback are not; the status lists the parsed activities.
        """
        tracker = self.make()
        self.dvr.activity = {
            "6-stream-M3U-x-ch7": "Watching ch7 ABC from Living Room (192.168.1.100) - 1080p",
            "1688223633-ch5.1": "Recording ch5.1 WNEM-HD for Lucky Dog until 11:30AM",
            "6-file-1840-10.0.0.2": "Watching Brooklyn Nine-Nine - Season 3, Episode 20 from TV at 4m1s",
        }
        self.start()
        self.assertEqual(tracker.current_state(), "ok")
        self.assertTrue(tracker.is_watched("7"))
        self.assertTrue(tracker.is_watched("5.1"))
        self.assertFalse(tracker.is_watched("5"))
        self.assertFalse(tracker.is_watched("1840"))
        status = tracker.status()
        self.assertEqual(status["state"], "ok")
        self.assertIsNone(status["last_error"])
        self.assertEqual(status["last_success"], 0)
        kinds = {a["session"]: (a["kind"], a["channel_id"]) for a in status["activities"]}
        self.assertEqual(kinds["6-stream-M3U-x-ch7"], ("watching", "7"))
        self.assertEqual(kinds["1688223633-ch5.1"], ("recording", "5.1"))
        self.assertEqual(kinds["6-file-1840-10.0.0.2"], ("other", None))

    def test_polls_every_interval(self):
        """
        The status is asked at start and then every interval; a change shows
        at the next poll even without the event stream.
        """
        tracker = self.make()
        self.dvr.events_code = 404
        self.start()
        self.assertFalse(tracker.is_watched("7"))
        self.dvr.activity = {"s": "Watching ch7 ABC from Den"}
        self.step(self.interval - 1)
        self.assertFalse(tracker.is_watched("7"))
        self.step(1)
        self.assertTrue(tracker.is_watched("7"))

    def check_bad_answer(self, breakage, state, words):
        """
        The DVR answers as ``breakage`` sets it up: the state becomes
        ``state``, ``words`` are in the error, nothing counts as watched,
        one warning is logged however many polls fail, polling continues,
        and recovery is noticed and logged once.
        """
        tracker = self.make()
        self.dvr.activity = {"s": "Watching ch7 ABC from Den"}
        self.start()
        self.assertTrue(tracker.is_watched("7"))
        breakage()
        before = self.dvr.requests
        for _ in range(4):
            self.step()
        self.assertGreaterEqual(self.dvr.requests - before, 3)
        self.assertEqual(tracker.current_state(), state)
        self.assertIn(words, tracker.status()["last_error"])
        self.assertFalse(tracker.is_watched("7"))
        self.assertEqual(len(self.warnings()), 1, self.lines)
        self.assertIn(words, self.warnings()[0])
        # It comes back.
        self.dvr.code, self.dvr.body, self.dvr.hang = 200, None, False
        self.dvr.release()
        self.step()
        self.step()
        self.assertEqual(tracker.current_state(), "ok")
        self.assertTrue(tracker.is_watched("7"))
        self.assertEqual(len([l for l in self.lines if "answers again" in l]), 1, self.lines)
        self.assertTrue(tracker._loop.running)

    def test_unauthorized(self):
        """
        401 is an error state.
        """
        self.check_bad_answer(lambda: setattr(self.dvr, "code", 401), "error", "HTTP 401")

    def test_server_error(self):
        """
        500 is an error state.
        """
        self.check_bad_answer(lambda: setattr(self.dvr, "code", 500), "error", "HTTP 500")

    def test_wrong_shape(self):
        """
        JSON of another shape is an error state.
        """
        self.check_bad_answer(
            lambda: setattr(self.dvr, "body", b'{"activities": []}'), "error", "no 'activity'"
        )

    def test_not_json(self):
        """
        An answer that is not JSON is an error state.
        """
        self.check_bad_answer(lambda: setattr(self.dvr, "body", b"<html>hi</html>"), "error", "not JSON")

    def test_hang(self):
        """
        A DVR that accepts but never answers is unreachable after the
        timeout, and the poll does not pile up requests meanwhile.
        """
        self.check_bad_answer(lambda: setattr(self.dvr, "hang", True), "unreachable", "no answer within")
        self.assertEqual(REQUEST_TIMEOUT_SECONDS, self.tracker.timeout)

    def test_connection_refused(self):
        """
        A refused connection is the unreachable state, logged once, and the
        poll keeps running.
        """
        client = RefusingClient()
        tracker = self.make(client=client)
        self.start()
        for _ in range(5):
            self.step()
        self.assertEqual(tracker.current_state(), "unreachable")
        self.assertEqual(tracker.status()["last_error"], "connection refused")
        self.assertEqual(len(self.warnings()), 1, self.lines)
        self.assertGreaterEqual(client.calls, 6)
        self.assertTrue(tracker._loop.running)
        self.assertEqual(tracker.status()["event_stream"], "disconnected")

    def test_client_raising(self):
        """
        An HTTP client that raises instead of answering is an error state,
        and the poll keeps running.
        """

        class Raising:
            """
            A client that raises at every request.
            """
            calls = 0

            def get(self, url, **kwargs):
                """
                Count the call and raise.
                """
                Raising.calls += 1
                raise ValueError("bad URL")

        tracker = self.make(client=Raising())
        self.start()
        self.step()
        self.step()
        self.assertEqual(tracker.current_state(), "error")
        self.assertEqual(tracker.status()["last_error"], "bad URL")
        self.assertGreaterEqual(Raising.calls, 3)
        self.assertTrue(tracker._loop.running)

    def test_before_first_answer(self):
        """
        Until the DVR first answers, nothing is watched and the status says so.
        """
        tracker = self.make()
        self.dvr.hang = True
        self.start()
        self.assertIsNone(tracker.current_state())
        self.assertEqual(tracker.status()["state"], "unreachable")
        self.assertEqual(tracker.status()["last_error"], "no answer yet")

    def test_off(self):
        """
        Without a URL the tracker is off: no requests, nothing watched.
        """
        tracker = self.make(url=None)
        self.start()
        self.step()
        self.assertEqual(self.dvr.requests, 0)
        self.assertEqual(tracker.current_state(), "off")
        self.assertEqual(tracker.status()["state"], "off")
        self.assertFalse(tracker.is_watched("7"))


class TrackerEventTests(TrackerHarness):
    """
    Following the event stream between polls.
    """

    interval = 60

    def test_events_update_between_polls(self):
        """
        A session starting and ending on the event stream is noticed at once;
        other event types change nothing.
        """
        tracker = self.make()
        self.start()
        self.assertEqual(len(self.dvr.subscribers), 1)
        self.assertEqual(tracker.status()["event_stream"], "connected")
        polls = self.dvr.requests
        self.dvr.set_activity("s1", "Watching ch2 Two from Den (10.0.0.2)")
        self.stub.flush()
        self.assertTrue(tracker.is_watched("2"))
        self.dvr.send(b'data: {"Type":"jobs.created","Name":"s1","Value":""}\n\n')
        self.stub.flush()
        self.assertTrue(tracker.is_watched("2"))
        self.dvr.set_activity("s1", "")
        self.stub.flush()
        self.assertFalse(tracker.is_watched("2"))
        self.assertEqual(self.dvr.requests, polls)

    def test_event_during_poll_wins(self):
        """
        An event that arrives while a poll is under way is not overwritten by
        that poll's older answer.
        """
        tracker = self.make()
        self.start()
        self.dvr.activity = {"s1": "Watching ch2 Two from Den"}
        self.dvr.hang = True
        tracker.poll()
        self.stub.flush()
        self.dvr.set_activity("s1", "")
        self.stub.flush()
        request = self.dvr.hanging.pop()
        request.write(json.dumps({"activity": {"s1": "Watching ch2 Two from Den"}}).encode())
        request.finish()
        self.stub.flush()
        self.assertEqual(tracker.current_state(), "ok")
        self.assertFalse(tracker.is_watched("2"))

    def test_stream_closed_reconnects(self):
        """
        When the DVR closes the event stream, that is logged once, the
        status is asked at once, and the stream is reopened after a pause;
        streams keep being judged by the poll meanwhile.
        """
        tracker = self.make()
        self.start()
        requests = self.dvr.requests
        self.dvr.close_streams()
        self.stub.flush()
        self.assertEqual(tracker.status()["event_stream"], "disconnected")
        self.assertEqual(self.dvr.requests, requests + 1)
        self.assertEqual(len(self.dvr.subscribers), 0)
        self.step(EVENTS_RETRY_SECONDS)
        self.assertEqual(len(self.dvr.subscribers), 1)
        self.assertEqual(tracker.status()["event_stream"], "connected")
        self.dvr.set_activity("s1", "Recording ch3 Three")
        self.stub.flush()
        self.assertTrue(tracker.is_watched("3"))
        closed = [line for line in self.lines if "event stream unavailable" in line]
        self.assertEqual(len(closed), 1, self.lines)

    def test_events_refused_retries_with_backoff(self):
        """
        An event stream answering 404 is retried ever more slowly, logged
        once, while polls keep the activity right.
        """
        tracker = self.make()
        self.dvr.events_code = 404
        self.dvr.activity = {"s": "Watching ch4 Four from Den"}
        self.start()
        self.assertTrue(tracker.is_watched("4"))
        for _ in range(6):
            self.step(tracker._retry_delay)
        self.assertGreater(tracker._retry_delay, EVENTS_RETRY_SECONDS * 8)
        self.assertEqual(len([l for l in self.lines if "HTTP 404" in l]), 1, self.lines)
        self.assertEqual(tracker.current_state(), "ok")

    def test_stop_closes_everything(self):
        """
        Stopping the tracker closes the event stream and leaves no timers.
        """
        tracker = self.make()
        self.start()
        self.assertEqual(len(self.dvr.subscribers), 1)
        tracker.stopService()
        self.stub.flush()
        self.assertEqual(len(self.dvr.subscribers), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class StubDVR:
    """
    A DVR tracker whose answers the test sets: its state and the channels
    it reports active.
    """

    def __init__(self, state="ok", active=()):
        self.state = state
        self.active = set(active)

    def is_watched(self, channel_id):
        """
        Whether ``channel_id`` is active while the DVR answers.
        """
        return self.state == "ok" and channel_id in self.active

    def current_state(self):
        """
        The state the test set.
        """
        return self.state

    def status(self):
        """
        A minimal status.
        """
        return {"state": self.state}


class ManagerDVRTests(Harness):
    """
    The channel manager consulting Channels DVR: stopping unused channels
    and making room for a waiting tune.
    """

    def make_two(self, dvr, **settings):
        """
        A manager of channels 1 and 2 on source ``a`` (one slot), asking ``dvr``.
        """
        # With 2 s segments the takeover time is its minimum.
        values = {
            "inactivity_timeout": 30,
            "source_limits": {"a": 1},
            "stream_start_timeout": 10,
            "hls_time": 2,
        }
        values.update(settings)
        manager = self.make(
            [
                candidate(1, "1", source="a", url="http://127.0.0.1:1/1.ts"),
                candidate(2, "2", source="a", url="http://127.0.0.1:1/2.ts"),
            ],
            **values,
        )
        manager.dvr = dvr
        manager.is_watched = dvr.is_watched
        return manager

    def play(self, seconds, touch=()):
        """
        Let ``seconds`` pass with the running ffmpeg making progress,
        requesting the channels in ``touch`` every second.
        """
        for _ in range(seconds):
            self.reactor.advance(1)
            for process in self.ffmpegs():
                self.progress(process, self.reactor.seconds())
            for channel_id in touch:
                if self.manager.session(channel_id):
                    self.manager.session(channel_id).touch()

    def test_stop_reason_names_the_dvr(self):
        """
        An unused channel stops with the reason the issue asks for.
        """
        manager = self.make_two(StubDVR("ok"))
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.play(36)
        self.assertIsNone(manager.session("1"))
        reason = manager.ended[-1]["reason"]
        self.assertRegex(reason, r"^not watched in Channels DVR and no request for 3\d s$")

    def test_watched_stays_until_the_dvr_fails(self):
        """
        A channel the DVR reports watched stays; when the DVR then answers
        with errors, only requests count and it stops, saying so.
        """
        dvr = StubDVR("ok", {"1"})
        manager = self.make_two(dvr)
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.play(60)
        self.assertIsNotNone(manager.session("1"))
        dvr.state = "error"
        self.play(6)
        self.assertIsNone(manager.session("1"))
        self.assertIn("(Channels DVR answers with errors)", manager.ended[-1]["reason"])

    def test_status_shows_the_dvr(self):
        """
        The status page includes the DVR's status.
        """
        manager = self.make_two(StubDVR("unreachable"))
        self.assertEqual(manager.status()["channels_dvr"], {"state": "unreachable"})

    def test_idle_stream_gives_its_slot_to_a_waiting_tune(self):
        """
        When a tune waits for a full source, a stream of that source idle
        for the takeover time and not active in the DVR is stopped, and the
        waiting channel starts at once.
        """
        manager = self.make_two(StubDVR("ok"))
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.play(int(TAKEOVER_MIN_IDLE_SECONDS) + 1)
        two = self.tune("2")
        self.reactor.advance(0)
        self.assertIsNone(manager.session("1"))
        self.assertIn("its a slot goes to a channel waiting for it", manager.ended[-1]["reason"])
        self.assertEqual(len(self.ffmpegs()), 1)
        self.assertIn("http://127.0.0.1:1/2.ts", self.ffmpegs()[0].command)
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(two)

    def test_watched_or_requested_streams_are_not_taken_over(self):
        """
        A stream requested recently, or watched in the DVR, keeps its slot;
        the waiting tune gives up after stream_start_timeout.
        """
        for dvr, touch in ((StubDVR("ok", {"1"}), ()), (StubDVR("ok"), ("1",))):
            manager = self.make_two(dvr)
            self.tune("1")
            self.go_live(self.ffmpegs()[0])
            self.play(int(TAKEOVER_MIN_IDLE_SECONDS) + 1, touch)
            two = self.tune("2")
            self.play(11, touch)
            self.failureResultOf(two, ChannelUnavailable)
            self.assertIsNotNone(manager.session("1"))
            self.shutdown()

    def test_stream_becoming_idle_while_a_tune_waits(self):
        """
        A stream still requested when a tune starts waiting is taken over
        once it has been idle for the takeover time, within the wait.
        """
        manager = self.make_two(StubDVR("off"), stream_start_timeout=15)
        self.tune("1")
        self.go_live(self.ffmpegs()[0])
        self.play(3, ("1",))
        two = self.tune("2")
        self.play(4)
        self.assertIsNotNone(manager.session("1"))
        self.play(int(TAKEOVER_MIN_IDLE_SECONDS))
        self.assertIsNone(manager.session("1"))
        self.assertIn("(Channels DVR not configured); its a slot goes to", manager.ended[-1]["reason"])
        self.go_live(self.ffmpegs()[0])
        self.successResultOf(two)
