"""
MPEG transport stream, as far as streamproxy needs it (ISO/IEC 13818-1).

ffmpeg remuxes every upstream to MPEG-TS on a pipe; the daemon cuts that
byte stream into units, rewrites timestamps and continuity counters so a
channel is one continuous stream across failovers, and serves it as HLS
segments and as a plain TS response.  Everything here is pure: bytes in,
facts and bytes out.

A *unit* is a run of packets that starts at a boundary: a PSI packet (PAT,
PMT, SDT) or a packet that starts a PES (``payload_unit_start_indicator``).
ffmpeg's muxer writes each PES contiguously, so a unit is one whole PES (a
video frame, a few audio frames) or one table, and the packets up to the
next boundary are known to be complete.
"""

from dataclasses import dataclass

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
SDT_PID = 0x0011
NULL_PID = 0x1FFF

# Presentation and decoding timestamps are 33-bit counts of a 90 kHz clock.
CLOCK_HZ = 90_000
TIMESTAMP_MODULO = 1 << 33
TIMESTAMP_HALF = 1 << 32

# Stream types (PMT) that carry video, and those that carry audio.  Type 6
# (private data) is audio only when a descriptor says so; it is left as
# "other" here, which is all the daemon needs (video drives the cuts).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xD1, 0xEA})
AUDIO_STREAM_TYPES = frozenset({0x03, 0x04, 0x0F, 0x11, 0x1C, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87})

VIDEO = "video"
AUDIO = "audio"
OTHER = "other"

PAT = "pat"
PMT = "pmt"
PSI = "psi"
PES = "pes"


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32(data):
    """
    The CRC-32/MPEG-2 of ``data``, as PSI sections carry it.
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def null_packet():
    """
    One null packet (PID 0x1FFF): bytes that every demuxer skips, for
    keeping a connection alive while a channel starts.
    """
    return bytes([SYNC_BYTE, 0x1F, 0xFF, 0x10]) + b"\xff" * (PACKET_SIZE - 4)


def packet_pid(buf, offset=0):
    """
    The PID of the packet at ``offset``.
    """
    return ((buf[offset + 1] & 0x1F) << 8) | buf[offset + 2]


def payload_offset(buf, offset=0):
    """
    Where the payload of the packet at ``offset`` starts, or None when the
    packet carries none.
    """
    control = (buf[offset + 3] >> 4) & 3
    if not control & 1:
        return None
    start = offset + 4
    if control & 2:
        start += 1 + buf[offset + 4]
    return start if start < offset + PACKET_SIZE else None


def random_access(buf, offset=0):
    """
    Whether the packet at ``offset`` sets ``random_access_indicator`` (ffmpeg
    sets it on the first packet of every video keyframe).
    """
    return bool((buf[offset + 3] & 0x20) and buf[offset + 4] and buf[offset + 5] & 0x40)


def read_timestamp(buf, offset):
    """
    The 33-bit PTS or DTS stored in the five bytes at ``offset``.
    """
    return (
        ((buf[offset] >> 1) & 0x07) << 30
        | buf[offset + 1] << 22
        | (buf[offset + 2] >> 1) << 15
        | buf[offset + 3] << 7
        | buf[offset + 4] >> 1
    )


def write_timestamp(buf, offset, value):
    """
    Store ``value`` (taken modulo 2**33) as the PTS or DTS at ``offset``,
    keeping the 4-bit prefix and the marker bits already there.
    """
    value %= TIMESTAMP_MODULO
    buf[offset] = (buf[offset] & 0xF0) | ((value >> 29) & 0x0E) | 1
    buf[offset + 1] = (value >> 22) & 0xFF
    buf[offset + 2] = ((value >> 14) & 0xFE) | 1
    buf[offset + 3] = (value >> 7) & 0xFF
    buf[offset + 4] = ((value << 1) & 0xFE) | 1


def pes_timestamps(buf, offset):
    """
    ``(pts, dts, header_offset)`` of the PES that starts at payload offset
    ``offset``: the timestamps (None when absent; dts equals pts when only
    a PTS is present) and where the PTS field is.  ``(None, None, None)``
    when the payload does not start a PES with timestamps.
    """
    if buf[offset] != 0 or buf[offset + 1] != 0 or buf[offset + 2] != 1:
        return None, None, None
    stream_id = buf[offset + 3]
    # Streams without the optional PES header (padding, private_stream_2, ...).
    if stream_id in (0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF):
        return None, None, None
    flags = buf[offset + 7] >> 6
    if not flags & 2:
        return None, None, None
    pts = read_timestamp(buf, offset + 9)
    dts = read_timestamp(buf, offset + 14) if flags == 3 else pts
    return pts, dts, offset + 9


def pcr_offset(buf, offset=0):
    """
    Where the PCR of the packet at ``offset`` is, or None when it has none.
    """
    if not buf[offset + 3] & 0x20 or buf[offset + 4] < 7 or not buf[offset + 5] & 0x10:
        return None
    return offset + 6


def read_pcr_base(buf, offset):
    """
    The 33-bit 90 kHz base of the PCR at ``offset``.
    """
    return (
        buf[offset] << 25 | buf[offset + 1] << 17 | buf[offset + 2] << 9 | buf[offset + 3] << 1 | buf[offset + 4] >> 7
    )


def write_pcr_base(buf, offset, value):
    """
    Store ``value`` (modulo 2**33) as the PCR base at ``offset``, keeping the
    27 MHz extension.
    """
    value %= TIMESTAMP_MODULO
    buf[offset] = (value >> 25) & 0xFF
    buf[offset + 1] = (value >> 17) & 0xFF
    buf[offset + 2] = (value >> 9) & 0xFF
    buf[offset + 3] = (value >> 1) & 0xFF
    buf[offset + 4] = ((value << 7) & 0x80) | (buf[offset + 4] & 0x7F)


def psi_section(buf, offset=0):
    """
    ``(start, end)`` of the section that begins in the packet at ``offset``
    (after its pointer field), or None when it does not fit in the packet.
    """
    start = payload_offset(buf, offset)
    if start is None or not buf[offset + 1] & 0x40:
        return None
    start += 1 + buf[start]
    if start + 3 > offset + PACKET_SIZE:
        return None
    length = ((buf[start + 1] & 0x0F) << 8) | buf[start + 2]
    end = start + 3 + length
    if end > offset + PACKET_SIZE or length < 9:
        return None
    return start, end


def parse_pat(buf, offset=0):
    """
    The PMT PID of the first program the PAT at ``offset`` lists, or None.
    """
    bounds = psi_section(buf, offset)
    if bounds is None or buf[bounds[0]] != 0x00:
        return None
    start, end = bounds
    for entry in range(start + 8, end - 4, 4):
        program = (buf[entry] << 8) | buf[entry + 1]
        if program != 0:
            return ((buf[entry + 2] & 0x1F) << 8) | buf[entry + 3]
    return None


def parse_pmt(buf, offset=0):
    """
    ``{pid: kind}`` (``video``, ``audio`` or ``other``) of the elementary
    streams the PMT at ``offset`` lists, or None when it is not a whole PMT.
    """
    bounds = psi_section(buf, offset)
    if bounds is None or buf[bounds[0]] != 0x02:
        return None
    start, end = bounds
    info_length = ((buf[start + 10] & 0x0F) << 8) | buf[start + 11]
    entry = start + 12 + info_length
    streams = {}
    while entry + 5 <= end - 4:
        stream_type = buf[entry]
        pid = ((buf[entry + 1] & 0x1F) << 8) | buf[entry + 2]
        es_length = ((buf[entry + 3] & 0x0F) << 8) | buf[entry + 4]
        if stream_type in VIDEO_STREAM_TYPES:
            streams[pid] = VIDEO
        elif stream_type in AUDIO_STREAM_TYPES:
            streams[pid] = AUDIO
        else:
            streams[pid] = OTHER
        entry += 5 + es_length
    return streams


def set_section_version(buf, offset, version):
    """
    Give the single-packet section at ``offset`` ``version`` (0 to 31) and a
    new CRC, in place.  Returns False (and changes nothing) when the
    section does not fit in the packet.
    """
    bounds = psi_section(buf, offset)
    if bounds is None:
        return False
    start, end = bounds
    buf[start + 5] = (buf[start + 5] & 0xC1) | ((version & 0x1F) << 1)
    crc = crc32(buf[start : end - 4])
    buf[end - 4 : end] = crc.to_bytes(4, "big")
    return True


@dataclass(slots=True)
class Unit:
    """
    A run of packets from one boundary to the next.

    ``kind`` is ``pat``, ``pmt``, ``psi`` (another table) or ``pes``;
    ``stream`` is ``video``, ``audio`` or ``other`` for a PES; ``pts`` and
    ``dts`` are the PES's timestamps (input clock, 33 bits) when it has
    them; ``key`` says a video PES starts a keyframe.
    """

    data: bytearray
    pid: int
    kind: str
    stream: str = OTHER
    pts: int | None = None
    dts: int | None = None
    key: bool = False


class TSReader:
    """
    Turns a byte stream of TS packets, fed in chunks of any size, into
    :class:`Unit` s.  The unit being read is held back until the next
    boundary shows it complete.  Null packets are dropped; bytes before a
    sync byte are skipped (``skipped`` counts them).
    """

    def __init__(self):
        self._rest = b""
        self._open = None
        self._open_pid = None
        self.pmt_pid = None
        self.streams = {}
        self.skipped = 0
        # Looking for sync: a sync byte is believed only once the byte a
        # packet after it is a sync byte too, so what is read never depends
        # on where the chunks happened to end.
        self._hunting = True

    def feed(self, data):
        """
        The units completed by ``data``.
        """
        buf = self._rest + data if self._rest else data
        start = 0
        size = len(buf)
        if self._hunting or (size and buf[0] != SYNC_BYTE):
            start = self._resync(buf, 0)
        units = []
        pending = self._open
        pieces = None if pending is None else [pending]
        open_pid = self._open_pid
        psi_pids = (PAT_PID, SDT_PID, self.pmt_pid)
        end = start if self._hunting else start + (size - start) // PACKET_SIZE * PACKET_SIZE
        offset = start
        run_start = None
        while offset < end:
            if buf[offset] != SYNC_BYTE:
                if run_start is not None:
                    pieces.append(buf[run_start:offset])
                    run_start = None
                offset = self._resync(buf, offset)
                end = offset if self._hunting else offset + (size - offset) // PACKET_SIZE * PACKET_SIZE
                continue
            b1 = buf[offset + 1]
            pid = ((b1 & 0x1F) << 8) | buf[offset + 2]
            if pid == NULL_PID:
                if run_start is not None:
                    pieces.append(buf[run_start:offset])
                    run_start = None
                offset += PACKET_SIZE
                continue
            if b1 & 0x40 or (pid in psi_pids and pid != open_pid):
                # (A table's later packets, without the start flag, continue
                # its unit: a PMT listing many streams spans packets.)
                open_pid = pid
                if pieces is not None:
                    if run_start is not None:
                        pieces.append(buf[run_start:offset])
                    unit = self._finish(pieces)
                    if unit is not None:
                        units.append(unit)
                        if unit.kind == PAT:
                            psi_pids = (PAT_PID, SDT_PID, self.pmt_pid)
                pieces = []
                run_start = offset
            elif pieces is None:
                # A continuation of a unit whose start we never saw.
                offset += PACKET_SIZE
                continue
            elif run_start is None:
                run_start = offset
            offset += PACKET_SIZE
        if pieces is not None and run_start is not None:
            pieces.append(buf[run_start:end])
        self._open = bytearray().join(pieces) if pieces else None
        self._open_pid = open_pid if self._open is not None else None
        self._rest = bytes(buf[end:])
        return units

    def _resync(self, buf, offset):
        # The first sync byte from ``offset`` on that the byte a packet
        # later confirms.  When the buffer ends before that byte, the
        # candidate is returned with _hunting still set: the caller keeps
        # the bytes from there for the next feed to decide.
        size = len(buf)
        position = offset
        while True:
            found = buf.find(b"\x47", position)
            if found < 0:
                self.skipped += size - offset
                self._hunting = True
                return size
            if found + PACKET_SIZE >= size:
                self.skipped += found - offset
                self._hunting = True
                return found
            if buf[found + PACKET_SIZE] == SYNC_BYTE:
                self.skipped += found - offset
                self._hunting = False
                return found
            position = found + 1

    def _finish(self, pieces):
        data = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytearray) else bytearray().join(pieces)
        if len(data) < PACKET_SIZE:
            return None
        pid = ((data[1] & 0x1F) << 8) | data[2]
        if pid == PAT_PID:
            pmt_pid = parse_pat(data)
            if pmt_pid is not None:
                self.pmt_pid = pmt_pid
            return Unit(data, pid, PAT)
        if pid == self.pmt_pid:
            streams = parse_pmt(data)
            if streams is not None:
                self.streams = streams
            return Unit(data, pid, PMT)
        if pid == SDT_PID or pid < 0x20:
            return Unit(data, pid, PSI)
        unit = Unit(data, pid, PES, self.streams.get(pid, OTHER))
        start = payload_offset(data)
        if start is not None and start + 19 <= PACKET_SIZE and data[1] & 0x40:
            unit.pts, unit.dts, _ = pes_timestamps(data, start)
        if unit.stream == VIDEO:
            unit.key = random_access(data)
        return unit

    def flush(self):
        """
        The unit still held, complete or not, as the stream has ended.
        """
        pieces, self._open = self._open, None
        if pieces is None:
            return []
        unit = self._finish([pieces])
        return [unit] if unit is not None else []
