"""
Tests for streamproxy.mpegts: packet helpers and the unit reader.
"""

import random

from twisted.trial.unittest import SynchronousTestCase

from streamproxy import mpegts
from streamproxy.mpegts import AUDIO, OTHER, PAT, PES, PMT, PSI, VIDEO, TSReader

from . import tsgen


def units_of(data, chunks=None):
    """
    The units a fresh reader makes of ``data`` fed in pieces of the sizes
    ``chunks`` yields (all at once when None), flushed at the end; and the
    reader.
    """
    reader = TSReader()
    units = []
    if chunks is None:
        units += reader.feed(data)
    else:
        at = 0
        while at < len(data):
            size = next(chunks)
            units += reader.feed(data[at : at + size])
            at += size
    units += reader.flush()
    return units, reader


def facts(units):
    """
    Everything about ``units`` worth comparing, as plain tuples.
    """
    return [(u.kind, u.pid, u.stream, u.pts, u.dts, u.key, bytes(u.data)) for u in units]


def repeat(size):
    """
    An endless supply of ``size``.
    """
    while True:
        yield size


def randomly(seed, low=1, high=700):
    """
    Endless seeded random chunk sizes.
    """
    rng = random.Random(seed)
    while True:
        yield rng.randint(low, high)


class CRCTests(SynchronousTestCase):
    """
    CRC-32/MPEG-2 as PSI sections carry it.
    """

    def test_check_value(self):
        """
        The catalogue check value of CRC-32/MPEG-2 over "123456789".
        """
        self.assertEqual(mpegts.crc32(b"123456789"), 0x0376E6E7)
        self.assertEqual(tsgen.crc32_mpeg2(b"123456789"), 0x0376E6E7)

    def test_empty(self):
        """
        The CRC of nothing is the initial value.
        """
        self.assertEqual(mpegts.crc32(b""), 0xFFFFFFFF)

    def test_ffmpeg_sections(self):
        """
        The CRCs ffmpeg wrote in its PAT, PMT and SDT are what crc32 computes
        over the sections before them.
        """
        for packet, crc in (
            (tsgen.FFMPEG_PAT, 0x2AB104B2),
            (tsgen.FFMPEG_PMT, 0x2F44B99B),
            (tsgen.FFMPEG_SDT, 0x777C43CA),
        ):
            start, end = mpegts.psi_section(packet)
            self.assertEqual(mpegts.crc32(packet[start : end - 4]), crc)
            self.assertEqual(int.from_bytes(packet[end - 4 : end], "big"), crc)
            # A whole section including its CRC sums to zero.
            self.assertEqual(mpegts.crc32(packet[start:end]), 0)

    def test_matches_bitwise_reference(self):
        """
        The table-driven CRC agrees with a bit-by-bit one on random data.
        """
        rng = random.Random(7)
        for size in (1, 2, 3, 17, 183, 1000):
            data = bytes(rng.randrange(256) for _ in range(size))
            self.assertEqual(mpegts.crc32(data), tsgen.crc32_mpeg2(data))

    def test_generator_tables_are_ffmpegs(self):
        """
        The test generator's PAT, PMT and SDT are byte for byte what ffmpeg
        writes for the same program, so the other tests run on real tables.
        """
        mux = tsgen.Muxer(audio=1)
        self.assertEqual(mux.pat(), tsgen.FFMPEG_PAT)
        self.assertEqual(mux.pmt(), tsgen.FFMPEG_PMT)
        self.assertEqual(mux.sdt(), tsgen.FFMPEG_SDT)


class PacketTests(SynchronousTestCase):
    """
    Reading the fields of one packet.
    """

    def test_null_packet(self):
        """
        A null packet is one whole packet on PID 0x1FFF with payload only.
        """
        packet = mpegts.null_packet()
        self.assertEqual(len(packet), mpegts.PACKET_SIZE)
        self.assertEqual(packet[0], 0x47)
        self.assertEqual(mpegts.packet_pid(packet), mpegts.NULL_PID)
        self.assertEqual(mpegts.payload_offset(packet), 4)
        self.assertEqual(packet, tsgen.null_packet())

    def test_packet_pid_at_offset(self):
        """
        The PID is read from the packet at the offset given.
        """
        data = tsgen.packet(0x1234 & 0x1FFF, b"x" * 184) + tsgen.packet(0x0ABC, b"y" * 184)
        self.assertEqual(mpegts.packet_pid(data), 0x1234 & 0x1FFF)
        self.assertEqual(mpegts.packet_pid(data, 188), 0x0ABC)

    def test_payload_offset(self):
        """
        The payload starts after the header, after the adaptation field when
        there is one; an adaptation-field-only packet has none.
        """
        self.assertEqual(mpegts.payload_offset(tsgen.packet(0x100, b"x" * 184)), 4)
        self.assertEqual(mpegts.payload_offset(tsgen.packet(0x100, b"x" * 183)), 5)
        self.assertEqual(mpegts.payload_offset(tsgen.packet(0x100, b"x" * 10)), 188 - 10)
        self.assertEqual(mpegts.payload_offset(tsgen.packet(0x100, b"x", pcr=5)), 187)
        self.assertIsNone(mpegts.payload_offset(tsgen.packet(0x100, pcr=5, payload_present=False)))
        data = tsgen.null_packet() + tsgen.packet(0x100, b"x" * 20)
        self.assertEqual(mpegts.payload_offset(data, 188), 188 + 188 - 20)

    def test_payload_offset_full_adaptation_field(self):
        """
        A packet that claims a payload but whose adaptation field takes all
        184 bytes has none.
        """
        packet = bytearray(tsgen.packet(0x100, pcr=5, payload_present=False))
        packet[3] |= 0x10  # claims a payload too
        self.assertIsNone(mpegts.payload_offset(packet))

    def test_random_access(self):
        """
        Only a packet whose adaptation field sets random_access_indicator is
        a random access point; a zero-length adaptation field is not one.
        """
        self.assertTrue(mpegts.random_access(tsgen.packet(0x100, b"x", rai=True)))
        self.assertTrue(mpegts.random_access(tsgen.packet(0x100, b"x", rai=True, pcr=1)))
        self.assertFalse(mpegts.random_access(tsgen.packet(0x100, b"x", pcr=1)))
        self.assertFalse(mpegts.random_access(tsgen.packet(0x100, b"x" * 184)))
        zero = tsgen.packet(0x100, b"x" * 183)
        self.assertEqual(zero[4], 0)
        self.assertFalse(mpegts.random_access(zero))


class TimestampTests(SynchronousTestCase):
    """
    PTS, DTS and PCR fields: values round-trip and the bits around them stay.
    """

    VALUES = (0, 1, 0x7F, 0x80, 0x7FFF, 0x8000, 1 << 30, (1 << 32) - 1, 1 << 32, (1 << 33) - 1, 123456789)

    def test_read_generated(self):
        """
        read_timestamp reads what an independent encoder wrote.
        """
        for prefix in (0b0010, 0b0011, 0b0001):
            for value in self.VALUES:
                self.assertEqual(mpegts.read_timestamp(tsgen.encode_timestamp(prefix, value), 0), value)

    def test_write_round_trip_keeps_prefix_and_markers(self):
        """
        write_timestamp stores the value exactly as the standard encodes it,
        with the 4-bit prefix that was there and every marker bit set, and
        touches no byte outside the field.
        """
        rng = random.Random(3)
        values = list(self.VALUES) + [rng.randrange(1 << 33) for _ in range(200)]
        for prefix in (0b0010, 0b0011, 0b0001):
            for value in values:
                buf = bytearray(b"\xaa" + tsgen.encode_timestamp(prefix, rng.randrange(1 << 33)) + b"\x55")
                mpegts.write_timestamp(buf, 1, value)
                self.assertEqual(bytes(buf), b"\xaa" + tsgen.encode_timestamp(prefix, value) + b"\x55")
                self.assertEqual(mpegts.read_timestamp(buf, 1), value)

    def test_write_sets_markers(self):
        """
        Marker bits are set even where the buffer had them clear.
        """
        buf = bytearray(b"\x30\x00\x00\x00\x00")
        mpegts.write_timestamp(buf, 0, 0)
        self.assertEqual(bytes(buf), b"\x31\x00\x01\x00\x01")

    def test_write_wraps(self):
        """
        Values at or past 2**33, and negative ones, are stored modulo 2**33.
        """
        for value in (1 << 33, (1 << 33) + 5, 3 * (1 << 33) + 7, -1):
            buf = bytearray(tsgen.encode_timestamp(0b0010, 0))
            mpegts.write_timestamp(buf, 0, value)
            self.assertEqual(mpegts.read_timestamp(buf, 0), value % (1 << 33))

    def test_pcr_round_trip_keeps_extension(self):
        """
        write_pcr_base changes only the 33-bit base: the six reserved bits
        and the 9-bit 27 MHz extension stay as they were.
        """
        rng = random.Random(5)
        for value in list(self.VALUES) + [rng.randrange(1 << 33) for _ in range(200)] + [(1 << 33) + 9]:
            extension = rng.randrange(512)
            buf = bytearray(b"\x11" + tsgen.encode_pcr(rng.randrange(1 << 33), extension) + b"\x22")
            mpegts.write_pcr_base(buf, 1, value)
            self.assertEqual(bytes(buf), b"\x11" + tsgen.encode_pcr(value, extension) + b"\x22")
            self.assertEqual(mpegts.read_pcr_base(buf, 1), value % (1 << 33))

    def test_pcr_offset(self):
        """
        pcr_offset finds the PCR in an adaptation field that has one (with
        or without payload) and nothing elsewhere.
        """
        with_pcr = tsgen.packet(0x100, b"x" * 10, pcr=123456)
        self.assertEqual(mpegts.pcr_offset(with_pcr), 6)
        self.assertEqual(mpegts.read_pcr_base(with_pcr, 6), 123456)
        pcr_only = tsgen.packet(0x100, pcr=(1 << 33) - 1, payload_present=False)
        self.assertEqual(mpegts.read_pcr_base(pcr_only, mpegts.pcr_offset(pcr_only)), (1 << 33) - 1)
        self.assertIsNone(mpegts.pcr_offset(tsgen.packet(0x100, b"x" * 184)))
        self.assertIsNone(mpegts.pcr_offset(tsgen.packet(0x100, b"x", rai=True)))
        self.assertIsNone(mpegts.pcr_offset(tsgen.packet(0x100, b"x" * 183)))
        data = tsgen.null_packet() + with_pcr
        self.assertEqual(mpegts.pcr_offset(data, 188), 188 + 6)


class PESTests(SynchronousTestCase):
    """
    Timestamps at the start of a PES.
    """

    def test_pts_and_dts(self):
        """
        A video PES with both timestamps gives both, and where the PTS is.
        """
        data = tsgen.Muxer().pes(0x100, 0xE0, b"v" * 50, pts=900_000, dts=896_400, key=True, pcr=1)
        start = mpegts.payload_offset(data)
        self.assertEqual(mpegts.pes_timestamps(data, start), (900_000, 896_400, start + 9))

    def test_pts_only(self):
        """
        A PES with only a PTS gives it as the DTS too.
        """
        data = tsgen.Muxer().pes(0x101, 0xC0, b"a" * 50, pts=(1 << 33) - 1)
        start = mpegts.payload_offset(data)
        self.assertEqual(mpegts.pes_timestamps(data, start), ((1 << 33) - 1, (1 << 33) - 1, start + 9))

    def test_not_a_pes_start(self):
        """
        A payload without a start code has no timestamps.
        """
        data = tsgen.packet(0x100, b"\x00\x00\x02\xe0" + b"\x00" * 180, pusi=True)
        self.assertEqual(mpegts.pes_timestamps(data, 4), (None, None, None))

    def test_streams_without_header(self):
        """
        Padding and private_stream_2 PES carry no optional header, whatever
        their bytes look like.
        """
        for stream_id in (0xBC, 0xBE, 0xBF, 0xF0, 0xF2, 0xFF):
            body = b"\x00\x00\x01" + bytes([stream_id]) + b"\x00\x10\x80\xc0\x0a" + b"\x31" * 175
            self.assertEqual(mpegts.pes_timestamps(tsgen.packet(0x100, body, pusi=True), 4), (None, None, None))

    def test_no_pts_flag(self):
        """
        A PES whose flags announce no PTS has no timestamps.
        """
        body = b"\x00\x00\x01\xe0\x00\x00\x80\x00\x00" + b"\x00" * 175
        self.assertEqual(mpegts.pes_timestamps(tsgen.packet(0x100, body, pusi=True), 4), (None, None, None))


class PSITests(SynchronousTestCase):
    """
    PAT and PMT parsing and PMT version rewriting.
    """

    def test_parse_pat(self):
        """
        The PAT gives the PMT PID of its first program.
        """
        self.assertEqual(mpegts.parse_pat(tsgen.FFMPEG_PAT), 0x1000)

    def test_parse_pat_skips_network_entry(self):
        """
        Program number 0 (the network PID) is not a program.
        """
        body = bytes([0, 0, 0xE0, 0x10, 0, 7, 0xE1, 0x23])
        packet = tsgen.packet(0, (b"\x00" + tsgen.section(0, 1, body)).ljust(184, b"\xff"), pusi=True)
        self.assertEqual(mpegts.parse_pat(packet), 0x0123)

    def test_parse_pat_rejects(self):
        """
        Not a PAT (another table, no section start, a section running past
        the packet) gives None.
        """
        self.assertIsNone(mpegts.parse_pat(tsgen.FFMPEG_PMT))
        no_start = bytearray(tsgen.FFMPEG_PAT)
        no_start[1] &= ~0x40
        self.assertIsNone(mpegts.parse_pat(no_start))
        too_long = bytearray(tsgen.FFMPEG_PAT)
        too_long[6:8] = b"\xb0\xff"
        self.assertIsNone(mpegts.parse_pat(too_long))
        self.assertIsNone(mpegts.parse_pat(tsgen.packet(0, b"\x00", pusi=True, pcr=1)))

    def test_parse_pmt(self):
        """
        The PMT gives each elementary PID with its kind.
        """
        self.assertEqual(mpegts.parse_pmt(tsgen.FFMPEG_PMT), {0x100: VIDEO, 0x101: AUDIO})
        self.assertEqual(mpegts.parse_pmt(tsgen.Muxer(audio=0).pmt()), {0x100: VIDEO})
        self.assertEqual(mpegts.parse_pmt(tsgen.Muxer(audio=2).pmt()), {0x100: VIDEO, 0x101: AUDIO, 0x102: AUDIO})
        self.assertEqual(mpegts.parse_pmt(tsgen.Muxer(video_type=0x24).pmt())[0x100], VIDEO)
        self.assertEqual(mpegts.parse_pmt(tsgen.Muxer(video_type=0x06).pmt())[0x100], OTHER)

    def test_parse_pmt_with_descriptors(self):
        """
        Program and stream descriptors are stepped over.
        """
        descriptor = b"\x0a\x04eng\x00"
        body = bytes([0xE1, 0x00, 0xF0, len(descriptor)]) + descriptor
        body += bytes([0x1B, 0xE1, 0x00, 0xF0, 0x00])
        body += bytes([0x81, 0xE1, 0x05, 0xF0, len(descriptor)]) + descriptor
        body += bytes([0x06, 0xE1, 0x06, 0xF0, 0x00])
        packet = tsgen.packet(0x1000, (b"\x00" + tsgen.section(2, 1, body)).ljust(184, b"\xff"), pusi=True)
        self.assertEqual(mpegts.parse_pmt(packet), {0x100: VIDEO, 0x105: AUDIO, 0x106: OTHER})

    def test_parse_pmt_rejects(self):
        """
        Not a PMT gives None.
        """
        self.assertIsNone(mpegts.parse_pmt(tsgen.FFMPEG_PAT))
        self.assertIsNone(mpegts.parse_pmt(tsgen.packet(0x1000, b"x" * 184)))

    def test_pointer_field(self):
        """
        A pointer field other than zero is followed to the section.
        """
        payload = (b"\x03abc" + tsgen.FFMPEG_PAT[5:21]).ljust(184, b"\xff")
        packet = tsgen.packet(0, payload, pusi=True)
        self.assertEqual(mpegts.psi_section(packet), (8, 8 + 16))
        self.assertEqual(mpegts.parse_pat(packet), 0x1000)

    def test_set_section_version(self):
        """
        The version changes, current_next_indicator and the reserved bits
        stay, the CRC is right again and no other byte changes.
        """
        for version in (0, 1, 17, 31, 32):
            packet = bytearray(tsgen.FFMPEG_PMT)
            self.assertTrue(mpegts.set_section_version(packet, 0, version))
            start, end = mpegts.psi_section(packet)
            self.assertEqual(packet[start + 5], 0xC1 | (version % 32) << 1)
            self.assertEqual(mpegts.crc32(packet[start:end]), 0)
            self.assertTrue(tsgen.section_crc_ok(bytes(packet[start:end])))
            changed = [i for i in range(188) if packet[i] != tsgen.FFMPEG_PMT[i]]
            self.assertTrue(set(changed) <= {start + 5} | set(range(end - 4, end)))
            self.assertEqual(mpegts.parse_pmt(packet), {0x100: VIDEO, 0x101: AUDIO})

    def test_set_section_version_matches_generator(self):
        """
        Rewriting the version gives the bytes a muxer writing that version
        would have written.
        """
        packet = bytearray(tsgen.Muxer(pmt_version=0).pmt())
        mpegts.set_section_version(packet, 0, 9)
        self.assertEqual(bytes(packet), tsgen.Muxer(pmt_version=9).pmt())

    def test_set_section_version_refuses(self):
        """
        A packet with no whole section is left alone.
        """
        packet = bytearray(tsgen.packet(0x100, b"x" * 184))
        self.assertFalse(mpegts.set_section_version(packet, 0, 3))
        self.assertEqual(bytes(packet), tsgen.packet(0x100, b"x" * 184))


class ReaderTests(SynchronousTestCase):
    """
    TSReader: bytes in any chunks to whole units.
    """

    def setUp(self):
        """
        A 1.2 s stream with a keyframe every 0.5 s and PAT/PMT every third
        frame, and the units it reads as when fed whole.
        """
        self.data = tsgen.stream(seconds=1.2, gop=0.5, audio=1, psi_every=3)
        self.expected, self.reader = units_of(self.data)

    def test_units(self):
        """
        A stream reads as SDT, the audio due first (its kind not yet known),
        PAT, PMT, keyframe, then frames and audio, with PAT/PMT where ffmpeg
        repeats them; every unit is whole packets of one boundary each and
        all units together are the stream.
        """
        units = self.expected
        self.assertEqual(
            [(u.kind, u.pid, u.stream) for u in units[:4]],
            [(PSI, 0x11, OTHER), (PES, 0x101, OTHER), (PAT, 0, OTHER), (PMT, 0x1000, OTHER)],
        )
        self.assertEqual((units[4].kind, units[4].stream, units[4].key), (PES, VIDEO, True))
        self.assertEqual([u.kind for u in units].count(PMT), 4 + 4 + 2)  # frames 0, 3, 6, 9 of each GOP
        self.assertEqual(b"".join(u.data for u in units), self.data)
        for unit in units:
            self.assertEqual(len(unit.data) % 188, 0)
            self.assertTrue(unit.data[1] & 0x40)
        self.assertEqual(self.reader.pmt_pid, 0x1000)
        self.assertEqual(self.reader.streams, {0x100: VIDEO, 0x101: AUDIO})
        self.assertEqual(self.reader.skipped, 0)

    def test_unit_facts(self):
        """
        Video units carry PTS, DTS and the keyframe flag; audio units PTS
        (as DTS too); only video keyframes are keys.
        """
        video = [u for u in self.expected if u.stream == VIDEO]
        self.assertEqual(len(video), 30)
        self.assertEqual([u.dts for u in video], [126_000 + 3600 * i for i in range(30)])
        self.assertEqual([u.pts for u in video], [u.dts for u in video])
        self.assertEqual([i for i, u in enumerate(video) if u.key], [0, 12, 24])
        audio = [u for u in self.expected if u.stream == AUDIO]
        self.assertEqual([u.pts for u in audio], [126_000 + 3840 * i for i in range(1, 1 + len(audio))])
        self.assertEqual(len(audio), 27)  # 28 PES up to the last video DTS, less the first
        self.assertEqual([u.dts for u in audio], [u.pts for u in audio])
        self.assertFalse(any(u.key for u in audio))
        self.assertEqual([tsgen.frame_number(u.data[u.data.index(b"\x00\x00\x01\x09") :]) for u in video],
                         list(range(30)))

    def test_every_chunking(self):
        """
        Fed a byte at a time, 187, 188 or 189 bytes at a time, or in random
        pieces, the reader makes exactly the same units.
        """
        for chunks in (repeat(1), repeat(187), repeat(188), repeat(189), repeat(376), repeat(10_000)):
            self.assertEqual(facts(units_of(self.data, chunks)[0]), facts(self.expected))
        for seed in range(20):
            self.assertEqual(facts(units_of(self.data, randomly(seed))[0]), facts(self.expected))

    def test_holds_last_unit(self):
        """
        A unit is given out only once the next boundary shows it complete;
        flush gives the last one, and then nothing.
        """
        reader = TSReader()
        units = reader.feed(self.data)
        self.assertEqual(facts(units), facts(self.expected[:-1]))
        self.assertEqual(facts(reader.flush()), facts(self.expected[-1:]))
        self.assertEqual(reader.flush(), [])

    def test_boundary_completes_previous(self):
        """
        The packet that starts a unit releases the one before it, even when
        it comes alone.
        """
        mux = tsgen.Muxer()
        frame = mux.pes(0x100, 0xE0, b"v" * 1000, pts=0, dts=0, key=True)
        reader = TSReader()
        self.assertEqual([u.kind for u in reader.feed(mux.pat() + mux.pmt())], [PAT])
        self.assertEqual([u.kind for u in reader.feed(frame)], [PMT])
        self.assertEqual(reader.feed(b""), [])
        done = reader.feed(mux.pat())
        self.assertEqual([(u.kind, u.key, len(u.data)) for u in done], [(PES, True, len(frame))])

    def test_flush_empty(self):
        """
        A reader that saw nothing flushes nothing.
        """
        self.assertEqual(TSReader().flush(), [])
        self.assertEqual(TSReader().feed(b""), [])

    def test_partial_packet_is_kept(self):
        """
        A partial packet at the end waits for the rest; on flush it is not
        part of the held unit.
        """
        # SDT, a 3-packet audio PES, PAT, PMT, then the keyframe's packets.
        reader = TSReader()
        units = reader.feed(self.data[: 188 * 8 + 100])
        self.assertEqual(facts(units), facts(self.expected[:4]))
        held = reader.flush()
        self.assertEqual(len(held), 1)
        self.assertEqual(bytes(held[0].data), self.data[188 * 6 : 188 * 8])
        self.assertEqual((held[0].stream, held[0].key, held[0].dts), (VIDEO, True, 126_000))

    def test_null_packets_dropped(self):
        """
        Null packets anywhere (between units and inside one) are dropped
        and do not split or end a unit.
        """
        null = tsgen.null_packet()
        packets = [self.data[i : i + 188] for i in range(0, len(self.data), 188)]
        mixed = null * 2 + b"".join(p + (null if i % 3 == 0 else b"") for i, p in enumerate(packets)) + null
        for chunks in (None, repeat(1), repeat(189), randomly(1)):
            self.assertEqual(facts(units_of(mixed, chunks)[0]), facts(self.expected))

    def test_garbage_before(self):
        """
        Random bytes before the first packet (sync bytes among them) are
        skipped and counted, whatever the chunking.
        """
        rng = random.Random(10)
        garbage = b"\x47" + bytes(rng.randrange(256) for _ in range(3000))
        garbage = unconfirmed(garbage, self.data)
        self.assertGreater(garbage.count(b"\x47"), 10)
        for chunks in (None, repeat(1), repeat(187), repeat(188), repeat(189), randomly(2), randomly(3, 1, 50)):
            units, reader = units_of(garbage + self.data, chunks)
            self.assertEqual(facts(units), facts(self.expected))
            self.assertEqual(reader.skipped, len(garbage))

    def test_sync_decision_independent_of_chunking(self):
        """
        A sync byte counts only once the byte a packet later confirms it, so
        even junk dense with 0x47 reads the same however it is chunked
        (before the fix, a 0x47 near the end of a chunk was believed
        unconfirmed).
        """
        rng = random.Random(11)
        garbage = bytes(rng.choice(b"\x47\x47\x00\x12\xff") for _ in range(500))
        packets = [self.data[i : i + 188] for i in range(0, len(self.data), 188)]
        dirty = garbage + b"".join(packets[:30]) + b"\x00" + garbage + b"".join(packets[30:])
        whole, reader = units_of(dirty)
        for chunks in (repeat(1), repeat(187), repeat(188), repeat(189), randomly(3), randomly(4, 1, 50)):
            units, chunked = units_of(dirty, chunks)
            self.assertEqual(facts(units), facts(whole))
            self.assertEqual(chunked.skipped, reader.skipped)

    def test_garbage_inside(self):
        """
        Garbage between packets (with sync bytes in it) is skipped and the
        units read on as if it were not there.
        """
        rng = random.Random(12)
        packets = [self.data[i : i + 188] for i in range(0, len(self.data), 188)]
        dirty, inserted = b"", 0
        for i, packet in reversed(list(enumerate(packets))):
            if i % 17 == 5:
                # Junk that begins with a sync byte where a packet is due
                # cannot be told from a packet (see the test below).
                junk = b"\x00" + bytes(rng.randrange(256) for _ in range(rng.randint(0, 600)))
                dirty = unconfirmed(junk, dirty) + dirty
                inserted += len(junk)
            dirty = packet + dirty
        self.assertGreater(dirty.count(b"\x47"), len(packets) + 5)
        for chunks in (None, repeat(1), repeat(187), repeat(188), repeat(189), randomly(5), randomly(6, 1, 60)):
            units, reader = units_of(dirty, chunks)
            self.assertEqual(facts(units), facts(self.expected))
            self.assertEqual(reader.skipped, inserted)

    def test_truncated_packet(self):
        """
        A packet cut short and followed by whole ones costs only the packets
        it spoils: the reader is back in step at the next whole packet.
        """
        packets = [self.data[i : i + 188] for i in range(0, len(self.data), 188)]
        # Packet 40 is an audio PES's last packet; cut it to 100 bytes.
        dirty = b"".join(packets[:40]) + packets[40][:100] + b"".join(packets[41:])
        units, reader = units_of(dirty, randomly(13))
        self.assertEqual(b"".join(u.data for u in units)[-188 * 60 :], self.data[-188 * 60 :])
        self.assertLess(reader.skipped, 2 * 188)

    def test_junk_looking_like_a_packet(self):
        """
        Once in sync the reader trusts a sync byte where a packet is due (as
        demuxers do): 188 bytes of junk that begin with 0x47 there pass as a
        packet of whatever PID they name, and the reader is back in step
        after them.
        """
        packets = [self.data[i : i + 188] for i in range(0, len(self.data), 188)]
        junk = b"\x47\x1f\xfe\x10" + b"\x00" * 184  # PID 0x1FFE, no payload start
        dirty = b"".join(packets[:20]) + junk + b"".join(packets[20:])
        units, reader = units_of(dirty, randomly(8))
        self.assertEqual(reader.skipped, 0)
        self.assertEqual(b"".join(u.data for u in units), dirty)

    def test_starts_mid_unit(self):
        """
        Packets continuing a unit whose start was never seen are dropped:
        the first unit is the first boundary's.
        """
        # The keyframe spans packets 6 to 22; start two packets into it.
        units, reader = units_of(self.data[188 * 8 :])
        self.assertEqual([bytes(u.data) for u in units], [bytes(u.data) for u in self.expected[5:]])
        self.assertEqual(units[0].stream, OTHER)  # no PMT seen yet
        first_pmt = next(i for i, u in enumerate(units) if u.kind == PMT)
        self.assertEqual(facts(units)[first_pmt:], facts(self.expected)[5 + first_pmt :])
        self.assertEqual(reader.skipped, 0)

    def test_starts_at_unaligned_byte(self):
        """
        A stream picked up at an arbitrary byte resyncs on the next packet
        and reads the same units as the whole stream from there on.
        """
        for at in (1, 100, 187, 189, 1000, 5000):
            units, reader = units_of(self.data[at:], randomly(at))
            self.assertEqual(reader.skipped, (188 - at % 188) % 188)
            # From the first PMT on, the kinds are known too.
            first_pmt = next(i for i, u in enumerate(units) if u.kind == PMT)
            tail = facts(self.expected)[len(self.expected) - len(units) :]
            self.assertEqual(facts(units)[first_pmt:], tail[first_pmt:])

    def test_pes_before_pmt_is_other(self):
        """
        A PES seen before any PMT has no known stream kind and is no key.
        """
        mux = tsgen.Muxer()
        data = mux.pes(0x100, 0xE0, b"v" * 300, pts=0, dts=0, key=True) + mux.pat()
        units, _ = units_of(data)
        self.assertEqual((units[0].kind, units[0].stream, units[0].key, units[0].pts), (PES, OTHER, False, 0))

    def test_pcr_only_packets_stay_in_units(self):
        """
        A PCR-only packet on the video PID (no payload start) rides along
        with the unit it follows; nothing is lost.
        """
        data = tsgen.stream(seconds=0.5, gop=0.5, pcr_only=True)
        for chunks in (None, repeat(1), randomly(9)):
            units, _ = units_of(data, chunks)
            self.assertEqual(b"".join(u.data for u in units), data)
        audio = [u for u in units if u.stream == AUDIO]
        self.assertTrue(all(mpegts.packet_pid(u.data, len(u.data) - 188) == 0x100 for u in audio))

    def test_b_frames_and_wrap(self):
        """
        Timestamps near 2**33 read as their 33-bit values.
        """
        start = (1 << 33) - 3600 * 3
        data = tsgen.stream(seconds=0.4, gop=0.4, start=start, bframes=True, audio=0)
        units, _ = units_of(data)
        video = [u for u in units if u.stream == VIDEO]
        self.assertEqual([u.dts for u in video], [(start + 3600 * i) % (1 << 33) for i in range(10)])
        self.assertEqual(video[0].pts, (start + 7200) % (1 << 33))
        self.assertTrue(video[0].key)


def unconfirmed(garbage, after):
    """
    ``garbage`` with each 0x47 that the byte a packet later (in ``garbage``
    then ``after``) would confirm as a sync byte changed to 0x46: junk
    that does not look like a packet run.
    """
    garbage = bytearray(garbage)
    for at in range(len(garbage)):
        later = at + 188
        rest = later - len(garbage)
        ahead = garbage[later] if rest < 0 else after[rest] if rest < len(after) else None
        if garbage[at] == 0x47 and ahead == 0x47:
            garbage[at] = 0x46
    return bytes(garbage)

