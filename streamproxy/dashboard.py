"""
What the status page and the JSON API show: running channels, sources,
Channels DVR and the channel list, shaped from the manager, the store and
the DVR tracker, with provider credentials masked everywhere: stream URLs
in their display form (:attr:`~streamproxy.channels.Candidate.display_url`),
and every other string through :func:`streamproxy.urls.mask_text`.
"""

import re

from twisted.logger import Logger

from .channels import channel_sort_key
from .urls import mask_text

log = Logger()

# A running channel counts as buffering on the status page for this long
# after its current stream's last buffering event.
BUFFERING_SHOWN_SECONDS = 20.0


def masked(value):
    """
    ``value`` (JSON-like data) with provider credentials masked in every
    string, so nothing the API or the pages show can leak a password.
    """
    if isinstance(value, str):
        return mask_text(value) if "/" in value else value
    if isinstance(value, dict):
        return {key: masked(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [masked(item) for item in value]
    return value


# A logo is an image file: a URL ending so, with no user name, password or
# query string in it, holds no credentials even when mask_text (made for
# stream URLs, and cautious) would hide its folders.
_IMAGE_URL = re.compile(r"^https?://[^/@?#]+/[^?#@]*\.(?:png|jpe?g|gif|svg|webp|ico)$", re.IGNORECASE)


def _logo(candidates):
    """
    The first logo of a channel's candidates that can be shown as it is:
    nothing in it to mask, or a plain image URL; "" when none.
    """
    for candidate in candidates:
        logo = candidate.logo
        if logo and (_IMAGE_URL.match(logo) or mask_text(logo) == logo):
            return logo
    return ""


def display_state(entry, now):
    """
    The state the status page shows for a channel's status ``entry``: its
    state, or ``buffering`` for a live channel whose stream had a buffering
    event within :data:`BUFFERING_SHOWN_SECONDS`.
    """
    state = entry.get("state")
    if state != "live":
        return state
    if any(now - when <= BUFFERING_SHOWN_SECONDS for when in entry.get("recent_buffering") or ()):
        return "buffering"
    return state


def _owner(owner):
    """
    Which provider account owns a row and how its channel was matched
    (``tv-guide-id``, ``name``, ``remembered``, ``provider-number``,
    ``next-free``), or None for a row no provider owns.
    """
    if owner is None:
        return None
    provider, account, matched = owner
    return {"name": provider, "account": account, "matched": matched}


def _measured(observations, candidate):
    """
    The measured facts of ``candidate`` (size, frame rate, bitrate), or None.
    """
    if observations is None:
        return None
    found = observations.measurement(candidate)
    return found.as_dict() if found is not None else None


class Dashboard:
    """
    Builds the ``/api/status`` and ``/api/channels`` answers.
    """

    def __init__(self, store, ranking, channels, dvr, reactor):
        self._store = store
        self._ranking = ranking
        self._channels = channels
        self._dvr = dvr
        self._reactor = reactor
        self._display_urls = (None, {})

    def status(self):
        """
        What ``/api/status`` answers, as a dict.
        """
        now = self._reactor.seconds()
        # Masked first: everything below but logos is made here and holds
        # no URLs, and logos are chosen to be safe to show (_logo).
        status = masked(dict(self._channels.status()))
        # The manager's raw DVR state is answered below as "dvr", with
        # what the page needs added.
        status.pop("channels_dvr", None)
        catalog = self._store.catalog
        dvr = masked(self.dvr_status())
        watched = {}
        for activity in dvr.get("activities") or ():
            if isinstance(activity, dict) and activity.get("channel_id") is not None:
                watched.setdefault(str(activity["channel_id"]), []).append(activity)
        channels = []
        for entry in status.get("channels", ()):
            entry = dict(entry)
            channel_id = entry.get("channel_id")
            candidates = catalog.channels.get(channel_id, ())
            entry["logo"] = _logo(candidates)
            entry["candidates"] = len(candidates)
            entry["display_state"] = display_state(entry, now)
            entry["stream_url"] = f"/channel/{channel_id}/stream.m3u8"
            entry["dvr_activity"] = watched.get(channel_id, [])
            channels.append(entry)
        status["channels"] = sorted(channels, key=lambda e: channel_sort_key(e["channel_id"]))
        status["now"] = now
        status["dvr"] = dvr
        status["database"] = {
            "channels": len(catalog.channels),
            "streams": len(catalog.candidates),
            "skipped_rows": len(catalog.skipped),
        }
        return status

    def dvr_status(self):
        """
        The Channels DVR tracker's status with ``configured``, or
        ``{"configured": False, "state": "not configured"}``.
        """
        dvr = self._dvr
        status = getattr(dvr, "status", None)
        if not callable(status):
            return {"configured": False, "state": "not configured"}
        try:
            answer = dict(status())
        except Exception:
            log.failure("Reading the Channels DVR status")
            return {"configured": True, "state": "error", "last_error": "its status could not be read"}
        configured = bool(answer.get("url")) and answer.get("state") != "off"
        answer["configured"] = configured
        if not configured:
            answer["state"] = "not configured"
        return answer

    def channel_list(self):
        """
        What ``/api/channels`` answers, as a dict.
        """
        catalog = self._store.catalog
        now = self._reactor.seconds()
        failures = getattr(self._channels, "failures", None)
        penalised = failures.recent(now) if failures is not None else frozenset()
        sessions = getattr(self._channels, "sessions", None) or {}
        urls = self._display_urls_of(catalog)
        # What was seen of each stream since the start (health, measured facts).
        observations = self._ranking.observations
        channels = []
        for channel_id in sorted(catalog.channels, key=channel_sort_key):
            candidates = catalog.channels[channel_id]
            session = sessions.get(channel_id)
            running = session.status() if session is not None else {}
            playing = (running.get("current") or {}).get("rowid")
            ranked = []
            for rank, candidate in enumerate(self._ranking.rank(candidates, penalised), 1):
                ranked.append(
                    {
                        "rank": rank,
                        "rowid": candidate.rowid,
                        "name": candidate.name,
                        "source": candidate.source,
                        "quality": candidate.quality,
                        "url": urls.get(candidate.rowid, ""),
                        "status": candidate.status,
                        "last_checked": candidate.last_checked,
                        "uptime": candidate.uptime,
                        "downtime": candidate.downtime,
                        "failed_recently": (
                            masked(failures.reason(candidate.rowid) or "")
                            if candidate.rowid in penalised
                            else None
                        ),
                        "playing": candidate.rowid == playing,
                        "provider": _owner(catalog.owners.get(candidate.rowid)),
                        "seen": observations.status(candidate.rowid) if observations is not None else None,
                        "measured": _measured(observations, candidate),
                    }
                )
            first = candidates[0]
            channels.append(
                {
                    "channel_id": channel_id,
                    "name": first.display_name,
                    "logo": _logo(candidates),
                    "group": first.group,
                    "playlists": sorted({c.m3u for c in candidates if c.m3u}),
                    "state": running.get("state"),
                    "candidates": ranked,
                }
            )
        return {"now": now, "count": len(channels), "channels": channels}

    def _display_urls_of(self, catalog):
        # Shaping every URL of a large table takes a while: once per load.
        if self._display_urls[0] is not catalog:
            self._display_urls = (catalog, {c.rowid: c.display_url for c in catalog.candidates})
        return self._display_urls[1]

