"""
Prometheus metrics: ``GET /metrics`` in the Prometheus text format, through
``prometheus_client`` and its Twisted resource.

Counters and histograms are counted as things happen (channels and idle
checks call the named methods of :class:`MetricsListener`); gauges (running
channels, viewers, slots) and the bytes served (counted by the channels as
plain numbers: a TS viewer sends many small pieces a second) are read from
the channel manager when Prometheus asks.  Label values are only source names, formats, kinds and
reasons from small fixed sets (:func:`failure_reason`,
:func:`buffering_reason`), never URLs, channel names or free text, so
nothing secret reaches the metrics and their number stays small.
"""

from twisted.logger import Logger

log = Logger()

PREFIX = "streamproxy"

# Reasons a stream is left, as metric labels.
FAILURE_REASONS = (
    "stalled", "buffering", "black", "frozen", "silent", "switch_requested", "start_timeout",
    "connection", "unusable", "exited", "spawn_failed", "other",
)

# Kinds of buffering events, as metric labels.
BUFFERING_REASONS = ("reconnect", "read_timeout", "io_error", "playlist_reload", "segment_failed", "slow", "other")

# How a tune ended up: it played; every candidate failed; no connection came
# free in time; the client went away (or the channel was stopped) first.
TUNE_OUTCOMES = ("live", "unavailable", "no_slot", "abandoned")

TUNE_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
GAP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)


# How a failure reason sentence begins, and its label.
_FAILURE_PREFIXES = (
    ("stalled", "stalled"),
    ("buffering", "buffering"),
    ("black picture", "black"),
    ("frozen picture", "frozen"),
    ("no sound", "silent"),
    ("switched by request", "switch_requested"),
    ("no media within", "start_timeout"),
    ("could not start", "spawn_failed"),
)
_UNUSABLE_PREFIXES = ("ffprobe", "audio only", "unknown video codec", "no streams", "no audio or video",
                      "video size unknown")


def failure_reason(text):
    """
    The label of a failure reason sentence (one of :data:`FAILURE_REASONS`).
    """
    text = (text or "").lower()
    for prefix, label in _FAILURE_PREFIXES:
        if text.startswith(prefix):
            return label
    if "http " in text or "http error" in text or "connection" in text or "timed out" in text:
        return "connection"
    if text.startswith(_UNUSABLE_PREFIXES):
        return "unusable"
    if text.startswith("ffmpeg exited"):
        return "exited"
    return "other"


def buffering_reason(text):
    """
    The label of a buffering event's reason (one of :data:`BUFFERING_REASONS`).
    """
    text = (text or "").lower()
    if text.startswith("reconnect"):
        return "reconnect"
    if text.startswith("media at"):
        return "slow"
    if "playlist reload" in text:
        return "playlist_reload"
    if "segment" in text:
        return "segment_failed"
    if "timed out" in text:
        return "read_timeout"
    if any(word in text for word in ("input/output", "end of file", "reset by peer", "broken pipe",
                                     "ends prematurely")):
        return "io_error"
    return "other"


class MetricsListener:
    """
    What channels, viewers and idle checks tell the metrics; every call does
    nothing here (:class:`Metrics` counts them).
    """

    def tune_outcome(self, outcome, seconds=None):
        """
        A tune ended up as ``outcome`` (:data:`TUNE_OUTCOMES`); ``seconds``
        from the request to the first media when it went live.
        """

    def failover(self, source, reason):
        """
        A playing stream of ``source`` was left for ``reason`` (a sentence).
        """

    def failover_gap(self, seconds):
        """
        A switch left the viewers without new media for ``seconds``.
        """

    def buffering(self, source, reason):
        """
        A playing stream of ``source`` had a buffering event (``reason``).
        """

    def content_fault(self, source, kind):
        """
        A stream of ``source`` showed a fault of ``kind`` (black, frozen,
        silent) past its limit.
        """

    def idle_check(self, source, result):
        """
        An idle check of a stream of ``source`` ended with ``result``
        (a health status, or ``stopped`` when a tune needed its connection).
        """

    def count_served(self, kind, count):
        """
        ``count`` bytes of ``kind`` (``hls`` segments and playlists, ``ts``)
        went to a viewer.  Called for every piece a TS viewer is sent, so
        it only adds to a number.
        """


class Metrics(MetricsListener):
    """
    The daemon's metrics in a registry of their own.  ``snapshot()``
    returns the gauges' values (see :meth:`~streamproxy.manager.
    ChannelManager.metrics_snapshot`); it runs in the reactor thread even
    when Prometheus is answered from a worker thread.
    """

    def __init__(self, snapshot=None, reactor=None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self._reactor = reactor
        self._snapshot = snapshot or (lambda: {})
        self.served = {"hls": 0, "ts": 0}
        self._tunes = Counter(f"{PREFIX}_tunes", "Tunes of a channel that was not running, by outcome",
                              ["outcome"], registry=self.registry)
        self._tune_seconds = Histogram(f"{PREFIX}_tune_seconds",
                                       "Seconds from a tune to the channel's first media",
                                       buckets=TUNE_BUCKETS, registry=self.registry)
        self._failovers = Counter(f"{PREFIX}_failovers", "Playing streams left for the next candidate",
                                  ["source", "reason"], registry=self.registry)
        self._gaps = Histogram(f"{PREFIX}_failover_gap_seconds",
                               "Seconds between the last media of the stream left and the first of the next",
                               buckets=GAP_BUCKETS, registry=self.registry)
        self._buffering = Counter(f"{PREFIX}_buffering_events", "Buffering events of playing streams",
                                  ["source", "reason"], registry=self.registry)
        self._content = Counter(f"{PREFIX}_content_faults",
                                "Black or frozen pictures and silences past their limit",
                                ["source", "kind"], registry=self.registry)
        self._checks = Counter(f"{PREFIX}_idle_checks", "Idle checks of streams nobody watched, by result",
                               ["source", "result"], registry=self.registry)
        for outcome in TUNE_OUTCOMES:
            self._tunes.labels(outcome)
        self.registry.register(_StateCollector(self._read_snapshot))

    # What happens.

    def tune_outcome(self, outcome, seconds=None):
        self._tunes.labels(outcome if outcome in TUNE_OUTCOMES else "abandoned").inc()
        if seconds is not None:
            self._tune_seconds.observe(max(0.0, seconds))

    def failover(self, source, reason):
        self._failovers.labels(source or "", failure_reason(reason)).inc()

    def failover_gap(self, seconds):
        self._gaps.observe(max(0.0, seconds))

    def buffering(self, source, reason):
        self._buffering.labels(source or "", buffering_reason(reason)).inc()

    def content_fault(self, source, kind):
        self._content.labels(source or "", kind).inc()

    def idle_check(self, source, result):
        self._checks.labels(source or "", result).inc()

    def count_served(self, kind, count):
        self.served[kind] = self.served.get(kind, 0) + count

    # Answering.

    def text(self):
        """
        The metrics in the Prometheus text format (bytes), read here.
        """
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def resource(self):
        """
        The Twisted resource answering Prometheus (prometheus_client's own:
        a WSGI app run in the reactor's thread pool).
        """
        from prometheus_client.twisted import MetricsResource

        return MetricsResource(self.registry)

    def set_snapshot(self, snapshot):
        """
        Read the gauges from ``snapshot()`` from now on.
        """
        self._snapshot = snapshot

    def _read_snapshot(self):
        from twisted.python.threadable import isInIOThread

        if self._reactor is None or isInIOThread():
            return self._state()
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self._reactor, self._state)

    def _state(self):
        state = dict(self._snapshot())
        state["served"] = dict(self.served)
        return state


class _StateCollector:
    """
    The gauges, read from the daemon's state when Prometheus asks.
    """

    def __init__(self, read):
        self._read = read

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            state = self._read() or {}
        except Exception:
            log.failure("Reading the state for /metrics")
            state = {}
        channels = GaugeMetricFamily(f"{PREFIX}_channels", "Running channels by state", labels=["state"])
        for name, count in sorted((state.get("channels") or {}).items()):
            channels.add_metric([name], count)
        yield channels
        viewers = GaugeMetricFamily(f"{PREFIX}_viewers", "Viewers of running channels by format",
                                    labels=["format"])
        for name, count in sorted((state.get("viewers") or {}).items()):
            viewers.add_metric([name], count)
        yield viewers
        in_use = GaugeMetricFamily(f"{PREFIX}_source_slots_in_use", "Provider connections in use",
                                   labels=["source"])
        limit = GaugeMetricFamily(f"{PREFIX}_source_slots_limit",
                                  "Most provider connections allowed (sources with a limit)", labels=["source"])
        for source, (used, most) in sorted((state.get("slots") or {}).items()):
            in_use.add_metric([source], used)
            if most is not None:
                limit.add_metric([source], most)
        yield in_use
        yield limit
        waiting = GaugeMetricFamily(f"{PREFIX}_tunes_waiting_for_slot", "Tunes waiting for a free connection")
        waiting.add_metric([], state.get("waiting", 0))
        yield waiting
        served = CounterMetricFamily(f"{PREFIX}_served_bytes", "Bytes served to viewers (HLS segments and "
                                     "playlists, MPEG-TS responses)", labels=["format"])
        for name, count in sorted((state.get("served") or {}).items()):
            served.add_metric([name], count)
        yield served
