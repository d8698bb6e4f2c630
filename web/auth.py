"""API tokens, the request/WebSocket identity, the Origin check and the per-token rate limit.

A token is ``dp_`` + 32 random bytes (url-safe); only its SHA-256 is stored. The API takes it as
``Authorization: Bearer``; the browser UI trades it once for an HttpOnly, SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from deskpilot.errors import TooManyRequests, Unauthorized
from web.store import Store

COOKIE_NAME = "deskpilot_token"
TOKEN_PREFIX = "dp_"  # noqa: S105 - a prefix, not a secret


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
    token_hash: str


class RateLimiter:
    """A token bucket per API token: ``per_minute`` requests, with that many as the burst."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> None:
        now = time.monotonic()
        level, last = self._buckets.get(key, (self.capacity, now))
        level = min(self.capacity, level + (now - last) * self.rate)
        if level < 1.0:
            self._buckets[key] = (level, now)
            raise TooManyRequests("rate limit exceeded; slow down")
        self._buckets[key] = (level - 1.0, now)


def presented_token(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return conn.cookies.get(COOKIE_NAME) or None


async def authenticate(conn: HTTPConnection) -> Principal:
    """Who is calling, from the bearer header or the UI cookie; Unauthorized otherwise."""
    return await principal_for_token(conn.app.state.store, conn.app.state.rate_limiter, presented_token(conn))


async def principal_for_token(store: Store, limiter: RateLimiter, token: str | None) -> Principal:
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        raise Unauthorized("a valid API token is required (Authorization: Bearer dp_…)")
    token_hash = hash_token(token)
    row = await store.token_by_hash(token_hash)
    if row is None:
        raise Unauthorized("unknown or revoked API token")
    limiter.check(token_hash)
    return Principal(owner=row.name, token_hash=token_hash)


async def current_principal(request: Request) -> Principal:
    return await authenticate(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def origin_allowed(conn: HTTPConnection, extra: list[str]) -> bool:
    """Browsers always send ``Origin`` on WebSockets; it must be this service's own origin (or listed).

    Non-browser clients send none and are judged by their token alone. Starlette's CORS middleware
    does not look at WebSockets, hence this check.
    """
    origin = conn.headers.get("origin")
    if origin is None:
        return True
    if origin in extra:
        return True
    host = conn.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc == host
