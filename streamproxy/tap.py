"""
``twistd streamproxy``: command-line options and the service tree.

``makeService`` only wires objects together; nothing listens, opens the
database or spawns a process until the application starts.
"""

import sys

from twisted.application import service, strports
from twisted.python import usage

from .channels import Ranking
from .config import ConfigError, load_config
from .dvr import DVRTracker
from .codec_memory import CodecMemory
from .discovery import DiscoveryService
from .guide import GuideService
from .hdhomerun import Tuners
from .health import HealthListeners, HealthRecorder
from .idle import IdleChecker
from .logs import LogBuffer, LogService
from .manager import ChannelManager
from .metrics import Metrics
from .observations import Observations
from .providers import ProviderSync
from .slate import SlateService
from .slots import SourceSlots
from .store import ChannelStore, StoreError, prepare_database
from .web import ProxySite, StreamProxyWeb


class Options(usage.Options):
    """
    Options of ``twistd streamproxy``.
    """

    synopsis = "[--config PATH]"
    longdesc = (
        "Serve M3U playlists and HLS streams for Channels DVR from the "
        "LiveStreams table of an SQLite database.  Every setting lives in "
        "the configuration file (see the shipped config.yaml)."
    )
    optParameters = [
        ["config", "c", "config.yaml", "Path of the YAML configuration file."],
    ]

    def postOptions(self):
        """
        Load and check the configuration and the database now, so a mistake
        is reported on the terminal, as one line, before twistd daemonizes.
        """
        try:
            self["settings"] = load_config(self["config"])
            prepare_database(self["settings"].db_path)
        except (ConfigError, StoreError) as e:
            sys.stderr.write(f"streamproxy: {e}\n")
            sys.stderr.flush()
            raise SystemExit(1)


def build_services(config, reactor=None):
    """
    The ``MultiService`` tree for ``config``; returns ``(root, parts)``
    where ``parts`` names the pieces tests want to reach.
    """
    if reactor is None:
        from twisted.internet import reactor
    root = service.MultiService()
    # First, so the log viewer has the start-up lines and the shutdown's.
    logs = LogService(LogBuffer(config.log_buffer_size))
    logs.setServiceParent(root)
    store = ChannelStore(config.db_path, config.allowed_url_schemes)
    store.setServiceParent(root)
    # After the store: services stop in reverse order, so the last health
    # write is queued before the store closes its pool.
    # What the daemon sees of each stream (health, measured facts): written
    # by the health recorder, read by the ranking and the idle checks.
    observations = Observations()
    health = HealthRecorder(store, reactor=reactor, observations=observations)
    health.setServiceParent(root)
    dvr = DVRTracker(
        config.channels_dvr_url, config.dvr_poll_interval, _http_client(reactor), reactor=reactor
    )
    dvr.setServiceParent(root)
    ranking = Ranking(config.source_priority, config.quality_priority, observations)
    slots = SourceSlots(config.source_limits)
    # After the store, so it stops (and finishes a sync's transaction)
    # before the store closes its pool.
    providers = ProviderSync(
        config.providers,
        store,
        slots,
        _http_client(reactor),
        source_limits=config.source_limits,
        reactor=reactor,
        allowed_schemes=config.allowed_url_schemes,
    )
    providers.setServiceParent(root)
    # The codecs each stream was served with, for playlists and lineups (issue 11).
    media = CodecMemory()
    # Content checks, idle checks, the slate and metrics (issue 13).
    metrics = Metrics(reactor=reactor)
    slate = SlateService(config, reactor=reactor) if config.slate else None
    channels = ChannelManager(
        config, store, ranking, slots, reactor=reactor, dvr=dvr, health=HealthListeners(health, media),
        metrics=metrics, slate=slate.current if slate is not None else None,
    )
    channels.setServiceParent(root)
    metrics.set_snapshot(channels.metrics_snapshot)
    if slate is not None:
        # After the channel manager, whose start-up sweep would take the
        # ffmpeg making the slate for a leftover.
        slate.setServiceParent(root)
    idle = None
    if config.idle_check_hours > 0:
        idle = IdleChecker(config, store, slots, channels.running_channels, health, observations,
                           reactor=reactor, metrics=metrics)
        idle.setServiceParent(root)
        channels.idle_checks = idle
    # HDHomeRun emulation and the XMLTV guide (issue 11).
    guide = GuideService(config.guide_sources, config.guide_refresh_hours, _http_client(reactor),
                         providers=providers, reactor=reactor)
    guide.setServiceParent(root)
    tuners = discovery = None
    if config.hdhomerun.enabled:
        tuners = Tuners(config.hdhomerun, store, slots, ranking, media=media, channels=channels)
        tuners.setServiceParent(root)
        if config.hdhomerun.discovery:
            discovery = DiscoveryService(tuners, config.port, config.interface, reactor)
            discovery.setServiceParent(root)
    web = StreamProxyWeb(
        config, store, ranking, channels, logs=logs.buffer, dvr=dvr, reactor=reactor, providers=providers,
        metrics=metrics, tuners=tuners, guide=guide, media=media,
    )
    site = ProxySite(web.resource())
    interface = config.interface.replace(":", "\\:")
    listener = strports.service(f"tcp:{config.port}:interface={interface}", site)
    listener.setName("web")
    listener.setServiceParent(root)
    return root, {
        "logs": logs,
        "store": store,
        "health": health,
        "dvr": dvr,
        "channels": channels,
        "slots": slots,
        "providers": providers,
        "metrics": metrics,
        "slate": slate,
        "idle": idle,
        "media": media,
        "guide": guide,
        "tuners": tuners,
        "discovery": discovery,
        "web": web,
        "site": site,
        "listener": listener,
    }


def _http_client(reactor):
    """
    An HTTP client (for Channels DVR and the providers) without persistent
    connections.
    """
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    class QuietPool(HTTPConnectionPool):
        # Without this every poll logs "Starting factory"/"Stopping factory".
        class _factory(HTTPConnectionPool._factory):
            noisy = False

    return HTTPClient(Agent(reactor, pool=QuietPool(reactor, persistent=False)))


def makeService(options):
    """
    Build the daemon from parsed :class:`Options`.
    """
    root, _ = build_services(options["settings"])
    return root
