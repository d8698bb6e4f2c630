"""API tokens, browser login sessions, the request/WebSocket identity and the Origin checks.

A token is ``dp_`` + 32 random bytes (url-safe); only its SHA-256 is stored. The API takes it as
``Authorization: Bearer``. The browser UI trades it once (``POST /api/login``) for a *browser session*: the
HttpOnly, SameSite=Strict cookie holds a fresh random secret, the database only its SHA-256, with an expiry.
Logout revokes that session, and revoking the token ends every session logged in with it. The token itself
never sits in the cookie.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from deskpilot.errors import Forbidden, Unauthorized
from web.limits import LoginThrottle, RateLimiter, address_key
from web.store import Store, TokenRow, utcnow

COOKIE_NAME = "deskpilot_session"
TOKEN_PREFIX = "dp_"  # noqa: S105 - a prefix, not a secret
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is a write; once a minute is precise enough


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(store: Store, name: str) -> str:
    """Create a token for ``name``; the plain secret is returned once and never stored."""
    token = new_token()
    await store.add_token(name, hash_token(token))
    return token


@dataclass(frozen=True, slots=True)
class Principal:
    owner: str
    token_id: str
    session_hash: str | None = None  # set when the caller came in with a browser-session cookie


def client_address(conn: HTTPConnection) -> str:
    return address_key(conn.client.host if conn.client else None)


def bearer_token(conn: HTTPConnection) -> str | None:
    scheme, _, value = conn.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def verify_token(conn: HTTPConnection, token: str | None) -> TokenRow:
    """The live token row for ``token``. A wrong one counts against the caller's address (``LoginThrottle``);
    an address over its budget is refused before the token is even looked at."""
    throttle: LoginThrottle = conn.app.state.login_throttle
    address = client_address(conn)
    throttle.check(address)
    if not token:
        raise Unauthorized("a valid API token is required (Authorization: Bearer dp_…)")
    store: Store = conn.app.state.store
    row = await store.token_by_hash(hash_token(token)) if token.startswith(TOKEN_PREFIX) and len(token) <= 200 else None
    if row is None:
        throttle.failed(address)
        raise Unauthorized("unknown or revoked API token")
    return row


async def authenticate(conn: HTTPConnection) -> Principal:
    """Who is calling, from the bearer header or the browser-session cookie; Unauthorized otherwise."""
    limiter: RateLimiter = conn.app.state.rate_limiter
    token = bearer_token(conn)
    cookie = conn.cookies.get(COOKIE_NAME)
    if token is None and cookie:
        who = await session_principal(conn.app.state.store, cookie)
    else:
        row = await verify_token(conn, token)
        who = Principal(owner=row.name, token_id=row.id)
    limiter.check(who.token_id)  # one budget per token, whether it is used directly or through a login
    return who


async def session_principal(store: Store, secret: str) -> Principal:
    session_hash = hash_token(secret)
    row = await store.browser_session(session_hash)  # None when expired, logged out or its token revoked
    if row is None:
        raise Unauthorized("not logged in (the session ended); log in again")
    if utcnow().replace(tzinfo=None) - row.last_seen_at > _TOUCH_EVERY:  # the store reads back naive UTC
        await store.touch_browser_session(session_hash)
    return Principal(owner=row.owner, token_id=row.token_id, session_hash=session_hash)


async def start_browser_session(conn: HTTPConnection, token: TokenRow, hours: float) -> str:
    """A new session for ``token``; returns the cookie secret. Any session the browser still had is revoked,
    so a login always rotates the id (no fixation)."""
    store: Store = conn.app.state.store
    old = conn.cookies.get(COOKIE_NAME)
    if old:
        await store.revoke_browser_session(hash_token(old))
    secret = secrets.token_urlsafe(32)
    await store.create_browser_session(
        hash_token(secret), token, utcnow() + timedelta(hours=hours), ip=client_address(conn),
        user_agent=conn.headers.get("user-agent", "")[:300],
    )
    return secret


async def current_principal(request: Request) -> Principal:
    if request.method not in SAFE_METHODS and bearer_token(request) is None and request.cookies.get(COOKIE_NAME):
        require_same_origin(request)  # a cookie rides along on cross-site requests; a bearer header cannot
    return await authenticate(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def _same_origin(conn: HTTPConnection, origin: str, extra: list[str]) -> bool:
    """Same scheme-less host *and port* as the request (another port is another origin), or listed."""
    if origin in extra:
        return True
    host = conn.headers.get("host", "")
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[": no origin at all
        return False
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host


def origin_allowed(conn: HTTPConnection, extra: list[str]) -> bool:
    """Browsers always send ``Origin`` on WebSockets; it must be this service's own origin (or listed).

    Non-browser clients send none and are judged by their token alone. Starlette's CORS middleware
    does not look at WebSockets, hence this check.
    """
    origin = conn.headers.get("origin")
    return origin is None or _same_origin(conn, origin, extra)


def require_same_origin(conn: HTTPConnection) -> None:
    """Refuse a cookie-carrying state change that a page of another origin may have sent (CSRF).

    Browsers send ``Origin`` on every POST/PUT/PATCH/DELETE (``null`` from opaque contexts, which never
    matches); without it, ``Sec-Fetch-Site`` or the ``Referer`` must agree. A request with none of them
    did not come from a browser page, so a cookie in it was put there on purpose.
    """
    extra: list[str] = conn.app.state.settings.allowed_origins
    origin = conn.headers.get("origin")
    if origin is not None:
        ok = _same_origin(conn, origin, extra)
    elif (site := conn.headers.get("sec-fetch-site")) is not None:
        ok = site in ("same-origin", "none")
    elif (referer := conn.headers.get("referer")) is not None:
        try:
            parts = urlsplit(referer)
            ok = _same_origin(conn, f"{parts.scheme}://{parts.netloc}", extra)
        except ValueError:
            ok = False
    else:
        ok = True
    if not ok:
        raise Forbidden("cross-origin request refused: this origin may not act with the browser's login")
