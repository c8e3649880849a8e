"""
The XMLTV guide service: fetching the guide sources at start and every
``guide_refresh_hours``, keeping the last good guide of each, and building
each playlist's guide for ``/xmltv/<playlist>.xml``.

Sources are ``guide_sources`` (URLs or files, in their order) and then the
guide (``xmltv.php``) of each Xtream provider in ``providers:`` (one per
provider name: pooled accounts share a guide).  A URL's answer is written
to a temporary file as it arrives and read from there in a thread
(:func:`streamproxy.xmltv.parse_guide`), so neither the download nor the
parse holds the whole guide in memory and the reactor never waits on
either.  A source that fails (unreachable, HTTP error, not XMLTV) keeps
the guide it gave last, and the log and ``/api/guide`` say so.

A playlist's guide is built in a thread the first time it is asked for
after a change (a new catalog, a source's new guide), gzip-compressed, and
served from that until the next change.
"""

import os
import tempfile
import zlib

from twisted.application.service import MultiService
from twisted.internet import defer, threads
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from .fetch import FetchError, fetch_to_file
from .health import iso_utc
from .periodic import periodic
from .urls import KNOWN_URLS, display_url
from .xmltv import MAX_GUIDE_BYTES, GuideError, gzipped_guide, parse_guide_file

log = Logger()

SECONDS_PER_HOUR = 3600.0

# Most seconds a guide download may take in all: provider guides are
# tens to hundreds of MB.
GUIDE_FETCH_TIMEOUT_SECONDS = 600.0

# Largest download taken (as sent; a gzip file unpacks to more, bounded
# by MAX_GUIDE_BYTES when read).
MAX_DOWNLOAD_BYTES = 512 * 1024 * 1024


class GuideSource:
    """
    One place guides come from: ``location`` (a URL or a file path),
    ``label`` (how logs and the API name it, never with credentials).
    """

    def __init__(self, location, label):
        self.location = location
        self.label = label
        self.guide = None
        self.last_attempt = None
        self.last_success = None
        self.error = None
        self.seconds = None

    @property
    def is_url(self):
        """
        Whether the source is fetched over HTTP (else read from a file).
        """
        return "://" in self.location

    def status(self):
        """
        What ``/api/guide`` shows of the source.
        """
        guide = self.guide
        return {
            "source": self.label,
            "state": "never fetched" if self.last_attempt is None else ("failed" if self.error else "ok"),
            "last_attempt": self.last_attempt,
            "last_success": self.last_success,
            "error": self.error,
            "channels": len(guide.channels) if guide else 0,
            "programmes": guide.programmes if guide else 0,
            "kept_mb": round(guide.stored_bytes() / (1024 * 1024), 1) if guide else 0,
            "read_seconds": self.seconds,
        }


def source_label(location):
    """
    How a guide source is named in logs and pages: a URL in its masked
    display form, a file by its path.
    """
    if "://" in location:
        return display_url(location, page_names_only=True)
    return location


def _relay(deferred):
    """
    A Deferred firing as ``deferred`` does, leaving its chain alone.
    """
    copy = defer.Deferred()

    def forward(result):
        copy.callback(result)
        return result

    def forward_failure(failure):
        copy.errback(failure)
        return None

    deferred.addCallbacks(forward, forward_failure)
    return copy


class _Cancelled(Exception):
    pass


class GuideService(MultiService):
    """
    Keeps the guide sources' latest good guides and builds playlists'
    guides from them.

    ``locations`` are the ``guide_sources``; ``providers`` (a
    :class:`~streamproxy.providers.ProviderSync` or None) adds its Xtream
    accounts' guides; ``client`` is a treq ``HTTPClient``;
    ``run_in_thread(f, *args)`` runs parsing and building off the reactor
    (tests pass a synchronous one); ``temp_dir`` is where downloads are
    kept while read (the system's temp folder by default).
    """

    name = "guide"

    def __init__(self, locations, refresh_hours, client, providers=None, reactor=None,
                 run_in_thread=None, temp_dir=None, known_urls=None, max_guide_bytes=MAX_GUIDE_BYTES):
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._client = client
        self._providers = providers
        self._run_in_thread = run_in_thread or self._thread_runner
        self._temp_dir = temp_dir
        self._max_guide_bytes = max_guide_bytes
        self.refresh_hours = refresh_hours
        self._configured = [GuideSource(location, source_label(location)) for location in locations]
        (KNOWN_URLS if known_urls is None else known_urls).keep(
            location for location in locations if "://" in location)
        self._provider_sources = {}
        self.version = 0
        self._built = {}
        self._refreshing = None
        self._stopping = False
        self.last_refresh = None
        periodic(refresh_hours * SECONDS_PER_HOUR, self.refresh, "Refreshing the XMLTV guide",
                 reactor).setServiceParent(self)

    def _thread_runner(self, function, *args):
        pool = getattr(self._reactor, "getThreadPool", None)
        if pool is None:
            return threads.deferToThread(function, *args)
        return threads.deferToThreadPool(self._reactor, pool(), function, *args)

    # Sources.

    def sources(self):
        """
        Every source in order of preference: ``guide_sources``, then the
        Xtream providers' guides.
        """
        found = list(self._configured)
        if self._providers is not None:
            names = {p.account: p.name for p in getattr(self._providers, "providers", ())}
            seen = set()
            for account, url in self._providers.guide_urls():
                name = names.get(account, account)
                if name in seen:
                    continue  # pooled accounts of one provider share its guide
                seen.add(name)
                source = self._provider_sources.get(url)
                if source is None:
                    label = f"{display_url(url, page_names_only=True)} (provider {name})"
                    source = self._provider_sources[url] = GuideSource(url, label)
                found.append(source)
        return found

    def guides(self):
        """
        The current :class:`~streamproxy.xmltv.SourceGuide` of each source
        that has one, preferred first.
        """
        return [source.guide for source in self.sources() if source.guide is not None]

    # Fetching.

    def stopService(self):
        """
        Stop the schedule and any fetch under way (a parse running in a
        thread stops at its next few thousand elements).
        """
        self._stopping = True
        running = self._refreshing
        if running is not None:
            running.cancel()
        return super().stopService()

    def refresh(self):
        """
        Fetch and read every source, one after the other; a Deferred that
        fires when done (never failing: each source's failure is logged).
        """
        if self._refreshing is not None:
            return _relay(self._refreshing)
        d = defer.ensureDeferred(self._refresh_all())
        d.addErrback(lambda failure: failure.trap(defer.CancelledError) and None)

        def done(result):
            self._refreshing = None
            return result

        d.addBoth(done)
        if not d.called:
            self._refreshing = d
        return _relay(d) if not d.called else d

    async def _refresh_all(self):
        for source in self.sources():
            if self._stopping:
                return
            await self._refresh_one(source)
        self.last_refresh = self._reactor.seconds()

    async def _refresh_one(self, source):
        started = self._reactor.seconds()
        source.last_attempt = started
        path = None
        try:
            if source.is_url:
                path = await self._download(source)
                guide = await self._run_in_thread(self._parse, path)
            else:
                guide = await self._run_in_thread(self._parse, source.location)
        except defer.CancelledError:
            return
        except (FetchError, GuideError) as e:
            self._failed(source, str(e))
            return
        except _Cancelled:
            return
        except Exception as e:
            log.failure("Reading the guide of {source}", source=source.label)
            self._failed(source, f"{type(e).__name__}: {e}")
            return
        finally:
            if path is not None:
                self._remove(path)
        source.guide = guide
        source.error = None
        source.last_success = self._reactor.seconds()
        source.seconds = round(source.last_success - started, 1)
        self.version += 1
        self._built = {}
        log.info("Guide {source}: {channels} channels, {programmes} programmes ({kept:.1f} MB kept) "
                 "read in {seconds:.1f} s", source=source.label, channels=len(guide.channels),
                 programmes=guide.programmes, kept=guide.stored_bytes() / (1024 * 1024), seconds=source.seconds)

    def _parse(self, path):
        def check():
            if self._stopping:
                raise _Cancelled()
        return parse_guide_file(path, self._max_guide_bytes, check)

    async def _download(self, source):
        handle, path = tempfile.mkstemp(prefix="streamproxy-guide-", suffix=".xml", dir=self._temp_dir)
        try:
            with os.fdopen(handle, "wb") as file:
                await fetch_to_file(self._client, source.location, self._reactor, file,
                                    GUIDE_FETCH_TIMEOUT_SECONDS, MAX_DOWNLOAD_BYTES)
        except BaseException:
            self._remove(path)
            raise
        return path

    @staticmethod
    def _remove(path):
        try:
            os.unlink(path)
        except OSError:
            pass

    def _failed(self, source, error):
        source.error = error
        if source.guide is not None:
            kept = f"keeping its guide from {iso_utc(source.last_success)}"
        else:
            kept = "no guide from it yet"
        log.warn("Guide {source}: {error}; {kept}", source=source.label, error=error, kept=kept)

    # Serving.

    def document(self, name, channels, ranking):
        """
        A Deferred firing with the gzip bytes of playlist ``name``'s guide
        (its ``channels``, ranked by ``ranking``), built in a thread the
        first time after a change and shared by every request until the
        next one.
        """
        entry = self._built.get(name)
        if entry is not None and entry[0] is channels and entry[1] == self.version:
            result = entry[2]
            return _relay(result) if isinstance(result, defer.Deferred) else defer.succeed(result)
        version = self.version
        d = defer.maybeDeferred(self._run_in_thread, self._build, channels, ranking, self.guides())
        self._built[name] = (channels, version, d)

        def built(data):
            current = self._built.get(name)
            if current is not None and current[2] is d:
                self._built[name] = (channels, version, data)
            return data

        def failed(failure):
            current = self._built.get(name)
            if current is not None and current[2] is d:
                del self._built[name]
            return failure

        d.addCallbacks(built, failed)
        return _relay(d)

    @staticmethod
    def _build(channels, ranking, guides):
        data, _ = gzipped_guide(channels, ranking, guides)
        return data

    def plain(self, gzipped):
        """
        A Deferred firing with ``gzipped`` unpacked, unpacked in a thread
        (for tools; requests are answered with :func:`write_unpacked`).
        """
        return defer.maybeDeferred(self._run_in_thread, zlib.decompress, gzipped, 16 + zlib.MAX_WBITS)

    def status(self):
        """
        What ``/api/guide`` shows: each source's state and what it gave.
        """
        return {
            "refresh_hours": self.refresh_hours,
            "last_refresh": self.last_refresh,
            "refreshing": self._refreshing is not None,
            "sources": [source.status() for source in self.sources()],
        }


# Bytes unpacked per step when a guide goes to a client that does not take
# gzip: the answer is made as the client reads it, never whole in memory.
UNPACK_STEP_BYTES = 256 * 1024


@implementer(IPushProducer)
class _Unpacker:
    """
    Writes a gzip document to ``request`` unpacked, a step at a time while
    the connection takes more (a push producer: the transport pauses it
    when its buffer is full and resumes it once drained).
    """

    def __init__(self, request, gzipped):
        self._request = request
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = gzipped
        self._paused = False
        self._stopped = False
        self.done = defer.Deferred()

    def start(self):
        self._request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._request.registerProducer(self, True)
        self._produce()
        return self.done

    def _produce(self):
        while not self._paused and not self._stopped:
            data = self._inflater.decompress(self._pending, UNPACK_STEP_BYTES)
            self._pending = self._inflater.unconsumed_tail
            if not data and not self._pending:
                data = self._inflater.flush()
                if data:
                    self._request.write(data)
                self._end()
                return
            self._request.write(data)

    def pauseProducing(self):
        self._paused = True

    def resumeProducing(self):
        self._paused = False
        self._produce()

    def stopProducing(self):
        self._end()

    def _end(self):
        if self._stopped:
            return
        self._stopped = True
        try:
            self._request.unregisterProducer()
        except Exception:
            pass  # the connection is gone
        self.done.callback(None)


def write_unpacked(request, gzipped):
    """
    Answer ``request`` with the gzip document ``gzipped`` unpacked, as the
    client reads it (memory stays a step, whatever the guide's size); a
    Deferred that fires once it is all written or the client left.
    """
    return _Unpacker(request, gzipped).start()
