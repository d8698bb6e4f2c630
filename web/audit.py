"""The audit trail of what people do to a session: who (their token's name), when, from which address, and
what exactly. Each entry goes to the store's ``audit_log`` (listed per owner at ``GET /api/audit``) and into
the session's timeline as an ``audit`` event. Recorded only once the action took effect."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from agent.events import AuditData, Event
from web.auth import Principal
from web.runner import Runner
from web.store import AuditRow, Store


def address_of(request: Request) -> str:
    """The client's own address (not the /64 the login throttle counts by)."""
    return request.client.host if request.client else "unknown"


async def record(request: Request, who: Principal, session_id: str, action: str, detail: dict[str, Any]) -> AuditRow:
    store: Store = request.app.state.store
    runner: Runner = request.app.state.runner
    row = await store.append_audit(who.owner, who.owner, action, detail, session_id=session_id,
                                   address=address_of(request))
    data: AuditData = {"audit_id": row.id, "actor": row.actor, "address": row.address, "action": row.action,
                       "detail": row.detail, "at": row.at.isoformat()}
    await runner.recorder.record(session_id, Event("audit", data))
    return row
