"""
Provider accounts as sources: each entry of ``providers:`` (an M3U URL or an
Xtream Codes account) is fetched at start and every ``refresh_hours``, and
its streams become rows of ``LiveStreams`` (see :mod:`streamproxy.matching`
for how they join channels and :mod:`streamproxy.provider_rows` for the
bookkeeping).

A sync of one provider fetches all its accounts, then writes what they
offer in one short transaction, then reloads the catalog; streams that are
playing keep the candidates they started with.  An account whose fetch fails
(down, HTTP error, an HTML page, garbage, an empty list, Xtream ``auth: 0``)
keeps its previous rows; the error and its time show in ``status()``, and
the provider is tried again after a back-off (5 min, doubling, never later
than its schedule).  Streams whose URL's scheme is not one of
``allowed_url_schemes`` are left out and counted, as the table's own rows
are.  Credentials never reach a log line or ``status()``: the providers'
URLs are known to :data:`~streamproxy.urls.KNOWN_URLS`, so log text shows
them only in their display form, and errors are scrubbed of the account's
secrets.
"""

import json
from dataclasses import dataclass, field

from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import Logger

from . import xtream
from .fetch import FetchError, fetch
from .m3u_parser import M3UError, parse_m3u, stream_entries
from .provider_rows import sync_accounts
from .urls import DEFAULT_SCHEMES, KNOWN_URLS, display_url

log = Logger()

# Seconds before the first retry of a provider whose sync failed; doubles
# with each failure in a row, up to the provider's own refresh interval.
RETRY_FIRST_SECONDS = 300.0

SECONDS_PER_HOUR = 3600.0

# The player_api.php actions a sync asks for.
XTREAM_ACTIONS = ("get_live_categories", "get_live_streams")


class SyncProblem(Exception):
    """
    An account's answer cannot be used; the message says why (no credentials).
    """


def compute_limits(providers, source_limits, learned):
    """
    ``(source limits, account limits)`` for :class:`~streamproxy.slots.SourceSlots`.

    An account's own limit is its ``max_streams``; without one, an Xtream
    account's ``max_connections`` (``learned``: ``{account: number}``),
    unless ``source_limits`` names its provider (the user's number wins over
    what the panel says).  A provider's limit is its ``source_limits`` entry,
    else the sum of its accounts' limits when every account has one, else
    none.
    """
    account_limits = {}
    per_source = {}
    for provider in providers:
        limit = provider.max_streams
        if limit is None and provider.name not in source_limits:
            limit = learned.get(provider.account)
        if limit is not None:
            account_limits[provider.account] = limit
        per_source.setdefault(provider.name, []).append(limit)
    limits = dict(source_limits)
    for name, values in per_source.items():
        if name not in limits and all(v is not None for v in values):
            limits[name] = sum(values)
    return limits, account_limits


def provider_urls(provider):
    """
    The URLs with credentials that the daemon asks for ``provider`` (a
    :class:`~streamproxy.config.ProviderConfig`): its playlist, or its
    Xtream API and guide URLs.
    """
    if provider.kind == "m3u":
        return (provider.m3u_url,)
    base = xtream.server_base(provider.xtream_url)
    user, password = provider.xtream_username, provider.xtream_password
    return (
        provider.xtream_url,
        xtream.api_url(base, user, password),
        *(xtream.api_url(base, user, password, action) for action in XTREAM_ACTIONS),
        xtream.guide_url(base, user, password),
    )


def retry_delay(failures, refresh_seconds):
    """
    Seconds until the next try of a provider whose last ``failures`` syncs
    in a row failed (0: none failed, so its schedule).
    """
    if failures <= 0:
        return refresh_seconds
    return min(refresh_seconds, RETRY_FIRST_SECONDS * 2 ** min(failures - 1, 20))


def scrub(text, secrets):
    """
    ``text`` with every one of ``secrets`` (and the query values of a
    secret URL) replaced by ``***``: a last guard for error texts that
    came from elsewhere.
    """
    words = set()
    for secret in secrets:
        words.add(secret)
        if "?" in secret:
            for pair in secret.partition("?")[2].split("&"):
                value = pair.partition("=")[2]
                if len(value) >= 3:
                    words.add(value)
    for word in sorted(words, key=len, reverse=True):
        if word and word in text:
            text = text.replace(word, "***")
    return text


def _text_of(body):
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def _looks_like_html(text):
    start = text.lstrip()[:200].lower()
    return start.startswith(("<!doctype html", "<html", "<head", "<body"))


def _no_streams(sentence, groups, disallowed, allowed_schemes):
    """
    The :class:`SyncProblem` of an answer that gave no usable stream:
    ``sentence`` ("the playlist lists no streams"), the groups asked for,
    and the streams left out for their scheme.
    """
    where = f" in the groups {', '.join(groups)}" if groups else ""
    if disallowed:
        kinds = ", ".join(f"{scheme}: {count}" for scheme, count in sorted(disallowed.items()))
        return SyncProblem(
            f"{sentence}{where} whose URL scheme is in allowed_url_schemes "
            f"({', '.join(allowed_schemes)}); left out: {kinds}"
        )
    return SyncProblem(f"{sentence}{where}")


def read_m3u_answer(body, groups=(), allowed_schemes=DEFAULT_SCHEMES):
    """
    The stream entries of an M3U provider's answer ``body`` (bytes), without
    those whose URL's scheme is not one of ``allowed_schemes``.  Runs in a
    worker thread: a large playlist takes a moment to parse.

    :return: ``(entries, {"duplicates": n, "outside_groups": n,
        "scheme_not_allowed": {scheme: n}})``.
    :raises SyncProblem: for an HTML page, anything not M3U, or no streams.
    """
    text = _text_of(body)
    if _looks_like_html(text):
        raise SyncProblem("the answer is an HTML page, not an M3U playlist")
    try:
        parsed = parse_m3u(text)
    except M3UError as e:
        raise SyncProblem(str(e))
    entries, duplicates, outside, disallowed = stream_entries(
        parsed, groups or None, allowed_schemes=allowed_schemes
    )
    if not entries:
        raise _no_streams("the playlist lists no streams", groups, disallowed, allowed_schemes)
    return entries, {"duplicates": duplicates, "outside_groups": outside, "scheme_not_allowed": dict(disallowed)}


def read_json_answer(body, what):
    """
    The decoded JSON of an Xtream answer to ``what``.

    :raises SyncProblem: for an HTML page or anything not JSON.
    """
    text = _text_of(body)
    if _looks_like_html(text):
        raise SyncProblem(f"the answer to {what} is an HTML page, not JSON")
    try:
        return json.loads(text)
    except ValueError:
        raise SyncProblem(f"the answer to {what} is not JSON")


def read_xtream_streams(body, categories, base, username, password, groups=(), allowed_schemes=DEFAULT_SCHEMES):
    """
    The stream entries of a ``get_live_streams`` answer (in a worker thread),
    none when the server's scheme is not one of ``allowed_schemes``.

    :return: ``(entries, {"unusable": n, "outside_groups": n,
        "scheme_not_allowed": {scheme: n}})``.
    :raises SyncProblem: when it is not a list of streams, or lists none.
    """
    document = read_json_answer(body, "get_live_streams")
    try:
        entries, unusable, outside, disallowed = xtream.stream_entries(
            document, categories, base, username, password, groups or None, allowed_schemes=allowed_schemes
        )
    except xtream.XtreamError as e:
        raise SyncProblem(str(e))
    if not entries:
        raise _no_streams("the account lists no live streams", groups, disallowed, allowed_schemes)
    return entries, {"unusable": unusable, "outside_groups": outside, "scheme_not_allowed": dict(disallowed)}


@dataclass
class AccountState:
    """
    What is known of one account: its last sync and, for Xtream, what the
    panel says about it.
    """

    config: object
    last_attempt: float | None = None
    last_success: float | None = None
    result: str | None = None
    error: str | None = None
    counts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)
    info: object = None


@dataclass
class ProviderState:
    """
    One provider name: its accounts, schedule and the last sync's outcome.
    """

    name: str
    accounts: list
    refresh_seconds: float
    failures: int = 0
    next_sync: float | None = None
    timer: object = None
    running: object = None
    last_sync: dict | None = None


class ProviderSync(Service):
    """
    Keeps the rows of the configured providers in step with what they offer.

    ``store`` is the :class:`~streamproxy.store.ChannelStore` (its
    ``run_interaction`` and ``refresh``), ``slots`` the
    :class:`~streamproxy.slots.SourceSlots` whose limits follow the
    accounts, ``client`` a treq ``HTTPClient``.  ``run_in_thread(f, *args)``
    runs parsing off the reactor thread (tests pass a synchronous one).
    Only streams whose URL's scheme is in ``allowed_schemes``
    (``allowed_url_schemes``) become rows.  The providers' URLs go to
    ``known_urls`` (:data:`~streamproxy.urls.KNOWN_URLS` by default), so
    log text never shows them whole.
    """

    name = "providers"

    def __init__(self, providers, store, slots, client, source_limits=None, reactor=None,
                 run_in_thread=None, allowed_schemes=DEFAULT_SCHEMES, known_urls=None):
        if reactor is None:
            from twisted.internet import reactor
        self._reactor = reactor
        self._store = store
        self._slots = slots
        self._client = client
        self._source_limits = dict(source_limits or {})
        self._run_in_thread = run_in_thread or self._thread_runner
        self._allowed_schemes = tuple(allowed_schemes)
        self.providers = tuple(providers)
        (KNOWN_URLS if known_urls is None else known_urls).keep(
            url for provider in self.providers for url in provider_urls(provider)
        )
        self._learned = {}
        self._states = {}
        self._rows_cache = (None, {})
        for provider in self.providers:
            state = self._states.get(provider.name)
            if state is None:
                state = self._states[provider.name] = ProviderState(
                    provider.name, [], provider.refresh_hours * SECONDS_PER_HOUR
                )
            state.accounts.append(AccountState(provider))
            state.refresh_seconds = min(state.refresh_seconds, provider.refresh_hours * SECONDS_PER_HOUR)
        self.apply_limits()

    def _thread_runner(self, function, *args):
        pool = getattr(self._reactor, "getThreadPool", None)
        if pool is None:
            return threads.deferToThread(function, *args)
        return threads.deferToThreadPool(self._reactor, pool(), function, *args)

    # Lifecycle.

    def startService(self):
        """
        Sync every provider now (one after the other as answers come) and
        then on schedule.
        """
        super().startService()
        for state in self._states.values():
            self._schedule(state, 0)

    def stopService(self):
        """
        Cancel the schedule; a Deferred that fires once syncs under way have
        finished or been cancelled (before the store closes its pool).
        """
        super().stopService()
        running = []
        for state in self._states.values():
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = None
            if state.running is not None:
                running.append(state.running)
        for d in running:
            d.cancel()
        return defer.DeferredList(running, consumeErrors=True) if running else None

    def _schedule(self, state, delay):
        if state.timer is not None and state.timer.active():
            state.timer.cancel()
        state.next_sync = self._reactor.seconds() + delay
        state.timer = self._reactor.callLater(delay, self._scheduled, state)

    def _scheduled(self, state):
        state.timer = None
        # sync() never fails; nothing to add here.
        self.sync(state.name)

    # Syncing.

    def sync(self, name):
        """
        Sync provider ``name`` now (joining a sync already under way); a
        Deferred firing with its ``status()`` entry.  Never fails: a failure
        is logged, kept in the status, and retried with back-off.
        """
        state = self._states.get(name)
        if state is None:
            return defer.fail(KeyError(name))
        if state.running is None:
            if state.timer is not None and state.timer.active():
                state.timer.cancel()
            state.timer = None
            d = defer.ensureDeferred(self._sync(state))
            d.addErrback(self._unexpected, state)

            def finished(_):
                state.running = None
                if self.running:
                    self._schedule(state, retry_delay(state.failures, state.refresh_seconds))

            d.addBoth(finished)
            if not d.called:
                state.running = d
        waiter = defer.Deferred()
        if state.running is None:
            waiter.callback(None)
        else:
            state.running.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter.addCallback(lambda _: self._provider_status(state))

    def sync_all(self):
        """
        Sync every provider now; a Deferred firing with the ``status()``.
        """
        d = defer.gatherResults([self.sync(name) for name in self._states], consumeErrors=True)
        return d.addCallback(lambda _: self.status())

    def _unexpected(self, failure, state):
        if failure.check(defer.CancelledError):
            return None
        log.failure("Syncing provider {provider}", failure, provider=state.name)
        state.failures += 1
        state.last_sync = {
            "at": self._reactor.seconds(),
            "result": "error",
            "error": "internal error (see the log)",
        }
        return None

    async def _sync(self, state):
        started = self._reactor.seconds()
        fetches = [defer.ensureDeferred(self._fetch_account(account)) for account in state.accounts]
        outcomes = await defer.DeferredList(fetches, consumeErrors=True)
        results = []
        settings = {}
        for account, (ok, value) in zip(state.accounts, outcomes):
            account.last_attempt = started
            if ok:
                entries, skipped, info = value
                results.append((account.config.account, entries))
                settings[account.config.account] = (account.config.quality, account.config.playlist)
                account.skipped = skipped
                if info is not None:
                    account.info = info
            else:
                self._account_failed(state, account, value)
        counts = {}
        if results:
            try:
                counts = await self._store.run_interaction(sync_accounts, state.name, settings, results)
            except defer.CancelledError:
                raise
            except Exception as e:
                problem = f"the database could not be written ({e})"
                for account in state.accounts:
                    if account.config.account in settings:
                        self._account_failed(state, account, problem)
                counts = {}
                results = []
        for account in state.accounts:
            if account.config.account in counts:
                account.result = "ok"
                account.error = None
                account.last_success = self._reactor.seconds()
                account.counts = counts[account.config.account]
        changed = any(c["added"] or c["updated"] or c["removed"] for c in counts.values())
        if changed:
            try:
                await self._store.refresh()
            except defer.CancelledError:
                raise
            except Exception as e:
                log.error("Provider {provider}: the catalog could not be reloaded: {error}",
                          provider=state.name, error=str(e))
        self.apply_limits()
        self._finish(state, started, counts, self._reactor.seconds() - started)

    def _finish(self, state, started, counts, seconds):
        failed = [a for a in state.accounts if a.last_attempt == started and a.result == "error"]
        total = {"added": 0, "updated": 0, "removed": 0, "unchanged": 0, "rows": 0}
        for account_counts in counts.values():
            for key in total:
                total[key] += account_counts.get(key, 0)
        result = "error" if not counts else ("partial" if failed else "ok")
        state.failures = state.failures + 1 if failed else 0
        state.last_sync = dict(
            total,
            at=started,
            seconds=round(seconds, 3),
            result=result,
            error="; ".join(f"{a.config.account}: {a.error}" for a in failed) or None,
        )
        if counts:
            log.info(
                "Provider {provider}: synced {rows} streams in {seconds:.1f} s: {added} added, "
                "{updated} updated, {removed} removed, {unchanged} unchanged",
                provider=state.name,
                seconds=seconds,
                **total,
            )

    def _account_failed(self, state, account, failure_or_text):
        config = account.config
        if isinstance(failure_or_text, str):
            problem = failure_or_text
        elif failure_or_text.check(SyncProblem, FetchError, xtream.XtreamError):
            problem = failure_or_text.getErrorMessage()
        elif failure_or_text.check(defer.CancelledError):
            problem = "cancelled (the daemon is stopping)"
        else:
            log.failure("Fetching provider {provider} (account {account})", failure_or_text,
                        provider=config.name, account=config.account)
            problem = f"internal error ({failure_or_text.type.__name__}; see the log)"
        problem = scrub(problem, config.secrets())
        account.result = "error"
        account.error = problem
        delay = retry_delay(state.failures + 1, state.refresh_seconds)
        log.warn(
            "Provider {provider} (account {account}): sync failed: {problem}; its previous rows "
            "are kept; next try in {delay:.0f} s",
            provider=config.name,
            account=config.account,
            problem=problem,
            delay=delay,
        )

    async def _fetch_account(self, account):
        """
        ``(entries, skipped counts, Xtream AccountInfo or None)`` of one account.
        """
        config = account.config
        if config.kind == "m3u":
            body = await self._get(config.m3u_url, "the playlist")
            entries, skipped = await self._run_in_thread(
                read_m3u_answer, body, config.groups, self._allowed_schemes
            )
            self._note_disallowed(config, skipped)
            return entries, skipped, None
        base = xtream.server_base(config.xtream_url)
        user, password = config.xtream_username, config.xtream_password
        body = await self._get(xtream.api_url(base, user, password), "player_api.php")
        document = read_json_answer(body, "player_api.php")
        info = xtream.parse_account(document)
        account.info = info
        if info.max_connections is not None and info.max_connections > 0:
            self._learned[config.account] = info.max_connections
        categories_body, streams_body = await defer.gatherResults(
            [
                defer.ensureDeferred(self._get(xtream.api_url(base, user, password, "get_live_categories"),
                                               "get_live_categories")),
                defer.ensureDeferred(self._get(xtream.api_url(base, user, password, "get_live_streams"),
                                               "get_live_streams")),
            ],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure if isinstance(f.value, defer.FirstError) else f)
        try:
            categories = xtream.parse_categories(read_json_answer(categories_body, "get_live_categories"))
        except xtream.XtreamError as e:
            raise SyncProblem(str(e))
        entries, skipped = await self._run_in_thread(
            read_xtream_streams, streams_body, categories, base, user, password, config.groups,
            self._allowed_schemes,
        )
        self._note_disallowed(config, skipped)
        return entries, skipped, info

    def _note_disallowed(self, config, skipped):
        disallowed = skipped.get("scheme_not_allowed")
        if disallowed:
            log.warn(
                "Provider {provider} (account {account}): leaving out {count} streams whose URL scheme "
                "is not in allowed_url_schemes ({allowed}): {kinds}",
                provider=config.name,
                account=config.account,
                count=sum(disallowed.values()),
                allowed=", ".join(self._allowed_schemes),
                kinds=", ".join(f"{scheme}: {count}" for scheme, count in sorted(disallowed.items())),
            )

    async def _get(self, url, what):
        try:
            return await fetch(self._client, url, self._reactor)
        except FetchError as e:
            raise FetchError(f"{what} at {display_url(url, page_names_only=True)}: {e}")

    # What is shown.

    def apply_limits(self):
        """
        Give the slot counter the providers' limits as now known.
        """
        limits, account_limits = compute_limits(self.providers, self._source_limits, self._learned)
        self._slots.set_limits(limits, account_limits)

    def guide_urls(self):
        """
        ``[(account, XMLTV URL)]`` of the Xtream accounts, for the guide
        sources.  The URLs hold credentials: never show them.
        """
        return [
            (p.account, xtream.guide_url(xtream.server_base(p.xtream_url), p.xtream_username, p.xtream_password))
            for p in self.providers
            if p.kind == "xtream"
        ]

    def _rows_per_account(self):
        catalog = self._store.catalog
        if self._rows_cache[0] is not catalog:
            counts = {}
            for _, account, _ in catalog.owners.values():
                counts[account] = counts.get(account, 0) + 1
            self._rows_cache = (catalog, counts)
        return self._rows_cache[1]

    def _account_status(self, account):
        config = account.config
        info = account.info
        limit_from = None
        if config.max_streams is not None:
            limit_from = "max_streams"
        elif config.account in self._learned and config.name not in self._source_limits:
            limit_from = "max_connections"
        server = display_url(
            xtream.server_base(config.xtream_url) if config.kind == "xtream" else config.m3u_url,
            page_names_only=True,
        )
        return {
            "account": config.account,
            "kind": config.kind,
            "server": scrub(server, config.secrets()),
            "quality": config.quality,
            "playlist": config.playlist,
            "groups": list(config.groups),
            "rows": self._rows_per_account().get(config.account, 0),
            "in_use": self._slots.account_in_use(config.account),
            "limit": self._slots.account_limit(config.account),
            "limit_from": limit_from,
            "last_attempt": account.last_attempt,
            "last_success": account.last_success,
            "result": account.result,
            "error": account.error,
            "counts": dict(account.counts),
            "skipped": dict(account.skipped),
            "xtream": None if info is None else {
                "status": info.status,
                "expires": info.expires,
                "max_connections": info.max_connections,
                "active_connections": info.active_connections,
            },
        }

    def _provider_status(self, state):
        kinds = sorted({a.config.kind for a in state.accounts})
        return {
            "name": state.name,
            "kind": kinds[0] if len(kinds) == 1 else "mixed",
            "in_use": self._slots.in_use(state.name),
            "limit": self._slots.limit(state.name),
            "refresh_hours": state.refresh_seconds / SECONDS_PER_HOUR,
            "syncing": state.running is not None,
            "next_sync": state.next_sync if state.timer is not None else None,
            "failures_in_a_row": state.failures,
            "last_sync": dict(state.last_sync) if state.last_sync else None,
            "accounts": [self._account_status(a) for a in state.accounts],
        }

    def status(self):
        """
        What ``/api/providers`` answers: per provider its last sync (time,
        result, counts added/updated/removed), connections in use against its
        limit, and per account the same plus, for Xtream, the account's
        status and expiry.  No URL but a display form, no credentials.
        """
        return {
            "now": self._reactor.seconds(),
            "providers": [self._provider_status(state) for state in self._states.values()],
        }
