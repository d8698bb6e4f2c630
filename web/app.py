"""The FastAPI application: ``create_app(settings)`` wires store, auth, bus, runner and routes.

One JSON error shape everywhere under ``/api``: ``{"ok": false, "error": "...", "status": N}``;
every ``ServiceError`` maps to its ``status``; anything unexpected is logged and answered with a bare 500
that says nothing about the internals.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deskpilot.errors import ConfigError, DeskpilotError, PolicyError, ServiceError, TooManyRequests
from deskpilot.settings import Settings
from web.auth import create_token
from web.bus import Bus
from web.cluster import Cluster
from web.limits import LoginThrottle, RateLimiter
from web.middleware import BodySizeLimit, SecurityHeaders, error_response
from web.runner import Runner
from web.store import Store

if TYPE_CHECKING:  # the backend's module pulls in the desktop client (httpx): not needed to serve
    from desktop.backends.base import DesktopBackend

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).parent / "static"


async def ensure_first_token(store: Store) -> str | None:
    """On the very first start, create one token and print it once (it is never shown again)."""
    if await store.count_tokens() > 0:
        return None
    token = await create_token(store, "admin")
    print(
        f"deskpilot: created the first API token (owner 'admin'); it is shown only once:\n  {token}\n"
        "Use it as 'Authorization: Bearer <token>' or log in with it in the browser.",
        file=sys.stderr,
        flush=True,
    )
    return token


def create_app(settings: Settings, *, first_token: bool = True, backend: DesktopBackend | None = None) -> FastAPI:
    """``backend`` supplies the desktops (default: the one the settings name); the app closes it on shutdown."""
    store = Store(settings.data_dir, settings.database_url)
    bus = Bus(settings.viewer_queue_size)
    runner = Runner(settings, store, bus, backend)
    cluster: Cluster | None = None
    if settings.cluster:
        if not store.url.startswith("postgresql"):
            raise ConfigError("DESKPILOT_CLUSTER needs a PostgreSQL DESKPILOT_DATABASE_URL shared by every replica")
        cluster = runner.cluster = Cluster(settings, store, bus, runner)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.loop = asyncio.get_running_loop()
        await store.init()
        if first_token:
            await ensure_first_token(store)
        await runner.start()
        reason = runner.unavailable()
        if reason:
            log.warning("the service runs, but %s", reason)
        if cluster is not None:
            await cluster.start()
        try:
            yield
        finally:
            if cluster is not None:
                await cluster.stop()
            await runner.stop()  # releases its leases: other replicas adopt its sessions at their next tick
            await store.close()

    app = FastAPI(
        title="deskpilot",
        version="0.1.0",
        summary="A computer-use agent service: tasks over REST, live viewing, approvals and takeover.",
        lifespan=lifespan,
        docs_url=None,  # web/routes/docs.py serves /docs and /redoc with a CSP
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.bus = bus
    app.state.runner = runner
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.login_throttle = LoginThrottle(settings.login_failures_per_minute, settings.login_failures_burst)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        response = error_response(exc.status, exc.message)
        if isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(PolicyError)
    async def policy_error(request: Request, exc: PolicyError) -> JSONResponse:
        return error_response(422, f"invalid policy: {exc.message}")

    @app.exception_handler(DeskpilotError)
    async def deskpilot_error(request: Request, exc: DeskpilotError) -> JSONResponse:
        # A lower layer's error that reached a route (e.g. the desktop went away): a clear 503, not a 500.
        return error_response(503, f"{type(exc).__name__}: {exc.message}")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()
        ]
        return error_response(422, "invalid request", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error")

    from web.routes import audit, docs, meta, sessions, stream, trajectory, ui, vnc

    app.include_router(meta.router)
    app.include_router(docs.router)
    app.include_router(ui.router)
    app.include_router(sessions.router)
    app.include_router(trajectory.router)
    app.include_router(audit.router)
    app.include_router(stream.router)
    app.include_router(vnc.router)
    ui.mount_static(app, STATIC_DIR)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)  # added last = outer: also on the 413s
    return app
