"""REST: sessions, their event log and screenshots, messages, control, approvals, takeover."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse

from agent.approvals import Decision
from deskpilot.errors import BadRequest, NotFound
from web import audit
from web.auth import CurrentPrincipal, Principal, client_address
from web.models import (
    ERRORS,
    Approval,
    ApprovalDecision,
    ErrorBody,
    Event,
    EventPage,
    HandbackIn,
    MessageIn,
    NetworkAllowed,
    NetworkAllowIn,
    Session,
    SessionCreate,
    SessionPage,
)
from web.runner import Runner
from web.states import SessionStatus
from web.store import ApprovalRow, EventRow, SessionRow, Store

router = APIRouter(prefix="/api/sessions", tags=["sessions"], responses=ERRORS)


async def approval_out(store: Store, row: ApprovalRow) -> Approval:
    return Approval.model_validate({
        "id": row.id, "status": row.status, "tool": row.tool, "input": row.input, "reason": row.reason,
        "safety_checks": await store.approval_checks(row.session_id, row.id), "image": row.image_ref,
        "note": row.note, "edited_input": row.edited_input, "created_at": row.created_at,
        "decided_at": row.decided_at,
    })


def event_out(row: EventRow) -> Event:
    return Event(seq=row.seq, type=row.type, data=row.data, image=row.image_ref, ts=row.created_at)  # type: ignore[arg-type]


async def session_out(store: Store, row: SessionRow) -> Session:
    pending = await store.pending_approval(row.id)
    return Session.model_validate({
        "id": row.id, "task": row.task, "model": row.model, "base_url": await store.session_endpoint(row.id),
        "status": row.status, "control": row.control,
        "result": row.result, "error": row.error, "max_steps": row.max_steps, "max_cost_usd": row.max_cost_usd,
        "screen": {"width": row.width, "height": row.height},
        "usage": {"input_tokens": row.input_tokens, "output_tokens": row.output_tokens, "cost_usd": row.cost_usd},
        "last_seq": row.last_seq, "pending_approval": await approval_out(store, pending) if pending else None,
        "created_at": row.created_at, "updated_at": row.updated_at,
    })


def _deps(request: Request) -> tuple[Store, Runner]:
    return request.app.state.store, request.app.state.runner


async def _control(request: Request, who: Principal, session_id: str,
                   action: Callable[[Runner, SessionRow], Awaitable[None]], audited: str,
                   detail: dict[str, Any] | None = None) -> Session:
    """Apply ``action`` to the caller's session, record it in the audit trail as ``audited``; answer with the
    session as it is now."""
    store, runner = _deps(request)
    await action(runner, await store.get_session(session_id, who.owner))
    await audit.record(request, who, session_id, audited, detail or {})
    return await session_out(store, await store.get_session(session_id))


@router.post("", status_code=status.HTTP_201_CREATED, operation_id="create_session",
             responses={429: {"model": ErrorBody, "description": "the queue is full: retry after Retry-After s"}})
async def create_session(body: SessionCreate, request: Request, who: CurrentPrincipal) -> Session:
    store, runner = _deps(request)
    screen = (body.screen.width, body.screen.height) if body.screen else None
    row = await runner.create(who.owner, body.task, model=body.model, policy=body.policy, max_steps=body.max_steps,
                              max_cost_usd=body.max_cost_usd, screen=screen, base_url=body.base_url)
    return await session_out(store, row)


@router.get("", operation_id="list_sessions")
async def list_sessions(
    request: Request, who: CurrentPrincipal,
    status: Annotated[SessionStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> SessionPage:
    store, _ = _deps(request)
    rows, total = await store.list_sessions(who.owner, status, limit, offset)
    return SessionPage(items=[await session_out(store, r) for r in rows], total=total, limit=limit, offset=offset)


@router.get("/{session_id}", operation_id="get_session")
async def get_session(session_id: str, request: Request, who: CurrentPrincipal) -> Session:
    store, _ = _deps(request)
    return await session_out(store, await store.get_session(session_id, who.owner))


@router.get("/{session_id}/events", operation_id="list_events")
async def list_events(
    session_id: str, request: Request, who: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, le=2**31)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> EventPage:
    store, _ = _deps(request)
    row = await store.get_session(session_id, who.owner)
    events = await store.events_after(session_id, after, limit)
    return EventPage(items=[event_out(e) for e in events], last_seq=row.last_seq)


@router.get(
    "/{session_id}/screenshots/{ref}", operation_id="get_screenshot", response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
)
async def get_screenshot(session_id: str, ref: str, request: Request, who: CurrentPrincipal) -> FileResponse:
    store, _ = _deps(request)
    await store.get_session(session_id, who.owner)
    path = store.image_path(ref)
    # A screenshot is visible only through a session that refers to it, so refs can't be probed across owners.
    if path is None or not await store.session_has_image(session_id, ref):
        raise NotFound(f"screenshot {ref} not found")
    media = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}[path.suffix[1:]]
    # Private pixels (pages, mail, banks): no disk cache; a page reuses images from memory anyway.
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, no-store"})


@router.post("/{session_id}/messages", operation_id="send_message")
async def send_message(session_id: str, body: MessageIn, request: Request, who: CurrentPrincipal) -> Session:
    return await _control(request, who, session_id, lambda runner, row: runner.message(row, body.text),
                          "session.message", {"text": body.text})


@router.post("/{session_id}/pause", operation_id="pause_session")
async def pause_session(session_id: str, request: Request, who: CurrentPrincipal) -> Session:
    return await _control(request, who, session_id, Runner.pause, "session.pause")


@router.post("/{session_id}/resume", operation_id="resume_session")
async def resume_session(session_id: str, request: Request, who: CurrentPrincipal) -> Session:
    return await _control(request, who, session_id, Runner.resume, "session.resume")


@router.post("/{session_id}/cancel", operation_id="cancel_session")
async def cancel_session(session_id: str, request: Request, who: CurrentPrincipal) -> Session:
    return await _control(request, who, session_id, Runner.cancel, "session.cancel")


@router.post("/{session_id}/approvals/{approval_id}", operation_id="decide_approval")
async def decide_approval(
    session_id: str, approval_id: str, body: ApprovalDecision, request: Request, who: CurrentPrincipal
) -> Approval:
    store, runner = _deps(request)
    if body.decision == "edit" and body.input is None:
        raise BadRequest("decision 'edit' needs the edited 'input'")
    decision = Decision(body.decision, body.note or "", body.input if body.decision == "edit" else None,
                        always=body.always_allow and body.decision == "approve")
    row = await runner.decide(await store.get_session(session_id, who.owner), approval_id, decision)
    await audit.record(request, who, session_id, "approval.decide", {
        "approval_id": approval_id, "decision": decision.kind, "always_allow": decision.always,
        "note": decision.note, "tool": row.tool, "input": row.input, "edited_input": decision.input,
        "reason": row.reason})
    return await approval_out(store, row)


@router.post("/{session_id}/takeover", operation_id="take_over")
async def take_over(session_id: str, request: Request, who: CurrentPrincipal) -> Session:
    return await _control(request, who, session_id, Runner.takeover, "session.takeover")


@router.post("/{session_id}/handback", operation_id="hand_back")
async def hand_back(
    session_id: str, request: Request, who: CurrentPrincipal, body: HandbackIn | None = None
) -> Session:
    note = body.note if body else None
    return await _control(request, who, session_id, lambda runner, row: runner.handback(row, note),
                          "session.handback", {"note": note})


@router.post("/{session_id}/network/allow", operation_id="allow_host")
async def allow_host(session_id: str, body: NetworkAllowIn, request: Request, who: CurrentPrincipal) -> NetworkAllowed:
    """Let the running session's desktop reach ``domain`` from now on (a deny entry still wins: 409)."""
    store, runner = _deps(request)
    row = await store.get_session(session_id, who.owner)
    host = await runner.allow_host(row, body.domain, by=who.owner, address=client_address(request))
    return NetworkAllowed(host=host)
