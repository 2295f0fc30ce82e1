"""Per-request facts every handler needs: the portal (by Host), the client address and the caller."""

from __future__ import annotations

import functools
import ipaddress
import itertools
import operator
import re
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import Request

from smtpsettings.api.headers import header
from smtpsettings.api.negotiation import check_body_type
from smtpsettings.domain.accounts import Portal, Principal, User, normalize_hostname
from smtpsettings.domain.errors import BadArgument
from smtpsettings.services.auth import Alongside, Authenticated, Credentials

if TYPE_CHECKING:
    from smtpsettings.wiring import Services

__all__ = (
    "authenticated",
    "client_address",
    "current_portal",
    "current_principal",
    "forwarded_client",
    "forwarded_scheme",
    "json_too_deep",
    "read_json",
    "services",
    "settings_manager",
)

AUTH_COOKIE = "asc_auth_key"

T = TypeVar("T")


def services(request: Request) -> Services:
    # Item access: a quarter of the cost of State's attribute access (a Python __getattr__), twice a request.
    return request.app.state["services"]  # type: ignore[no-any-return]


# The same few Host values arrive over and over; their normal form never changes.
_normalized_host = functools.lru_cache(maxsize=4096)(normalize_hostname)


def _hostname(request: Request) -> str | None:
    return _normalized_host(header(request, b"host"))


async def current_portal(request: Request) -> Portal:
    """The portal answering the request's Host; the default portal for unknown Hosts, if there is one."""
    portal = await services(request).auth.portal_for_host(_hostname(request))
    request.scope["state"]["portal"] = portal
    return portal


def client_address(request: Request) -> str:
    """The client's IP; X-Forwarded-For is believed only from configured trusted proxies."""
    peer = request.client.host if request.client else "unknown"
    return forwarded_client(peer, request.headers.get("x-forwarded-for"), services(request).trusted_proxies)


def forwarded_client(
    peer: str, x_forwarded_for: str | None, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str:
    """The rightmost X-Forwarded-For address that is not a trusted proxy, when ``peer`` is one; else ``peer``.

    A pure function of the peer and the header, so the access log names the same client as sign-in limits
    and the audit log do.
    """
    if not x_forwarded_for or not trusted or not _in(peer, trusted):
        return peer
    hops = [h.strip() for h in x_forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            return hop
    return peer


_FORWARDED_PROTO = re.compile(r'(?:^|;)\s*proto\s*=\s*"?([A-Za-z]+)"?\s*(?:;|$)', re.IGNORECASE)


def forwarded_scheme(
    peer: str, x_forwarded_proto: bytes | None, forwarded: bytes | None, trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
) -> str | None:
    """The scheme a trusted proxy says the client used (``http`` or ``https``), or None to keep the connection's.

    Believed only from a peer in ``trusted``: anyone else could claim https and so get a link or a cookie
    flag that is not theirs. ``X-Forwarded-Proto`` wins over ``Forwarded: proto=`` (RFC 7239); of a list, the
    last value counts, the one the proxy next to us wrote.
    """
    if not trusted or not _in(peer, trusted):
        return None
    if x_forwarded_proto is not None:
        proto = x_forwarded_proto.decode("latin-1").rsplit(",", 1)[-1].strip()
    elif forwarded is not None:
        match = _FORWARDED_PROTO.search(forwarded.decode("latin-1").rsplit(",", 1)[-1])
        proto = match.group(1) if match else ""
    else:
        return None
    proto = proto.lower()
    return proto if proto in ("http", "https") else None


def _in(address: str, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def authenticated(request: Request, alongside: Alongside[T] | None = None) -> Authenticated[T]:
    """The portal of the Host and the caller (401 without valid credentials for that portal), and the
    portal's data named by ``alongside``, read in the same statement."""
    credentials = Credentials(_auth_cookie(request), header(request, b"authorization") or header(request, b"apikeybearer"))
    found = await services(request).auth.authenticate(
        _hostname(request), credentials, functools.partial(client_address, request), alongside
    )
    request.scope["state"].update(portal=found.portal, user_id=found.principal.user.id)
    return found


async def current_principal(request: Request) -> tuple[Portal, Principal]:
    """The portal of the Host and the caller (401 without valid credentials for that portal)."""
    found = await authenticated(request)
    return found.portal, found.principal


def _auth_cookie(request: Request) -> str | None:
    raw = header(request, b"cookie").strip()
    if not raw:
        return None
    if "=" not in raw and ";" not in raw:
        # The official SDK, given api_key={"asc_auth_key": TOKEN}, sends "Cookie: TOKEN" with no name.
        return raw
    token = None
    for part in raw.split(";"):
        name, _, value = part.partition("=")
        if name.strip() == AUTH_COOKIE:
            token = value.strip()  # the last one wins, as in request.cookies
    if token and any(c in token for c in '"%\\'):
        token = request.cookies.get(AUTH_COOKIE)  # quoted or escaped: let Litestar's parser unquote it
    return token or None


async def settings_manager(request: Request) -> tuple[Portal, User]:
    """The portal and the signed-in owner or admin acting on it (401/403 otherwise)."""
    portal, principal = await current_principal(request)
    return portal, services(request).auth.require_settings_manager(principal)


# Far below the decoder's recursion limit (about 1 000 levels, less the stack beneath it), far above any
# valid body (none nests more than three levels).
MAX_JSON_DEPTH = 32

# A JSON string, so that brackets inside it are not counted. It matches from every quote, also an
# unterminated string (to the end of the body), so it never backtracks: linear in the body's length.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\[\s\S][^"\\]*)*(?:"|\\?\Z)')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Brackets as 0 (closer) and 2 (opener): minus one each, their running sum is the nesting depth.
_BRACKET_STEP = bytes.maketrans(b"[]{}", b"\x02\x00\x02\x00")
_deeper_than_max = functools.partial(operator.lt, MAX_JSON_DEPTH)
_TOO_DEEP = f"The request body nests too deeply: at most {MAX_JSON_DEPTH} levels of arrays and objects are allowed."


def json_too_deep(raw: bytes) -> bool:
    """Whether a JSON text opens more than MAX_JSON_DEPTH arrays/objects inside one another.

    Checked before decoding, because the decoder recurses once per level and a few hundred levels end in
    a RecursionError. Almost every body has fewer openers than the limit in all, so two byte counts settle
    it; only other bodies are scanned, at C speed: strings removed, brackets kept, the running depth
    followed until it passes the limit. Unclosed openers count, as the decoder would descend into them.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(_BRACKET_STEP, _NOT_BRACKETS)
    depths = itertools.accumulate(map(operator.sub, brackets, itertools.repeat(1)))
    return next(filter(_deeper_than_max, depths), None) is not None


async def read_json(request: Request) -> Any:
    """The request body as JSON, after the content-type check; size limits are enforced by the app.

    Raises:
        UnsupportedMediaType: not a JSON content type, or not UTF-8.
        BadArgument: not UTF-8, nested too deeply or not well-formed JSON.
    """
    check_body_type(header(request, b"content-type"))
    raw = await request.body()
    if not raw.strip():
        raise BadArgument("The request body is empty; send a JSON object.")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadArgument("The request body is not valid UTF-8.") from None
    if json_too_deep(raw):
        raise BadArgument(_TOO_DEEP)
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadArgument(f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:  # not reached past json_too_deep; kept so that a deep body can never be a 500
        raise BadArgument(_TOO_DEEP) from None

