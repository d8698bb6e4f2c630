"""Sessions at once: a queue in front of ``max_sessions`` slots; each session gets its own desktop and
an agent loop as an asyncio task. Every event is stored before it is broadcast.

After a restart, sessions that were active come back ``interrupted`` (resumable); a pending approval
stays pending; an action that started without a recorded result is marked "outcome unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from agent.events import Event
from deskpilot.errors import BadRequest, Conflict, DeskpilotError, ServiceUnavailable
from deskpilot.logs import bind_log_context
from deskpilot.settings import Settings
from web.bus import Bus
from web.frames import FramePumps
from web.live import GatedDesktop, Handover, Live
from web.models import ApprovalDecision, SessionCreate
from web.store import ACTIVE_STATES, FINAL_STATES, ApprovalRow, EventRow, SessionRow, Store, utcnow

if TYPE_CHECKING:  # the backend's module pulls in the desktop client (httpx): not needed to serve
    from desktop.backends.base import DesktopBackend

log = logging.getLogger(__name__)
EVENTS = Counter("deskpilot_events_total", "Session events stored and broadcast", ["type"])
SESSIONS_LIVE = Gauge("deskpilot_sessions_live", "Sessions holding a desktop right now")


class Runner:
    def __init__(self, settings: Settings, store: Store, bus: Bus, backend: DesktopBackend | None = None) -> None:
        """``backend``: where desktops come from; by default the one ``DESKPILOT_DESKTOP_BACKEND`` names."""
        self.settings = settings
        self.store = store
        self.bus = bus
        self.live: dict[str, Live] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.max_sessions)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releasing: set[asyncio.Task[None]] = set()  # outlive their cancelled run; stop() waits for them
        self.frames = FramePumps(bus, settings.frame_fps, self._client_of, self._acting)
        self._backend: Any = backend
        self.model_client: Any = None  # anthropic.AsyncAnthropic, made on first use
        self.unavailable_reason: str | None = None
        if settings.anthropic_api_key is None or not settings.anthropic_api_key.get_secret_value():
            self.unavailable_reason = (
                "ANTHROPIC_API_KEY is not set, so no task can run; set it (or DESKPILOT_ANTHROPIC_API_KEY) "
                "and restart. Everything else (history, screenshots, tokens) works."
            )
        bus.on_watch = self.frames.watch

    # --- lifecycle ---
    async def start(self) -> None:
        await self.recover()
        for row in await self.store.sessions_in(["queued"]):
            self._queue.put_nowait(row.id)
        self._spawn(self._dispatch())
        if self.unavailable_reason is None:
            self._spawn(self._start_backend())

    async def _start_backend(self) -> None:
        """Start the desktop backend now (orphan clean-up, warm pool), so the first session doesn't wait for it."""
        try:
            starter = getattr(self.backend(), "start", None)
            if starter is not None:
                await starter()
        except DeskpilotError as exc:  # sessions will report it when they ask for a desktop
            log.warning("desktop backend did not start: %s", exc.message)

    async def stop(self) -> None:
        for task in list(self._tasks) + self.frames.all_tasks():
            task.cancel()
        for task in list(self._tasks) + self.frames.all_tasks():
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(*self._releasing, return_exceptions=True)
        for live in list(self.live.values()):
            await self._release(live)
        closer = getattr(self._backend, "aclose", None)
        if closer is not None:
            await closer()
        if self.model_client is not None:
            await self.model_client.close()

    async def recover(self) -> None:
        """Runs once at start: nothing is live, so whatever the database calls active was cut short.

        Tool calls with no recorded result get "outcome unknown" (never re-run) — except one still waiting
        for a person's approval, which stays pending until decided.
        """
        from agent import history as hist
        from web.driver import load_history, save_history

        for row in await self.store.sessions_in(ACTIVE_STATES):
            history = await asyncio.to_thread(load_history, self.store, row.id)
            if history is not None:
                unknown = []
                for use in hist.pending_tool_uses(history):
                    approval = await self.store.approval_for_tool_use(row.id, str(use["id"]))
                    if approval is not None and (approval.status == "pending"
                                                 or not await self._applied(row.id, approval.id)):
                        continue  # still waiting, or decided while down: the resumed run applies the decision
                    hist.add_tool_result(history, hist.error_result(str(use["id"]), hist.RESTART_UNKNOWN))
                    unknown.append(use)
                if unknown:
                    await asyncio.to_thread(save_history, self.store, row.id, history)
                for use in unknown:
                    await self.emit(row.id, Event("tool_result", {
                        "id": use["id"], "tool": use.get("name"), "output": "", "error": hist.RESTART_UNKNOWN,
                        "system": "", "is_error": True, "step": None, "meta": {"outcome": "unknown"}}))
            await self.store.update_session(row.id, control="agent")
            await self.set_status(row.id, "interrupted", "restart")

    async def _applied(self, session_id: str, approval_id: str) -> bool:
        """The loop reported this decision, so it may have started the action: never run it a second time."""
        after = 0
        while rows := await self.store.events_after(session_id, after):
            if any(r.type == "approval_decided" and r.data.get("approval_id") == approval_id for r in rows):
                return True
            after = rows[-1].seq
        return False

    def _client_of(self, session_id: str) -> Any:
        live = self.live.get(session_id)
        return live.client if live is not None else None

    def _acting(self, session_id: str) -> bool:
        live = self.live.get(session_id)
        return live is not None and live.acting

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
        live = self.live.get(session_id)
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
        elif event.type == "status":
            status = str(data.get("status"))
            fields: dict[str, Any] = {}
            if status in FINAL_STATES and live is not None and live.loop is not None:
                # Result and error land with the final status, so whoever sees it can read them.
                fields = {"result": last_words(live.loop.history) or None,
                          "error": None if status == "succeeded" else str(data.get("message") or status)}
            if not (live is not None and live.hold == "takeover" and status in ("running", "awaiting_approval")):
                await self.store.update_session(session_id, status=status, **fields)
        row = await self.store.append_event(session_id, event.type, data, image_ref)
        EVENTS.labels(event.type).inc()
        if event.type == "status":
            SESSIONS_LIVE.set(len(self.live))
        self.bus.publish(session_id, stream_message(row))
        return row

    async def set_status(self, session_id: str, status: str, reason: str = "", **fields: Any) -> None:
        if fields:
            await self.store.update_session(session_id, **fields)
        await self.emit(session_id, Event("status", {"status": status, "reason": reason}))

    # --- sessions ---
    async def create(self, owner: str, body: SessionCreate) -> SessionRow:
        if self.unavailable_reason:
            raise ServiceUnavailable(self.unavailable_reason)
        from web.driver import make_policy

        make_policy(self.settings.approval_policy, body.policy or {})  # a bad policy is a 400 now, not a failed run
        screen = body.screen
        row = await self.store.create_session(
            owner=owner, task=body.task, model=body.model or self.settings.model, policy=body.policy or {},
            max_steps=body.max_steps or self.settings.max_steps,
            max_cost_usd=body.max_cost_usd if body.max_cost_usd is not None else self.settings.max_cost_usd or None,
            width=screen.width if screen else self.settings.screen_width,
            height=screen.height if screen else self.settings.screen_height,
        )
        await self.set_status(row.id, "queued")
        self._queue.put_nowait(row.id)
        return await self.store.get_session(row.id)

    async def requeue(self, session_id: str) -> None:
        await self.set_status(session_id, "queued", "resume")
        self._queue.put_nowait(session_id)

    async def _dispatch(self) -> None:
        while True:
            session_id = await self._queue.get()
            await self._slots.acquire()
            try:
                row = await self.store.get_session(session_id)
            except Exception:  # one unreadable entry must not stop every later session
                log.exception("cannot start session %s", session_id)
                self._slots.release()
                continue
            if row.status != "queued" or session_id in self.live:  # cancelled while queued, or already running
                self._slots.release()
                continue
            live = Live(session_id, row.owner)
            self.live[session_id] = live
            live.task = self._spawn(self._run(live))

    async def _run(self, live: Live) -> None:
        from web.driver import history_path, run_agent

        sid = live.session_id
        bind_log_context(session_id=sid)
        try:
            await self.set_status(sid, "starting")
            row = await self.store.get_session(sid)
            live.handle = await self.backend().acquire(sid, row.width, row.height)
            self.frames.watch(sid)
            live.gated = GatedDesktop(live, on_handback=lambda h: self._handed_back(live, h))
            resume = history_path(self.store, sid).is_file()
            outcome = await run_agent(self, live, live.gated, row, resume=resume)
            await self.store.update_session(sid, result=outcome.result, error=outcome.error)
        except asyncio.CancelledError:
            if live.cancelled:  # cancelled before the loop existed (e.g. while the desktop started)
                await asyncio.shield(self.set_status(sid, "cancelled", "user"))
            raise
        except DeskpilotError as exc:
            log.warning("session failed: %r", exc)
            await self.set_status(sid, "failed", type(exc).__name__, error=exc.message)
        except Exception as exc:
            log.exception("session crashed")
            await self.set_status(sid, "failed", "internal", error=f"internal error: {type(exc).__name__}")
        finally:
            release = asyncio.get_running_loop().create_task(self._release(live))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)

    async def _release(self, live: Live) -> None:
        self.live.pop(live.session_id, None)
        SESSIONS_LIVE.set(len(self.live))
        self.frames.stop(live.session_id)
        for kick in list(live.vnc_kicks):
            kick.set()
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
    def _loop(self, row: SessionRow, action: str) -> tuple[Live, Any]:
        live = self.live.get(row.id)
        if live is None or live.loop is None or not live.loop.running:
            raise Conflict(f"cannot {action}: the session is {row.status}")
        return live, live.loop

    async def pause(self, row: SessionRow) -> None:
        live, loop = self._loop(row, "pause")
        if live.hold == "takeover":
            raise Conflict("you hold control; the agent is already waiting")
        loop.pause()  # takes effect at the next step boundary; the loop reports "paused" then
        await self.store.update_session(row.id, status="paused")

    async def resume(self, row: SessionRow) -> None:
        if row.status == "interrupted":
            await self.requeue(row.id)
            return
        if row.status == "paused" and row.id not in self.live:
            raise Conflict("the session is not running")
        live, loop = self._loop(row, "resume")
        if live.hold == "takeover":
            raise Conflict("you hold control; hand back instead")
        loop.resume()

    async def cancel(self, row: SessionRow) -> None:
        if row.status in FINAL_STATES:
            raise Conflict(f"the session already {row.status}")
        live = self.live.get(row.id)
        if live is None or live.task is None:
            await self.set_status(row.id, "cancelled", "user")
            return
        live.cancelled = True
        if live.loop is not None and live.loop.running:
            live.open_gate()  # a run held by takeover must be able to see the cancel
            live.loop.cancel()
        else:
            live.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(live.task), 30)

    async def message(self, row: SessionRow, text: str) -> None:
        from web.driver import deliver_message

        await deliver_message(self, row, self.live.get(row.id), text)

    async def decide(self, row: SessionRow, approval_id: str, body: ApprovalDecision) -> ApprovalRow:
        from agent.approvals import Decision

        if body.decision == "edit" and body.input is None:
            raise BadRequest("decision 'edit' needs the edited 'input'")
        decision = Decision(body.decision, body.note or "", body.input if body.decision == "edit" else None,
                            always=body.always_allow and body.decision == "approve")
        # The conditional UPDATE is the single point of truth: of two racing deciders exactly one gets here.
        decided = await self.store.decide_approval(row.id, approval_id, body.decision, body.note, decision.input)
        live = self.live.get(row.id)
        if live is None:
            if row.status == "interrupted":
                await self.requeue(row.id)  # the run goes on from where the restart cut it
            return decided
        # A loop not listening yet reads the stored decision once it restores the ask (driver.restore_approvals).
        if live.loop is not None and approval_id in live.loop.approvals.pending:
            live.loop.decide(approval_id, decision)
        return decided

    async def takeover(self, row: SessionRow) -> None:
        live = self.live.get(row.id)
        if live is None or live.handle is None:
            raise Conflict(f"cannot take over: the session is {row.status}")
        if live.hold == "takeover":
            raise Conflict("you already hold control")
        live.close_gate("takeover")
        await live.until_idle(self.settings.settle_cap_ms / 1000 + self.settings.bash_timeout_s)
        await self.store.update_session(row.id, control="user", taken_over_at=utcnow())
        await self.emit(row.id, Event("status", {"status": "taken_over", "reason": "user"}))

    async def handback(self, row: SessionRow, note: str | None) -> None:
        live = self.live.get(row.id)
        if live is None or live.hold != "takeover":
            raise Conflict("nobody has taken over this session")
        await self.store.update_session(row.id, control="agent", taken_over_at=None)
        for kick in list(live.vnc_kicks):
            kick.set()
        live.open_gate(note)
        loop = live.loop
        status = "running"
        if loop is not None and loop.status in ("awaiting_approval", "paused"):
            status = loop.status
        await self.emit(row.id, Event("status", {"status": status, "reason": "handback"}))

    async def _handed_back(self, live: Live, handover: Handover) -> None:
        text = f"The user had control for {handover.seconds:.0f} s and handed it back."
        if handover.note:
            text += f" Note: {handover.note}"
        await self.emit(live.session_id, Event("user_message", {"text": text, "handback": True}))


def stream_message(row: EventRow) -> dict[str, Any]:
    return {"kind": "event", "seq": row.seq, "type": row.type, "data": row.data, "image": row.image_ref,
            "ts": row.created_at.isoformat()}


def last_words(history: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(history) if m.get("role") == "assistant"), None)
    content = (last or {}).get("content") or []
    return "\n".join(b["text"] for b in content if isinstance(b, dict) and b.get("type") == "text").strip()
