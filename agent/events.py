"""What the loop tells the outside world, one typed event at a time — the one definition of event types,
their payloads, and a session's states.

The loop knows nothing of HTTP or terminals: it calls an async ``emit(event)`` callback; the web
layer persists and broadcasts, the CLI prints. ``data`` is always JSON-able; a screenshot travels
as bytes in ``image`` so the receiver can store it by hash instead of inlining base64.
``PAYLOADS`` maps each event type to the TypedDict of its ``data`` (the service publishes them as JSON
Schema at ``/api/schema/events.json``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NotRequired

# pydantic reads these payloads for the published schema, and needs this TypedDict before Python 3.12.
from typing_extensions import TypedDict

FinalStatus = Literal["succeeded", "failed", "cancelled"]
RunStatus = Literal["running", "awaiting_approval", "paused", FinalStatus]  # what the loop itself reports
# The service adds: waiting for a slot, starting the desktop, cut off by a restart, driven by a person.
SessionStatus = Literal[RunStatus, "queued", "starting", "interrupted", "taken_over"]
ToolOutcome = Literal["unknown", "not_run"]  # ``meta.outcome`` of a call answered without its real result


class StatusData(TypedDict):
    """``reason`` is a code: ``""`` (running), ``approval``, ``user`` (paused/cancelled/taken over by the user),
    ``model_unavailable`` (paused, resumable), a watchdog's ``stuck_repeat``/``no_progress``/``rereading``/
    ``runaway_rate`` (paused, resumable), ``end_turn``, ``max_steps``, ``max_cost``, ``auth``, ``refusal``,
    ``desktop_lost``, ``handback``, ``restart``, ``resume``, or an error class name (failed)."""

    status: SessionStatus
    reason: str
    message: NotRequired[str]


class TextData(TypedDict):
    """A finished text block of the model."""

    text: str
    step: int


class ThinkingData(TypedDict):
    """A finished thinking block (a redacted one has empty ``text``)."""

    text: str
    step: int
    redacted: NotRequired[bool]


class ToolCallData(TypedDict):
    """Sent before the approval check; ``input`` is whatever the model sent (normally an object)."""

    id: str
    tool: str
    input: Any
    step: int


class ToolResultData(TypedDict):
    """The call's outcome; its screenshot travels as the event's image. ``step`` is None when the service
    answered the call after a restart."""

    id: str
    tool: str
    output: str
    error: str
    system: str
    is_error: bool
    step: int | None
    meta: dict[str, Any]


class SafetyCheckData(TypedDict):
    """A vendor's safety signal (OpenAI ``pending_safety_checks``, Gemini ``require_confirmation``)."""

    id: str
    code: str
    message: str


class ApprovalRequestedData(TypedDict):
    """``safety_checks`` only when a vendor flagged the call: a person must decide, whatever the policy says."""

    approval_id: str
    tool_use_id: str
    tool: str
    input: dict[str, Any]
    reason: str
    safety_checks: NotRequired[list[SafetyCheckData]]


class ApprovalDecidedData(TypedDict):
    """Every decision, the policy's own included (those have no ``approval_id``)."""

    tool_use_id: str
    decision: Literal["allow", "deny", "approve", "reject", "edit"]
    by: Literal["policy", "user"]
    reason: str
    rule: dict[str, Any] | None
    approval_id: NotRequired[str]
    note: NotRequired[str]
    input: NotRequired[dict[str, Any] | None]


class UsageTotalData(TypedDict):
    steps: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class RequestImage(TypedDict):
    slot: int
    sha256: str
    media_type: str


class RequestManifest(TypedDict):
    """What the call sent, against the saved history (``agent.history.request_manifest``): the history up to
    ``last_message``, with ``images`` in their screenshot slots (pruning later turns them into placeholders).
    ``params``: the Messages API request's other parameters (model, system, tools, …; Anthropic only), present
    on a run's first call and whenever they change."""

    last_message: int
    images: list[RequestImage]
    params: NotRequired[dict[str, Any]]


class UsageData(TypedDict):
    """One model call. ``request`` is absent in events written before it was recorded."""

    step: int
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    total: UsageTotalData
    request: NotRequired[RequestManifest]


class RetryingData(TypedDict):
    """``retry_at`` is unix time."""

    attempt: int
    max_attempts: int
    delay_s: float
    retry_at: float
    reason: str
    status_code: int | None


class ErrorData(TypedDict):
    """Something went wrong that the user should read."""

    message: str
    kind: str


class UserMessageData(TypedDict):
    """A message from the user as it entered the history (``handback``: the service's note on a handback)."""

    text: str
    handback: NotRequired[bool]


class WatchdogData(TypedDict):
    """The run paused itself (``agent.watchdog``): ``reason`` is ``stuck_repeat``, ``no_progress``, ``rereading``
    or ``runaway_rate``; ``count`` crossed ``limit``. Resume, send a hint (a message) or cancel."""

    reason: str
    message: str
    count: float
    limit: float
    step: int


class AuditData(TypedDict):
    """A person acted on the session (a decision, a takeover, …): who (their token's name), from which address,
    when (ISO 8601, UTC) and what exactly. The same entry is listed at ``GET /api/audit``."""

    audit_id: int
    actor: str
    address: str
    action: str
    detail: dict[str, Any]
    at: str


class EgressBlockedData(TypedDict):
    """The desktop's egress proxy refused a connection (at most one event per host per interval). ``url`` is
    known for plain HTTP only (HTTPS and WebSockets go as CONNECT ``host:port``); ``reason`` is ``deny`` (a deny
    entry matched: allowing the host will not help) or ``not_allowed`` (not on the allow list)."""

    host: str
    port: int
    method: str
    url: str | None
    reason: Literal["deny", "not_allowed"]


class EgressAllowedData(TypedDict):
    """A person allowed ``host`` for the rest of this session (``by``: the token name)."""

    host: str
    by: str


PAYLOADS: dict[str, type] = {
    "status": StatusData,
    "assistant_text": TextData,
    "thinking": ThinkingData,
    "tool_call": ToolCallData,
    "tool_result": ToolResultData,
    "approval_requested": ApprovalRequestedData,
    "approval_decided": ApprovalDecidedData,
    "usage": UsageData,
    "retrying": RetryingData,
    "error": ErrorData,
    "user_message": UserMessageData,
    "watchdog": WatchdogData,
    "audit": AuditData,
    "egress_blocked": EgressBlockedData,
    "egress_allowed": EgressAllowedData,
}
EventType = Literal[
    "status", "assistant_text", "thinking", "tool_call", "tool_result", "approval_requested",
    "approval_decided", "usage", "retrying", "error", "user_message", "watchdog", "audit", "egress_blocked",
    "egress_allowed",
]


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    data: Mapping[str, Any]
    image: bytes | None = None
    image_media_type: str = "image/png"
    ts: float = field(default_factory=time.time)


def tool_result(use_id: str, tool: str, *, output: str = "", error: str = "", system: str = "",
                step: int | None, meta: dict[str, Any] | None = None, image: bytes | None = None,
                image_media_type: str = "image/png") -> Event:
    """The ``tool_result`` event of one call: ``is_error`` follows ``error``."""
    data: ToolResultData = {"id": use_id, "tool": tool, "output": output, "error": error, "system": system,
                            "is_error": bool(error), "step": step, "meta": meta or {}}
    return Event("tool_result", data, image=image, image_media_type=image_media_type)


def unanswered_result(use_id: str, tool: str, why: str, outcome: ToolOutcome, step: int | None) -> Event:
    """A call answered with an error instead of its real result (interrupted, or cut off by a restart)."""
    return tool_result(use_id, tool, error=why, step=step, meta={"outcome": outcome})


def status(state: SessionStatus, reason: str = "", message: str | None = None) -> Event:
    data: StatusData = {"status": state, "reason": reason}
    if message is not None:
        data["message"] = message
    return Event("status", data)


Emit = Callable[[Event], Awaitable[None]]


async def discard(event: Event) -> None:
    """An ``emit`` that drops everything (for callers that only want the outcome)."""
    del event
