"""
What Channels DVR is doing: which of our channels it is watching or
recording, so that those are never stopped for lack of requests.

Channels DVR describes its current activity as a mapping of session id to
a sentence such as ``Watching ch7 ABC from Living Room (192.168.1.100)``.
The mapping is the ``activity`` object of the server's status JSON
(``GET <channels_dvr_url>``) and, live, the ``activities.set`` events of its
event stream (``GET <channels_dvr_url>/events/subscribe``), where an empty
``Value`` ends a session.  :class:`DVRTracker` reads both: the event stream
notices a stop within seconds, the poll is the fallback and the resync.

The parsing (:func:`parse_activity`, :func:`activities_from_status`,
:class:`EventStreamParser`, :func:`activity_event`) and the stop decision
(:func:`idle_decision`) are plain functions; only :class:`DVRTracker` does I/O.

Whatever the DVR (or something posing as it) sends is bounded: event
stream lines and events by :data:`MAX_EVENT_BYTES` (a longer one drops the
connection, which is reopened with the usual back-off), status answers by
:data:`MAX_STATUS_BYTES`; parsing is linear in what arrives.
"""

import json
import re
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer, error as net_error
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import client as web_client

from .channels import normalize_channel_id
from .periodic import guarded

log = Logger()

# Most seconds one question to Channels DVR may take (connecting, headers
# and body); the event stream's body has no limit, it stays open.
REQUEST_TIMEOUT_SECONDS = 5.0

# Pause before reconnecting a lost event stream; doubles on every failed
# try up to the maximum, and is reset by a successful connection.
EVENTS_RETRY_SECONDS = 2.0
EVENTS_RETRY_MAX_SECONDS = 60.0

# Where the event stream lives, below channels_dvr_url (".../dvr").
EVENTS_PATH = "/events/subscribe"

# Longest line (and event) of the event stream kept, bytes.  An event is a
# small JSON object (a few hundred bytes); a longer line drops the stream.
MAX_EVENT_BYTES = 64 * 1024

# Largest status answer (GET /dvr) read, bytes.  Real ones are a few KB.
MAX_STATUS_BYTES = 4 * 1024 * 1024

WATCHING = "watching"
RECORDING = "recording"
OTHER = "other"

# The states of the connection to Channels DVR, as the status page shows them.
OK = "ok"
UNREACHABLE = "unreachable"
ERROR = "error"
OFF = "off"

# "Watching ch7 ...", "Recording ch13.1 ...": the verb, then the channel
# number right after it.  A channel further on in the sentence does not
# count: a recorded file's title may well contain "ch" and a number.
_VERB = re.compile(r"^\s*(watching|recording)\b\s*(.*)$", re.IGNORECASE | re.DOTALL)
_CHANNEL = re.compile(r"^ch\s*(\d{1,9}(?:\.\d{1,4})?)(?![\d.])\s*(.*)$", re.IGNORECASE | re.DOTALL)
# A session id of a recording job names its channel: "1688223633-ch5.1".
_SESSION_CHANNEL = re.compile(r"(?:^|[-_])ch(\d{1,9}(?:\.\d{1,4})?)(?![\d.])", re.IGNORECASE)
# " from Living Room (192.168.1.100)", up to a " - 1080p", ": buf=..." or
# " at 4m1s" tail.
_FROM = re.compile(
    r"\bfrom\s+(.+?)\s*(?:\(([^()]*)\))?\s*(?:(?:\s-\s|:\s|\sat\s\d).*)?$",
    re.IGNORECASE | re.DOTALL,
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class ActivityInfo:
    """
    One parsed activity sentence.

    ``kind`` is ``watching`` or ``recording`` for a live channel (then
    ``channel_id`` is its canonical id, as our M3U's ``channel-number``),
    or ``other`` for anything else Channels DVR does (playing a recorded
    file, a channel-less sentence), where ``channel_id`` is None.
    ``client`` and ``address`` name who is watching, when the sentence says.
    """

    kind: str
    channel_id: str | None
    client: str | None = None
    address: str | None = None

    @property
    def active_channel(self):
        """
        The channel id this activity keeps busy, or None.
        """
        return self.channel_id if self.kind in (WATCHING, RECORDING) else None


def _client(rest):
    match = _FROM.search(rest)
    if match is None:
        return None, None
    name = match.group(1).strip() or None
    address = (match.group(2) or "").strip() or None
    return name, address


def parse_activity(sentence, session=None):
    """
    Parse one activity sentence of Channels DVR into an :class:`ActivityInfo`,
    or None when it is not a sentence this understands (not text, empty, a
    verb other than Watching/Recording).

    ``session`` is the session id the sentence belongs to; a recording whose
    sentence names no channel takes it from a job id such as ``1688223633-ch5.1``.
    """
    if not isinstance(sentence, str):
        return None
    text = _SPACES.sub(" ", sentence).strip()
    verb_match = _VERB.match(text)
    if verb_match is None:
        return None
    kind = verb_match.group(1).lower()
    rest = verb_match.group(2)
    channel_id = None
    channel_match = _CHANNEL.match(rest)
    if channel_match is not None:
        channel_id = _canonical(channel_match.group(1))
    elif kind == RECORDING and isinstance(session, str):
        session_match = _SESSION_CHANNEL.search(session)
        if session_match is not None:
            channel_id = _canonical(session_match.group(1))
    client, address = _client(rest)
    if channel_id is None:
        return ActivityInfo(OTHER, None, client, address)
    return ActivityInfo(kind, channel_id, client, address)


def _canonical(number):
    try:
        return normalize_channel_id(number)
    except ValueError:
        return None


class UnexpectedAnswer(ValueError):
    """
    Channels DVR answered, but not with what we asked for; the message
    says what was wrong.
    """


def activities_from_status(document):
    """
    The ``{session: sentence}`` mapping of the status JSON ``document``
    (already decoded) of ``GET /dvr``.  Entries whose sentence is not text
    are left out; ``"activity": null`` means nothing is going on.

    :raises UnexpectedAnswer: when the document has another shape.
    """
    if not isinstance(document, dict):
        raise UnexpectedAnswer(f"expected a JSON object, got {_json_kind(document)}")
    if "activity" not in document:
        raise UnexpectedAnswer("the JSON object has no 'activity' member")
    activity = document["activity"]
    if activity is None:
        return {}
    if not isinstance(activity, dict):
        raise UnexpectedAnswer(f"'activity' is {_json_kind(activity)}, not an object")
    return {str(k): v for k, v in activity.items() if isinstance(v, str)}


def _json_kind(value):
    return {
        dict: "an object",
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def parse_activities(mapping):
    """
    ``{session: ActivityInfo}`` for the sentences of ``mapping`` that parse.
    """
    parsed = {}
    for session, sentence in mapping.items():
        info = parse_activity(sentence, session)
        if info is not None:
            parsed[session] = info
    return parsed


# A line end of server-sent events: CRLF, CR or LF.
_LINE_END = re.compile(rb"\r\n?|\n")


class EventStreamParser:
    """
    Splits the bytes of Channels DVR's event stream into event payloads.

    The stream is server-sent events (``data: {...}`` lines, an event ending
    at a blank line, ``:`` comments, ``event:``/``id:``/``retry:`` fields
    ignored); a bare JSON line (``{...}`` without ``data:``) is taken as one
    event too.  Chunks may split lines, and ``\\r\\n`` may be split between
    two chunks.

    Each byte is looked at once: a partial line is kept with the point up
    to which it holds no line end.  A line, or the data of one event,
    longer than ``max_bytes`` sets :attr:`overflow` (a sentence) and the
    parser takes nothing more.  :attr:`lines` counts the complete lines.
    """

    def __init__(self, max_bytes=MAX_EVENT_BYTES):
        self.max_bytes = max_bytes
        self.overflow = None
        self.lines = 0
        self._buffer = bytearray()
        self._data = []
        self._data_size = 0
        self._skip_lf = False

    def feed(self, chunk):
        """
        Add ``chunk`` (bytes); return the text payloads of the events it
        completed (those before an overflow included).
        """
        events = []
        if self.overflow is not None or not chunk:
            return events
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        self._skip_lf = False
        buffer = self._buffer
        # What is already buffered holds no line end: look only at the new bytes.
        scan_from = len(buffer)
        buffer += chunk
        start = 0
        for match in _LINE_END.finditer(buffer, scan_from):
            if match.start() - start > self.max_bytes:
                return self._overflowed(events, f"a line over {self.max_bytes} bytes")
            line = bytes(buffer[start : match.start()])
            start = match.end()
            if match.group() == b"\r" and start == len(buffer):
                # A lone "\r" at the end of the buffer: its "\n" may follow.
                self._skip_lf = True
            self.lines += 1
            self._line(line.decode("utf-8", "replace"), events)
            if self._data_size > self.max_bytes:
                return self._overflowed(events, f"an event over {self.max_bytes} bytes")
        del buffer[:start]
        if len(buffer) > self.max_bytes:
            return self._overflowed(events, f"a line over {self.max_bytes} bytes")
        return events

    def _overflowed(self, events, problem):
        self.overflow = problem
        self._buffer = bytearray()
        self._data = []
        return events

    def _line(self, line, events):
        if line == "":
            if self._data:
                events.append("\n".join(self._data))
                self._data = []
                self._data_size = 0
            return
        if line.startswith(":"):
            return
        if line.lstrip().startswith("{") and not self._data:
            events.append(line.strip())
            return
        field, _, value = line.partition(":")
        if field == "data":
            value = value[1:] if value.startswith(" ") else value
            self._data.append(value)
            self._data_size += len(value) + 1


def activity_event(payload):
    """
    ``(session, sentence)`` of an ``activities.set`` event payload (the
    JSON text of one event), with ``sentence`` None when the event ends the
    session (empty or missing ``Value``); None for any other event and for
    payloads that are not such JSON.
    """
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("Type") != "activities.set":
        return None
    session = event.get("Name")
    if not isinstance(session, str) or not session:
        return None
    value = event.get("Value")
    if not isinstance(value, str) or not value.strip():
        return session, None
    return session, value


def idle_decision(idle_seconds, timeout, dvr_state, dvr_active):
    """
    Whether a running channel is to be stopped, and why, as ``(stop, reason)``.

    A channel is kept while a client requested it within ``timeout``
    seconds, or while Channels DVR reports it watched or recorded
    (``dvr_active``, which the caller only sets while the DVR answers).
    Otherwise it is stopped, and the reason says what ``dvr_state`` (``ok``,
    ``off``, ``unreachable``, ``error``, or None before the first answer)
    let us know.
    """
    if idle_seconds < timeout:
        return False, f"requested {idle_seconds:.0f} s ago"
    if dvr_active:
        return False, "active in Channels DVR"
    idle = f"no request for {idle_seconds:.0f} s"
    if dvr_state == OK:
        return True, f"not watched in Channels DVR and {idle}"
    if dvr_state == OFF:
        return True, f"{idle} (Channels DVR not configured)"
    if dvr_state == UNREACHABLE:
        return True, f"{idle} (Channels DVR unreachable)"
    if dvr_state == ERROR:
        return True, f"{idle} (Channels DVR answers with errors)"
    return True, f"{idle} (Channels DVR has not answered yet)"


class _EventStreamProtocol(Protocol):
    """
    Receives the event stream's body and hands each event to the tracker;
    drops the connection when the parser overflows (``problem`` says why).
    """

    def __init__(self, tracker):
        self._tracker = tracker
        self._parser = EventStreamParser()
        self.problem = None
        self._alive = False

    def dataReceived(self, data):
        """
        Parse a chunk of the stream; drop the connection on an overflow.
        """
        if self.problem is not None:
            return
        for payload in self._parser.feed(data):
            self._tracker._on_event(payload)
        if not self._alive and self._parser.lines:
            self._alive = True
            self._tracker._events_alive(self)
        if self._parser.overflow is not None:
            self.problem = f"it sent {self._parser.overflow}"
            self.close()

    def connectionLost(self, reason):
        self._tracker._stream_ended(self, reason)

    def close(self):
        """
        Drop the connection (the Channels DVR side sees it closed).
        """
        if self.transport is not None:
            self.transport.stopProducing()


class DVRTracker(Service):
    """
    Follows what Channels DVR at ``url`` (``channels_dvr_url``) watches and
    records: polls its status every ``interval`` seconds and keeps its
    event stream open for changes in between.

    ``client`` is a ``treq.client.HTTPClient``-like object; with ``url``
    None the tracker is off and reports nothing as watched.  Problems with
    the DVR are logged once per change of state and never stop a stream:
    while the DVR does not answer properly, :meth:`is_watched` is False for
    every channel and only the request rule decides.
    """

    name = "channels-dvr"

    def __init__(self, url, interval, client, reactor=None, timeout=REQUEST_TIMEOUT_SECONDS):
        if reactor is None:
            from twisted.internet import reactor
        self.url = url.rstrip("/") if url else None
        self.interval = interval
        self.timeout = timeout
        self._client = client
        self._reactor = reactor
        self.state = OFF if self.url is None else None
        self.last_error = None
        self.last_success = None
        self.activities = {}
        self.sentences = {}
        self.events_state = OFF if self.url is None else "disconnected"
        self._event_count = 0
        self._polling = None
        self._loop = LoopingCall(guarded(self.poll, "Polling Channels DVR"))
        self._loop.clock = reactor
        self._stream = None
        self._connecting = None
        self._retry_call = None
        self._retry_delay = EVENTS_RETRY_SECONDS
        self._logged_events = None

    # Service.

    def startService(self):
        """
        Start polling and open the event stream (nothing when off).
        """
        super().startService()
        if self.url is None:
            log.info("Channels DVR awareness is off (channels_dvr_url is not set)")
            return
        self._loop.start(self.interval, now=True)
        self._connect_events()

    def stopService(self):
        """
        Stop polling and close the event stream.
        """
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self._connecting is not None:
            connecting, self._connecting = self._connecting, None
            connecting.cancel()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.close()
        if self._polling is not None:
            self._polling.cancel()

    # Questions.

    def is_watched(self, channel_id):
        """
        Whether Channels DVR reports ``channel_id`` watched or recorded now;
        always False while it is off or not answering properly.
        """
        if self.state != OK:
            return False
        return any(info.active_channel == channel_id for info in self.activities.values())

    def current_state(self):
        """
        ``ok``, ``unreachable``, ``error``, ``off``, or None before the first answer.
        """
        return self.state

    def status(self):
        """
        A summary for the status page: state, last error, time of the last
        good answer, whether the event stream is connected, and the current
        activities as parsed.
        """
        return {
            "state": self.state or UNREACHABLE,
            "url": self.url,
            "last_error": self.last_error if self.state is not None else "no answer yet",
            "last_success": self.last_success,
            "event_stream": self.events_state,
            "activities": [
                {
                    "session": session,
                    "sentence": self.sentences.get(session),
                    "kind": info.kind,
                    "channel_id": info.channel_id,
                    "client": info.client,
                    "address": info.address,
                }
                for session, info in sorted(self.activities.items())
            ],
        }

    # Polling.

    def poll(self):
        """
        Ask Channels DVR for its status once (the periodic job); a Deferred
        that fires when the answer has been taken in.  Never fails.
        """
        if self.url is None:
            return defer.succeed(None)
        if self._polling is not None:
            return self._polling
        events_before = self._event_count
        d = defer.maybeDeferred(
            self._client.get, self.url, timeout=self.timeout, reactor=self._reactor
        )
        d.addCallback(self._read_status)
        d.addTimeout(self.timeout, self._reactor)
        d.addCallbacks(
            lambda mapping: self._poll_answered(mapping, events_before), self._poll_failed
        )
        d.addErrback(lambda f: log.failure("Handling the answer of Channels DVR", f))

        def done(_):
            self._polling = None

        d.addBoth(done)
        if not d.called:
            self._polling = d
        return d

    def _read_status(self, response):
        if response.code != 200:
            response.deliverBody(_Drop())
            raise UnexpectedAnswer(f"HTTP {response.code} {_phrase(response)}".strip())
        d = read_body(response, MAX_STATUS_BYTES)

        def decode(body):
            try:
                document = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise UnexpectedAnswer("the answer is not JSON")
            return activities_from_status(document)

        return d.addCallback(decode)

    def _poll_answered(self, mapping, events_before):
        self.last_success = self._reactor.seconds()
        if self._event_count == events_before:
            # An event that arrived while the poll was under way is newer
            # than the poll's answer; the next poll resyncs.
            self.sentences = dict(mapping)
            self.activities = parse_activities(mapping)
        self._set_state(OK, None)

    def _poll_failed(self, failure):
        if not self.running and failure.check(defer.CancelledError):
            return  # stopService cancelled it
        if failure.check(UnexpectedAnswer):
            self._set_state(ERROR, failure.getErrorMessage())
        elif _timed_out(failure):
            self._set_state(UNREACHABLE, f"no answer within {self.timeout:g} s")
        elif failure.check(net_error.ConnectError, net_error.DNSLookupError):
            self._set_state(UNREACHABLE, _describe_connect(failure))
        elif failure.check(web_client.ResponseFailed, net_error.ConnectionLost):
            self._set_state(UNREACHABLE, "the connection broke during the answer")
        else:
            self._set_state(ERROR, failure.getErrorMessage() or failure.type.__name__)

    def _set_state(self, state, problem):
        changed = (state, problem) != (self.state, self.last_error)
        previous = self.state
        self.state = state
        self.last_error = problem
        if not changed:
            return
        if state == OK:
            if previous is None:
                log.info("Channels DVR at {url} answers ({count} activities now)",
                         url=self.url, count=len(self.activities))
            else:
                log.info("Channels DVR at {url} answers again; its activity counts again",
                         url=self.url)
        else:
            log.warn(
                "Channels DVR at {url} is {state}: {problem}; meanwhile channels "
                "stop after inactivity_timeout without requests",
                url=self.url,
                state=state,
                problem=problem,
            )

    # The event stream.

    def _connect_events(self):
        self._retry_call = None
        if not self.running or self.url is None:
            return
        d = defer.maybeDeferred(
            self._client.get,
            self.url + EVENTS_PATH,
            timeout=self.timeout,
            reactor=self._reactor,
            unbuffered=True,
            headers={"Accept": ["text/event-stream"]},
        )
        self._connecting = d
        d.addCallbacks(self._events_connected, self._events_failed)
        d.addErrback(lambda f: log.failure("Reading the Channels DVR event stream", f))

    def _events_connected(self, response):
        self._connecting = None
        if response.code != 200:
            response.deliverBody(_Drop())
            self._events_lost(f"HTTP {response.code} {_phrase(response)}".strip())
            return
        stream = _EventStreamProtocol(self)
        self._stream = stream
        response.deliverBody(stream)
        if self._stream is not stream:
            return  # ended already
        self.events_state = "connected"
        # Events may have been missed while it was down.
        self.poll()

    def _events_alive(self, stream):
        # The first complete line: the stream works.  Only now is the
        # back-off reset and the connection logged, so a DVR that sends
        # only over-long lines is retried ever more slowly and logged once.
        if self._stream is not stream:
            return
        self._retry_delay = EVENTS_RETRY_SECONDS
        if self._logged_events != "connected":
            self._logged_events = "connected"
            log.info("Channels DVR event stream connected; stops are noticed within seconds")

    def _stream_ended(self, stream, reason):
        if self._stream is not stream:
            return  # closed by stopService
        self._stream = None
        if self.running:
            # The DVR may have gone away: ask now rather than at the next poll.
            self.poll()
        if stream.problem is not None:
            self._events_lost(f"dropped: {stream.problem}")
        elif reason.check(web_client.ResponseDone, web_client.PotentialDataLoss):
            self._events_lost("Channels DVR closed it")
        else:
            self._events_lost(f"the connection broke ({reason.getErrorMessage()})")

    def _events_failed(self, failure):
        if self._connecting is None:
            return  # cancelled by stopService
        self._connecting = None
        if _timed_out(failure):
            self._events_lost(f"no answer within {self.timeout:g} s")
        elif failure.check(net_error.ConnectError, net_error.DNSLookupError):
            self._events_lost(_describe_connect(failure))
        else:
            self._events_lost(failure.getErrorMessage() or failure.type.__name__)

    def _events_lost(self, problem):
        self.events_state = "disconnected"
        if self._logged_events != problem:
            self._logged_events = problem
            log.info(
                "Channels DVR event stream unavailable ({problem}); relying on polls "
                "every {interval:g} s and retrying it",
                problem=problem,
                interval=self.interval,
            )
        if not self.running:
            return
        delay, self._retry_delay = self._retry_delay, min(self._retry_delay * 2, EVENTS_RETRY_MAX_SECONDS)
        self._retry_call = self._reactor.callLater(delay, self._connect_events)

    def _on_event(self, payload):
        try:
            event = activity_event(payload)
            if event is None:
                return
            self._event_count += 1
            session, sentence = event
            if sentence is None:
                self.sentences.pop(session, None)
                ended = self.activities.pop(session, None)
                if ended is not None and ended.active_channel:
                    log.info("Channels DVR: {session} ended (channel {channel})",
                             session=session, channel=ended.active_channel)
                return
            self.sentences[session] = sentence
            info = parse_activity(sentence, session)
            if info is None:
                self.activities.pop(session, None)
            else:
                self.activities[session] = info
        except Exception:
            log.failure("Handling a Channels DVR event {payload!r}", payload=payload[:200])


class _Drop(Protocol):
    """
    Drops the connection of a response whose body nobody wants, rather
    than reading a body of any size.
    """

    def makeConnection(self, transport):
        """
        Drop the connection before any of the body is read.
        """
        transport.stopProducing()

    def connectionLost(self, reason):
        pass


class _BoundedBody(Protocol):
    """
    Collects a response body of at most ``limit`` bytes into ``finished``;
    a longer one drops the connection and fails with
    :class:`UnexpectedAnswer`.
    """

    def __init__(self, limit, finished):
        self.limit = limit
        self.finished = finished
        self.size = 0
        self.chunks = []

    def dataReceived(self, data):
        """
        Keep a chunk, or give up once the body is over the limit.
        """
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.chunks = []
            self.transport.stopProducing()
            self.finished.errback(UnexpectedAnswer(f"the answer is larger than {self.limit} bytes"))
            return
        self.chunks.append(data)

    def connectionLost(self, reason):
        """
        The body is complete (or broken off): fire ``finished``.
        """
        if self.finished.called:
            return
        if reason.check(web_client.ResponseDone, web_client.PotentialDataLoss):
            self.finished.callback(b"".join(self.chunks))
        else:
            self.finished.errback(reason)


def read_body(response, limit):
    """
    A Deferred firing with the body of ``response`` (bytes) when it is at
    most ``limit`` bytes; failing with :class:`UnexpectedAnswer` as soon as
    it is known to be longer (its Content-Length, or the bytes read), after
    dropping the connection.  Cancelling it drops the connection too.
    """
    length = getattr(response, "length", None)
    if isinstance(length, int) and length > limit:
        response.deliverBody(_Drop())
        return defer.fail(UnexpectedAnswer(f"the answer is larger than {limit} bytes ({length})"))
    protocol = None

    def cancel(_):
        if protocol is not None and protocol.transport is not None:
            protocol.transport.stopProducing()

    finished = defer.Deferred(cancel)
    protocol = _BoundedBody(limit, finished)
    response.deliverBody(protocol)
    return finished


def _phrase(response):
    phrase = getattr(response, "phrase", b"") or b""
    return phrase.decode("latin-1") if isinstance(phrase, bytes) else str(phrase)


def _timed_out(failure):
    """
    Whether ``failure`` is a request given up for taking too long (the
    timeout cancels it; the HTTP client may wrap the cancellation).
    """
    timeouts = (defer.CancelledError, defer.TimeoutError, net_error.TimeoutError)
    if failure.check(*timeouts):
        return True
    if failure.check(web_client.ResponseFailed, web_client.RequestTransmissionFailed):
        return any(
            getattr(reason, "check", lambda *_: False)(*timeouts)
            for reason in getattr(failure.value, "reasons", ())
        )
    return False


def _describe_connect(failure):
    if failure.check(net_error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(net_error.DNSLookupError):
        return "host name not found"
    return failure.getErrorMessage() or "cannot connect"
