"""
Generated XMLTV guides for tests and benchmarks: channels ``ch<N>.src``
with a programme every ``minutes`` minutes for ``days`` days, titles and
descriptions varied so they compress like real ones, written as they are
made (a guide of hundreds of MB never sits in memory).
"""

import gzip
import random
from xml.sax.saxutils import escape, quoteattr

WORDS = (
    "news weather sport market report evening morning live special final world local city "
    "drama comedy family travel kitchen garden history science nature ocean mountain river "
    "detective island wedding journey secret house street summer winter champion season "
    "episode story mystery legend music concert interview review classic island harbour"
).split()

BASE_TIME = (2024, 5, 1)


def _stamp(minutes_from_base):
    day, rest = divmod(minutes_from_base, 24 * 60)
    hour, minute = divmod(rest, 60)
    return f"202405{1 + day:02d}{hour:02d}{minute:02d}00 +0000"


def channel_id(number):
    """
    The source id of generated channel ``number``.
    """
    return f"ch{number}.src"


def write_guide(out, channels=10, days=1, minutes=60, seed=1, by_time=False, extra_channel=None):
    """
    Write a guide to the binary file object ``out``; returns the number
    of programmes.  ``by_time`` orders programmes by time across channels
    instead of channel by channel; ``extra_channel`` adds one channel id
    with a single programme.
    """
    rng = random.Random(seed)
    out.write(b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE tv SYSTEM "xmltv.dtd">\n'
              b'<tv generator-info-name="tests.guidegen">\n')
    ids = [channel_id(n) for n in range(1, channels + 1)]
    if extra_channel:
        ids.append(extra_channel)
    for number, ident in enumerate(ids, 1):
        out.write(
            f"  <channel id={quoteattr(ident)}>\n    <display-name>Source {number}</display-name>\n"
            f'    <icon src="http://icons.example/{number}.png"/>\n  </channel>\n'.encode("utf-8")
        )
    slots = days * 24 * 60 // minutes
    count = 0

    def programme(ident, slot):
        title = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))).title()
        desc = " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30)))
        return (
            f'  <programme start="{_stamp(slot * minutes)}" stop="{_stamp((slot + 1) * minutes)}" '
            f"channel={quoteattr(ident)}>\n"
            f'    <title lang="en">{escape(title)}</title>\n'
            f'    <desc lang="en">{escape(desc.capitalize())}.</desc>\n'
            f'    <category lang="en">{rng.choice(WORDS).title()}</category>\n'
            f"  </programme>\n"
        ).encode("utf-8")

    main = ids[:channels]
    if by_time:
        for slot in range(slots):
            for ident in main:
                out.write(programme(ident, slot))
                count += 1
    else:
        for ident in main:
            for slot in range(slots):
                out.write(programme(ident, slot))
                count += 1
    if extra_channel:
        out.write(programme(extra_channel, 0))
        count += 1
    out.write(b"</tv>\n")
    return count


def guide_bytes(compress=False, **options):
    """
    A generated guide as bytes (gzip when ``compress``).
    """
    import io

    buffer = io.BytesIO()
    write_guide(buffer, **options)
    data = buffer.getvalue()
    return gzip.compress(data) if compress else data
