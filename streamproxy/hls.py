"""
The live HLS playlist a channel serves (RFC 8216), kept by the daemon.

One :class:`LivePlaylist` per channel lives as long as the channel, across
every failover, and holds to these rules for its whole life:

- ``#EXT-X-TARGETDURATION`` is fixed when the channel starts and never
  changes; the segmenter never cuts a segment whose duration would round
  above it (section 4.3.3.1);
- a segment leaves the window only while the segments that stay still last
  at least three target durations (section 6.2.2), and never below
  ``min_segments``;
- ``#EXT-X-DISCONTINUITY`` stays in front of its segment as long as that
  segment is listed, and ``#EXT-X-DISCONTINUITY-SEQUENCE`` counts the tags
  that have left (section 6.2.2);
- the media sequence only grows and names never repeat;
- a segment that leaves stays available for its own duration plus the
  playlist's duration (section 6.2.2), which :meth:`LivePlaylist.add`
  reports to the caller, who deletes the file.
"""

import math
from collections import deque
from dataclasses import dataclass

# A live playlist lists at least this many target durations of media once
# it has that much (RFC 8216, 6.2.2).
MIN_WINDOW_TARGETS = 3

# Extra seconds a segment that left the playlist stays fetchable beyond
# what RFC 8216 asks, for clients that are slow to fetch.
RETENTION_MARGIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Segment:
    """
    One segment of the channel's playlist.
    """

    name: str
    duration: float
    sequence: int
    discontinuity: bool = False
    size: int = 0


def target_duration_for(hls_time):
    """
    The target duration, whole seconds, for a configured ``hls_time``.
    """
    return max(1, math.ceil(hls_time))


class LivePlaylist:
    """
    The window of a channel's segments and its rendered text.
    """

    def __init__(self, target_duration, min_segments=3):
        self.target_duration = int(target_duration)
        self.min_segments = max(1, int(min_segments))
        self.segments = deque()
        self.next_sequence = 0
        self.discontinuity_sequence = 0
        self._duration = 0.0
        self._longest = {}
        self._text = None

    def __len__(self):
        return len(self.segments)

    @property
    def duration(self):
        """
        Seconds of media listed now.
        """
        return self._duration

    @property
    def media_sequence(self):
        """
        The sequence number of the first segment listed.
        """
        return self.segments[0].sequence if self.segments else self.next_sequence

    def add(self, name, duration, discontinuity=False, size=0):
        """
        Append a finished segment of ``size`` bytes.  ``discontinuity``
        marks the first segment of another source (ignored for the very
        first segment).

        Returns ``[(name, keep_seconds)]`` of the segments that left the
        window, each with how long it must stay fetchable.
        """
        discontinuity = bool(discontinuity and self.next_sequence)
        self.segments.append(Segment(name, duration, self.next_sequence, discontinuity, size))
        self.next_sequence += 1
        self._duration += duration
        gone = []
        floor = MIN_WINDOW_TARGETS * self.target_duration
        while len(self.segments) > self.min_segments and self._duration - self.segments[0].duration >= floor:
            old = self.segments.popleft()
            self._duration -= old.duration
            if old.discontinuity:
                self.discontinuity_sequence += 1
            # At least the longest playlist that listed it (RFC 8216,
            # 6.2.2), and no less than the playlist it leaves behind.
            longest = max(self._longest.pop(old.name, 0.0), self._duration)
            gone.append((old.name, old.duration + longest + RETENTION_MARGIN_SECONDS))
        # RFC 8216 6.2.2 counts the longest playlist that listed a segment.
        for segment in self.segments:
            if self._longest.get(segment.name, 0.0) < self._duration:
                self._longest[segment.name] = self._duration
        self._text = None
        return gone

    def bitrate_kbps(self, count=3):
        """
        The bitrate of the newest ``count`` segments, kbit/s, or None.
        """
        newest = list(self.segments)[-count:]
        seconds = sum(s.duration for s in newest)
        return round(sum(s.size for s in newest) * 8 / 1000 / seconds) if seconds > 0 else None

    def names(self):
        """
        The names of the segments listed now.
        """
        return [segment.name for segment in self.segments]

    def render(self):
        """
        The playlist text (cached until the next change).
        """
        if self._text is None:
            lines = [
                "#EXTM3U",
                "#EXT-X-VERSION:3",
                f"#EXT-X-TARGETDURATION:{self.target_duration}",
                f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
                f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}",
            ]
            for segment in self.segments:
                if segment.discontinuity:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines.append(f"#EXTINF:{segment.duration:.3f},")
                lines.append(segment.name)
            self._text = "\n".join(lines) + "\n"
        return self._text
