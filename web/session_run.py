"""One running session, from its desktop coming up to its release: the desktop handle, the agent loop, its
events, approvals, takeover and history checkpoints. The ``Runner`` owns one per running session.

Nothing here knows HTTP: the web routes, ``deskpilot run`` or an evaluation harness drive it through the
runner. What it needs from its owner is the ``Host`` protocol.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from agent import events
from agent import history as hist
from agent.approvals import Decision
from agent.config import LoopConfig
from agent.events import Event, SessionStatus, UserMessageData
from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from agent.prompts import DesktopFacts
from agent.providers.client import ModelClient
from agent.usage import UsageTotals
from deskpilot.errors import Conflict, DeskpilotError
from deskpilot.logs import bind_log_context
from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend, DesktopHandle
from desktop.client import DesktopClient
from web.checkpoints import history_path, load_history, save_history
from web.egress import EgressWatch, approval_spec, network_policy
from web.live import Gate, GatedDesktop, Handover, Hold
from web.recorder import Recorder
from web.states import FINAL_STATES
from web.store import ApprovalRow, SessionRow, Store, utcnow

log = logging.getLogger(__name__)


class Host(Protocol):
    """What a session run needs from whoever runs it (the ``Runner``)."""

    settings: Settings
    store: Store
    recorder: Recorder

    def backend(self) -> DesktopBackend: ...

    def model(self, name: str, base_url: str | None = None) -> ModelClient: ...

    async def desktop_ready(self, session_id: str, handle: DesktopHandle) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str | None = None
    error: str | None = None


def make_policy(settings_preset: str, spec: dict[str, Any]) -> ApprovalPolicy:
    return ApprovalPolicy.from_spec(approval_spec(spec), settings_preset)  # PolicyError → 422 (web/app.py)


def decision_for(approval: ApprovalRow) -> Decision:
    return Decision(approval.status, approval.note or "", approval.edited_input)  # type: ignore[arg-type]


class SessionRun:
    def __init__(self, host: Host, session_id: str) -> None:
        self.host = host
        self.session_id = session_id
        self.gate = Gate()
        self.task: asyncio.Task[None] | None = None
        self.handle: DesktopHandle | None = None
        self.egress = EgressWatch(None, self.emit)
        self.loop: AgentLoop | None = None
        self.cancelled = False
        self.vnc_kicks: set[asyncio.Event] = set()  # input-capable VNC connections, closed on handback
        # One event recorded at a time, in the order emitted: a handback's "running" is taken before the run it
        # lets go can record its end, so it never lands after (and overwrites) the final status.
        self._recording = asyncio.Lock()
        # Set once a final status is recorded. The loop can end while the user holds control (its last answer
        # needs no action); a takeover or handback that comes after must not turn the session back to running.
        self.ended = False

    # --- what others read ---
    @property
    def client(self) -> DesktopClient | None:
        return self.handle.client if self.handle is not None else None

    @property
    def hold(self) -> Hold | None:
        return self.gate.hold

    @property
    def acting(self) -> bool:
        return self.gate.acting

    @property
    def actions_started(self) -> int:
        return self.gate.actions_started

    # --- events ---
    async def emit(self, event: Event) -> None:
        status = str(event.data.get("status")) if event.type == "status" else ""
        fields: dict[str, Any] = {}
        if status in FINAL_STATES and self.loop is not None:
            # Result and error land with the final status, so whoever sees it can read them.
            fields = {"result": last_words(self.loop.history) or None,
                      "error": None if status == "succeeded" else str(event.data.get("message") or status)}
        held = self.gate.hold == "takeover" and status in ("running", "awaiting_approval")
        async with self._recording:  # taken at once when free: no await before it, so emit order is kept
            if event.type == "status" and self.ended:
                log.info("status %r after the run ended is not recorded", status)
                return
            self.ended = self.ended or status in FINAL_STATES
            await self.host.recorder.record(self.session_id, event, hold_status=held, **fields)
            if event.type == "usage":
                await self.host.store.update_session(self.session_id,
                                                     usage_totals=dict(event.data.get("total") or {}))

    async def set_status(self, status: SessionStatus, reason: str = "", **fields: Any) -> None:
        if fields:
            await self.host.store.update_session(self.session_id, **fields)
        await self.emit(events.status(status, reason))

    # --- the run ---
    async def run(self) -> None:
        """Start the desktop, run the loop to its end, record the outcome. The owner releases the desktop."""
        store, sid = self.host.store, self.session_id
        bind_log_context(session_id=sid)
        try:
            await self.set_status("starting")
            row = await store.get_session(sid)
            self.handle = await self.host.backend().acquire(sid, row.width, row.height)
            self.egress = EgressWatch(self.handle.egress, self.emit)
            self.egress.attach(network_policy(self.host.settings, row.policy))
            await self.host.desktop_ready(sid, self.handle)
            outcome = await self._drive(row, self.handle.client, resume=history_path(store, sid).is_file())
            await store.update_session(sid, result=outcome.result, error=outcome.error)
        except asyncio.CancelledError:
            if self.cancelled:  # cancelled before the loop existed (e.g. while the desktop started)
                await asyncio.shield(self.set_status("cancelled", "user"))
            raise
        except DeskpilotError as exc:
            log.warning("session failed: %r", exc)
            await self.set_status("failed", type(exc).__name__, error=exc.message)
        except Exception as exc:
            log.exception("session crashed")
            await self.set_status("failed", "internal", error=f"internal error: {type(exc).__name__}")

    async def _drive(self, row: SessionRow, client: DesktopClient, *, resume: bool) -> Outcome:
        store, settings, sid = self.host.store, self.host.settings, row.id
        info = await client.info()
        default = DesktopFacts()
        facts = DesktopFacts(os=info.os or default.os, browser=info.browser or default.browser,
                             width=info.model_width, height=info.model_height)
        config = LoopConfig.from_settings(settings, facts, model=row.model, max_steps=row.max_steps,
                                          max_cost_usd=row.max_cost_usd or 0.0)
        history = await asyncio.to_thread(load_history, store, sid) if resume else None
        usage = UsageTotals.from_dict(row.usage_totals or {}) if resume else None

        async def checkpoint(h: list[dict[str, Any]]) -> None:
            await asyncio.to_thread(save_history, store, sid, h)

        desktop = GatedDesktop(self.gate, client, on_handback=self._handed_back)
        loop = AgentLoop(client=self.host.model(config.model, await store.session_endpoint(sid)), desktop=desktop,
                         policy=make_policy(settings.approval_policy, row.policy), emit=self.emit, config=config,
                         history=history, usage=usage, on_history=checkpoint)
        self.loop = loop
        if history is not None:
            await self._restore_approvals(loop)
        else:
            loop.add_user_message(row.task)  # first, so follow-ups sent while queued come after it
        for text in await store.take_inbox(sid):
            loop.add_user_message(text)
        result = await loop.run(None)
        if result.status == "paused":  # retries ran out: resumable, not failed
            return Outcome(None, result.message)
        ok = result.status == "succeeded"
        return Outcome(result.text or None, None if ok else result.message)

    async def _restore_approvals(self, loop: AgentLoop) -> None:
        """Tool calls cut off by a restart while awaiting approval: the loop waits again under the same id (a
        decision stored meanwhile is applied at once). Everything else left unanswered is answered "outcome
        unknown" by the loop itself — never re-run."""
        store = self.host.store
        for use in hist.pending_tool_uses(loop.history):
            approval = await store.approval_for_tool_use(self.session_id, str(use["id"]))
            if approval is None:
                continue
            loop.restore_approval(str(use["id"]), approval.id, reason=approval.reason)
            # Read again now that the loop listens: a decision stored in between would otherwise be missed.
            approval = await store.get_approval(self.session_id, approval.id)
            if approval.status != "pending" and approval.id in loop.approvals.pending:
                loop.decide(approval.id, decision_for(approval))

    # --- control ---
    async def cancel(self) -> None:
        """Stop the run and wait (bounded) for it to record its end."""
        if self.task is None:
            return
        self.cancelled = True
        if self.loop is not None and self.loop.running:
            self.gate.open()  # a run held by takeover must be able to see the cancel
            self.loop.cancel()
        else:
            self.task.cancel()
        # The run reports its own end; the caller only waits for it. asyncio.wait neither raises the run's
        # exception nor swallows the caller's own cancellation (a replica's command consumer stopping mid-cancel
        # once went on waiting for commands forever, and the replica's shutdown with it).
        await asyncio.wait({self.task}, timeout=30)

    def decide(self, approval_id: str, decision: Decision) -> None:
        """A loop not listening yet reads the stored decision once it restores the ask."""
        if self.loop is not None and approval_id in self.loop.approvals.pending:
            self.loop.decide(approval_id, decision)

    async def takeover(self) -> None:
        if self.ended:
            raise Conflict("cannot take over: the session has ended")
        settings = self.host.settings
        self.gate.close("takeover")
        await self.gate.until_idle(settings.settle_cap_ms / 1000 + settings.bash_timeout_s)
        await self.host.store.update_session(self.session_id, control="user", taken_over_at=utcnow())
        await self.emit(events.status("taken_over", "user"))

    async def handback(self, note: str | None) -> None:
        await self.host.store.update_session(self.session_id, control="agent", taken_over_at=None)
        self.kick_vnc()
        self.gate.open(note)
        loop = self.loop
        status: SessionStatus = "running"
        if loop is not None and loop.status in ("awaiting_approval", "paused"):
            status = loop.status
        await self.emit(events.status(status, "handback"))

    def kick_vnc(self) -> None:
        for kick in list(self.vnc_kicks):
            kick.set()

    async def _handed_back(self, handover: Handover) -> None:
        text = f"The user had control for {handover.seconds:.0f} s and handed it back."
        if handover.note:
            text += f" Note: {handover.note}"
        data: UserMessageData = {"text": text, "handback": True}
        await self.emit(Event("user_message", data))


def last_words(history: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(history) if m.get("role") == "assistant"), None)
    content = (last or {}).get("content") or []
    return "\n".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text").strip()
