"""
The last log lines, kept in memory for the log viewer.

A :class:`LogBuffer` is a ``twisted.logger`` observer that formats each
event into one entry (time, level, namespace, text, channel id), masks
every URL in it with :func:`streamproxy.urls.mask_text` before keeping it
(the table's stream URLs by their display form, others by heuristics),
and keeps the newest ``size`` entries in a ring buffer.  Each entry has a
sequence number, so the page asks only for what it has not seen yet.

:class:`LogService` adds the buffer to the global log publisher while the
daemon runs; the other observers (the console, twistd's log file) are left
as they are, so every line still goes there too.
"""

import re
from collections import deque

from twisted.application.service import Service
from twisted.logger import LogLevel, eventAsText, globalLogPublisher

from .urls import mask_text

# Level names from least to most severe, as the API and the page use them.
LEVELS = ("debug", "info", "warn", "error", "critical")
_LEVEL_RANK = {name: rank for rank, name in enumerate(LEVELS)}

# Most entries one answer of the API carries.
MAX_ENTRIES_PER_ANSWER = 2000

# What a channel id log field holds: "7" or "7.1".
_CHANNEL_ID = re.compile(r"^\d{1,9}(?:\.\d{1,4})?$")

# Event fields that may carry a channel id directly.
_CHANNEL_FIELDS = ("channel_id", "channel")

# Twisted's own chatter, one pair of lines for every outgoing HTTP
# connection (each Channels DVR poll): left out of the viewer, which shows
# the daemon's story; the console and twistd's log still get it.
NOISE_FORMATS = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})


class BadLogQuery(ValueError):
    """
    A log query that cannot be answered; the message says what is wrong (400).
    """


def level_name(event):
    """
    The level of a log event as one of :data:`LEVELS`; legacy events
    (``twisted.python.log``) are ``info``, or ``error`` when flagged so.
    """
    level = event.get("log_level")
    if isinstance(level, type(LogLevel.info)) and level.name in _LEVEL_RANK:
        return level.name
    if event.get("isError"):
        return "error"
    return "info"


def channel_of(event, text):
    """
    The channel id a log event is about, or None: its field ``channel_id``
    (or ``channel``) when that is a channel number.  Never read back out
    of the text.
    """
    for key in _CHANNEL_FIELDS:
        value = event.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            if _CHANNEL_ID.match(str(value)):
                return str(value)
    return None


def check_level(name):
    """
    ``name`` lower-cased if it is a level name, else :class:`BadLogQuery`.
    """
    folded = (name or "").strip().lower()
    if folded == "warning":
        folded = "warn"
    if folded not in _LEVEL_RANK:
        raise BadLogQuery(f"unknown level {name!r}; use one of {', '.join(LEVELS)}")
    return folded


class LogBuffer:
    """
    A ring buffer of the newest ``size`` log entries; call it with log
    events (it is an ``ILogObserver``).

    An entry is a dict: ``seq`` (1, 2, 3... for the daemon's life), ``time``
    (the event's ``log_time``, seconds since the epoch), ``level``, ``namespace``, ``text`` (URLs
    masked; a traceback follows the message when the event carries one)
    and ``channel`` (an id or None).
    """

    def __init__(self, size):
        self.size = size
        self._entries = deque(maxlen=size)
        self._last = 0

    def __call__(self, event):
        if event.get("log_format") in NOISE_FORMATS:
            return
        try:
            self.add(event)
        except Exception:
            # An observer that raises is removed by the publisher; one
            # strange event must not end the log viewer.
            pass

    def add(self, event):
        """
        Format, mask and keep one log event; returns the entry.
        """
        text = eventAsText(event, includeTimestamp=False, includeSystem=False)
        text = mask_text(text.rstrip("\n"))
        self._last += 1
        entry = {
            "seq": self._last,
            "time": event.get("log_time") or 0.0,
            "level": level_name(event),
            "namespace": str(event.get("log_namespace") or event.get("system") or "-"),
            "text": text,
            "channel": channel_of(event, text),
        }
        self._entries.append(entry)
        return entry

    @property
    def last(self):
        """
        The sequence number of the newest entry ever kept (0 when none).
        """
        return self._last

    def entries(self, after=0, level=None, channel=None, limit=MAX_ENTRIES_PER_ANSWER):
        """
        The kept entries newer than sequence number ``after``, oldest first,
        at least as severe as ``level`` and about ``channel`` when given;
        the newest ``limit`` of them.
        """
        minimum = _LEVEL_RANK[check_level(level)] if level else 0
        found = [
            entry
            for entry in self._entries
            if entry["seq"] > after
            and _LEVEL_RANK[entry["level"]] >= minimum
            and (channel is None or entry["channel"] == channel)
        ]
        return found[-limit:] if limit else found

    def channels(self):
        """
        The channel ids named by the kept entries, for the page's filter.
        """
        return sorted({e["channel"] for e in self._entries if e["channel"]}, key=_channel_key)


def _channel_key(channel_id):
    whole, _, fraction = channel_id.partition(".")
    return (int(whole), int(fraction) if fraction else -1)


class LogService(Service):
    """
    Feeds the global log publisher's events into ``buffer`` while running.

    ``publisher`` is the ``twisted.logger`` publisher to observe (the
    global one by default; tests give their own).
    """

    name = "logs"

    def __init__(self, buffer, publisher=None):
        self.buffer = buffer
        self._publisher = publisher if publisher is not None else globalLogPublisher

    def startService(self):
        """
        Start keeping log lines.
        """
        super().startService()
        self._publisher.addObserver(self.buffer)

    def stopService(self):
        """
        Stop keeping log lines (those kept stay readable).
        """
        super().stopService()
        self._publisher.removeObserver(self.buffer)
