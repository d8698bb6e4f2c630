"""Pydantic models of the REST API (requests and responses) and of the live-stream messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from agent.events import PAYLOADS, EventType
from web.states import SessionStatus

MAX_STEPS_LIMIT = 1000  # the most a request may ask for


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Screen(Strict):
    width: int = Field(ge=320, le=8192)
    height: int = Field(ge=240, le=8192)


class SessionCreate(Strict):
    task: str = Field(min_length=1, max_length=20_000, description="What the agent should do, in plain words.")
    model: str | None = Field(default=None, max_length=200, pattern=r"^[A-Za-z0-9._:@/-]+$")
    policy: dict[str, Any] | None = Field(
        default=None, description="Approval policy for this session (see the agent's policy); default: the service's."
    )
    max_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS_LIMIT)
    max_cost_usd: float | None = Field(default=None, gt=0, le=10_000)
    screen: Screen | None = None
    base_url: str | None = Field(
        default=None, max_length=2000,
        description="Endpoint of an openai-compatible model for this session (e.g. http://10.0.0.5:8000/v1): "
                    "http or https, no credentials, query or fragment. The service's compat API key is never "
                    "sent to it (only to DESKPILOT_OPENAI_COMPAT_BASE_URL).")

    @field_validator("base_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)


def check_endpoint(url: str) -> str:
    """An http(s) endpoint with a host and nothing secret in it (it is stored and shown with the session)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@); the endpoint is shown with the session")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ValueError("must not have a query, a fragment or spaces")
    del port
    return url


class SafetyCheck(BaseModel):
    id: str
    code: str = Field(description="The vendor's code, e.g. malicious_instructions, or require_confirmation")
    message: str


class Approval(BaseModel):
    id: str
    status: Literal["pending", "approve", "reject", "edit", "expired"]
    tool: str
    input: dict[str, Any]
    reason: str
    safety_checks: list[SafetyCheck] = Field(
        default_factory=list, description="A vendor's safety checks on this action: it runs only if a person "
                                          "approves, and only then are they acknowledged to the vendor")
    image: str | None = Field(description="Screenshot ref the proposed action refers to")
    note: str | None = None
    edited_input: dict[str, Any] | None = None
    created_at: datetime
    decided_at: datetime | None = None


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    cost_usd: float


class Session(BaseModel):
    id: str
    task: str
    model: str
    base_url: str | None = Field(default=None, description="The session's own model endpoint, if it has one")
    status: SessionStatus
    control: Literal["agent", "user"] = Field(description="Who drives the desktop right now")
    result: str | None
    error: str | None
    max_steps: int
    max_cost_usd: float | None
    screen: Screen
    usage: Usage
    last_seq: int
    pending_approval: Approval | None
    created_at: datetime
    updated_at: datetime


class SessionPage(BaseModel):
    items: list[Session]
    total: int
    limit: int
    offset: int


class Event(BaseModel):
    """One entry of a session's append-only event log; ``seq`` counts from 1 per session."""

    seq: int
    type: EventType
    data: dict[str, Any]
    image: str | None = Field(default=None, description="Screenshot ref, fetch from …/screenshots/{ref}")
    ts: datetime


class EventPage(BaseModel):
    items: list[Event]
    last_seq: int


class AuditEntry(BaseModel):
    """Something a person did: ``actor`` is their token's name, ``address`` where they came from."""

    id: int
    session_id: str | None
    at: datetime
    actor: str
    address: str
    action: str = Field(description="login, logout, approval.decide, session.takeover, session.handback, "
                        "session.pause, session.resume, session.cancel, session.message")
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]


class MessageIn(Strict):
    text: str = Field(min_length=1, max_length=20_000)


class ApprovalDecision(Strict):
    decision: Literal["approve", "reject", "edit"]
    note: str | None = Field(default=None, max_length=5_000)
    input: dict[str, Any] | None = Field(default=None, description="The edited tool input (decision=edit)")
    always_allow: bool = Field(default=False, description="Allow actions like this for the rest of the session")


class NetworkAllowIn(Strict):
    domain: str = Field(min_length=1, max_length=253, description="A host name as the egress_blocked event gave it")


class NetworkAllowed(BaseModel):
    host: str = Field(description="The host now allowed for the rest of this session (normalized)")


class HandbackIn(Strict):
    note: str | None = Field(default=None, max_length=5_000)


class LoginIn(Strict):
    token: str = Field(min_length=1, max_length=200)


class Ok(BaseModel):
    ok: bool = True


class Health(BaseModel):
    ok: bool
    tasks_can_run: bool
    reason: str | None


class SessionDefaults(BaseModel):
    """What a new session gets for every field a request leaves out."""

    model: str
    preset: str
    max_steps: int
    max_cost_usd: float | None
    screen: Screen


class ServiceConfig(BaseModel):
    """What the browser UI needs to know instead of hard-coding it."""

    states: list[SessionStatus] = Field(description="Every session state")
    final_states: list[SessionStatus] = Field(description="States a session never leaves")
    active_states: list[SessionStatus] = Field(description="States of a session holding a desktop")
    presets: list[str] = Field(description="Approval policy presets")
    defaults: SessionDefaults
    max_steps_limit: int


class ErrorBody(BaseModel):
    ok: Literal[False] = False
    error: str
    status: int


class StreamHello(BaseModel):
    """First message on the stream socket, before the replay."""

    kind: Literal["hello"] = "hello"
    session: Session


class StreamEvent(Event):
    """Every event on the stream socket, replayed then live, in ``seq`` order without gaps."""

    kind: Literal["event"] = "event"


def _typed(kind: str, payload: type) -> type[StreamEvent]:
    name = "".join(part.title() for part in kind.split("_")) + "Event"
    literal: Any = Literal[kind]
    model: type[StreamEvent] = create_model(name, __base__=StreamEvent, type=(literal, ...), data=(payload, ...))
    return model


# The stream's events, one model per type with its typed ``data``: what /api/schema/events.json publishes.
TYPED_STREAM_EVENTS: tuple[type[StreamEvent], ...] = tuple(_typed(k, p) for k, p in PAYLOADS.items())


class StreamDropped(BaseModel):
    kind: Literal["dropped"] = "dropped"
    reason: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or bad token"},
    404: {"model": ErrorBody, "description": "no such session (or not yours)"},
    409: {"model": ErrorBody, "description": "not possible in the session's current state"},
}
