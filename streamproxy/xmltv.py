"""
XMLTV guides: reading a source's guide in bounded memory, and writing the
guide of one of our playlists.

**Reading** (:func:`parse_guide`, run in a thread): the file may be plain,
gzip or xz (recognized by its first bytes, also when nested in gzip
transfer encoding), and is read incrementally with ``iterparse``, each
top-level element cleared once used, so memory does not grow with the
file.  What is kept of a source (:class:`SourceGuide`): for each of its
channels the first display name and icon, and its programmes, serialized
without their ``channel`` attribute and compressed in blocks per channel
(programme text compresses about tenfold), so a 200 MB guide is held in
some tens of MB.  Programmes without a title or with a malformed start
time are left out (they would make our guide invalid).

**Writing** (:func:`write_guide`): a ``<channel>`` for each channel of a
playlist, its id the channel number the playlist uses (so the M3U's
``tvg-id`` and the guide agree), with the channel's name, number and logo,
then the programmes of the source channel whose id is the channel's
``TV-guide-id`` (from the first source that has any for it), each given
our channel id.
"""

import gzip
import io
import lzma
import re
import zlib
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from .playlists import channel_display_name, channel_logo, clean

# Largest guide read, after decompression; a big provider guide is a few
# hundred MB, and a gzip bomb must stop somewhere.
MAX_GUIDE_BYTES = 1024 * 1024 * 1024

# A channel's programmes are compressed once this much of them waits, or
# once the guide moves on to another channel with at least MIN_BLOCK_BYTES
# of them waiting (a guide ordered by channel leaves nothing behind), and
# every channel's once all waiting ones reach PENDING_LIMIT_BYTES (a guide
# ordered by time rather than by channel).
BLOCK_BYTES = 32 * 1024
MIN_BLOCK_BYTES = 4 * 1024
PENDING_LIMIT_BYTES = 16 * 1024 * 1024
COMPRESSION_LEVEL = 6

_GZIP_MAGIC = b"\x1f\x8b"
_XZ_MAGIC = b"\xfd7zXZ\x00"

# XMLTV times as tv_validate_file accepts them: YYYYMMDDhhmm[ss] and an
# optional zone.
_TIME = re.compile(r"^\d{12}(?:\d{2})?(?:\s+(?:[A-Z]+|[+-]\d{4}))?$")

_PROGRAMME_START = b"<programme "


class GuideError(ValueError):
    """
    A source that is not a usable XMLTV guide; the message says why.
    """


class _Bounded(io.RawIOBase):
    """
    Reads ``stream`` and fails once more than ``limit`` bytes came out.
    """

    def __init__(self, stream, limit):
        self._stream = stream
        self._limit = limit
        self.count = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._stream.read(len(buffer))
        self.count += len(data)
        if self.count > self._limit:
            raise GuideError(f"the guide is larger than {self._limit // (1024 * 1024)} MB")
        buffer[: len(data)] = data
        return len(data)


def _decompressed(stream, layers=2):
    """
    ``stream`` unwrapped from gzip or xz (up to ``layers`` deep: a
    ``.xml.gz`` sent with ``Content-Encoding: gzip``).
    """
    buffered = io.BufferedReader(stream) if not hasattr(stream, "peek") else stream
    magic = buffered.peek(6)[:6]
    if layers and magic.startswith(_GZIP_MAGIC):
        return _decompressed(gzip.GzipFile(fileobj=buffered, mode="rb"), layers - 1)
    if layers and magic.startswith(_XZ_MAGIC):
        return _decompressed(lzma.LZMAFile(buffered, mode="rb"), layers - 1)
    return buffered


class SourceGuide:
    """
    What is kept of one source's guide: ``channels`` (``{id: (name,
    icon)}``) and each channel's programmes, compressed; ``programmes``
    counts them all.  Read-only once built, so requests may read it from
    any thread.
    """

    def __init__(self):
        self.channels = {}
        self.programmes = 0
        self.counts = {}
        self._blocks = {}
        self._folded = {}

    def find(self, guide_id):
        """
        The id under which this source has programmes for ``guide_id``
        (exactly, else ignoring case), or None.
        """
        if guide_id in self._blocks:
            return guide_id
        return self._folded.get(guide_id.casefold())

    def programmes_of(self, source_id):
        """
        The serialized programmes of source channel ``source_id`` (each on
        a line of its own, without a ``channel`` attribute).
        """
        return b"".join(zlib.decompress(block) for block in self._blocks.get(source_id, ()))

    def stored_bytes(self):
        """
        Bytes of compressed programmes held.
        """
        return sum(len(block) for blocks in self._blocks.values() for block in blocks)


class _Builder:
    """
    Collects a source's programmes into compressed blocks as they are read.
    """

    def __init__(self):
        self.guide = SourceGuide()
        self._pending = {}
        self._pending_bytes = 0
        self._last = None

    def channel(self, element):
        channel_id = (element.get("id") or "").strip()
        if not channel_id or channel_id in self.guide.channels:
            return
        name = ""
        for display in element.findall("display-name"):
            if display.text and display.text.strip():
                name = display.text.strip()
                break
        icon = element.find("icon")
        self.guide.channels[channel_id] = (name, (icon.get("src") or "").strip() if icon is not None else "")

    def programme(self, element):
        channel_id = element.get("channel")
        start = element.get("start")
        if not channel_id or not start or not _TIME.match(start.strip()):
            return
        title = element.find("title")
        if title is None or not (title.text or "").strip():
            return
        stop = element.get("stop")
        if stop is not None and not _TIME.match(stop.strip()):
            del element.attrib["stop"]
        del element.attrib["channel"]
        element.tail = None
        data = ET.tostring(element, encoding="utf-8")
        last = self._last
        if last != channel_id:
            self._last = channel_id
            waiting = self._pending.get(last)
            if waiting is not None and waiting[1] >= MIN_BLOCK_BYTES:
                self._compress(last)
        pending = self._pending.get(channel_id)
        if pending is None:
            pending = self._pending[channel_id] = [[], 0]
        pending[0].append(data)
        pending[1] += len(data) + 1
        self._pending_bytes += len(data) + 1
        counts = self.guide.counts
        counts[channel_id] = counts.get(channel_id, 0) + 1
        self.guide.programmes += 1
        if pending[1] >= BLOCK_BYTES:
            self._compress(channel_id)
        elif self._pending_bytes >= PENDING_LIMIT_BYTES:
            for waiting in list(self._pending):
                self._compress(waiting)

    def _compress(self, channel_id):
        parts, size = self._pending.pop(channel_id)
        parts.append(b"")
        data = b"\n".join(parts)
        self._pending_bytes -= size
        block = zlib.compress(data, COMPRESSION_LEVEL)
        self.guide._blocks.setdefault(channel_id, []).append(block)

    def finish(self):
        for channel_id in list(self._pending):
            self._compress(channel_id)
        guide = self.guide
        guide._folded = {}
        for channel_id in guide._blocks:
            guide._folded.setdefault(channel_id.casefold(), channel_id)
        return guide


# Top-level elements read between two calls of parse_guide's ``check``.
CHECK_EVERY = 4096


def parse_guide(stream, max_bytes=MAX_GUIDE_BYTES, check=None):
    """
    Read an XMLTV guide from the binary file object ``stream`` (plain,
    gzip or xz) into a :class:`SourceGuide`, in memory bounded by what is
    kept, not by the file.  ``check()``, called every
    :data:`CHECK_EVERY` channels and programmes, may raise to stop early
    (the daemon is shutting down).

    :raises GuideError: when it is not XMLTV, not well-formed, larger than
        ``max_bytes`` once decompressed, or holds neither channels nor
        programmes.
    """
    try:
        source = _decompressed(stream)
        bounded = io.BufferedReader(_Bounded(source, max_bytes), 256 * 1024)
        builder = _Builder()
        root = None
        depth = 0
        read = 0
        for event, element in ET.iterparse(bounded, events=("start", "end")):
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                    if element.tag != "tv":
                        raise GuideError(f"not an XMLTV guide (it begins with <{element.tag}>, not <tv>)")
                continue
            depth -= 1
            if depth != 1:
                continue
            if element.tag == "programme":
                builder.programme(element)
            elif element.tag == "channel":
                builder.channel(element)
            root.clear()
            read += 1
            if check is not None and read % CHECK_EVERY == 0:
                check()
    except ET.ParseError as e:
        raise GuideError(f"not well-formed XML ({e})")
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:
        raise GuideError(f"cannot be read ({e})")
    if root is None:
        raise GuideError("the guide is empty")
    guide = builder.finish()
    if not guide.channels and not guide.programmes:
        raise GuideError("the guide lists no channels and no programmes")
    return guide


def parse_guide_file(path, max_bytes=MAX_GUIDE_BYTES, check=None):
    """
    :func:`parse_guide` of the file at ``path``.

    :raises GuideError: as it does, and when the file cannot be opened.
    """
    try:
        with open(path, "rb") as f:
            return parse_guide(f, max_bytes, check)
    except OSError as e:
        raise GuideError(f"cannot be opened ({e.strerror})")


GENERATOR = "streamproxy"


def _find_programmes(guide_id, sources):
    """
    ``(source, its id)`` of the first of ``sources`` with programmes for
    ``guide_id``, or None.
    """
    if not guide_id:
        return None
    for source in sources:
        found = source.find(guide_id)
        if found is not None:
            return source, found
    return None


def _source_icon(guide_id, sources):
    for source in sources:
        entry = source.channels.get(guide_id)
        if entry is not None and entry[1]:
            return entry[1]
    return ""


def _guide_id(ranked):
    for candidate in ranked:
        if candidate.guide_id:
            return candidate.guide_id
    return ""


def write_guide(channels, ranking, sources, write):
    """
    Write the XMLTV guide of ``channels`` (channel id to candidates, in
    channel order) through ``write(bytes)``, with programmes from
    ``sources`` (:class:`SourceGuide` s, first preferred).  Returns the
    number of programmes written.
    """
    write(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE tv SYSTEM "xmltv.dtd">\n'
          b'<tv generator-info-name="' + GENERATOR.encode("ascii") + b'">\n')
    matched = []
    for channel_id, candidates in channels.items():
        ranked = ranking.rank(candidates) if len(candidates) > 1 else candidates
        guide_id = clean(_guide_id(ranked))
        found = _find_programmes(guide_id, sources)
        logo = channel_logo(ranked) or (_source_icon(found[1], sources) if found else "")
        parts = [
            f"  <channel id={quoteattr(channel_id)}>\n",
            f"    <display-name>{escape(channel_display_name(channel_id, ranked))}</display-name>\n",
            f"    <display-name>{escape(channel_id)}</display-name>\n",
        ]
        if logo:
            parts.append(f"    <icon src={quoteattr(logo)}/>\n")
        parts.append("  </channel>\n")
        write("".join(parts).encode("utf-8"))
        if found is not None:
            matched.append((channel_id, found))
    written = 0
    for channel_id, (source, source_id) in matched:
        opening = b"  <programme channel=" + quoteattr(channel_id).encode("utf-8") + b" "
        write(source.programmes_of(source_id).replace(_PROGRAMME_START, opening))
        written += source.counts.get(source_id, 0)
    write(b"</tv>\n")
    return written


def gzipped_guide(channels, ranking, sources, level=6):
    """
    ``(gzip bytes, programme count)`` of :func:`write_guide`'s document.
    """
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = []
    count = write_guide(channels, ranking, sources, lambda data: parts.append(compressor.compress(data)))
    parts.append(compressor.flush())
    return b"".join(parts), count
