"""
The Xtream Codes API as plain functions: the URLs to ask and what the
answers mean.

``player_api.php?username=U&password=P`` describes the account
(``user_info``: ``auth``, ``status``, ``exp_date``, ``max_connections``,
``active_cons``); ``&action=get_live_categories`` lists
``{category_id, category_name}``; ``&action=get_live_streams`` lists
``{num, name, stream_id, stream_icon, epg_channel_id, category_id}``.
Numbers often arrive as strings.  A stream plays at
``<server>/live/U/P/<stream_id>.ts``.  No I/O here:
:mod:`streamproxy.providers` fetches.
"""

from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit

from .m3u_parser import StreamEntry, disallowed_scheme
from .urls import DEFAULT_SCHEMES


class XtreamError(ValueError):
    """
    An Xtream answer that cannot be used; the message says what was wrong
    (never with the credentials).
    """


class AuthRefused(XtreamError):
    """
    The panel answered ``auth: 0``: wrong user name or password, or a
    disabled account.
    """


@dataclass(frozen=True)
class AccountInfo:
    """
    What the panel says about the account: ``status`` (``Active``,
    ``Expired``, ``Banned``...), ``expires`` (Unix time or None for
    never), ``max_connections`` and ``active_connections`` (None when not
    given).
    """

    status: str
    expires: float | None
    max_connections: int | None
    active_connections: int | None


def server_base(url):
    """
    ``scheme://host[:port][/path]`` of a configured Xtream URL, without a
    trailing slash or a ``player_api.php`` / ``get.php`` the user pasted.
    """
    parts = urlsplit(url.strip())
    path = parts.path.rstrip("/")
    for page in ("/player_api.php", "/get.php", "/xmltv.php", "/panel_api.php"):
        if path.endswith(page):
            path = path[: -len(page)]
    return f"{parts.scheme}://{parts.netloc}{path}"


def api_url(base, username, password, action=None):
    """
    The ``player_api.php`` URL for ``action`` (None: the account's info).
    """
    query = {"username": username, "password": password}
    if action:
        query["action"] = action
    return f"{base}/player_api.php?{urlencode(query)}"


def guide_url(base, username, password):
    """
    The account's XMLTV guide URL (``xmltv.php``).
    """
    return f"{base}/xmltv.php?{urlencode({'username': username, 'password': password})}"


def stream_url(base, username, password, stream_id, extension="ts"):
    """
    ``<base>/live/U/P/<stream_id>.ts``.
    """
    return f"{base}/live/{quote(username, safe='')}/{quote(password, safe='')}/{stream_id}.{extension}"


def _whole(value):
    if isinstance(value, bool):
        return None
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        try:
            return int(float(str(value).strip()))
        except (TypeError, ValueError):
            return None


def parse_account(document):
    """
    The :class:`AccountInfo` of a decoded ``player_api.php`` answer.

    :raises AuthRefused: for ``auth: 0``.
    :raises XtreamError: when the answer has another shape.
    """
    if not isinstance(document, dict):
        raise XtreamError("the account answer is not a JSON object")
    info = document.get("user_info")
    if not isinstance(info, dict):
        raise XtreamError("the account answer has no user_info object")
    if _whole(info.get("auth")) != 1:
        raise AuthRefused("the provider refused the user name or password (auth 0)")
    expires = _whole(info.get("exp_date"))
    return AccountInfo(
        status=str(info.get("status") or "unknown"),
        expires=float(expires) if expires else None,
        max_connections=_whole(info.get("max_connections")),
        active_connections=_whole(info.get("active_cons")),
    )


def parse_categories(document):
    """
    ``{category id: name}`` of a decoded ``get_live_categories`` answer
    (ids as text); entries of another shape are left out.

    :raises XtreamError: when the answer is not a list.
    """
    if isinstance(document, dict) and not document:
        return {}  # some panels answer {} for "none"
    if not isinstance(document, list):
        raise XtreamError("the category answer is not a JSON list")
    categories = {}
    for item in document:
        if isinstance(item, dict) and item.get("category_id") is not None:
            categories[str(item["category_id"]).strip()] = str(item.get("category_name") or "").strip()
    return categories


def stream_entries(document, categories, base, username, password, groups=None,
                   allowed_schemes=DEFAULT_SCHEMES):
    """
    The :class:`~streamproxy.m3u_parser.StreamEntry` values of a decoded
    ``get_live_streams`` answer, keyed ``id:<stream_id>``; only ``groups``
    (category names, case ignored) when given.  Entries without a stream id
    and repeated ids are left out, and so is every stream when the server's
    scheme is not one of ``allowed_schemes`` (``allowed_url_schemes``).

    :return: ``(entries, left out as unusable or repeated, outside groups,
        Counter of the entries left out for their scheme, by scheme)``.
    :raises XtreamError: when the answer is not a list.
    """
    if isinstance(document, dict) and not document:
        document = []
    if not isinstance(document, list):
        raise XtreamError("the stream answer is not a JSON list")
    wanted = {g.casefold() for g in groups} if groups else None
    seen = set()
    entries = []
    unusable = outside = 0
    disallowed = Counter()
    for item in document:
        if not isinstance(item, dict):
            unusable += 1
            continue
        stream_id = _whole(item.get("stream_id"))
        if stream_id is None or stream_id < 0 or stream_id in seen:
            unusable += 1
            continue
        group = categories.get(str(item.get("category_id") or "").strip(), "")
        if wanted is not None and group.casefold() not in wanted:
            outside += 1
            continue
        seen.add(stream_id)
        url = stream_url(base, username, password, stream_id)
        scheme = disallowed_scheme(url, allowed_schemes)
        if scheme is not None:
            disallowed[scheme] += 1
            continue
        name = str(item.get("name") or "").strip() or f"Stream {stream_id}"
        number = _whole(item.get("num"))
        entries.append(
            StreamEntry(
                key=f"id:{stream_id}",
                url=url,
                name=name,
                guide_id=str(item.get("epg_channel_id") or "").strip(),
                guide_name=name,
                logo=str(item.get("stream_icon") or "").strip(),
                group=group,
                number=str(number) if number and number > 0 else "",
            )
        )
    return entries, unusable, outside, disallowed
