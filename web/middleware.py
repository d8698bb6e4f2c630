"""ASGI middleware: the request-body limit and the security headers every response gets.

Headers (a route's own value wins, e.g. the UI page's CSP):

- everywhere: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: same-origin``;
- ``/api/*`` and ``/metrics``: ``Cache-Control: no-store`` (per-user data must not land in shared or disk
  caches) and ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` (JSON is never a page).
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALWAYS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}
API = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
}


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path == "/metrics"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = {**ALWAYS, **(API if _is_api(scope["path"]) else {})}

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """The API's one error shape: ``{"ok": false, "error": "...", "status": N}``."""
    return JSONResponse({"ok": False, "error": message, "status": status, **extra}, status_code=status,
                        headers=headers)


async def _send_413(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    # "close": the client may still be sending the rest of the body, which nobody will read
    response = error_response(413, f"request body over {limit} bytes", headers={"connection": "close"})
    await response(scope, receive, send)


class BodySizeLimit:
    """Refuses request bodies over ``limit`` bytes with a 413: by Content-Length up front, else (chunked)
    by reading the body first, at most ``limit`` bytes of it, and handing it on to the app only if it fits."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_413(scope, receive, send, self.limit)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see that as it would
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _send_413(scope, receive, send, self.limit)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)


def _replay(first: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        return first.pop(0) if first else await receive()

    return replayed
