"""Every event of a session is stored (with its screenshot, by hash) before it is broadcast to viewers.

The side tables follow the log: an ``approval_requested`` opens an approval row, a ``usage`` adds to the
session's totals, a ``status`` moves the session's status (unless the caller says the status is held).
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import Counter

from agent.events import Event
from web.bus import Bus
from web.store import ApprovalRow, EventRow, Store

EVENTS = Counter("deskpilot_events_total", "Session events stored and broadcast", ["type"])


class Recorder:
    def __init__(self, store: Store, bus: Bus) -> None:
        self.store = store
        self.bus = bus

    async def record(self, session_id: str, event: Event, *, hold_status: bool = False,
                     **session_fields: Any) -> EventRow:
        """Store ``event`` then broadcast it. A ``status`` event updates the session with ``session_fields``,
        unless ``hold_status`` (the user holds control: the agent's own status is not the session's)."""
        image_ref = None
        if event.image is not None:
            image_ref = await asyncio.to_thread(self.store.save_image, event.image, event.image_media_type)
        data = dict(event.data)
        if event.type == "approval_requested":  # the loop's approval ids are unique across restarts
            shot = await self.store.last_image(session_id)
            await self.store.add_approval(ApprovalRow(
                id=str(data.get("approval_id")), session_id=session_id, tool_use_id=str(data.get("tool_use_id", "")),
                tool=str(data.get("tool", "")), input=dict(data.get("input") or {}),
                reason=str(data.get("reason", "")), image_ref=image_ref or shot,
            ))
        elif event.type == "usage":
            await self.store.add_usage(
                session_id, input_tokens=int(data.get("input_tokens", 0)),
                output_tokens=int(data.get("output_tokens", 0)),
                cache_read_tokens=int(data.get("cache_read_tokens", 0)),
                cache_creation_tokens=int(data.get("cache_write_tokens", 0)),
                cost_usd=float(data.get("cost_usd", 0.0)),
            )
        elif event.type == "status" and not hold_status:
            await self.store.update_session(session_id, status=str(data.get("status")), **session_fields)
        row = await self.store.append_event(session_id, event.type, data, image_ref)
        EVENTS.labels(event.type).inc()
        self.bus.publish(session_id, stream_message(row))
        return row


def stream_message(row: EventRow) -> dict[str, Any]:
    return {"kind": "event", "seq": row.seq, "type": row.type, "data": row.data, "image": row.image_ref,
            "ts": row.created_at.isoformat()}
