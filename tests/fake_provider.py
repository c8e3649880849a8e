"""
A fake IPTV provider for the provider-sync tests: an M3U playlist per
account and the Xtream Codes API, with faults on demand and URL rotation.

The same resource serves unit tests (through ``treq.testing.StubTreq``) and
integration tests (on 127.0.0.1 with :meth:`FakeProvider.start`).

- ``/m3u/<user>/playlist.m3u?token=<password>`` (and ``.m3u.gz``, a gzip file): the
  account's channels.  With ``rotation="path"`` stream URLs are
  ``/live/<user>/<token><generation>/<id>.ts``; with ``rotation="query"``
  they are ``/play/<slug>.m3u8?token=<generation>``.  Bumping
  :attr:`FakeProvider.generation` rotates them.
- ``/player_api.php?username=U&password=P[&action=...]``: ``user_info``,
  ``get_live_categories``, ``get_live_streams``.
- ``/live/<user>/<pass>/<id>.ts``: a redirect to the stream's media
  (:attr:`FakeProvider.media`, e.g. an upstream live URL), else 404.
"""

import gzip
import json
from dataclasses import dataclass

from twisted.internet import reactor as default_reactor
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site


class _QuietSite(Site):
    """
    No access log: it would put the provider's credentials, in the URLs
    the daemon asks for, into the test process's log, where the daemon's
    own log viewer (checked for leaks) would pick them up.
    """

    def log(self, request):
        pass


@dataclass
class FakeChannel:
    """
    One channel the fake provider offers.
    """

    stream_id: int
    name: str
    tvg_id: str = ""
    group: str = "General"
    number: int = 0
    logo: str = ""
    # A URL the M3U playlist lists as it is instead of the provider's own
    # (a file:// or rtmp:// entry a sync must leave out).
    url: str = ""

    @property
    def slug(self):
        return "".join(c for c in self.name.lower() if c.isalnum()) or str(self.stream_id)


# Faults: what an answer does instead of the right thing.
HTML = "html"
GARBAGE = "garbage"
HANG = "hang"
AUTH0 = "auth0"
EMPTY = "empty"
RESET = "reset"


class FakeProvider(Resource):
    """
    The provider.  ``accounts`` is ``{user: password}``; ``channels`` the
    list of :class:`FakeChannel` every account sees (``only`` narrows it per
    user).  ``faults`` maps an answer kind (``m3u``, ``account``,
    ``categories``, ``streams``) to a fault: an HTTP status number or one of
    the constants above.
    """

    isLeaf = True

    def __init__(self, channels=(), accounts=None, rotation="path", max_connections=2, gzip_answers=False):
        super().__init__()
        self.channels = list(channels)
        self.accounts = dict(accounts or {"alice": "hunter2"})
        self.only = {}
        self.rotation = rotation
        self.generation = 1
        self.max_connections = {user: max_connections for user in self.accounts}
        self.expires = 1_900_000_000
        self.status = "Active"
        self.gzip_answers = gzip_answers
        self.faults = {}
        self.media = {}
        self.requests = []
        self.hanging = []
        self.port = None
        self._listener = None

    # Set-up.

    def set_fault(self, fault, *kinds):
        """
        Make the answers of ``kinds`` (every kind when none given) fail with
        ``fault``; None clears.
        """
        for kind in kinds or ("m3u", "account", "categories", "streams"):
            if fault is None:
                self.faults.pop(kind, None)
            else:
                self.faults[kind] = fault

    def start(self, reactor=default_reactor, port=0):
        """
        Listen on 127.0.0.1 (a free port, or ``port``: the one it had, to
        come back after :meth:`stop`); returns the port number.
        """
        site = _QuietSite(self)
        site.noisy = False
        self._listener = reactor.listenTCP(port, site, interface="127.0.0.1")
        self.port = self._listener.getHost().port
        return self.port

    def stop(self):
        """
        Stop listening (the provider is down: connections are refused) and
        end hanging answers.
        """
        for request in self.hanging:
            try:
                request.transport.abortConnection()
            except Exception:
                pass
        self.hanging = []
        if self._listener is not None:
            listener, self._listener = self._listener, None
            return listener.stopListening()
        return None

    def base(self):
        """
        ``http://127.0.0.1:<port>`` (``http://provider.test`` before start,
        for StubTreq).
        """
        return f"http://127.0.0.1:{self.port}" if self.port else "http://provider.test"

    def m3u_url(self, user="alice", gz=False):
        """
        The playlist URL of ``user`` (with the password as token).
        """
        return f"{self.base()}/m3u/{user}/playlist.m3u{'.gz' if gz else ''}?token={self.accounts[user]}"

    def channels_of(self, user):
        """
        The channels ``user`` sees.
        """
        wanted = self.only.get(user)
        return [c for c in self.channels if wanted is None or c.stream_id in wanted]

    # Answers.

    def render_GET(self, request):
        path = request.path.decode()
        args = {k.decode(): v[0].decode() for k, v in request.args.items()}
        self.requests.append((path, args))
        if path.startswith("/m3u/"):
            return self._m3u(request, path, args)
        if path == "/player_api.php":
            return self._api(request, args)
        if path.startswith("/live/"):
            return self._stream(request, path)
        request.setResponseCode(404)
        return b"not found"

    def _fault(self, request, kind):
        fault = self.faults.get(kind)
        if fault is None:
            return None
        if isinstance(fault, int):
            request.setResponseCode(fault)
            return b"<html><body>error</body></html>"
        if fault == HTML:
            request.setHeader(b"content-type", b"text/html")
            return b"<!DOCTYPE html><html><body>Please log in</body></html>"
        if fault == GARBAGE:
            return bytes(range(256)) * 8
        if fault == HANG:
            self.hanging.append(request)
            return NOT_DONE_YET
        if fault == RESET:
            request.transport.abortConnection()
            return NOT_DONE_YET
        if fault == EMPTY:
            return b"#EXTM3U\n" if kind == "m3u" else b"[]"
        if fault == AUTH0 and kind == "account":
            return json.dumps({"user_info": {"auth": 0}}).encode()
        return None

    def _send(self, request, body, gz_file=False):
        if gz_file:
            return gzip.compress(body)
        accepts = b"gzip" in (request.getHeader(b"accept-encoding") or b"")
        if self.gzip_answers and accepts:
            request.setHeader(b"content-encoding", b"gzip")
            return gzip.compress(body)
        return body

    def _m3u(self, request, path, args):
        user, _, name = path[len("/m3u/"):].partition("/")
        gz_file = name.endswith(".gz")
        if self.accounts.get(user) != args.get("token"):
            request.setResponseCode(401)
            return b"unauthorized"
        faulty = self._fault(request, "m3u")
        if faulty is not None:
            return faulty
        lines = ["#EXTM3U"]
        for channel in self.channels_of(user):
            attributes = [f'tvg-id="{channel.tvg_id}"', f'tvg-name="{channel.name}"']
            if channel.number:
                attributes.append(f'tvg-chno="{channel.number}"')
            if channel.logo:
                attributes.append(f'tvg-logo="{channel.logo}"')
            attributes.append(f'group-title="{channel.group}"')
            lines.append(f"#EXTINF:-1 {' '.join(attributes)},{channel.name}")
            lines.append(channel.url or self.stream_url(user, channel))
        request.setHeader(b"content-type", b"audio/x-mpegurl")
        return self._send(request, ("\n".join(lines) + "\n").encode(), gz_file)

    def stream_url(self, user, channel):
        """
        The URL the playlist gives for ``channel`` now (rotating with
        :attr:`generation`).
        """
        if self.rotation == "query":
            return f"{self.base()}/play/{channel.slug}.m3u8?token={self.generation}"
        return f"{self.base()}/live/{user}/{self.accounts[user]}{self.generation}/{channel.stream_id}.ts"

    def _api(self, request, args):
        user, password = args.get("username"), args.get("password")
        action = args.get("action")
        kind = {"get_live_categories": "categories", "get_live_streams": "streams"}.get(action, "account")
        request.setHeader(b"content-type", b"application/json")
        if user not in self.accounts or self.accounts[user] != password:
            if action is None:
                return json.dumps({"user_info": {"auth": 0}}).encode()
            request.setResponseCode(401)
            return b"[]"
        faulty = self._fault(request, kind)
        if faulty is not None:
            return faulty
        if action is None:
            answer = {
                "user_info": {
                    "username": user,
                    "password": password,
                    "auth": 1,
                    "status": self.status,
                    "exp_date": str(self.expires),
                    "max_connections": str(self.max_connections[user]),
                    "active_cons": "0",
                },
                "server_info": {"url": "127.0.0.1", "port": str(self.port or 80)},
            }
        elif action == "get_live_categories":
            groups = sorted({c.group for c in self.channels})
            answer = [{"category_id": str(i + 1), "category_name": g, "parent_id": 0} for i, g in enumerate(groups)]
        elif action == "get_live_streams":
            groups = {g: str(i + 1) for i, g in enumerate(sorted({c.group for c in self.channels}))}
            answer = [
                {
                    "num": c.number or index + 1,
                    "name": c.name,
                    "stream_type": "live",
                    "stream_id": c.stream_id,
                    "stream_icon": c.logo,
                    "epg_channel_id": c.tvg_id or None,
                    "category_id": groups[c.group],
                }
                for index, c in enumerate(self.channels_of(user))
            ]
        else:
            answer = []
        return self._send(request, json.dumps(answer).encode())

    def _stream(self, request, path):
        parts = path.split("/")
        if len(parts) == 5:
            _, _, user, password, leaf = parts
            stream_id = leaf.split(".")[0]
            known = user in self.accounts and password.startswith(self.accounts[user])
            if known and stream_id.isdigit() and int(stream_id) in self.media:
                request.redirect(self.media[int(stream_id)].encode())
                return b""
        request.setResponseCode(404)
        return b"no such stream"
