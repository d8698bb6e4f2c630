"""Sessions at once: a queue in front of ``max_sessions`` slots; each session gets its own desktop and
an agent loop as an asyncio task. Every event is stored before it is broadcast.

After a restart, sessions that were active come back ``interrupted`` (resumable); a pending approval
stays pending; an action that started without a recorded result is marked "outcome unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from agent.events import Event
from deskpilot.errors import Conflict, DeskpilotError, ServiceUnavailable
from deskpilot.logs import bind_log_context
from deskpilot.settings import Settings
from web.bus import Bus
from web.live import GatedDesktop, Handover, Live
from web.models import ApprovalDecision, SessionCreate
from web.store import ACTIVE_STATES, FINAL_STATES, ApprovalRow, EventRow, SessionRow, Store

log = logging.getLogger(__name__)
OUTCOME_UNKNOWN = "outcome unknown: the service stopped while this action ran; it was not repeated"


class Runner:
    def __init__(self, settings: Settings, store: Store, bus: Bus) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.live: dict[str, Live] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.max_sessions)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._frames: dict[str, asyncio.Task[None]] = {}
        self._backend: Any = None
        self.unavailable_reason: str | None = None
        if settings.anthropic_api_key is None:
            self.unavailable_reason = (
                "ANTHROPIC_API_KEY is not set, so no task can run; set it (or DESKPILOT_ANTHROPIC_API_KEY) "
                "and restart. Everything else (history, screenshots, tokens) works."
            )
        bus.on_watch = self._watch

    # --- lifecycle ---
    async def start(self) -> None:
        await self.recover()
        for row in await self.store.sessions_in(["queued"]):
            self._queue.put_nowait(row.id)
        self._spawn(self._dispatch())

    async def stop(self) -> None:
        for task in list(self._tasks) + list(self._frames.values()):
            task.cancel()
        for task in list(self._tasks) + list(self._frames.values()):
            with contextlib.suppress(BaseException):
                await task
        for live in list(self.live.values()):
            await self._release(live)

    async def recover(self) -> None:
        """Runs once at start: nothing is live, so whatever the database calls active was cut short."""
        for row in await self.store.sessions_in(ACTIVE_STATES):
            open_calls: dict[str, dict[str, Any]] = {}
            for ev in await self.store.events_after(row.id, 0, limit=1_000_000):
                if ev.type == "tool_call":
                    open_calls[str(ev.data.get("id"))] = ev.data
                elif ev.type == "tool_result":
                    open_calls.pop(str(ev.data.get("id")), None)
            pending = await self.store.pending_approval(row.id)
            for call_id, call in open_calls.items():
                if pending is not None and pending.input.get("tool_use_id", call_id) == call_id:
                    continue  # waiting for a human, not started: it stays pending
                await self.emit(row.id, Event("tool_result", {
                    "id": call_id, "tool": call.get("tool"), "output": "", "error": OUTCOME_UNKNOWN,
                    "system": "", "is_error": True, "step": call.get("step"), "meta": {"outcome": "unknown"},
                }))
            await self.store.update_session(row.id, control="agent")
            await self.set_status(row.id, "interrupted", "the service restarted while this session was active")

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- events ---
    async def emit(self, session_id: str, event: Event) -> EventRow:
        """Store the event (and its screenshot, by hash), then broadcast it."""
        image_ref = None
        if event.image is not None:
            image_ref = await asyncio.to_thread(self.store.save_image, event.image, event.image_media_type)
        data = dict(event.data)
        if event.type == "approval_requested":
            await self.store.add_approval(ApprovalRow(
                id=str(data.get("approval_id")), session_id=session_id, tool=str(data.get("tool", "")),
                input={**dict(data.get("input") or {})}, reason=str(data.get("reason", "")), image_ref=image_ref,
            ))
        elif event.type == "usage":
            await self.store.add_usage(
                session_id, input_tokens=int(data.get("input_tokens", 0)),
                output_tokens=int(data.get("output_tokens", 0)),
                cache_read_tokens=int(data.get("cache_read_tokens", 0)),
                cache_creation_tokens=int(data.get("cache_write_tokens", 0)),
                cost_usd=float(data.get("cost_usd", 0.0)),
            )
        row = await self.store.append_event(session_id, event.type, data, image_ref)
        self.bus.publish(session_id, stream_message(row))
        return row

    async def set_status(self, session_id: str, status: str, reason: str = "", **fields: Any) -> None:
        await self.store.update_session(session_id, status=status, **fields)
        await self.emit(session_id, Event("status", {"status": status, "reason": reason}))

    # --- sessions ---
    async def create(self, owner: str, body: SessionCreate) -> SessionRow:
        if self.unavailable_reason:
            raise ServiceUnavailable(self.unavailable_reason)
        screen = body.screen
        row = await self.store.create_session(
            owner=owner, task=body.task, model=body.model or self.settings.model, policy=body.policy or {},
            max_steps=body.max_steps or self.settings.max_steps,
            max_cost_usd=body.max_cost_usd if body.max_cost_usd is not None else self.settings.max_cost_usd or None,
            width=screen.width if screen else self.settings.screen_width,
            height=screen.height if screen else self.settings.screen_height,
        )
        await self.emit(row.id, Event("status", {"status": "queued", "reason": ""}))
        self._queue.put_nowait(row.id)
        return await self.store.get_session(row.id)

    async def _dispatch(self) -> None:
        while True:
            session_id = await self._queue.get()
            await self._slots.acquire()
            row = await self.store.get_session(session_id)
            if row.status not in ("queued", "interrupted"):  # cancelled while queued
                self._slots.release()
                continue
            live = Live(session_id, row.owner)
            self.live[session_id] = live
            live.task = self._spawn(self._run(live, resume=row.status == "interrupted"))

    async def _run(self, live: Live, *, resume: bool) -> None:
        from web.driver import run_agent

        sid = live.session_id
        bind_log_context(session_id=sid)
        try:
            await self.set_status(sid, "starting")
            row = await self.store.get_session(sid)
            live.handle = await self.backend().acquire(sid, row.width, row.height)
            if self.bus.viewer_count(sid):
                self._watch(sid)
            await self.set_status(sid, "running")
            desktop = GatedDesktop(live, on_handback=lambda h: self._handed_back(live, h))
            outcome = await run_agent(self, live, desktop, row, resume=resume)
            await self.set_status(sid, outcome.status, outcome.reason, result=outcome.result, error=outcome.error)
        except asyncio.CancelledError:
            if live.cancelled:
                await asyncio.shield(self.set_status(sid, "cancelled", "user"))
            raise
        except DeskpilotError as exc:
            log.warning("session failed: %r", exc)
            await self.set_status(sid, "failed", type(exc).__name__, error=exc.message)
        except Exception as exc:
            log.exception("session crashed")
            await self.set_status(sid, "failed", "internal", error=f"internal error: {type(exc).__name__}")
        finally:
            await asyncio.shield(self._release(live))

    async def _release(self, live: Live) -> None:
        self.live.pop(live.session_id, None)
        frames = self._frames.pop(live.session_id, None)
        if frames is not None:
            frames.cancel()
        handle, live.handle = live.handle, None
        if handle is not None:
            try:
                await self.backend().release(handle)
            except Exception:
                log.exception("releasing the desktop failed")
        if live.task is not None:
            live.task = None
            self._slots.release()

    def backend(self) -> Any:
        if self._backend is None:
            from web.desktops import make_backend

            self._backend = make_backend(self.settings)
        return self._backend

    # --- control ---
    def _live(self, row: SessionRow, action: str) -> Live:
        live = self.live.get(row.id)
        if live is None or live.task is None or live.handle is None:
            raise Conflict(f"cannot {action}: the session is {row.status}")
        return live

    async def pause(self, row: SessionRow) -> None:
        live = self._live(row, "pause")
        if live.hold is None:
            live.close_gate("pause")
            await self.set_status(row.id, "paused", "user")

    async def resume(self, row: SessionRow) -> None:
        if row.status == "interrupted":
            self._queue.put_nowait(row.id)
            return
        live = self._live(row, "resume")
        if live.hold == "takeover":
            raise Conflict("the user holds control; hand back instead")
        if live.hold == "pause":
            live.open_gate()
            pending = await self.store.pending_approval(row.id)
            await self.set_status(row.id, "awaiting_approval" if pending else "running", "user")

    async def cancel(self, row: SessionRow) -> None:
        if row.status in FINAL_STATES:
            raise Conflict(f"the session already {row.status}")
        live = self.live.get(row.id)
        if live is not None and live.task is not None:
            live.cancelled = True
            live.task.cancel()
            with contextlib.suppress(BaseException):
                await live.task
        else:
            await self.set_status(row.id, "cancelled", "user")

    async def message(self, row: SessionRow, text: str) -> None:
        from web.driver import deliver_message

        await deliver_message(self, row, self.live.get(row.id), text)

    async def decide(self, row: SessionRow, approval_id: str, body: ApprovalDecision) -> ApprovalRow:
        if body.decision == "edit" and body.input is None:
            from deskpilot.errors import BadRequest

            raise BadRequest("decision 'edit' needs the edited 'input'")
        decided = await self.store.decide_approval(
            row.id, approval_id, body.decision, body.note, body.input if body.decision == "edit" else None
        )
        live = self.live.get(row.id)
        waiter = live.decisions.pop(approval_id, None) if live is not None else None
        if waiter is not None and not waiter.done():
            waiter.set_result(body)
        return decided

    async def takeover(self, row: SessionRow) -> None:
        live = self._live(row, "take over")
        if live.hold == "takeover":
            raise Conflict("you already hold control")
        live.close_gate("takeover")
        await live.until_idle(self.settings.settle_cap_ms / 1000 + self.settings.bash_timeout_s)
        await self.store.update_session(row.id, control="user")
        await self.set_status(row.id, "taken_over", "user")

    async def handback(self, row: SessionRow, note: str | None) -> None:
        live = self._live(row, "hand back")
        if live.hold != "takeover":
            raise Conflict("nobody has taken over this session")
        await self.store.update_session(row.id, control="agent")
        live.open_gate(note)
        pending = await self.store.pending_approval(row.id)
        await self.set_status(row.id, "awaiting_approval" if pending else "running", "handback")

    async def _handed_back(self, live: Live, handover: Handover) -> None:
        text = f"The user had control for {handover.seconds:.0f} s and handed it back."
        if handover.note:
            text += f" Note: {handover.note}"
        await self.emit(live.session_id, Event("user_message", {"text": text, "handback": True}))

    # --- live frames ---
    def _watch(self, session_id: str) -> None:
        live = self.live.get(session_id)
        if live is None or live.handle is None or session_id in self._frames:
            return
        self._frames[session_id] = asyncio.get_running_loop().create_task(self._pump_frames(live))

    async def _pump_frames(self, live: Live) -> None:
        """Fetch frames only while someone watches; the daemon answers 304 for an unchanged screen."""
        sid, etag = live.session_id, None
        interval = 1.0 / self.settings.frame_fps
        try:
            while self.bus.viewer_count(sid) and live.handle is not None:
                started = asyncio.get_running_loop().time()
                try:
                    got = await live.client.frame(etag)
                except DeskpilotError:
                    got = None
                if got is not None:
                    jpeg, etag = got
                    self.bus.publish_frame(sid, jpeg)
                spent = asyncio.get_running_loop().time() - started
                await asyncio.sleep(max(0.0, interval - spent))
        finally:
            if self._frames.get(sid) is asyncio.current_task():
                del self._frames[sid]


def stream_message(row: EventRow) -> dict[str, Any]:
    return {"kind": "event", "seq": row.seq, "type": row.type, "data": row.data, "image": row.image_ref,
            "ts": row.created_at.isoformat()}
