"""Health, Prometheus metrics, the browser login, the service's configuration for the UI, and the JSON Schema
of stream messages."""

from __future__ import annotations

from typing import Any, Union

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from agent.policy import PRESETS
from deskpilot.settings import Settings
from web.auth import (
    COOKIE_NAME,
    CurrentPrincipal,
    client_address,
    hash_token,
    require_same_origin,
    start_browser_session,
    verify_token,
)
from web.models import (
    ERRORS,
    MAX_STEPS_LIMIT,
    TYPED_STREAM_EVENTS,
    Health,
    LoginIn,
    Ok,
    Screen,
    ServiceConfig,
    SessionDefaults,
    StreamDropped,
    StreamHello,
)
from web.runner import Runner
from web.states import ACTIVE_STATES, FINAL_STATES, SESSION_STATES

router = APIRouter(tags=["service"])


@router.get("/healthz", operation_id="healthz")
async def healthz(request: Request) -> Health:
    runner: Runner = request.app.state.runner
    reason = runner.unavailable()  # the default model; another provider's sessions may still run
    return Health(ok=True, tasks_can_run=reason is None, reason=reason)


@router.get("/metrics", operation_id="metrics", response_class=Response, responses=ERRORS)
async def metrics(who: CurrentPrincipal) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/login", operation_id="login", responses=ERRORS)
async def login(body: LoginIn, request: Request, response: Response) -> Ok:
    """Trade a token for a browser session: an HttpOnly cookie with a fresh random secret (never the token)."""
    require_same_origin(request)  # no logging a victim's browser in to the attacker's account
    settings = request.app.state.settings
    token = await verify_token(request, body.token)
    secret = await start_browser_session(request, token, settings.login_session_hours)
    response.set_cookie(
        COOKIE_NAME, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https",
        max_age=int(settings.login_session_hours * 3600), path="/",
    )
    await request.app.state.store.append_audit(token.name, token.name, "login", address=client_address(request))
    return Ok()


@router.post("/api/logout", operation_id="logout")
async def logout(request: Request, response: Response) -> Ok:
    """End this browser's session on the server (the cookie is useless afterwards, even if kept) and drop it."""
    secret = request.cookies.get(COOKIE_NAME)
    if secret:
        require_same_origin(request)
        store = request.app.state.store
        row = await store.browser_session(hash_token(secret))
        if await store.revoke_browser_session(hash_token(secret)) and row is not None:
            await store.append_audit(row.owner, row.owner, "logout", address=client_address(request))
    response.delete_cookie(COOKIE_NAME, path="/")
    return Ok()


@router.get("/api/me", operation_id="whoami", responses=ERRORS)
async def whoami(who: CurrentPrincipal) -> dict[str, str]:
    return {"owner": who.owner}


@router.get("/api/config", operation_id="service_config", responses=ERRORS)
async def service_config(request: Request, who: CurrentPrincipal) -> ServiceConfig:
    settings: Settings = request.app.state.settings
    return ServiceConfig(
        states=list(SESSION_STATES), final_states=list(FINAL_STATES), active_states=list(ACTIVE_STATES),
        presets=list(PRESETS),
        defaults=SessionDefaults(
            model=settings.model, preset=settings.approval_policy, max_steps=settings.max_steps,
            max_cost_usd=settings.max_cost_usd or None,
            screen=Screen(width=settings.screen_width, height=settings.screen_height)),
        max_steps_limit=MAX_STEPS_LIMIT,
    )


def stream_schema() -> dict[str, Any]:
    message: Any = Union[(StreamHello, *TYPED_STREAM_EVENTS, StreamDropped)]
    adapter: TypeAdapter[Any] = TypeAdapter(message)
    schema = adapter.json_schema()
    schema["$id"] = "/api/schema/events.json"
    schema["title"] = "deskpilot stream message"
    schema["description"] = (
        "Text messages on WS /api/sessions/{id}/stream. Binary messages are JPEG screen frames."
    )
    return schema


@router.get("/api/schema/events.json", operation_id="stream_schema")
async def events_schema() -> dict[str, Any]:
    return stream_schema()
