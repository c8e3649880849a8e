"""
Cutting a channel's continuous output into HLS segment files.

The daemon cuts segments itself from the stream the :class:`~streamproxy.
timeline.Timeline` puts out, so it controls every duration: a segment
starts at a video keyframe whenever the provider's keyframes allow it, and
is cut between keyframes when they are too far apart, so no ``#EXTINF``
ever rounds above the target duration, whatever the provider sends.  Each
segment starts with a PAT and PMT so it can be read on its own.
"""

import os
from dataclasses import dataclass

from .timeline import ACCESS, FRAME

# A segment is cut before its duration would pass the target duration by
# more than this (an #EXTINF of target + 0.25 still rounds to the target).
TOLERANCE_SECONDS = 0.25

# Never cut early for a keyframe (to keep the next segment from running
# long) when that would leave a segment shorter than this.
MIN_EARLY_CUT_SECONDS = 1.0

# The channel's first segment is cut after this much media, at any frame,
# so a tune is answered after about a second of media instead of a whole
# segment.
FIRST_SEGMENT_SECONDS = 1.0


@dataclass(frozen=True)
class CutPolicy:
    """
    Where segments end: ``goal`` seconds (``hls_time``) at a keyframe,
    never above ``target`` (the playlist's target duration), and the first
    segment of a channel after ``first`` seconds.
    """

    goal: float
    target: int
    first: float = FIRST_SEGMENT_SECONDS

    def should_cut(self, duration, mark, index, frame, gop):
        """
        Whether the segment under way (``index`` counts the channel's
        segments from 0), ``duration`` seconds long up to this piece,
        ends before the piece.  ``mark`` says what the piece starts;
        ``frame`` is the video frame interval and ``gop`` the keyframe
        interval seen so far (None until known), in seconds.
        """
        if mark not in (ACCESS, FRAME):
            return False
        # Durations are differences of float seconds: allow for rounding.
        duration += 1e-6
        if index == 0 and duration >= self.first:
            return True
        if duration + frame > self.target + TOLERANCE_SECONDS:
            return True
        if mark != ACCESS:
            return False
        if duration >= self.goal - frame / 2:
            return True
        # The next keyframe would come too late: end here rather than cut
        # the next segment between keyframes.
        return gop is not None and duration >= MIN_EARLY_CUT_SECONDS and duration + gop > self.target + TOLERANCE_SECONDS


class Segmenter:
    """
    Writes pieces into segment files in ``folder`` and lists each finished
    one in ``playlist``.  A segment is named ``<tag><source>_<sequence>.ts``
    after the source its pieces came from and its media sequence number.

    :meth:`feed` and :meth:`flush` return what left the playlist, as
    :meth:`~streamproxy.hls.LivePlaylist.add` does.
    """

    def __init__(self, folder, tag, playlist, policy, timeline):
        self.folder = folder
        self.tag = tag
        self.playlist = playlist
        self.policy = policy
        self.timeline = timeline
        self.bytes_written = 0
        self._file = None
        self._name = None
        self._size = 0
        self._start = None
        self._discontinuity = False
        self._index = 0
        self._frame = 0.04
        self._last_frame_time = None
        self._last_key_time = None
        self._gop = None

    def feed(self, piece):
        """
        Add ``piece`` to the segment under way, first ending that segment
        when the piece starts a new source or the policy says so.  A
        segment that starts between keyframes gets a PAT and PMT put in
        front of ``piece.data``, so pass the piece on to other consumers
        after this.
        """
        gone = []
        if piece.splice and self._file is not None:
            # The old source's last segment ends with its own last frame,
            # not where the new source is placed (after the old audio, or
            # after reordered frames), which may be later.
            gone = self.flush()
        if piece.time is not None:
            self._learn(piece)
        if self._file is not None and piece.time is not None:
            duration = piece.time - self._start
            if self.policy.should_cut(duration, piece.mark, self._index, self._frame, self._gop):
                gone = self._finish(duration)
        if self._file is None:
            if piece.mark not in (ACCESS, FRAME):
                return gone  # a segment starts with a video frame
            self._open(piece)
        self._write(piece.data)
        return gone

    def flush(self, end=None):
        """
        End the segment under way now (its source ended or stalled) at
        output time ``end`` (seconds).  By default it ends a frame interval
        after its last video frame, the way a cut segment is measured: the
        timeline's end can lie later (a B-frame shown after the last one
        decoded), and counting that could take the duration past what the
        cut policy allows.
        """
        if self._file is None:
            return []
        if end is None:
            end = self._last_frame_time + self._frame
        duration = max(0.0, end - self._start)
        return self._finish(duration)

    def close(self):
        """
        Drop the segment under way (the channel is stopping).
        """
        if self._file is not None:
            self._file.close()
            self._file = None
            _remove(os.path.join(self.folder, self._name))

    @property
    def pending_seconds(self):
        """
        Seconds of media written to the segment under way.
        """
        if self._file is None or self.timeline.end_seconds is None:
            return 0.0
        return max(0.0, self.timeline.end_seconds - self._start)

    def _learn(self, piece):
        if self._last_frame_time is not None:
            step = piece.time - self._last_frame_time
            if 0 < step < 0.5 and not piece.splice:
                self._frame = step
        self._last_frame_time = piece.time
        if piece.mark == ACCESS:
            if self._last_key_time is not None and not piece.splice:
                self._gop = piece.time - self._last_key_time
            self._last_key_time = piece.time

    def _open(self, piece):
        self._name = f"{self.tag}{piece.source:02d}_{self.playlist.next_sequence:05d}.ts"
        self._file = open(os.path.join(self.folder, self._name), "wb")
        self._size = 0
        self._start = piece.time
        self._discontinuity = piece.splice and self.playlist.next_sequence > 0
        if piece.mark != ACCESS:
            # Every consumer of the piece gets the tables too, so the TS
            # viewers' counters stay in step with the segments'.
            piece.data = self.timeline.psi_prefix() + piece.data

    def _write(self, data):
        self._file.write(data)
        self._size += len(data)
        self.bytes_written += len(data)

    def _finish(self, duration):
        self._file.close()
        self._file = None
        self._index += 1
        return self.playlist.add(self._name, duration, self._discontinuity, self._size)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
