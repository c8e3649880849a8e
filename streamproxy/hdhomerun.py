"""
HDHomeRun emulation: each M3U playlist is a network tuner that Plex,
Jellyfin, Emby and Channels DVR can add as an HDHomeRun.

A device per playlist, each with its own DeviceID (Plex confuses devices
that share one), served under ``/hdhr/<playlist>/``; the root paths
(``/discover.json``, ``/lineup.json``, ...) serve the playlist named by
``hdhomerun.playlist``, else the first one by name.  This module decides
what the devices are and what they answer, as plain data; the routes are in
:mod:`streamproxy.web`, SiliconDust's discovery and control protocols in
:mod:`streamproxy.silicondust` and SSDP in :mod:`streamproxy.ssdp`.

**DeviceIDs.**  A DeviceID is 8 hex digits whose last digit is a check
digit over the other seven (SiliconDust's rule, which clients such as
``hdhomerun_config`` check).  Each install has a random *seed*, made on the
first start and kept in the database file (table ``HDHomeRunIdentity``);
a playlist's DeviceID and DeviceAuth are derived from the seed and the
playlist's name, so they stay the same across restarts and playlists never
share one, with nothing written when a playlist appears.  ``hdhomerun.
device_id`` in ``config.yaml`` replaces the root device's DeviceID.
"""

import hashlib
import html
import os
import re
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from .playlists import STREAM_FILES, channel_display_name

log = Logger()

# What the devices say they are.  HDTC-2US is what emulators send and what
# Plex, Jellyfin and Emby accept as a network tuner; Jellyfin, seeing
# "HDTC" in the model, appends ?transcode=<profile> to stream URLs, which
# the stream routes ignore.
MODEL_NUMBER = "HDTC-2US"
FIRMWARE_NAME = "hdhomeruntc_atsc"
FIRMWARE_VERSION = "20230501"
MANUFACTURER = "Silicondust"

# Tuners an unlimited source (no source_limits entry, no provider limit)
# counts for in TunerCount; the total is at most MAX_TUNERS (the count is
# one byte in SiliconDust's discovery reply, and no client needs more).
UNLIMITED_SOURCE_TUNERS = 4
MAX_TUNERS = 32

IDENTITY_TABLE = "HDHomeRunIdentity"

# SiliconDust's check-digit table (public in libhdhomerun's discovery code).
_CHECK_TABLE = (0xA, 0x5, 0xF, 0x6, 0x7, 0xC, 0x1, 0xB, 0x9, 0x2, 0x8, 0xD, 0x4, 0x3, 0xE, 0x0)
_HEX_ID = re.compile(r"^[0-9A-Fa-f]{8}$")


def check_digit(first_seven):
    """
    The check digit (0-15) that completes a DeviceID whose first seven hex
    digits are the 28-bit number ``first_seven``.
    """
    digits = [(first_seven >> shift) & 0xF for shift in (24, 20, 16, 12, 8, 4, 0)]
    check = 0
    for index, digit in enumerate(digits):
        check ^= _CHECK_TABLE[digit] if index % 2 == 0 else digit
    return check


def device_id_is_valid(device_id):
    """
    Whether ``device_id`` (text of 8 hex digits, or a number) passes
    SiliconDust's check-digit rule.
    """
    if isinstance(device_id, str):
        if not _HEX_ID.match(device_id):
            return False
        device_id = int(device_id, 16)
    return check_digit(device_id >> 4) == device_id & 0xF


def complete_device_id(first_seven):
    """
    The DeviceID (8 upper-case hex digits) made of the 28-bit number
    ``first_seven`` and its check digit.
    """
    return f"{(first_seven << 4) | check_digit(first_seven):08X}"


def derive_identity(seed, playlist):
    """
    ``(device_id, device_auth)`` of ``playlist``'s device on the install
    whose seed is ``seed``.

    The DeviceID starts with ``1`` like SiliconDust's and avoids the
    prefixes of their legacy models (``100``-``103``, ``111``,
    ``120``-``122``), which clients treat differently.
    """
    digest = hashlib.sha256(f"{seed}\x00{playlist}".encode("utf-8")).digest()
    number = int.from_bytes(digest[:8], "big")
    second = 3 + number % 13  # 0x13... to 0x1F...: no legacy prefix
    rest = (number >> 8) & 0xFFFFF
    device_id = complete_device_id((0x1 << 24) | (second << 20) | rest)
    auth = hashlib.sha256(f"{seed}\x00auth\x00{playlist}".encode("utf-8")).hexdigest()[:24]
    return device_id, auth


def new_seed():
    """
    A fresh random install seed (hex text).
    """
    return os.urandom(16).hex()


def load_or_create_seed(cursor, seed_if_new):
    """
    The install's seed from the database file, storing ``seed_if_new``
    when it has none yet.  Runs in the database thread.
    """
    cursor.execute(f'CREATE TABLE IF NOT EXISTS "{IDENTITY_TABLE}" ("seed" TEXT NOT NULL)')
    found = cursor.execute(f'SELECT "seed" FROM "{IDENTITY_TABLE}" LIMIT 1').fetchone()
    if found and found[0]:
        return found[0]
    cursor.execute(f'INSERT INTO "{IDENTITY_TABLE}" ("seed") VALUES (?)', (seed_if_new,))
    return seed_if_new


def tuner_count(sources, limit_of):
    """
    The TunerCount of a device whose channels come from ``sources``:
    the sum of their limits (``limit_of(source)``, None for unlimited),
    an unlimited source counting :data:`UNLIMITED_SOURCE_TUNERS`, within
    1 to :data:`MAX_TUNERS`.
    """
    total = 0
    for source in set(sources):
        limit = limit_of(source)
        total += UNLIMITED_SOURCE_TUNERS if limit is None else limit
    return max(1, min(MAX_TUNERS, total))


# Codec names as HDHomeRun lineups spell them (Jellyfin reads "MPEG2" and
# lower-cases the rest).
_LINEUP_CODECS = {
    "h264": "H264",
    "hevc": "HEVC",
    "mpeg2video": "MPEG2",
    "aac": "AAC",
    "ac3": "AC3",
    "eac3": "EAC3",
    "mp3": "MP3",
    "mp2": "MPEG",
}


def lineup_codec(name):
    """
    An ffmpeg codec name as an HDHomeRun lineup spells it.
    """
    return _LINEUP_CODECS.get(name, name.upper())


@dataclass(frozen=True)
class Device:
    """
    One emulated tuner: the playlist it serves (None: there is none),
    its DeviceID and DeviceAuth, its FriendlyName and TunerCount, and
    whether it is the one the root paths serve.
    """

    playlist: str | None
    device_id: str
    device_auth: str
    friendly_name: str
    tuner_count: int
    root: bool

    def base_path(self):
        """
        The path its HTTP API lives under: ``""`` for the root device,
        ``/hdhr/<playlist>`` for the others.
        """
        return "" if self.root else f"/hdhr/{self.playlist}"


def discover_answer(device, base):
    """
    ``/discover.json`` of ``device`` reached under ``base`` (its base URL,
    ``http://host:port`` or ``.../hdhr/<playlist>``).  TunerCount is a JSON
    number: Plex misreads a string.
    """
    return {
        "FriendlyName": device.friendly_name,
        "Manufacturer": MANUFACTURER,
        "ModelNumber": MODEL_NUMBER,
        "FirmwareName": FIRMWARE_NAME,
        "FirmwareVersion": FIRMWARE_VERSION,
        "DeviceID": device.device_id,
        "DeviceAuth": device.device_auth,
        "BaseURL": base,
        "LineupURL": f"{base}/lineup.json",
        "TunerCount": int(device.tuner_count),
    }


def lineup_status_answer():
    """
    ``/lineup_status.json``: no scan running, none possible (the lineup is
    the playlist).
    """
    return {"ScanInProgress": 0, "ScanPossible": 0, "Source": "Cable", "SourceList": ["Cable"]}


def lineup_answer(channels, ranking, root_url, media_of=None):
    """
    ``/lineup.json`` for ``channels`` (channel id to candidates, in
    channel order): GuideNumber (the M3U's channel number), GuideName and
    URL (the channel's MPEG-TS stream under ``root_url``), plus VideoCodec,
    AudioCodec and HD when ``media_of(rowid)`` knows the best candidate's
    media (a :class:`~streamproxy.codec_memory.StreamMedia` or None).
    """
    lineup = []
    for channel_id, candidates in channels.items():
        ranked = ranking.rank(candidates) if len(candidates) > 1 else candidates
        entry = {
            "GuideNumber": channel_id,
            "GuideName": channel_display_name(channel_id, ranked),
            "URL": f"{root_url}/channel/{channel_id}/{STREAM_FILES['ts']}",
        }
        known = media_of(ranked[0].rowid) if media_of is not None else None
        if known is not None:
            if known.video:
                entry["VideoCodec"] = lineup_codec(known.video)
            if known.audio:
                entry["AudioCodec"] = lineup_codec(known.audio)
            if known.height:
                entry["HD"] = 1 if known.height >= 720 else 0
        lineup.append(entry)
    return lineup


def device_xml(device, base):
    """
    ``/device.xml``: a UPnP MediaServer root description whose UDN carries
    the DeviceID (Plex reads it after an SSDP answer).
    """
    e = html.escape
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<root xmlns="urn:schemas-upnp-org:device-1-0">\n'
        "  <specVersion><major>1</major><minor>0</minor></specVersion>\n"
        f"  <URLBase>{e(base)}</URLBase>\n"
        "  <device>\n"
        "    <deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType>\n"
        f"    <friendlyName>{e(device.friendly_name)}</friendlyName>\n"
        f"    <manufacturer>{MANUFACTURER}</manufacturer>\n"
        f"    <modelName>{MODEL_NUMBER}</modelName>\n"
        f"    <modelNumber>{MODEL_NUMBER}</modelNumber>\n"
        f"    <serialNumber>{device.device_id}</serialNumber>\n"
        f"    <UDN>uuid:{device.device_id}</UDN>\n"
        "  </device>\n"
        "</root>\n"
    )


# What an idle tuner reports to /tunerN/status, as a real one does.
IDLE_TUNER_STATUS = "ch=none lock=none ss=0 snq=0 seq=0 bps=0 pps=0"


def tuner_status(entry):
    """
    ``/tunerN/status`` text for a running channel's status ``entry`` (as
    :meth:`ChannelManager.status` lists them), or the idle line for None.
    """
    if entry is None:
        return IDLE_TUNER_STATUS
    current = entry.get("current") or {}
    live = entry.get("state") == "live"
    quality = 100 if live else 0
    bps = int((current.get("bitrate_kbps") or 0) * 1000)
    return (f"ch=auto:{entry.get('channel_id')} lock={'auto' if live else 'none'} "
            f"ss={quality} snq={quality} seq={quality} bps={bps} pps=0")


class NotReady(Exception):
    """
    The install's identity has not been read from the database yet (a
    request in the first moments after the start).
    """


class Tuners(Service):
    """
    The emulated devices of the current catalog, and their answers.

    ``settings`` is the ``hdhomerun:`` block (:class:`~streamproxy.config.
    HDHomeRunConfig`); ``store`` gives the catalog and ``run_interaction``
    (the seed is read, or made and kept, at start); ``slots`` the source
    limits behind TunerCount; ``ranking`` orders candidates; ``media``
    (a :class:`~streamproxy.codec_memory.CodecMemory` or None) the codecs
    seen; ``channels`` (the manager, or None) the running channels for
    ``/tunerN/status``.
    """

    name = "hdhomerun"

    def __init__(self, settings, store, slots, ranking, media=None, channels=None):
        self.settings = settings
        self._store = store
        self._slots = slots
        self.ranking = ranking
        self.media = media
        self._channels = channels
        self.seed = None
        self._waiting = []
        self._sources_of = (None, {})

    # Identity.

    def startService(self):
        """
        Read the install's seed (making and keeping one on the first
        start); a database that cannot keep it gives a seed for this run
        only, with a warning that the DeviceIDs will change.
        """
        super().startService()
        made = new_seed()
        d = defer.maybeDeferred(self._store.run_interaction, load_or_create_seed, made)

        def failed(failure):
            log.warn("HDHomeRun: could not keep the DeviceID seed in the database ({error}); "
                     "DeviceIDs are new for this run only", error=failure.getErrorMessage())
            return made

        d.addErrback(failed)
        d.addCallback(self._have_seed)
        return None

    def _have_seed(self, seed):
        self.seed = seed
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(self)

    def when_ready(self):
        """
        A Deferred that fires once the seed is known (at once when it is).
        Cancelling it only stops this wait.
        """
        if self.seed is not None:
            return defer.succeed(self)
        waiter = defer.Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        self._waiting.append(waiter)
        return waiter

    # Devices.

    def _playlist_key(self, name):
        """
        The catalog's own spelling of playlist ``name`` (case ignored when
        there is no exact match), or None.
        """
        playlists = self._store.catalog.playlists
        if name in playlists:
            return name
        folded = name.casefold()
        for key in playlists:
            if key.casefold() == folded:
                return key
        return None

    def root_playlist(self):
        """
        The playlist the root paths serve: ``hdhomerun.playlist`` when the
        catalog has it, else the first by name; None without playlists.
        """
        wanted = self.settings.playlist
        if wanted:
            key = self._playlist_key(wanted)
            if key is not None:
                return key
        names = sorted(self._store.catalog.playlists)
        return names[0] if names else None

    def device(self, playlist=None):
        """
        The :class:`Device` of ``playlist`` (None: the root device), or
        None when there is no such playlist.

        :raises NotReady: before the seed has been read.
        """
        if self.seed is None:
            raise NotReady("the tuner's identity is still being read after the start")
        root = self.root_playlist()
        if playlist is None:
            key = root
        else:
            key = self._playlist_key(playlist)
            if key is None:
                return None
        is_root = playlist is None or key == root
        device_id, auth = derive_identity(self.seed, key or "")
        if key == root and self.settings.device_id:
            device_id = self.settings.device_id
        if self.settings.tuner_count is not None:
            count = self.settings.tuner_count
        else:
            sources = self._sources(key)
            count = tuner_count(sources, self._slots.limit) if sources else 1
        name = f"{self.settings.friendly_name} {key}" if key else self.settings.friendly_name
        return Device(key, device_id, auth, name, count, is_root)

    def _sources(self, playlist):
        """
        The sources of ``playlist``'s channels, worked out once per catalog
        (discovery asks on every request).
        """
        catalog = self._store.catalog
        if self._sources_of[0] is not catalog:
            self._sources_of = (catalog, {})
        found = self._sources_of[1].get(playlist)
        if found is None:
            channels = catalog.playlists.get(playlist, {}) if playlist else {}
            found = frozenset(c.source for candidates in channels.values() for c in candidates)
            self._sources_of[1][playlist] = found
        return found

    def devices(self):
        """
        Every device: the root device first, then one per other playlist
        by name.

        :raises NotReady: before the seed has been read.
        """
        root = self.device()
        others = [self.device(name) for name in sorted(self._store.catalog.playlists) if name != root.playlist]
        return [root] + [d for d in others if d is not None]

    def playlist_channels(self, playlist=None):
        """
        The channels (channel id to candidates) of ``playlist``'s device
        (None: the root device's), or None when there is no such playlist.
        Needs no identity, so a tune never waits for it.
        """
        key = self.root_playlist() if playlist is None else self._playlist_key(playlist)
        if key is None:
            return None if playlist is not None else {}
        return self._store.catalog.playlists.get(key, {})

    def lineup(self, device):
        """
        The channels ``device`` tunes (channel id to candidates).
        """
        if device.playlist is None:
            return {}
        return self._store.catalog.playlists.get(device.playlist, {})

    def media_of(self, rowid):
        """
        What is known of a row's media from an earlier run, or None.
        """
        return self.media.get(rowid) if self.media is not None else None

    # The control protocol's values.

    def control_value(self, name):
        """
        The value of control variable ``name`` (``/sys/model``,
        ``/tuner0/status``, ...) of the root device, or None when it has
        none.
        """
        name = name.strip()
        fixed = {
            "/sys/model": FIRMWARE_NAME,
            "/sys/hwmodel": MODEL_NUMBER,
            "/sys/version": FIRMWARE_VERSION,
            "/sys/copyright": "streamproxy (HDHomeRun emulation)",
        }
        if name in fixed:
            return fixed[name]
        match = re.match(r"^/tuner(\d{1,2})/(status|vchannel|channel|target)$", name)
        if match is None:
            return None
        index = int(match.group(1))
        device = self.device()
        if device is None or index >= device.tuner_count:
            return None
        running = self._running()
        entry = running[index] if index < len(running) else None
        item = match.group(2)
        if item == "status":
            return tuner_status(entry)
        if item == "vchannel":
            return entry["channel_id"] if entry else "none"
        if item == "channel":
            return f"auto:{entry['channel_id']}" if entry else "none"
        return "none"

    def _running(self):
        """
        The running channels' status entries, oldest first: tuner N shows
        the N-th.
        """
        if self._channels is None:
            return []
        entries = [e for e in self._channels.status()["channels"] if e.get("state") not in ("stopped", "failed")]
        return sorted(entries, key=lambda e: (e.get("since") or 0, str(e.get("channel_id"))))
