"""
Loading and validating ``config.yaml``.

The keys are the Flask proxy's constants, lower-cased, as flat top-level keys,
so a user of that script moves over by renaming.  Every problem is reported as
one :class:`ConfigError` sentence naming the key and what is wrong with it.
"""

import difflib
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields

import yaml

from .channels import normalize_channel_id
from .content import ContentChecks
from .hosts import BadHost, normalize_allowed_host
from .urls import DEFAULT_SCHEMES, NETWORK_SCHEMES


class ConfigError(Exception):
    """
    The configuration cannot be used; the message is one line for the user.
    """


# Hours between syncs of a provider when its entry does not say.
DEFAULT_REFRESH_HOURS = 24.0

PROVIDER_KEYS = (
    "name", "account", "m3u_url", "xtream", "max_streams", "quality", "playlist", "refresh_hours", "groups",
)
XTREAM_KEYS = ("url", "username", "password")


@dataclass(frozen=True)
class ProviderConfig:
    """
    One provider account of ``providers:``.  ``name`` is the ``Source`` of
    its rows; ``account`` tells apart several accounts sharing a name
    (``<name>#<n>`` by default, n counting accounts of that name from 1).
    Exactly one of ``m3u_url`` and ``xtream_url`` is set.  The URL, user
    name and password never appear in a repr (nor anywhere shown).
    """

    name: str
    account: str
    m3u_url: str | None = field(default=None, repr=False)
    xtream_url: str | None = field(default=None, repr=False)
    xtream_username: str | None = field(default=None, repr=False)
    xtream_password: str | None = field(default=None, repr=False)
    max_streams: int | None = None
    quality: str = "1"
    playlist: str = ""
    refresh_hours: float = DEFAULT_REFRESH_HOURS
    groups: tuple = ()

    @property
    def kind(self):
        """
        ``m3u`` or ``xtream``.
        """
        return "xtream" if self.xtream_url else "m3u"

    def secrets(self):
        """
        The values that must never be shown: the URLs and credentials.
        """
        return tuple(
            value
            for value in (self.m3u_url, self.xtream_username, self.xtream_password)
            if value
        )


# -- HDHomeRun emulation and the XMLTV guide (issue 11) ----------------------

HDHOMERUN_KEYS = ("enabled", "device_id", "friendly_name", "tuner_count", "discovery", "playlist")

# Hours between fetches of the guide sources when guide_refresh_hours is not given.
DEFAULT_GUIDE_REFRESH_HOURS = 12.0


@dataclass(frozen=True)
class HDHomeRunConfig:
    """
    The ``hdhomerun:`` block.  ``enabled`` serves the HDHomeRun HTTP API
    (``/discover.json``, ``/lineup.json``, ``/hdhr/<playlist>/...``);
    ``discovery`` also answers SiliconDust discovery and control (port
    65001) and SSDP (port 1900).  ``device_id`` replaces the root device's
    DeviceID (8 hex digits passing SiliconDust's check digit; None: the
    one generated for this install); ``tuner_count`` replaces every
    device's TunerCount (None: the sum of its sources' limits);
    ``playlist`` is the playlist the root paths serve (None: the first by
    name); ``friendly_name`` begins every device's FriendlyName.
    """

    enabled: bool = True
    device_id: str | None = None
    friendly_name: str = "streamproxy"
    tuner_count: int | None = None
    discovery: bool = True
    playlist: str | None = None


def _check_hdhomerun(value):
    from .hdhomerun import MAX_TUNERS, complete_device_id, device_id_is_valid

    if value is None:
        return HDHomeRunConfig()
    if not isinstance(value, dict):
        raise ConfigError(f"hdhomerun: must be a mapping (enabled:, discovery:, ...), not {_type_name(value)}")
    values = {}
    for key, item in value.items():
        where = f"hdhomerun.{key}"
        if key not in HDHOMERUN_KEYS:
            raise _unknown("hdhomerun", key, HDHOMERUN_KEYS)
        if key in ("enabled", "discovery"):
            if not isinstance(item, bool):
                raise ConfigError(f"{where}: must be true or false, not {_type_name(item)} ({item!r})")
            values[key] = item
        elif key == "device_id":
            if item is None:
                continue
            text = str(item).strip().upper() if isinstance(item, (str, int)) and not isinstance(item, bool) else None
            if text is None or len(text) != 8 or any(c not in "0123456789ABCDEF" for c in text):
                raise ConfigError(f"{where}: must be 8 hex digits such as 1A2B3C4D, or null, not {item!r}")
            if not device_id_is_valid(text):
                fixed = complete_device_id(int(text, 16) >> 4)
                raise ConfigError(f"{where}: {text} fails SiliconDust's check digit (the last digit); "
                                  f"{fixed} would pass")
            values[key] = text
        elif key == "tuner_count":
            if item is None:
                continue
            if not _is_whole(item) or not 1 <= item <= MAX_TUNERS:
                raise ConfigError(f"{where}: must be a whole number from 1 to {MAX_TUNERS}, or null, not {item!r}")
            values[key] = item
        else:  # friendly_name, playlist
            if item is None and key == "playlist":
                continue
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str) or not item.strip() or any(ord(c) < 32 for c in item):
                raise ConfigError(f"{where}: must be text on one line, not {_type_name(item)}")
            values[key] = item.strip()
    return HDHomeRunConfig(**values)


def _check_guide_sources(value, base_dir):
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"guide_sources: must be a list of XMLTV URLs or files, not {_type_name(value)}")
    sources = []
    for index, item in enumerate(value):
        where = f"guide_sources[{index}]"
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{where}: must be an http:// or https:// URL or a file path, not {_type_name(item)}")
        item = item.strip()
        if "://" in item:
            if not item.lower().startswith(("http://", "https://")):
                raise ConfigError(f"{where}: must be an http:// or https:// URL or a file path, not a "
                                  f"{item.split('://', 1)[0]}:// URL")
        else:
            item = os.path.normpath(os.path.join(base_dir, os.path.expanduser(item)))
        if item not in sources:
            sources.append(item)
    return tuple(sources)


def _check_guide_key(key, value, base_dir):
    """
    The keys of HDHomeRun emulation and the XMLTV guide.
    """
    if key == "hdhomerun":
        return _check_hdhomerun(value)
    if key == "guide_sources":
        return _check_guide_sources(value, base_dir)
    # guide_refresh_hours
    if not _is_number(value) or value <= 0:
        raise ConfigError(f"guide_refresh_hours: must be a number of hours above 0, not {value!r}")
    return float(value)


GUIDE_KEYS = ("hdhomerun", "guide_sources", "guide_refresh_hours")

# -----------------------------------------------------------------------------


def _default_segment_dir():
    return os.path.join(tempfile.gettempdir(), "streamproxy")


@dataclass(frozen=True)
class Config:
    """
    The validated settings of one daemon.  Defaults are the shipped defaults.
    """

    port: int = 9090
    interface: str = "0.0.0.0"
    db_path: str = "streams.db"
    channels_dvr_url: str | None = None
    quality_priority: tuple = ("1", "2", "3", "4", "5")
    source_priority: tuple = ()
    source_limits: dict = field(default_factory=dict)
    target_video_bitrate: str = "5M"
    target_audio_bitrate: str = "128k"
    buffer_check_interval: float = 5
    buffer_threshold: int = 3
    stream_start_timeout: float = 15
    inactivity_timeout: float = 30
    ffprobe_timeout: float = 10
    dvr_poll_interval: float = 30
    hls_time: float = 1
    hls_list_size: int = 3
    segment_dir: str = field(default_factory=_default_segment_dir)
    ffmpeg_path: str = "ffmpeg"
    ffprobe_path: str = "ffprobe"
    log_buffer_size: int = 500
    admin_password: str | None = None
    stream_format: str = "hls"
    allowed_url_schemes: tuple = DEFAULT_SCHEMES
    allowed_hosts: tuple = ()
    providers: tuple = ()
    # Streams that are up but useless, idle checks and the slate (see
    # streamproxy.content, streamproxy.idle, streamproxy.slate).
    content_checks: ContentChecks = field(default_factory=ContentChecks)
    idle_check_hours: float = 24
    slate: bool = True
    # HDHomeRun emulation and the XMLTV guide (issue 11).
    hdhomerun: HDHomeRunConfig = field(default_factory=HDHomeRunConfig)
    guide_sources: tuple = ()
    guide_refresh_hours: float = DEFAULT_GUIDE_REFRESH_HOURS


KEYS = tuple(f.name for f in fields(Config))

# Keys whose value is a number of seconds between or before events: zero or
# less would make a loop spin or a timeout fire at once.
_POSITIVE_SECONDS = (
    "buffer_check_interval",
    "stream_start_timeout",
    "inactivity_timeout",
    "ffprobe_timeout",
    "dvr_poll_interval",
    "hls_time",
)
_POSITIVE_COUNTS = ("buffer_threshold", "hls_list_size", "log_buffer_size")
_STRINGS = ("interface", "target_video_bitrate", "target_audio_bitrate")
_PATHS = ("db_path", "segment_dir")
_EXECUTABLES = ("ffmpeg_path", "ffprobe_path")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _type_name(value):
    if value is None:
        return "nothing (null)"
    return {
        bool: "true/false",
        int: "a whole number",
        float: "a number",
        str: "text",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


def _check_key(key, value, base_dir):
    """
    Validate and normalise one key's value, raising ConfigError naming the key.
    """

    def fail(what):
        raise ConfigError(f"{key}: {what}")

    if key == "port":
        if not _is_whole(value) or not 0 <= value <= 65535:
            fail(f"must be a whole number from 0 to 65535, not {value!r}")
        return value
    if key == "stream_format":
        if value not in ("hls", "ts"):
            fail(f"must be hls or ts, not {value!r}")
        return value
    if key in _POSITIVE_SECONDS:
        if not _is_number(value):
            fail(f"must be a number of seconds, not {_type_name(value)} ({value!r})")
        if value <= 0:
            fail(f"must be more than 0 seconds, not {value!r}")
        return value
    if key in _POSITIVE_COUNTS:
        if not _is_whole(value):
            fail(f"must be a whole number, not {_type_name(value)} ({value!r})")
        if value <= 0:
            fail(f"must be at least 1, not {value!r}")
        return value
    if key in _STRINGS:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            fail(f"must be text, not {_type_name(value)}")
        return value.strip()
    if key in _PATHS:
        if value is None and key == "segment_dir":
            value = _default_segment_dir()
        if not isinstance(value, str) or not value.strip():
            fail(f"must be a path, not {_type_name(value)}")
        path = os.path.expanduser(value.strip())
        return os.path.normpath(os.path.join(base_dir, path))
    if key in _EXECUTABLES:
        if not isinstance(value, str) or not value.strip():
            fail(f"must be the name or path of a program, not {_type_name(value)}")
        found = shutil.which(os.path.expanduser(value.strip()))
        if found is None:
            fail(f"{value!r} was not found or is not executable (install it or give its full path)")
        return found
    if key == "channels_dvr_url":
        if value is None:
            return None
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            fail(f"must be an http:// URL such as http://192.168.1.20:8089/dvr, or null, not {value!r}")
        return value.rstrip("/")
    if key == "admin_password":
        if value is None:
            return None
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) == "":
            fail("must be text, or null for no password")
        return str(value)
    if key in ("quality_priority", "source_priority"):
        if value is None:
            return ()
        if not isinstance(value, list):
            fail(f"must be a list, not {_type_name(value)}")
        for item in value:
            if not isinstance(item, (str, int)) or isinstance(item, bool):
                fail(f"entries must be names, not {_type_name(item)} ({item!r})")
        return tuple(str(item).strip() for item in value)
    if key == "source_limits":
        if value is None:
            return {}
        if not isinstance(value, dict):
            fail(f"must be a mapping of source name to a number of streams, not {_type_name(value)}")
        limits = {}
        for source, limit in value.items():
            if not _is_whole(limit) or limit < 0:
                raise ConfigError(
                    f"source_limits.{source}: must be a whole number of streams "
                    f"(0 or more), not {limit!r}"
                )
            limits[str(source).strip()] = limit
        return limits
    if key == "providers":
        return _check_providers(value)
    if key in ("content_checks", "idle_check_hours", "slate"):
        return _check_content_keys(key, value)
    if key == "allowed_url_schemes":
        if not isinstance(value, list) or not value:
            fail(f"must be a list of URL schemes such as [http, https], not {_type_name(value)} ({value!r})")
        schemes = []
        for item in value:
            scheme = str(item).strip().lower() if isinstance(item, str) else None
            if scheme not in NETWORK_SCHEMES:
                fail(
                    f"{item!r} is not a network protocol streamproxy can play; "
                    f"use some of {', '.join(NETWORK_SCHEMES)}"
                )
            if scheme not in schemes:
                schemes.append(scheme)
        return tuple(schemes)
    if key == "allowed_hosts":
        if value is None:
            return ()
        if not isinstance(value, list):
            fail(f"must be a list of host names such as [tv.example.lan], not {_type_name(value)} ({value!r})")
        hosts = []
        for item in value:
            if not isinstance(item, str):
                fail(f"entries must be host names, not {_type_name(item)} ({item!r})")
            try:
                hosts.append(normalize_allowed_host(item))
            except BadHost as e:
                fail(f"{item!r} {e}")
        return tuple(hosts)
    if key in GUIDE_KEYS:
        return _check_guide_key(key, value, base_dir)
    raise AssertionError(f"no check for key {key}")  # pragma: no cover


CONTENT_CHECK_KEYS = ("black_seconds", "freeze_seconds", "silence_seconds", "skip_channels")


def _check_content_keys(key, value):
    """
    ``content_checks:`` (a mapping), ``idle_check_hours`` and ``slate``.
    """
    if key == "slate":
        if not isinstance(value, bool):
            raise ConfigError(f"slate: must be true or false, not {_type_name(value)} ({value!r})")
        return value
    if key == "idle_check_hours":
        if not _is_number(value) or value < 0:
            raise ConfigError(
                f"idle_check_hours: must be a number of hours (0 turns idle checks off), not {value!r}"
            )
        return value
    if value is None:
        return ContentChecks()
    if not isinstance(value, dict):
        raise ConfigError(
            f"content_checks: must be a mapping (black_seconds, freeze_seconds, silence_seconds, "
            f"skip_channels), not {_type_name(value)}"
        )
    values = {}
    for name, item in value.items():
        if name not in CONTENT_CHECK_KEYS:
            raise _unknown("content_checks", name, CONTENT_CHECK_KEYS)
        if name == "skip_channels":
            if item is None:
                item = []
            if not isinstance(item, list):
                raise ConfigError(
                    f"content_checks.skip_channels: must be a list of channel numbers, not {_type_name(item)}"
                )
            channels = []
            for entry in item:
                try:
                    channels.append(normalize_channel_id(entry))
                except ValueError:
                    raise ConfigError(
                        f"content_checks.skip_channels: {entry!r} is not a channel number (such as 7 or 7.1)"
                    )
            values[name] = tuple(channels)
        else:
            if not _is_number(item) or item < 0:
                raise ConfigError(
                    f"content_checks.{name}: must be a number of seconds (0 turns this check off), not {item!r}"
                )
            values[name] = item
    return ContentChecks(**values)


def _http_url(value, where, example):
    if not isinstance(value, str) or not value.strip().lower().startswith(("http://", "https://")):
        shown = "text" if isinstance(value, str) else _type_name(value)
        raise ConfigError(f"{where}: must be an http:// or https:// URL such as {example}, not {shown}")
    return value.strip()


def _unknown(where, key, known):
    close = difflib.get_close_matches(str(key), known, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where}: unknown key '{key}'{hint}")


def _check_provider(entry, where, counts):
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a mapping (name:, m3u_url: or xtream:, ...), not {_type_name(entry)}")
    for key in entry:
        if key not in PROVIDER_KEYS:
            raise _unknown(where, key, PROVIDER_KEYS)
    name = entry.get("name")
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}.name: must be the provider's name (its rows' Source), not {_type_name(name)}")
    name = name.strip()
    counts[name] = counts.get(name, 0) + 1
    account = entry.get("account")
    if account is None:
        account = f"{name}#{counts[name]}"
    elif not isinstance(account, (str, int)) or isinstance(account, bool) or not str(account).strip():
        raise ConfigError(f"{where}.account: must be a label for this account, not {_type_name(account)}")
    values = {"name": name, "account": str(account).strip()}
    has_m3u, has_xtream = "m3u_url" in entry, "xtream" in entry
    if has_m3u == has_xtream:
        raise ConfigError(f"{where}: give either m3u_url or xtream (url, username, password), not {'both' if has_m3u else 'neither'}")
    if has_m3u:
        values["m3u_url"] = _http_url(entry["m3u_url"], f"{where}.m3u_url", "http://provider.example/get.php?...")
    else:
        xtream = entry["xtream"]
        if not isinstance(xtream, dict):
            raise ConfigError(f"{where}.xtream: must be a mapping with url, username and password, not {_type_name(xtream)}")
        for key in xtream:
            if key not in XTREAM_KEYS:
                raise _unknown(f"{where}.xtream", key, XTREAM_KEYS)
        values["xtream_url"] = _http_url(xtream.get("url"), f"{where}.xtream.url", "http://provider.example:8080")
        for key in ("username", "password"):
            value = xtream.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}.xtream.{key}: must be text, not {_type_name(value)}")
            values[f"xtream_{key}"] = value
    if entry.get("max_streams") is not None:
        limit = entry["max_streams"]
        if not _is_whole(limit) or limit < 0:
            raise ConfigError(f"{where}.max_streams: must be a whole number of streams (0 or more), not {limit!r}")
        values["max_streams"] = limit
    for key, default in (("quality", "1"), ("playlist", name)):
        value = entry.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{key}: must be text, not {_type_name(value)}")
        values[key] = value.strip()
    if "refresh_hours" in entry:
        hours = entry["refresh_hours"]
        if not _is_number(hours) or hours <= 0:
            raise ConfigError(f"{where}.refresh_hours: must be a number of hours above 0, not {hours!r}")
        values["refresh_hours"] = float(hours)
    groups = entry.get("groups")
    if groups is not None:
        if not isinstance(groups, list) or not all(isinstance(g, str) and g.strip() for g in groups):
            raise ConfigError(f"{where}.groups: must be a list of group titles, not {_type_name(groups)}")
        values["groups"] = tuple(g.strip() for g in groups)
    return ProviderConfig(**values)


def _check_providers(value):
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"providers: must be a list of provider accounts, not {_type_name(value)}")
    counts = {}
    providers = []
    accounts = set()
    for index, entry in enumerate(value):
        provider = _check_provider(entry, f"providers[{index}]", counts)
        if provider.account in accounts:
            raise ConfigError(f"providers[{index}].account: '{provider.account}' is used by another entry")
        accounts.add(provider.account)
        providers.append(provider)
    return tuple(providers)


def parse_config(data, base_dir=".", name="config"):
    """
    Build a :class:`Config` from the parsed YAML ``data``.

    Relative paths are resolved against ``base_dir``; ``name`` is how errors
    refer to the source (usually the file path).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: must be a mapping of settings (key: value), not {_type_name(data)}")
    values = {}
    for key, value in data.items():
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{name}: unknown key '{key}'{hint}")
        values[key] = _check_key(key, value, base_dir)
    for key in _PATHS + _EXECUTABLES:
        # Defaults need the same resolution as given values.
        if key not in values:
            values[key] = _check_key(key, getattr(Config(), key), base_dir)
    return Config(**values)


def load_config(path):
    """
    Read and validate the YAML file at ``path``.

    :raises ConfigError: naming the file or the key that is wrong.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read configuration file: {e.strerror}")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: configuration file is not UTF-8 text")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}")
    base_dir = os.path.dirname(os.path.abspath(path))
    try:
        return parse_config(data, base_dir=base_dir, name=path)
    except ConfigError as e:
        message = str(e)
        if not message.startswith(f"{path}:"):
            message = f"{path}: {message}"
        raise ConfigError(message)
