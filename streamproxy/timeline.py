"""
A channel's one continuous output stream, spliced from the streams of
successive attempts.

Each ffmpeg run numbers its output from its own clock and starts its
continuity counters afresh.  Played back to back, a failover would send a
player's clock back to zero and make decoders report corrupt packets.  The
:class:`Timeline` rewrites every unit it passes on so that, for the viewer,
a channel is one stream:

- timestamps (PTS, DTS, PCR) of a new source continue where the previous
  source's ended (an offset fixed at the splice, 33-bit wrap handled);
- continuity counters run on per PID across sources;
- the PMT's version changes at every splice, so a demuxer re-reads the
  stream layout when a new source carries other codecs;
- a source starts at an access point: PAT, PMT, then a video keyframe.

What comes out is a list of :class:`Piece` s, each marked with what it
starts (an access point, a video frame), which the segmenter cuts on and
the TS viewers are fed from.
"""

from dataclasses import dataclass

from . import mpegts
from .mpegts import AUDIO, PAT, PES, PMT, VIDEO, CLOCK_HZ, TIMESTAMP_HALF, TIMESTAMP_MODULO

# What a piece begins with.
ACCESS = "access"  # PAT, PMT and a video keyframe: a player can start here
FRAME = "frame"  # a video frame that is not a keyframe

# A video frame's duration when none has been measured yet (25 fps).
DEFAULT_FRAME_TICKS = CLOCK_HZ // 25

# Frame intervals outside this range are gaps or jumps, not frame durations.
MAX_FRAME_TICKS = CLOCK_HZ // 2


@dataclass(slots=True)
class Piece:
    """
    A run of output bytes.  ``mark`` is :data:`ACCESS`, :data:`FRAME` or
    None; ``time`` is the output DTS of the video frame it starts, in
    seconds, or None; ``splice`` says it is the first piece of a new
    source; ``source`` is the number that source was spliced in with.
    """

    data: bytes
    mark: str | None = None
    time: float | None = None
    splice: bool = False
    source: int = 0


def unwrap(value, reference):
    """
    The unbounded timestamp nearest ``reference`` whose value modulo 2**33
    is ``value``.
    """
    return reference + ((value - reference + TIMESTAMP_HALF) % TIMESTAMP_MODULO) - TIMESTAMP_HALF


class Timeline:
    """
    The rewriting state of one channel's output.  Call :meth:`splice`
    before the first unit of each source, then :meth:`push` its units.
    """

    def __init__(self):
        self._cc = {}
        self._version = 0
        self._offset = 0
        self._reference = None
        self._started = False
        self._splice_pending = False
        self._held = []
        self._pat = None
        self._pmt = None
        self._frame_ticks = DEFAULT_FRAME_TICKS
        self._last_dts = None
        self._max_pts = None
        # Audio, per PID: several tracks interleave, each on its own clock.
        self._audio_last = {}  # PID: output PTS of its last PES, this source
        self._audio_ticks = {}  # PID: the interval of its PES
        self._audio_end = None  # output time right after the latest audio
        self._audio_floor = None  # the old source's audio end at the last splice
        self.splices = 0
        self.dropped_units = 0
        self.source = 0

    @property
    def end(self):
        """
        The output time (unbounded 90 kHz ticks) right after the last video
        frame passed on, or None before any.
        """
        if self._last_dts is None:
            return None
        return max(self._last_dts, self._max_pts) + self._frame_ticks

    @property
    def end_seconds(self):
        """
        :attr:`end` in seconds, or None.
        """
        end = self.end
        return None if end is None else end / CLOCK_HZ

    def splice(self, source=0):
        """
        The units pushed from now on come from a new source, numbered
        ``source`` in the pieces.  Its units are dropped until its first
        access point.
        """
        self.source = source
        self._started = False
        self._held = []
        self._splice_pending = True

    def push(self, unit):
        """
        Rewrite ``unit`` and return the pieces it completes (PSI is held
        until the PES after it shows whether it opens an access point).
        """
        if unit.kind != PES:
            if unit.kind in (PAT, PMT) or self._started:
                self._held = [u for u in self._held if u.kind != unit.kind or u.kind not in (PAT, PMT)]
                self._held.append(unit)
            return []
        if not self._started:
            if unit.stream != VIDEO or not unit.key or unit.dts is None:
                self.dropped_units += 1
                return []
            self._begin(unit)
        return self._emit(unit)

    def _begin(self, unit):
        self._reference = unit.dts
        if self._last_dts is None:
            self._offset = 0
        else:
            # The new keyframe follows the last frame shown, and its
            # presentation follows every frame and audio sample before it.
            # (Unwrapped: a PTS just past 2**33 with its DTS just before.)
            gap = unwrap(unit.pts, unit.dts) - unit.dts
            target = self.end if self._audio_end is None else max(self.end, self._audio_end - gap)
            self._offset = target - unit.dts
            self._version = (self._version + 1) % 32
            self._audio_floor = self._audio_end
            self._audio_last = {}
            self.splices += 1
        self._started = True

    def _emit(self, unit):
        data = unit.data
        pieces = []
        held, self._held = self._held, []
        splice, self._splice_pending = self._splice_pending, False
        mark = None
        time = None
        if unit.stream == VIDEO and unit.dts is not None:
            dts = unwrap(unit.dts, self._reference) + self._offset
            pts = unwrap(unit.pts, self._reference) + self._offset
            self._reference = unwrap(unit.dts, self._reference)
            if self._last_dts is not None and 0 < dts - self._last_dts <= MAX_FRAME_TICKS and not splice:
                self._frame_ticks = dts - self._last_dts
            self._last_dts = dts
            self._max_pts = pts if self._max_pts is None or splice else max(self._max_pts, pts)
            self._write_pes_times(data, pts, dts)
            mark = ACCESS if unit.key else FRAME
            time = dts / CLOCK_HZ
        elif unit.pts is not None:
            pts = unwrap(unit.pts, self._reference) + self._offset
            dts = None if unit.dts is None else unwrap(unit.dts, self._reference) + self._offset
            if unit.stream == AUDIO:
                last = self._audio_last.get(unit.pid)
                if (last is not None and pts <= last) or (self._audio_floor is not None and pts < self._audio_floor):
                    # The start of a new source overlapping the last audio
                    # of the old one: a clock must never go back.
                    self.dropped_units += 1
                    return self._flush_held(held) if held else []
                if last is not None and pts - last <= MAX_FRAME_TICKS:
                    self._audio_ticks[unit.pid] = pts - last
                self._audio_last[unit.pid] = pts
                end = pts + self._audio_ticks.get(unit.pid, 0)
                self._audio_end = end if self._audio_end is None else max(self._audio_end, end)
            self._write_pes_times(data, pts, dts)
        if mark == ACCESS:
            prefix = self._access_prefix(held)
            self._rewrite_packets(data)
            return [Piece(prefix + bytes(data), ACCESS, time, splice, self.source)]
        if held:
            pieces.extend(self._flush_held(held))
        self._rewrite_packets(data)
        pieces.append(Piece(bytes(data), mark, time, splice, self.source))
        return pieces

    def _write_pes_times(self, data, pts, dts):
        start = mpegts.payload_offset(data)
        if start is None:
            return
        old_pts, old_dts, at = mpegts.pes_timestamps(data, start)
        if at is None:
            return
        mpegts.write_timestamp(data, at, pts)
        if dts is not None and data[start + 7] >> 6 == 3:
            mpegts.write_timestamp(data, at + 5, dts)

    def _access_prefix(self, held):
        # PAT and PMT right before the keyframe, whether ffmpeg put them
        # there or not; other tables held meanwhile go first.
        out = bytearray()
        for unit in held:
            if unit.kind not in (PAT, PMT):
                self._rewrite_packets(unit.data)
                out += unit.data
        pat = next((u for u in held if u.kind == PAT), None)
        pmt = next((u for u in held if u.kind == PMT), None)
        if pat is not None:
            self._pat = bytearray(pat.data)
        if pmt is not None:
            self._pmt = bytearray(pmt.data)
        if self._pmt is not None:
            # Also when the stored PMT stands in for a new source's own.
            mpegts.set_section_version(self._pmt, 0, self._version)
        out += self.psi_prefix()
        return bytes(out)

    def _flush_held(self, held):
        out = bytearray()
        for unit in held:
            if unit.kind == PMT:
                mpegts.set_section_version(unit.data, 0, self._version)
                self._pmt = bytearray(unit.data)
            elif unit.kind == PAT:
                self._pat = bytearray(unit.data)
            self._rewrite_packets(unit.data)
            out += unit.data
        return [Piece(bytes(out), source=self.source)]

    def psi_prefix(self):
        """
        Copies of the current PAT and PMT, numbered on from the last ones
        sent: what a segment that does not start at an access point begins
        with, so each segment can be read on its own.
        """
        out = bytearray()
        for table in (self._pat, self._pmt):
            if table is not None:
                copy = bytearray(table)
                self._rewrite_packets(copy, timestamps=False)
                out += copy
        return bytes(out)

    def _rewrite_packets(self, data, timestamps=True):
        cc = self._cc
        offset = self._offset
        reference = self._reference
        for at in range(0, len(data), mpegts.PACKET_SIZE):
            b3 = data[at + 3]
            pid = ((data[at + 1] & 0x1F) << 8) | data[at + 2]
            if b3 & 0x10:
                counter = (cc.get(pid, 15) + 1) & 0x0F
                cc[pid] = counter
                data[at + 3] = (b3 & 0xF0) | counter
            if timestamps and b3 & 0x20 and data[at + 4] >= 7 and data[at + 5] & 0x10:
                base = mpegts.read_pcr_base(data, at + 6)
                if reference is not None:
                    base = unwrap(base, reference)
                mpegts.write_pcr_base(data, at + 6, base + offset)
