"""
The live HLS playlist a channel serves, kept by the daemon itself.

ffmpeg writes segments and a playlist of its own for each attempt (one
candidate stream, one ffmpeg run).  The daemon reads new segments from that
playlist and appends them to one :class:`LivePlaylist` per channel, so that
across restarts and failovers the viewer sees one continuous live playlist:
the media sequence only grows, names never repeat (each attempt has its own
name prefix), and ``#EXT-X-DISCONTINUITY`` marks each switch.
"""

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Segment:
    """
    One segment in the channel's playlist.
    """

    name: str
    duration: float
    sequence: int
    discontinuity: bool = False


def parse_media_playlist(text):
    """
    The ``(uri, duration)`` pairs of an HLS media playlist, in order.

    Tolerates a playlist cut short while being written: an ``#EXTINF``
    without its URI line is ignored.
    """
    segments = []
    duration = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            value = line[len("#EXTINF:") :].split(",", 1)[0]
            try:
                duration = float(value)
            except ValueError:
                duration = None
        elif line and not line.startswith("#"):
            if duration is not None:
                segments.append((line, duration))
            duration = None
    return segments


class LivePlaylist:
    """
    A sliding window of the last ``list_size`` segments of a channel.

    ``target_duration`` is stated from the start and, as RFC 8216 asks,
    never lowered; it only rises if a segment turns out longer (a stream
    whose keyframes are further apart than ``hls_time``).
    """

    def __init__(self, target_duration, list_size):
        self.target_duration = max(1, math.ceil(target_duration))
        self.list_size = list_size
        self.segments = deque()
        self.next_sequence = 0
        self.discontinuity_sequence = 0
        self._break_pending = False
        self._text = None

    def __len__(self):
        return len(self.segments)

    def mark_discontinuity(self):
        """
        The next segment comes from a different ffmpeg run (a restart or a
        failover) and must be announced with ``#EXT-X-DISCONTINUITY``.
        """
        if self.segments:
            self._break_pending = True

    def add(self, name, duration):
        """
        Append a finished segment; return the names that left the window.
        """
        segment = Segment(name, duration, self.next_sequence, self._break_pending)
        self._break_pending = False
        self.next_sequence += 1
        self.segments.append(segment)
        self.target_duration = max(self.target_duration, round(duration))
        gone = []
        while len(self.segments) > self.list_size:
            old = self.segments.popleft()
            gone.append(old.name)
            if self.segments[0].discontinuity:
                # The tag that left the window is counted so that clients
                # can keep timelines apart (RFC 8216, 4.3.3.3).
                self.discontinuity_sequence += 1
        self._text = None
        return gone

    @property
    def media_sequence(self):
        """
        The sequence number of the first segment in the window.
        """
        return self.segments[0].sequence if self.segments else self.next_sequence

    def names(self):
        """
        The names of the segments in the window.
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
            for index, segment in enumerate(self.segments):
                # A discontinuity on the first segment of the window has
                # already been counted in the discontinuity sequence.
                if segment.discontinuity and index > 0:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines.append(f"#EXTINF:{segment.duration:.3f},")
                lines.append(segment.name)
            self._text = "\n".join(lines) + "\n"
        return self._text
