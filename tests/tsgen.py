"""
A small builder of valid MPEG-TS for tests, written from ISO/IEC 13818-1
and independent of ``streamproxy.mpegts`` (so tests do not check the code
with itself), plus a reader that turns TS back into plain facts.

The layout copies what ``ffmpeg -f mpegts`` writes: one program (number 1)
whose PMT is on PID 0x1000, H.264 video on PID 0x100 (which carries the
PCR) and optional AAC audio on PID 0x101; PAT and PMT (and at the start an
SDT) before every video keyframe; ``random_access_indicator`` on the first
packet of each keyframe; each PES written contiguously; the last packet of
a PES filled up with adaptation-field stuffing.

Frame payloads carry their frame number (see :func:`frame_number`), so a
test can tell which frames came through.
"""

import random
from dataclasses import dataclass, field

PACKET_SIZE = 188
MODULO = 1 << 33
HZ = 90_000

PAT_PID = 0x0000
SDT_PID = 0x0011
PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
SECOND_AUDIO_PID = 0x102
NULL_PID = 0x1FFF

# ffmpeg puts its PCR this far behind the DTS (-muxdelay 0.7 s).
PCR_DELAY = 63_000

# An AAC frame (1024 samples at 48 kHz) in 90 kHz ticks.
AUDIO_FRAME_TICKS = 1920

# The packets ffmpeg 5.1 wrote for ``-f lavfi -i testsrc -c:v libx264 -f
# mpegts`` with audio: its PAT, PMT and SDT, as they came (bytes after the
# section are 0xFF stuffing).  Real bytes with real CRCs to check against.
FFMPEG_PAT = bytes.fromhex("474000100000b00d0001c100000001f0002ab104b2").ljust(PACKET_SIZE, b"\xff")
FFMPEG_PMT = bytes.fromhex(
    "475000100002b0170001c10000e100f0001be100f0000fe101f0002f44b99b"
).ljust(PACKET_SIZE, b"\xff")
FFMPEG_SDT = bytes.fromhex(
    "474011100042f0250001c10000ff01ff0001fc80144812010646466d70656709536572766963653031777c43ca"
).ljust(PACKET_SIZE, b"\xff")


def crc32_mpeg2(data):
    """
    CRC-32/MPEG-2, bit by bit (slow and obviously right).
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc


def encode_timestamp(prefix, value):
    """
    The five bytes of a PTS or DTS field: 4-bit ``prefix`` (0b0010 for a
    lone PTS, 0b0011/0b0001 for PTS/DTS of a pair), ``value`` modulo 2**33,
    marker bits set.
    """
    value %= MODULO
    return bytes(
        [
            prefix << 4 | (value >> 30 & 7) << 1 | 1,
            value >> 22 & 0xFF,
            (value >> 15 & 0x7F) << 1 | 1,
            value >> 7 & 0xFF,
            (value & 0x7F) << 1 | 1,
        ]
    )


def encode_pcr(base, extension=0):
    """
    The six bytes of a PCR: 33-bit ``base`` (modulo 2**33), six reserved
    bits set, 9-bit ``extension``.
    """
    base %= MODULO
    return (base << 15 | 0x3F << 9 | extension).to_bytes(6, "big")


def packet(pid, payload=b"", cc=0, pusi=False, rai=False, pcr=None, payload_present=True):
    """
    One 188-byte packet.  An adaptation field is written when ``rai`` or
    ``pcr`` asks for one or when ``payload`` is short of 184 bytes (its
    stuffing fills the packet).  ``payload_present=False`` makes an
    adaptation-field-only packet, whose counter a demuxer does not advance.
    """
    fields = b""
    if rai or pcr is not None:
        fields = bytes([(0x40 if rai else 0) | (0x10 if pcr is not None else 0)])
        fields += encode_pcr(pcr) if pcr is not None else b""
    if not payload_present:
        payload = b""
    space = 184 - len(payload)  # what the adaptation field must take
    if space < (1 + len(fields) if fields else 0):
        raise ValueError("payload does not fit")
    if space == 0:
        adaptation = b""
    elif space == 1 and not fields:
        adaptation = b"\x00"  # a zero-length adaptation field
    else:
        body = fields or b"\x00"
        adaptation = bytes([space - 1]) + body + b"\xff" * (space - 1 - len(body))
    control = (2 if adaptation else 0) | (1 if payload_present else 0)
    header = bytes([0x47, (0x40 if pusi else 0) | pid >> 8, pid & 0xFF, control << 4 | cc & 0x0F])
    return header + adaptation + payload


def null_packet():
    """
    A null packet (PID 0x1FFF).
    """
    return packet(NULL_PID, b"\xff" * 184)


def section(table_id, extension, body, version=0):
    """
    A long-form PSI section with its CRC: ``body`` follows the 8-byte header.
    """
    length = 5 + len(body) + 4
    head = bytes(
        [table_id, 0xB0 | length >> 8, length & 0xFF, extension >> 8, extension & 0xFF, 0xC1 | version << 1, 0, 0]
    )
    data = head + body
    return data + crc32_mpeg2(data).to_bytes(4, "big")


class Muxer:
    """
    Writes the tables and PES packets of one program, keeping a continuity
    counter per PID.  ``audio`` is how many audio PIDs the PMT lists (0, 1
    or 2).
    """

    def __init__(self, audio=1, video_type=0x1B, pmt_version=0):
        self.audio = audio
        self.video_type = video_type
        self.pmt_version = pmt_version
        self.cc = {}

    def _next_cc(self, pid):
        # Counters start at 0 per PID, as ffmpeg's do.
        self.cc[pid] = (self.cc.get(pid, -1) + 1) & 0x0F
        return self.cc[pid]

    def _psi(self, pid, data):
        payload = (b"\x00" + data).ljust(PACKET_SIZE - 4, b"\xff")
        return packet(pid, payload, self._next_cc(pid), pusi=True)

    def pat(self):
        """
        The PAT: program 1 on PMT PID 0x1000.
        """
        return self._psi(PAT_PID, section(0x00, 1, bytes([0, 1, 0xE0 | PMT_PID >> 8, PMT_PID & 0xFF])))

    def pmt(self):
        """
        The PMT: video on 0x100 (the PCR PID) and the audio PIDs.
        """
        body = bytes([0xE0 | VIDEO_PID >> 8, VIDEO_PID & 0xFF, 0xF0, 0x00])
        body += bytes([self.video_type, 0xE0 | VIDEO_PID >> 8, VIDEO_PID & 0xFF, 0xF0, 0x00])
        for pid in (AUDIO_PID, SECOND_AUDIO_PID)[: self.audio]:
            body += bytes([0x0F, 0xE0 | pid >> 8, pid & 0xFF, 0xF0, 0x00])
        return self._psi(PMT_PID, section(0x02, 1, body, self.pmt_version))

    def sdt(self):
        """
        ffmpeg's SDT, with this muxer's counter.
        """
        return self._psi(SDT_PID, FFMPEG_SDT[5 : 5 + 3 + 0x25])

    def pes(self, pid, stream_id, payload, pts, dts=None, key=False, pcr=None):
        """
        One PES split into packets: the first starts the unit and carries
        ``random_access_indicator`` (``key``) and the PCR; the last is
        stuffed.  Video PES leave PES_packet_length at 0, as ffmpeg does.
        """
        if dts is None or dts == pts:
            header = bytes([0x80, 0x80, 5]) + encode_timestamp(0b0010, pts)
        else:
            header = bytes([0x80, 0xC0, 10]) + encode_timestamp(0b0011, pts) + encode_timestamp(0b0001, dts)
        length = 0 if stream_id & 0xF0 == 0xE0 else len(header) + len(payload)
        data = b"\x00\x00\x01" + bytes([stream_id]) + length.to_bytes(2, "big") + header + payload
        out = []
        first = True
        while data:
            room = 184
            if first and (key or pcr is not None):
                room -= 2 + (6 if pcr is not None else 0)
            chunk, data = data[:room], data[room:]
            out.append(
                packet(pid, chunk, self._next_cc(pid), pusi=first, rai=first and key,
                       pcr=pcr if first else None)
            )
            first = False
        return b"".join(out)

    def pcr_only(self, pcr):
        """
        An adaptation-field-only packet on the video PID carrying a PCR, as
        ffmpeg inserts between other streams' packets.
        """
        return packet(VIDEO_PID, cc=self.cc.get(VIDEO_PID, 0), pcr=pcr, payload_present=False)


def frame_payload(number, size, audio=False):
    """
    An elementary-stream payload of ``size`` bytes (at least 8) that carries
    ``number``: an H.264 access unit delimiter or an ADTS-like sync word,
    the number, then filler.
    """
    head = b"\xff\xf1\x50\x80" if audio else b"\x00\x00\x01\x09"
    body = head + number.to_bytes(4, "big")
    return body + bytes((number + i) & 0x7F for i in range(size - len(body)))


def frame_number(payload):
    """
    The number :func:`frame_payload` put in ``payload``.
    """
    return int.from_bytes(payload[4:8], "big")


def _decode_order(gop):
    # Display indexes in decode order for I P B B P B B ... (closed GOPs).
    order = [0]
    shown = 1
    while shown < gop:
        anchor = min(shown + 2, gop - 1)
        order.append(anchor)
        order.extend(range(shown, anchor))
        shown = anchor + 1
    return order


@dataclass
class Spec:
    """
    What :func:`stream` builds: ``seconds`` of video at ``fps`` with a
    keyframe every ``gop`` seconds, the first DTS at ``start`` (90 kHz,
    may be near 2**33 to test the wrap); ``audio`` audio PIDs with PES of
    ``audio_frames`` AAC frames each, muxed along the video's DTS but with
    timestamps ``audio_offset`` ticks ahead of it (behind when negative);
    ``bframes`` reorders frames as I P B B; ``psi_every`` repeats PAT/PMT
    every that many frames between keyframes too (ffmpeg 5.1 does every
    0.1 s); ``pcr_only`` adds a PCR-only packet after each audio PES;
    ``sdt`` writes an SDT first; keyframes carry ``key_size`` bytes and
    other frames ``frame_size`` (varied by ``rng`` when given); frames are
    numbered from ``first_frame``.
    """

    seconds: float = 2.0
    fps: int = 25
    gop: float = 1.0
    start: int = 126_000
    audio: int = 1
    audio_frames: int = 2
    audio_offset: int = 0
    bframes: bool = False
    psi_every: int | None = None
    pcr_only: bool = False
    sdt: bool = True
    key_size: int = 3000
    frame_size: int = 300
    first_frame: int = 0
    rng: random.Random | None = field(default=None, repr=False)

    @property
    def frame_ticks(self):
        """
        One frame in 90 kHz ticks.
        """
        return HZ // self.fps


def stream(spec=None, **kwargs):
    """
    The bytes of a whole stream as ``Spec(**kwargs)`` describes it.
    """
    spec = spec or Spec(**kwargs)
    mux = Muxer(audio=spec.audio)
    frames = round(spec.seconds * spec.fps)
    gop = max(1, round(spec.gop * spec.fps))
    tick = spec.frame_ticks
    delay = 2 * tick if spec.bframes else 0
    audio_step = AUDIO_FRAME_TICKS * spec.audio_frames
    audio_next = [spec.start + spec.audio_offset] * spec.audio
    audio_count = [0] * spec.audio
    out = [mux.sdt()] if spec.sdt else []
    for index in range(frames):
        dts = spec.start + index * tick
        # Audio is muxed when its time comes, as ffmpeg interleaves by DTS.
        for track in range(spec.audio):
            while audio_next[track] <= dts + spec.audio_offset:
                pid = AUDIO_PID + track
                payload = frame_payload(audio_count[track], 200 * spec.audio_frames, audio=True)
                out.append(mux.pes(pid, 0xC0 + track, payload, audio_next[track]))
                if spec.pcr_only:
                    out.append(mux.pcr_only(dts - tick // 2 - PCR_DELAY))
                audio_next[track] += audio_step
                audio_count[track] += 1
        in_gop = index % gop
        key = in_gop == 0
        if spec.bframes:
            group_start = index - in_gop
            order = _decode_order(min(gop, frames - group_start))
            pts = spec.start + (group_start + order[in_gop]) * tick + delay
        else:
            pts = dts
        if key or (spec.psi_every and in_gop % spec.psi_every == 0):
            out += [mux.pat(), mux.pmt()]
        size = spec.key_size if key else spec.frame_size
        if spec.rng is not None:
            size = max(8, int(size * spec.rng.uniform(0.5, 1.5)))
        payload = frame_payload(spec.first_frame + index, size)
        out.append(mux.pes(VIDEO_PID, 0xE0, payload, pts, dts, key=key, pcr=dts - PCR_DELAY))
    return b"".join(out)


# Reading back.


@dataclass
class Packet:
    """
    The facts of one packet, read without ``streamproxy.mpegts``.
    ``pts``/``dts`` are set on a packet that starts a PES; ``table`` is the
    PSI section (without pointer field and stuffing) of a PSI packet.
    """

    pid: int
    cc: int
    pusi: bool
    payload: bytes | None
    rai: bool = False
    pcr: int | None = None
    pcr_extension: int | None = None
    pts: int | None = None
    dts: int | None = None
    table: bytes | None = None


def decode_timestamp(data):
    """
    The value of a five-byte PTS/DTS field.
    """
    return (data[0] >> 1 & 7) << 30 | data[1] << 22 | (data[2] >> 1) << 15 | data[3] << 7 | data[4] >> 1


def read_packets(data):
    """
    Every packet of ``data`` (whole packets, sync bytes checked) as
    :class:`Packet` s.
    """
    if len(data) % PACKET_SIZE:
        raise ValueError(f"{len(data)} bytes is not whole packets")
    packets = []
    for at in range(0, len(data), PACKET_SIZE):
        raw = data[at : at + PACKET_SIZE]
        if raw[0] != 0x47:
            raise ValueError(f"no sync byte at {at}")
        pid = (raw[1] & 0x1F) << 8 | raw[2]
        control = raw[3] >> 4 & 3
        p = Packet(pid, raw[3] & 0x0F, bool(raw[1] & 0x40), None)
        start = 4
        if control & 2:
            length = raw[4]
            if length:
                flags = raw[5]
                p.rai = bool(flags & 0x40)
                if flags & 0x10:
                    value = int.from_bytes(raw[6:12], "big")
                    p.pcr, p.pcr_extension = value >> 15, value & 0x1FF
            start = 5 + length
        if control & 1:
            p.payload = bytes(raw[start:])
        if p.pusi and p.payload is not None:
            body = p.payload
            if body[:3] == b"\x00\x00\x01":
                flags = body[7] >> 6
                if flags & 2:
                    p.pts = decode_timestamp(body[9:14])
                    p.dts = decode_timestamp(body[14:19]) if flags == 3 else p.pts
            elif pid in (PAT_PID, PMT_PID, SDT_PID):
                table = body[1 + body[0] :]
                length = (table[1] & 0x0F) << 8 | table[2]
                p.table = table[: 3 + length]
        packets.append(p)
    return packets


def section_version(table):
    """
    The version number of a PSI section.
    """
    return table[5] >> 1 & 0x1F


def section_crc_ok(table):
    """
    Whether a PSI section's CRC is right (the CRC of a whole section is 0).
    """
    return crc32_mpeg2(table) == 0


def unwrapped(values):
    """
    33-bit ``values`` made unbounded, each taken nearest the one before.
    """
    out = []
    for value in values:
        if out:
            previous = out[-1]
            value = previous + (value - previous + (1 << 32)) % MODULO - (1 << 32)
        out.append(value)
    return out


def continuity_errors(packets, counters=None):
    """
    Where counters do not step by one (mod 16) per PID over packets with
    payload, as ``[(index, pid, expected, found)]``.  ``counters`` (PID to
    last counter) carries the state across calls and is updated.
    """
    counters = {} if counters is None else counters
    errors = []
    for index, p in enumerate(packets):
        if p.payload is None:
            continue
        expected = (counters[p.pid] + 1) & 0x0F if p.pid in counters else p.cc
        if p.cc != expected:
            errors.append((index, p.pid, expected, p.cc))
        counters[p.pid] = p.cc
    return errors


def pes_starts(packets, pid):
    """
    ``[(pts, dts, payload_start)]`` of the PES starts on ``pid``.
    """
    return [(p.pts, p.dts, p.payload) for p in packets if p.pid == pid and p.pusi and p.payload is not None]
