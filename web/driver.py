"""Glue between a session and ``agent.loop.AgentLoop``: build it, restore it after a restart, talk to it.

The loop's history is checkpointed to ``data_dir/sessions/<id>/history.json`` with every image replaced
by its screenshot ref, so a restarted service continues the same conversation.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import history as hist
from agent.approvals import Decision
from agent.config import LoopConfig
from agent.events import Event
from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from agent.prompts import DesktopFacts
from agent.providers.base import ModelClient
from agent.providers.registry import ModelClients
from agent.usage import UsageTotals
from deskpilot.errors import Conflict

if TYPE_CHECKING:
    from web.live import GatedDesktop, Live
    from web.runner import Runner
    from web.store import ApprovalRow, SessionRow, Store

@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    reason: str = ""
    result: str | None = None
    error: str | None = None


def model_client(runner: Runner, model: str) -> ModelClient:
    """The service's client for this model's provider (one per provider: connection pool, base URL, timeouts)."""
    if runner.model_client is None:
        runner.model_client = ModelClients(runner.settings)
    clients: ModelClients = runner.model_client
    return clients.for_model(model)


def make_policy(settings_preset: str, spec: dict[str, Any]) -> ApprovalPolicy:
    return ApprovalPolicy.from_spec(spec, settings_preset)  # PolicyError → 422 (web/app.py)


# --- history checkpoints ---
def history_path(store: Store, session_id: str) -> Path:
    return store.data_dir / "sessions" / session_id / "history.json"


def _pack(store: Store, node: Any) -> Any:
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "base64":
            ref = store.save_image(base64.b64decode(src["data"]), str(src.get("media_type", "image/png")))
            return {**node, "source": {"type": "ref", "ref": ref, "media_type": src.get("media_type")}}
        return {k: _pack(store, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_pack(store, v) for v in node]
    return node


def _unpack(store: Store, node: Any) -> Any:
    if isinstance(node, dict):
        src = node.get("source")
        if node.get("type") == "image" and isinstance(src, dict) and src.get("type") == "ref":
            path = store.image_path(str(src["ref"]))
            if path is None:
                return {"type": "text", "text": hist.PLACEHOLDER}
            data = base64.b64encode(path.read_bytes()).decode()
            return {**node, "source": {"type": "base64", "media_type": src.get("media_type"), "data": data}}
        return {k: _unpack(store, v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unpack(store, v) for v in node]
    return node


def save_history(store: Store, session_id: str, history: list[dict[str, Any]]) -> None:
    path = history_path(store, session_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(_pack(store, history)))
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def load_history(store: Store, session_id: str) -> list[dict[str, Any]] | None:
    path = history_path(store, session_id)
    if not path.is_file():
        return None
    data: list[dict[str, Any]] = _unpack(store, json.loads(path.read_text()))
    return data


# --- running ---
async def run_agent(runner: Runner, live: Live, desktop: GatedDesktop, row: SessionRow, *, resume: bool) -> Outcome:
    store, settings, sid = runner.store, runner.settings, row.id
    info = await live.client.info()
    default = DesktopFacts()
    facts = DesktopFacts(os=info.os or default.os, browser=info.browser or default.browser,
                         width=info.model_width, height=info.model_height)
    config = LoopConfig.from_settings(settings, facts, model=row.model, max_steps=row.max_steps,
                                      max_cost_usd=row.max_cost_usd or 0.0)
    history = await asyncio.to_thread(load_history, store, sid) if resume else None
    usage = UsageTotals.from_dict(row.usage_totals or {}) if resume else None

    async def checkpoint(h: list[dict[str, Any]]) -> None:
        await asyncio.to_thread(save_history, store, sid, h)

    async def emit(event: Event) -> None:
        await runner.emit(sid, event)
        if event.type == "usage":
            await store.update_session(sid, usage_totals=dict(event.data.get("total") or {}))

    policy = make_policy(settings.approval_policy, row.policy)
    loop = AgentLoop(client=model_client(runner, config.model), desktop=desktop, policy=policy, emit=emit,
                     config=config, history=history, usage=usage, on_history=checkpoint)
    live.loop = loop
    if history is not None:
        await restore_approvals(runner, sid, loop)
    if history is None:
        loop.add_user_message(row.task)  # first, so follow-ups sent while queued come after it
    for text in await store.take_inbox(sid):
        loop.add_user_message(text)
    result = await loop.run(None)
    if result.status == "paused":  # retries ran out: resumable, not failed
        return Outcome("paused", result.reason, None, result.message)
    ok = result.status == "succeeded"
    return Outcome(result.status, result.reason, result.text or None, None if ok else result.message)


async def restore_approvals(runner: Runner, session_id: str, loop: AgentLoop) -> None:
    """Tool calls cut off by a restart while awaiting approval: the loop waits again under the same id (a
    decision stored meanwhile is applied at once). Everything else left unanswered is answered "outcome
    unknown" by the loop itself — never re-run."""
    for use in hist.pending_tool_uses(loop.history):
        approval = await runner.store.approval_for_tool_use(session_id, str(use["id"]))
        if approval is None:
            continue
        loop.restore_approval(str(use["id"]), approval.id, reason=approval.reason)
        # Read again now that the loop listens: a decision stored in between would otherwise be missed.
        approval = await runner.store.get_approval(session_id, approval.id)
        if approval.status != "pending" and approval.id in loop.approvals.pending:
            loop.decide(approval.id, decision_for(approval))


async def deliver_message(runner: Runner, row: SessionRow, live: Live | None, text: str) -> None:
    """Into the running loop's next turn; otherwise kept and the session (re)queued to continue."""
    loop: AgentLoop | None = live.loop if live is not None else None
    if loop is not None and loop.running:
        loop.add_user_message(text)
        return
    if row.status in ("starting",) or (live is not None and live.task is not None):
        await runner.store.add_inbox(row.id, text)
        return
    if row.status == "cancelled":
        raise Conflict("the session was cancelled; start a new one")
    await runner.store.add_inbox(row.id, text)
    if row.status != "queued":
        await runner.requeue(row.id)


def decision_for(approval: ApprovalRow) -> Decision:
    return Decision(approval.status, approval.note or "", approval.edited_input)  # type: ignore[arg-type]
