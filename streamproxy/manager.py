"""
All running channels: starting them on the first request, sharing them
between clients, checking their health, and stopping the unused ones.
"""


from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger

from .content import ContentMemory
from .dvr import OFF, idle_decision
from .metrics import MetricsListener
from .periodic import periodic
from .processes import sweep_leftovers
from .session import ChannelSession, FailureMemory

log = Logger()

# How long a failed candidate ranks after the others, seconds.
FAILURE_PENALTY_SECONDS = 600.0

# Most seconds between two inactivity checks.
CLEANUP_INTERVAL_SECONDS = 5.0

# When a tune waits for a full source, a running stream of that source is
# stopped early for it if nobody requested it for this many target
# durations (hls_time; a player asks for the playlist about once per
# target duration), and at least TAKEOVER_MIN_IDLE_SECONDS, and Channels
# DVR does not report it watched or recorded.
TAKEOVER_IDLE_TARGETS = 2
TAKEOVER_MIN_IDLE_SECONDS = 8.0


class UnknownChannel(KeyError):
    """
    No row of the table has this Channel-id (404).
    """

    def __str__(self):
        return f"no channel {self.args[0]}"


class ChannelManager(MultiService):
    """
    The running :class:`ChannelSession` of each tuned channel.

    ``is_watched(channel_id)``, when given, tells whether Channels DVR
    reports the channel as watched or recorded; such a channel is not
    stopped for lack of requests.  ``dvr``, when given, is the
    :class:`~streamproxy.dvr.DVRTracker` (its ``is_watched`` is used when
    ``is_watched`` is not given; its state words stop reasons and its
    status goes to the status page).  ``health`` is told of every stream's
    fate (:class:`~streamproxy.health.HealthRecorder`), ``metrics`` of
    tunes, failovers and faults (:class:`~streamproxy.metrics.Metrics`).
    ``slate`` is a callable giving the slate (:mod:`streamproxy.slate`) or
    None.  ``idle_checks``, when set, is the
    :class:`~streamproxy.idle.IdleChecker`, whose check gives way first
    when a tune waits for a connection.
    """

    name = "channels"

    def __init__(self, settings, store, ranking, slots, reactor=None, is_watched=None,
                 dvr=None, health=None, metrics=None, slate=None):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.settings = settings
        self.store = store
        self.ranking = ranking
        self.slots = slots
        self.reactor = reactor
        if is_watched is None and dvr is not None:
            is_watched = dvr.is_watched
        self.is_watched = is_watched or (lambda channel_id: False)
        self.dvr = dvr
        self.health = health
        self.metrics = metrics if metrics is not None else MetricsListener()
        self.slate = slate
        self.idle_checks = None
        self.content_memory = ContentMemory()
        self._shortages = {}
        self._making_room = set()
        if slots.on_shortage is None:
            slots.on_shortage = self._shortage
        self.failures = FailureMemory(FAILURE_PENALTY_SECONDS)
        self.sessions = {}
        self.ended = []
        self._sequence = 0
        periodic(settings.buffer_check_interval, self._check_health, "the health check of running channels",
                 reactor).setServiceParent(self)
        periodic(min(CLEANUP_INTERVAL_SECONDS, settings.inactivity_timeout / 2), self._stop_unused,
                 "the check for unused channels", reactor).setServiceParent(self)

    def startService(self):
        """
        Clear what an earlier run left behind, then start the periodic checks.
        """
        sweep_leftovers(self.settings.segment_dir)
        super().startService()

    def stopService(self):
        """
        Stop every channel; fires once every ffmpeg and ffprobe has exited
        and every segment folder is gone.
        """
        timers = super().stopService()
        stopped = self.stop_all("the daemon is shutting down")
        return defer.DeferredList([timers, stopped], consumeErrors=True)

    def stop_all(self, reason):
        """
        Stop every running channel.
        """
        stops = [session.stop(reason) for session in list(self.sessions.values())]
        return defer.DeferredList(stops, consumeErrors=True)

    def session(self, channel_id):
        """
        The running session of ``channel_id``, or None.
        """
        return self.sessions.get(channel_id)

    def tune(self, channel_id, client=None):
        """
        The session for ``channel_id``, started if it is not running.

        :raises UnknownChannel: when the table has no such channel.
        """
        session = self.sessions.get(channel_id)
        if session is None:
            candidates = self.store.catalog.channels.get(channel_id)
            if not candidates:
                raise UnknownChannel(channel_id)
            self._sequence += 1
            tag = _base36(int(self.reactor.seconds())) + _base36(self._sequence)
            session = ChannelSession(
                channel_id,
                candidates,
                settings=self.settings,
                slots=self.slots,
                ranking=self.ranking,
                failures=self.failures,
                reactor=self.reactor,
                tag=f"s{tag}a",
                on_finished=self._finished,
                health=self.health,
                metrics=self.metrics,
                content_memory=self.content_memory,
                slate=self.slate,
            )
            self.sessions[channel_id] = session
            session.start()
        session.touch(client)
        return session

    def playlist(self, channel_id, client=None):
        """
        A Deferred firing with the channel's live playlist text, starting
        the channel when needed; ``client`` (an address) counts as an HLS
        viewer.
        """
        return self.tune(channel_id, client).wait_ready()

    def segment_path(self, channel_id, name, touch=True, client=None):
        """
        The file of a segment of a running channel, or None.  A request
        for it counts as activity unless ``touch`` is false (HEAD).
        """
        session = self.sessions.get(channel_id)
        if session is None:
            return None
        if touch:
            session.touch(client)
        return session.segment_path(name)

    def force_switch(self, channel_id):
        """
        End the channel's current stream and move to the next candidate.

        :raises UnknownChannel: when the channel is not running.
        :return: the label of the candidate that was left, or None.
        """
        session = self.sessions.get(channel_id)
        if session is None:
            raise UnknownChannel(channel_id)
        return session.force_switch()

    def stop_channel(self, channel_id, reason="stopped by request"):
        """
        Stop one running channel; a Deferred that fires when it has.
        """
        session = self.sessions.get(channel_id)
        if session is None:
            raise UnknownChannel(channel_id)
        return session.stop(reason)

    def _finished(self, session):
        if self.sessions.get(session.channel_id) is session:
            del self.sessions[session.channel_id]
        self.ended = (self.ended + [session.status()])[-20:]

    def _check_health(self):
        for session in list(self.sessions.values()):
            try:
                session.check()
            except Exception:
                log.failure("channel {channel_id}: health check", channel_id=session.channel_id)

    def _stop_unused(self):
        now = self.reactor.seconds()
        timeout = self.settings.inactivity_timeout
        for session in list(self.sessions.values()):
            try:
                if session.ended:
                    continue
                stop, reason = idle_decision(
                    session.idle_seconds(now),
                    timeout,
                    self._dvr_state(),
                    self.is_watched(session.channel_id),
                )
                if stop:
                    session.stop(reason)
            except Exception:
                log.failure("channel {channel_id}: inactivity check", channel_id=session.channel_id)
        # A stream may become idle while a tune waits for its source.  A
        # shortage is remembered as long as a tune may wait for a slot.
        if not self.slots.waiting():
            self._shortages.clear()
        for sources, since in list(self._shortages.items()):
            if now - since > self.settings.stream_start_timeout:
                del self._shortages[sources]
            else:
                self._make_room(sources)

    def _content_status(self, now):
        slate = self.slate() if self.slate is not None else None
        return _content_status_of(self.settings, self.content_memory, now, slate)

    def _dvr_state(self):
        return self.dvr.current_state() if self.dvr is not None else OFF

    def _shortage(self, sources):
        # Called from inside SourceSlots.wait_for_room: act once the waiting
        # tune has finished registering.
        sources = frozenset(sources)
        self._shortages[sources] = self.reactor.seconds()
        self.reactor.callLater(0, self._make_room, sources)

    def _make_room(self, sources):
        """
        Stop the idlest running stream on one of ``sources`` that nobody
        requested for the takeover time and Channels DVR does not report
        active, so a tune waiting for that source gets its slot.
        """
        if not self.slots.waiting():
            return
        # An idle check gives way to a tune at once.
        if self.idle_checks is not None and self.idle_checks.release(sources):
            return
        self._making_room &= set(self.sessions.values())
        if self._making_room:
            return  # a stream stopped for room has not let go of its slot yet
        # A stream started alongside a live one gives way first.
        if any([session.release_spare(sources) for session in list(self.sessions.values())]):
            return
        threshold = min(
            self.settings.inactivity_timeout,
            max(TAKEOVER_MIN_IDLE_SECONDS, TAKEOVER_IDLE_TARGETS * self.settings.hls_time),
        )
        now = self.reactor.seconds()
        best = None
        for session in list(self.sessions.values()):
            try:
                attempt = session.attempt
                if session.ended or attempt is None or attempt.candidate.source not in sources:
                    continue
                idle = session.idle_seconds(now)
                stop, reason = idle_decision(
                    idle, threshold, self._dvr_state(), self.is_watched(session.channel_id)
                )
                if stop and (best is None or idle > best[0]):
                    best = (idle, session, reason, attempt.candidate.source)
            except Exception:
                log.failure("channel {channel_id}: slot takeover check", channel_id=session.channel_id)
        if best is not None:
            _, session, reason, source = best
            self._making_room.add(session)
            session.stop(f"{reason}; its {source} slot goes to a channel waiting for it")

    def running_channels(self):
        """
        The ids of the channels running now.
        """
        return set(self.sessions)

    def metrics_snapshot(self):
        """
        The gauges of ``/metrics``: channels by state, viewers by format,
        connections in use and limits per source, tunes waiting for one.
        """
        channels = {}
        viewers = {"hls": 0, "ts": 0}
        for session in list(self.sessions.values()):
            channels[session.state.value] = channels.get(session.state.value, 0) + 1
            for kind, entries in session.viewers().items():
                viewers[kind] = viewers.get(kind, 0) + len(entries)
        return {
            "channels": channels,
            "viewers": viewers,
            "slots": self.slots.usage({c.source for c in self.store.catalog.candidates}),
            "waiting": self.slots.waiting(),
        }

    def status(self):
        """
        The running channels and slot usage, for the status page and API.
        """
        now = self.reactor.seconds()
        return {
            "content_checks": self._content_status(now),
            "idle_checks": self.idle_checks.status() if self.idle_checks is not None else {"enabled": False},
            "channels": [s.status() for s in self.sessions.values()],
            "sources": {
                source: {"in_use": used, "limit": limit}
                for source, (used, limit) in self.slots.usage(
                    {c.source for c in self.store.catalog.candidates}
                ).items()
            },
            "waiting_for_slot": self.slots.waiting(),
            "channels_dvr": self.dvr.status() if self.dvr is not None else {"state": OFF},
            "recently_ended": list(self.ended),
        }


def _content_status_of(settings, memory, now, slate):
    checks = settings.content_checks
    return {
        "black_seconds": checks.black_seconds,
        "freeze_seconds": checks.freeze_seconds,
        "silence_seconds": checks.silence_seconds,
        "skip_channels": list(checks.skip_channels),
        "tolerated": memory.status(now),
        "slate": "off" if not settings.slate else ("ready" if slate is not None else "not made"),
    }


def _base36(number):
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if not number:
            return text
