"""What the loop tells the outside world, one typed event at a time.

The loop knows nothing of HTTP or terminals: it calls an async ``emit(event)`` callback; the web
layer persists and broadcasts, the CLI prints. ``data`` is always JSON-able; a screenshot travels
as bytes in ``image`` so the receiver can store it by hash instead of inlining base64.

Event types and their ``data``:

- ``status``: ``{"status": running|awaiting_approval|paused|succeeded|failed|cancelled, "reason": code,
  "message": plain words}``; codes: ``""`` (running), ``approval``, ``user`` (paused/cancelled by the user),
  ``model_unavailable`` (paused, resumable), ``end_turn``, ``max_steps``, ``max_cost``, ``auth``, ``refusal``,
  ``desktop_lost``.
- ``assistant_text``: ``{"text", "step"}`` — a finished text block of the model.
- ``thinking``: ``{"text", "step"}`` — a finished thinking block (redacted ones carry ``"redacted": true``).
- ``tool_call``: ``{"id", "tool", "input", "step"}`` — before the approval check.
- ``tool_result``: ``{"id", "tool", "output", "error", "system", "is_error", "step", "meta"}`` + ``image``.
- ``approval_requested``: ``{"approval_id", "tool_use_id", "tool", "input", "reason"}``.
- ``approval_decided``: ``{"approval_id", "tool_use_id", "decision": allow|deny|approve|reject|edit,
  "by": policy|user, "note", "input", "rule"}`` — every decision, the policy's own included.
- ``usage``: ``{"step", "model", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
  "cost_usd", "total": {...same keys..., "steps"}}``.
- ``retrying``: ``{"attempt", "max_attempts", "delay_s", "retry_at" (unix time), "reason", "status_code"}``.
- ``error``: ``{"message", "kind"}`` — something went wrong that the user should read.
- ``user_message``: ``{"text"}`` — a message from the user, as it entered the history.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

EventType = Literal[
    "status",
    "assistant_text",
    "thinking",
    "tool_call",
    "tool_result",
    "approval_requested",
    "approval_decided",
    "usage",
    "retrying",
    "error",
    "user_message",
]

FinalStatus = Literal["succeeded", "failed", "cancelled"]
RunStatus = Literal["running", "awaiting_approval", "paused", FinalStatus]
TERMINAL: frozenset[str] = frozenset(get_args(FinalStatus))


@dataclass(frozen=True, slots=True)
class Event:
    type: EventType
    data: dict[str, Any]
    image: bytes | None = None
    image_media_type: str = "image/png"
    ts: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """The JSON form without the image bytes (receivers store those by hash)."""
        return {"type": self.type, "data": self.data, "ts": self.ts, "has_image": self.image is not None}


Emit = Callable[[Event], Awaitable[None]]


async def discard(event: Event) -> None:
    """An ``emit`` that drops everything (for callers that only want the outcome)."""
    del event
