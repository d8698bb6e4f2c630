"""REST: the owner's audit trail (web/audit.py records it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from web.auth import CurrentPrincipal
from web.models import ERRORS, AuditEntry, AuditPage
from web.store import Store

router = APIRouter(prefix="/api/audit", tags=["audit"], responses=ERRORS)


@router.get("", operation_id="list_audit")
async def list_audit(
    request: Request, who: CurrentPrincipal,
    session_id: Annotated[str | None, Query(max_length=36)] = None,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="Entries after this id, oldest first")] = None,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Entries before this id, newest first")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """The caller's entries (newest first unless ``after`` is given); ``session_id`` narrows to one session."""
    store: Store = request.app.state.store
    if session_id is not None:
        await store.get_session(session_id, who.owner)  # someone else's or unknown: 404
    rows = await store.list_audit(who.owner, session_id=session_id, before_id=before, after_id=after, limit=limit)
    return AuditPage(items=[AuditEntry(id=r.id, session_id=r.session_id, at=r.at, actor=r.actor, address=r.address,
                                       action=r.action, detail=r.detail) for r in rows])
