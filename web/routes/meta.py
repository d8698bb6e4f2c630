"""Health, Prometheus metrics, the browser login and the JSON Schema of stream messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import TypeAdapter

from web.auth import COOKIE_NAME, CurrentPrincipal, principal_for_token
from web.models import ERRORS, Health, LoginIn, Ok, StreamDropped, StreamEvent, StreamHello
from web.runner import Runner

router = APIRouter(tags=["service"])


@router.get("/healthz", operation_id="healthz")
async def healthz(request: Request) -> Health:
    runner: Runner = request.app.state.runner
    reason = runner.unavailable_reason
    return Health(ok=True, tasks_can_run=reason is None, reason=reason)


@router.get("/metrics", operation_id="metrics", response_class=Response, responses=ERRORS)
async def metrics(who: CurrentPrincipal) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.post("/api/login", operation_id="login", responses=ERRORS)
async def login(body: LoginIn, request: Request, response: Response) -> Ok:
    """Trade a token for an HttpOnly cookie (the browser UI never keeps the token in script-readable storage)."""
    await principal_for_token(request.app.state.store, request.app.state.rate_limiter, body.token)
    response.set_cookie(
        COOKIE_NAME, body.token, httponly=True, samesite="strict", secure=request.url.scheme == "https",
        max_age=30 * 24 * 3600, path="/",
    )
    return Ok()


@router.post("/api/logout", operation_id="logout")
async def logout(response: Response) -> Ok:
    response.delete_cookie(COOKIE_NAME, path="/")
    return Ok()


@router.get("/api/me", operation_id="whoami", responses=ERRORS)
async def whoami(who: CurrentPrincipal) -> dict[str, str]:
    return {"owner": who.owner}


def stream_schema() -> dict[str, Any]:
    adapter: TypeAdapter[Any] = TypeAdapter(StreamHello | StreamEvent | StreamDropped)
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
