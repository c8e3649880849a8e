"""
Stream URLs: which ones may be played, and how they are shown without the
provider account they carry.

A provider's stream URL holds its account: in the userinfo
(``USER:PASS@host``), in the path (``/live/USER/PASS/1.ts``,
``/hls/USER/PASS/index.m3u8``) or in the query (``?username=...&p=...``).
Patterns over free text will always miss some form, so masking is
structural first:

* :func:`display_url` is what pages and the API show for a stream the
  daemon holds: scheme, host, port, the last path component and the
  query's names without their values, built from the URL's parts.
* :class:`KnownUrls` holds every stream URL of the table and the
  providers' own playlist and API URLs from ``providers:``;
  :meth:`~KnownUrls.replace` puts the display form in place of each of them
  wherever one appears in a text, by exact match.
* :func:`mask_urls` is the fallback for URLs the daemon never held
  (redirect targets, HLS variant and segment URLs in ffmpeg's output):
  broad heuristics that rather hide too much than too little.
* :func:`mask_text` runs both, in that order, with the process-wide
  :data:`KNOWN_URLS`; every log line, error text and status string goes
  through it.

The scheme rules live here too: :func:`scheme_problem` says whether a
stream URL may be played at all (only ``allowed_url_schemes``) and
:func:`protocol_whitelist` is the matching ``-protocol_whitelist`` for
ffmpeg and ffprobe, so even a URL that slipped past the table's check
cannot make them read a local file.

Everything here is pure; nothing does I/O.
"""

import re

MASK = "***"
# Stands for the path components a display form leaves out.
ELIDED = "..."

# ---------------------------------------------------------------------------
# Schemes

DEFAULT_SCHEMES = ("http", "https")

# The network schemes a stream URL may use, each with the ffmpeg protocols
# it needs underneath (ffmpeg checks every nested open against the
# whitelist).  "crypto" decrypts AES-128 HLS segments and only wraps
# another whitelisted protocol; rtsp is a demuxer, not a protocol, that
# opens tcp, udp and rtp itself.  Nothing that reads local files
# (file, pipe, fd, concat, subfile, data, cache) is offered at all.
NETWORK_SCHEMES = {
    "http": ("http", "tcp", "crypto"),
    "https": ("https", "tls", "tcp", "crypto", "httpproxy"),
    "rtmp": ("rtmp", "tcp"),
    "rtmps": ("rtmps", "tls", "tcp"),
    "rtmpt": ("rtmpt", "ffrtmphttp", "http", "tcp"),
    "rtmpts": ("rtmpts", "ffrtmphttp", "https", "tls", "tcp"),
    "rtsp": ("tcp", "udp", "rtp"),
    "rtsps": ("tls", "tcp", "udp", "rtp"),
    "rtp": ("rtp", "udp"),
    "udp": ("udp",),
    "srt": ("srt",),
    "tcp": ("tcp",),
    "mmsh": ("mmsh", "http", "tcp"),
    "mmst": ("mmst", "tcp"),
    "rist": ("rist",),
}

# "http:" of "http://x", "file:" of "file:///x", "concat:" of ffmpeg's
# "concat:a|b": what ffmpeg takes for the protocol.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


def url_scheme(url):
    """
    The lower-cased scheme of ``url`` as ffmpeg reads it (``http`` of
    ``HTTP://x/``, ``concat`` of ``concat:a.ts|b.ts``), or ``""`` when it
    has none (a bare path).
    """
    match = _SCHEME.match(url or "")
    return match.group(1).lower() if match else ""


def scheme_problem(url, allowed=DEFAULT_SCHEMES):
    """
    Why the stream ``url`` may not be played, as words to follow "stream-url",
    or None when it is a ``scheme://`` URL whose scheme is one of
    ``allowed`` (``allowed_url_schemes``).
    """
    scheme = url_scheme(url)
    if not scheme:
        return "has no scheme (such as http://)"
    if scheme not in allowed:
        return f"uses {scheme}:, which is not in allowed_url_schemes ({', '.join(allowed)})"
    if not url[len(scheme) + 1 :].startswith("//"):
        return f"is not a network URL ({scheme}://host/...)"
    return None


def protocol_whitelist(allowed=DEFAULT_SCHEMES):
    """
    The value of ffmpeg's and ffprobe's ``-protocol_whitelist`` for the
    ``allowed`` schemes: those protocols and the ones they need underneath.
    """
    protocols = set()
    for scheme in allowed:
        protocols.update(NETWORK_SCHEMES[scheme])
    return ",".join(sorted(protocols))


def protocol_whitelist_options(allowed=DEFAULT_SCHEMES):
    """
    The input options that keep ffmpeg or ffprobe to the ``allowed``
    schemes; they go before ``-i`` (ffmpeg) or the URL (ffprobe).
    """
    return ["-protocol_whitelist", protocol_whitelist(allowed)]


# ---------------------------------------------------------------------------
# Splitting a URL

# Everything after "scheme://"; every part may be empty, so it always matches.
_URL_PARTS = re.compile(
    r"(?P<netloc>[^/?#]*)(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?P<fragment>#.*)?$", re.DOTALL
)


def _split(rest):
    """
    ``(netloc, path, query or None, fragment or None)`` of what follows
    ``scheme://``.  A password may hold ``?``, ``#``, ``@`` or quotes
    (badly escaped ones do), so the netloc runs to the first ``/`` when
    there is an ``@`` before it.
    """
    slash = rest.find("/")
    head = rest if slash < 0 else rest[:slash]
    at = head.rfind("@")
    userinfo, rest = (rest[: at + 1], rest[at + 1 :]) if at >= 0 else ("", rest)
    netloc, path, query, fragment = _URL_PARTS.match(rest).group("netloc", "path", "query", "fragment")
    return userinfo + netloc, path, query, fragment


def _host(netloc):
    return netloc.rpartition("@")[2]


def _names(path):
    """
    The path's components without the empty ones a leading or trailing
    ``/`` makes (``/USER/PASS/ID/`` is three components).
    """
    return [name for name in path.split("/") if name]


# ---------------------------------------------------------------------------
# Heuristics: what in a URL looks like an account

# Xtream Codes panels and their clones put USER/PASS right after one of
# these, wherever it is in the path (/x/live/USER/PASS/1.ts).
ACCOUNT_PREFIXES = frozenset(
    {"live", "movie", "movies", "series", "timeshift", "hls", "iptv", "play", "vod"}
)
# Query names (or path "name=value" pairs) whose values are secrets: any
# name containing one of these words...
_SECRET_WORDS = re.compile(
    r"user|login|pass|pwd|token|tkn|key|auth|sig|secret|session|hash|hdn|cred|policy|"
    r"account|mail|ticket|nonce|hmac|otp|pin",
    re.IGNORECASE,
)
# ... and these short names, exactly (?u=...&p=..., Stalker's ?mac=...).
_SECRET_NAMES = frozenset(
    {"u", "p", "pw", "pwd", "un", "usr", "uid", "sid", "k", "t", "tk", "st", "e", "h", "s",
     "id_token", "code", "mac", "sn", "uuid"}
)
# Long opaque strings with letters and digits are usually tokens; readable
# names (no digits) and plain numbers are not.
_TOKENISH = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-=.%~+]{16,}$")
# A numbered resource, as Xtream ids are (1001, 1001.ts).
_NUMBERED = re.compile(r"^\d+(?:\.[A-Za-z0-9]{1,5})?$")
_HAS_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")
# Schemes whose last path component is the stream key.
_KEY_LAST_SCHEMES = frozenset({"rtmp", "rtmps", "rtmpt", "rtmpts", "rtmpe", "rtmpte", "srt"})


def _secret_name(name):
    folded = name.strip().lower()
    return bool(_SECRET_WORDS.search(folded)) or folded in _SECRET_NAMES


def _secret_components(scheme, names):
    """
    The indexes of the path components in ``names`` that look like an
    account or a token.  The last component (the resource) is only among
    them when the pattern says it is the password (``/live/USER/PASS``), a
    stream key (rtmp) or an opaque token without an extension.
    """
    count = len(names)
    secret = set()
    index = 0
    matched = False
    while index < count - 2:
        after = count - index - 1
        if names[index].lower() in ACCOUNT_PREFIXES and (after >= 3 or not _HAS_EXTENSION.search(names[-1])):
            # /live/USER/PASS/ID..., or /live/USER/PASS with PASS last; but
            # /live/stream/playlist.m3u8 names a stream, not an account.
            secret.update((index + 1, index + 2))
            matched = True
            index += 3
        else:
            index += 1
    if not matched and count >= 3 and _NUMBERED.match(names[-1]):
        # .../USER/PASS/12345.ts under any prefix.
        secret.update((count - 3, count - 2))
    elif not matched and count == 3:
        # http://host:port/USER/PASS/ID (ID of any form).
        secret.update((0, 1))
    for position, name in enumerate(names):
        last = position == count - 1
        if "@" in name or (not last and _TOKENISH.match(name)):
            secret.add(position)
        elif last and _TOKENISH.match(name) and not _HAS_EXTENSION.search(name):
            secret.add(position)
    if names and scheme in _KEY_LAST_SCHEMES and count >= 2:
        secret.add(count - 1)
    return secret


def _mask_component(name):
    # "token=abc" inside a path (matrix parameters, ;jsessionid=...).
    if "=" in name:
        parts = []
        for piece in re.split(r"([;,&])", name):
            key, equals, value = piece.partition("=")
            parts.append(f"{key}={MASK}" if equals and (_secret_name(key) or _TOKENISH.match(value)) else piece)
        return "".join(parts)
    return name


def _mask_path(scheme, path):
    segments = path.split("/")
    names = [name for name in segments if name]
    secret = _secret_components(scheme, names)
    # Map positions among the non-empty names back to the segments.
    position = -1
    masked = []
    for segment in segments:
        if segment:
            position += 1
            segment = MASK if position in secret else _mask_component(segment)
        masked.append(segment)
    return "/".join(masked)


def _mask_query(query):
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if equals and value and (_secret_name(name) or _TOKENISH.match(value) or _holds_url(value)):
            pair = f"{name}={MASK}"
        elif equals and not value and _secret_name(name):
            pair = f"{name}={MASK}"
        elif not equals and _TOKENISH.match(name):
            pair = MASK  # a bare token: ?eyJhbGciOi...
        pairs.append(pair)
    return "&".join(pairs)


def _holds_url(value):
    lowered = value.lower()
    return "://" in lowered or "%3a%2f%2f" in lowered or "@" in value


def _mask_one_url(url):
    escaped = "://" not in url
    if escaped:
        url = url.replace("\\/", "/")
    scheme, _, rest = url.partition("://")
    netloc, path, query, fragment = _split(rest)
    userinfo, at, host = netloc.rpartition("@")
    if at:
        netloc = (f"{MASK}:{MASK}" if ":" in userinfo else MASK) + "@" + host
    masked = f"{scheme}://{netloc}{_mask_path(scheme.lower(), path) if path else ''}"
    if query is not None:
        masked += "?" + _mask_query(query)
    masked += fragment or ""
    return masked.replace("/", "\\/") if escaped else masked


# A URL in free text: "scheme://" (or JSON's "scheme:\/\/"), a userinfo that
# may hold quotes (a password with ' in it), then anything up to a space,
# a quote, an angle bracket or "|" (ffmpeg's concat: separator).
_URL_IN_TEXT = re.compile(
    r"\b[A-Za-z][A-Za-z0-9+.\-]*:(?://|\\/\\/)"
    r"(?:[^\s/@]*@(?=[^\s@]))?"
    r"[^\s'\"<>|]*"
)
# "http://host/x.ts: Connection refused" - the colon belongs to the message.
_TRAILING_PUNCTUATION = ".,;:!?)]}"


def _mask_match(match):
    url = match.group(0)
    stripped = url.rstrip(_TRAILING_PUNCTUATION)
    return _mask_one_url(stripped) + url[len(stripped) :]


def mask_urls(text):
    """
    ``text`` with the credentials of every URL in it masked by heuristics.

    Masks a userinfo (``USER:PASS@``), the two components after an
    account prefix anywhere in the path (``/live/``, ``/hls/``,
    ``/iptv/``, ``/movie/``, ``/series/``, ``/timeshift/``...), the two
    before a numeric resource (``.../USER/PASS/12345.ts``), the first two
    of a three-component path (``/USER/PASS/ID``, trailing slash or not),
    long opaque tokens, rtmp stream keys, and query values whose names look
    secret (long and short ones: ``password``, ``token``, ``u``, ``p``,
    ``pw``, ``mac``...) or whose values look like tokens or URLs.  Scheme,
    host, port and the resource name stay visible.  Hiding an innocent
    folder name is the accepted price of never showing a password.
    """
    if "/" not in text:
        return text
    return _URL_IN_TEXT.sub(_mask_match, text)


# ---------------------------------------------------------------------------
# The display form


# A page or file name (get.php, playlist.m3u, xmltv.php): the only last
# path component a provider's own URL shows (see display_url).
_PAGE_NAME = re.compile(r"^[A-Za-z_\-]{1,40}\.[A-Za-z0-9]{1,5}$")


def display_url(url, page_names_only=False):
    """
    How pages, the API and the log show the stream ``url``: scheme, host and
    port, the last path component (``...`` for the ones before it) and the
    query's names without values, e.g.
    ``http://provider.example:8080/.../1001.ts?username&password``.

    No userinfo, no folder and no query value is ever part of it; the last
    component is shown as ``***`` when it is itself the secret (a
    ``/live/USER/PASS`` URL without an id, an rtmp stream key, an opaque
    token).  With ``page_names_only`` (a provider's playlist or API URL from
    ``providers:``, whose path may be nothing but the account, as in
    ``/get/USER/PASS``) it is shown only when it is a page name such as
    ``get.php`` or ``playlist.m3u``.
    """
    scheme, separator, rest = (url or "").partition("://")
    if not separator:
        return MASK
    netloc, path, query, _ = _split(rest)
    shown = f"{scheme.lower()}://{_host(netloc)}"
    names = _names(path)
    if names:
        last = names[-1]
        if len(names) - 1 in _secret_components(scheme.lower(), names) or "=" in last:
            last = MASK
        elif page_names_only and not _PAGE_NAME.match(last):
            last = MASK
        shown += ("/" + ELIDED if len(names) > 1 else "") + "/" + last
    if query:
        keys = []
        for pair in query.split("&"):
            name = pair.partition("=")[0]
            if name:
                keys.append(MASK if _TOKENISH.match(name) else name)
        if keys:
            shown += "?" + "&".join(keys)
    return shown


# ---------------------------------------------------------------------------
# Exact replacement of the URLs the daemon holds

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
# A character after a known URL that shows the text goes on with a longer
# URL (a different one, left to the heuristics).
_URL_CONTINUES = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_~%/?#&=+@")


class KnownUrls:
    """
    The stream URLs of the table, and the providers' own URLs, to be
    replaced by their display forms wherever they appear in a text.

    :meth:`remember` is given the URLs of each load of the table; the
    previous load's URLs are kept too, since a channel started before a
    refresh keeps playing the streams it was started with.  :meth:`keep`
    is given URLs known for as long as the process runs: the playlist and
    API URLs of ``providers:``, shown with ``page_names_only``.
    """

    def __init__(self):
        self._current = frozenset()
        self._previous = frozenset()
        self._kept = {}
        self._lengths = ()

    def remember(self, urls):
        """
        Take ``urls`` as the current load's stream URLs.
        """
        current = frozenset(url for url in urls if url and "://" in url)
        if current == self._current:
            return
        self._previous, self._current = self._current, current
        self._update_lengths()

    def keep(self, urls):
        """
        Know ``urls`` (a provider's playlist and API URLs) from now on,
        whatever the table holds, and show them with ``page_names_only``.
        """
        added = {url: display_url(url, page_names_only=True) for url in urls if url and "://" in url}
        if added.keys() - self._kept.keys():
            self._kept.update(added)
            self._update_lengths()

    def _update_lengths(self):
        urls = self._current | self._previous | self._kept.keys()
        self._lengths = tuple(sorted({len(url) for url in urls}, reverse=True))

    def __contains__(self, url):
        return url in self._current or url in self._previous or url in self._kept

    def __len__(self):
        return len(self._current | self._previous | self._kept.keys())

    def display(self, url):
        """
        The display form of the known ``url``.
        """
        kept = self._kept.get(url)
        return kept if kept is not None else display_url(url)

    def replace(self, text):
        """
        ``text`` with every known URL in it replaced by its display form.

        A URL counts where it appears exactly, whatever surrounds it (quotes,
        a ``:`` after it), but not when the text goes on with more of a
        longer URL.  Linear in the text: each ``://`` is tried against the
        lengths of the known URLs only.
        """
        if not self._lengths or "://" not in text:
            return text
        pieces = []
        done = 0
        search = 0
        while True:
            found = text.find("://", search)
            if found < 0:
                break
            match = self._match_at(text, done, found)
            if match is None:
                search = found + 3
                continue
            begin, end = match
            pieces.append(text[done:begin])
            pieces.append(self.display(text[begin:end]))
            done = search = end
        if not pieces:
            return text
        pieces.append(text[done:])
        return "".join(pieces)

    def _match_at(self, text, done, found):
        """
        ``(begin, end)`` of a known URL whose ``://`` is at ``found``, or None.
        """
        start = found
        while start > done and text[start - 1] in _SCHEME_CHARS:
            start -= 1
        size = len(text)
        # The scheme may begin later than the run of scheme characters
        # ("xhttp://" is not a URL of ours; the "http://" in it may be).
        for begin in range(start, found):
            if not text[begin].isalpha():
                continue
            for length in self._lengths:
                end = begin + length
                if end > size or end <= found + 3:
                    continue
                if end < size and text[end] in _URL_CONTINUES:
                    continue
                if text[begin:end] in self:
                    return begin, end
        return None


# Every stream URL of the daemon's table (the store updates it on each
# load).  Process-wide like the log publisher it serves: every log line,
# from any module, is masked with it.
KNOWN_URLS = KnownUrls()


def mask_text(text, known=None):
    """
    ``text`` (a log line, an error, a reason) with every stream URL the
    daemon knows replaced by its display form, then every other URL's
    credentials masked by :func:`mask_urls`.
    """
    if not isinstance(text, str) or "/" not in text:
        return text
    known = KNOWN_URLS if known is None else known
    return mask_urls(known.replace(text))
