"""Sessions at once: a queue in front of ``max_sessions`` slots; each running session is a ``SessionRun``
(its desktop, its agent loop) in its own asyncio task. Every event is stored before it is broadcast.

After a restart, sessions that were active come back ``interrupted`` (resumable); a pending approval
stays pending; an action that started without a recorded result is marked "outcome unknown".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from agent import events
from agent import history as hist
from agent.approvals import Decision
from agent.events import Event, SessionStatus
from agent.loop import AgentLoop
from agent.providers.client import ModelClient
from agent.providers.registry import ModelClients, check_model, missing_setting
from deskpilot.errors import ConfigError, Conflict, DeskpilotError, ServiceUnavailable, TooManyRequests, Unprocessable
from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend, DesktopHandle
from desktop.client import DesktopClient
from web.bus import Bus
from web.checkpoints import load_history, save_history
from web.desktops import make_backend
from web.egress import network_policy, with_allowed
from web.frames import FramePumps
from web.recorder import Recorder
from web.session_run import SessionRun, make_policy
from web.states import ACTIVE_STATES, FINAL_STATES
from web.store import ApprovalRow, SessionRow, Store

if TYPE_CHECKING:
    from web.cluster import Cluster

log = logging.getLogger(__name__)
SESSIONS_LIVE = Gauge("deskpilot_sessions_live", "Sessions holding a desktop right now")


def model_unavailable(settings: Settings, model: str | None = None, base_url: str | None = None) -> str | None:
    """Why sessions of ``model`` (default: the service's) cannot run here, naming the setting; else None."""
    name = model or settings.model
    try:
        missing = missing_setting(settings, name, base_url)
    except ConfigError as exc:
        return exc.message
    return None if missing is None else f"model {name} cannot run: {missing}, and restart the service"


class Runner:
    def __init__(self, settings: Settings, store: Store, bus: Bus, backend: DesktopBackend | None = None) -> None:
        """``backend``: where desktops come from; by default the one ``DESKPILOT_DESKTOP_BACKEND`` names."""
        self.settings = settings
        self.store = store
        self.bus = bus
        self.recorder = Recorder(store, bus)
        self.live: dict[str, SessionRun] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._slots = asyncio.Semaphore(settings.max_sessions)
        self._tasks: set[asyncio.Task[None]] = set()
        self._releasing: set[asyncio.Task[None]] = set()  # outlive their cancelled run; stop() waits for them
        self.frames = FramePumps(bus, settings.frame_fps, self._client_of, self._acting)
        self._backend = backend
        self.models = ModelClients(settings)  # one client per provider and endpoint, made on first use
        self.cluster: Cluster | None = None  # set when this is one of several replicas (web/cluster.py)
        bus.on_watch = self.frames.watch

    # --- what a SessionRun needs (web.session_run.Host) ---
    def backend(self) -> DesktopBackend:
        if self._backend is None:
            self._backend = make_backend(self.settings)
        return self._backend

    def model(self, name: str, base_url: str | None = None) -> ModelClient:
        """The service's client for model ``name``'s provider (connection pool, base URL, timeouts)."""
        return self.models.for_model(name, base_url)

    def unavailable(self, model: str | None = None, base_url: str | None = None) -> str | None:
        return model_unavailable(self.settings, model, base_url)

    async def desktop_ready(self, session_id: str, handle: DesktopHandle) -> None:
        if self.cluster is not None:  # other replicas' viewers reach it from now on (web/remote.py)
            await self.cluster.leases.set_desktop(session_id, handle.client.endpoint(vnc=handle.vnc_available))
        self.frames.watch(session_id)

    # --- lifecycle ---
    async def start(self) -> None:
        if self.cluster is None:  # replicas adopt what no live replica holds instead (Cluster.tick)
            await self.recover()
            for row in await self.store.sessions_in(["queued"]):
                self._queue.put_nowait(row.id)
        self._spawn(self._dispatch())
        self._spawn(self._start_backend())

    async def _start_backend(self) -> None:
        """Start the desktop backend now (orphan clean-up, warm pool), so the first session doesn't wait for it."""
        try:
            await self.backend().start()
        except DeskpilotError as exc:  # sessions will report it when they ask for a desktop
            log.warning("desktop backend did not start: %s", exc.message)

    async def stop(self) -> None:
        for task in list(self._tasks) + self.frames.all_tasks():
            task.cancel()
        for task in list(self._tasks) + self.frames.all_tasks():
            with contextlib.suppress(BaseException):
                await task
        await asyncio.gather(*self._releasing, return_exceptions=True)
        for run in list(self.live.values()):
            await self._release(run)
        if self._backend is not None:
            await self._backend.aclose()
        await self.models.aclose()

    async def recover(self) -> None:
        """Runs once at start: nothing is live, so whatever the database calls active was cut short.

        Tool calls with no recorded result get "outcome unknown" (never re-run) — except one still waiting
        for a person's approval, which stays pending until decided.
        """
        for row in await self.store.sessions_in(ACTIVE_STATES):
            await self._interrupt(row, "restart")

    async def _interrupt(self, row: SessionRow, reason: str) -> None:
        """A run cut short (restart, or its replica died): answer what it left open, mark it interrupted."""
        history = await asyncio.to_thread(load_history, self.store, row.id)
        if history is not None:
            waiting = set()
            for use in hist.pending_tool_uses(history):
                approval = await self.store.approval_for_tool_use(row.id, str(use["id"]))
                if approval is not None and (approval.status == "pending"
                                             or not await self._applied(row.id, approval.id)):
                    waiting.add(str(use["id"]))  # the resumed run waits for, or applies, the decision
            unknown = hist.answer_pending(history, hist.RESTART_UNKNOWN, keep=waiting)
            if unknown:
                await asyncio.to_thread(save_history, self.store, row.id, history)
            for use in unknown:
                await self.emit(row.id, events.unanswered_result(str(use["id"]), str(use.get("name", "")),
                                                                 hist.RESTART_UNKNOWN, "unknown", step=None))
        await self.store.update_session(row.id, control="agent")
        await self.set_status(row.id, "interrupted", reason)

    async def adopt(self, session_id: str) -> None:
        """A session this replica just leased from a dead (or stopped) one: run it on from where it was."""
        row = await self.store.get_session(session_id)
        if row.status in ACTIVE_STATES:
            await self._interrupt(row, "failover")
            await self.requeue(session_id)
        elif row.status == "queued":
            self._queue.put_nowait(session_id)

    def abandon(self, session_id: str) -> None:
        """Another replica took the session's lease (this one stalled past the TTL): stop running it here."""
        run = self.live.get(session_id)
        if run is not None and run.task is not None:
            run.task.cancel()

    async def _applied(self, session_id: str, approval_id: str) -> bool:
        """The loop reported this decision, so it may have started the action: never run it a second time."""
        after = 0
        while rows := await self.store.events_after(session_id, after):
            if any(r.type == "approval_decided" and r.data.get("approval_id") == approval_id for r in rows):
                return True
            after = rows[-1].seq
        return False

    async def _client_of(self, session_id: str) -> DesktopClient | None:
        run = self.live.get(session_id)
        if run is not None:
            return run.client
        return await self.cluster.remote.client(session_id) if self.cluster is not None else None

    def _acting(self, session_id: str) -> bool:
        run = self.live.get(session_id)
        if run is not None:
            return run.acting
        return self.cluster is not None and self.cluster.remote.acting(session_id)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- events ---
    async def emit(self, session_id: str, event: Event) -> None:
        """Store the event, then broadcast it (through the session's run while it has one)."""
        run = self.live.get(session_id)
        if run is not None:
            await run.emit(event)
        else:
            await self.recorder.record(session_id, event)

    async def set_status(self, session_id: str, status: SessionStatus, reason: str = "", **fields: Any) -> None:
        run = self.live.get(session_id)
        if run is not None:
            await run.set_status(status, reason, **fields)
            return
        if fields:
            await self.store.update_session(session_id, **fields)
        await self.recorder.record(session_id, events.status(status, reason))

    # --- sessions ---
    async def create(self, owner: str, task: str, *, model: str | None = None, policy: dict[str, Any] | None = None,
                     max_steps: int | None = None, max_cost_usd: float | None = None,
                     screen: tuple[int, int] | None = None, base_url: str | None = None) -> SessionRow:
        """Queue a new session; unset values come from the settings. A model whose provider is unknown, or a
        ``base_url`` for a provider other than openai-compatible, is ``Unprocessable``; a model whose key or
        endpoint is not configured is ``ServiceUnavailable`` (the message names the setting)."""
        model = model or self.settings.model
        try:
            provider = check_model(model)
        except ConfigError as exc:
            raise Unprocessable(exc.message) from None
        if base_url and provider != "openai-compatible":
            raise Unprocessable(f"base_url is for openai-compatible/... models only, not {provider} (its endpoint "
                                "is the service's setting, which its API key goes to)")
        missing = self.unavailable(model, base_url)
        if missing:
            raise ServiceUnavailable(missing)
        if await self.store.count_in(["queued"]) >= self.settings.max_queued:  # every desktop busy, queue full
            raise TooManyRequests("too many sessions are waiting for a desktop; try again later",
                                  retry_after=self.settings.queue_retry_after_s)
        make_policy(self.settings.approval_policy, policy or {})  # a bad policy is a 422 now, not a failed run
        network_policy(self.settings, policy or {})
        row = await self.store.create_session(
            owner=owner, task=task, model=model, base_url=base_url, policy=policy or {},
            max_steps=max_steps or self.settings.max_steps,
            max_cost_usd=max_cost_usd if max_cost_usd is not None else self.settings.max_cost_usd or None,
            width=screen[0] if screen else self.settings.screen_width,
            height=screen[1] if screen else self.settings.screen_height,
            leased_to=(self.cluster.replica, self.settings.lease_ttl_s) if self.cluster else None,
        )
        await self.set_status(row.id, "queued")
        self._queue.put_nowait(row.id)
        return await self.store.get_session(row.id)

    async def requeue(self, session_id: str) -> None:
        await self.set_status(session_id, "queued", "resume")
        if self.cluster is None or await self.cluster.leases.claim(session_id):
            self._queue.put_nowait(session_id)  # else another replica adopted it meanwhile and runs it

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
            if (row.status != "queued" or session_id in self.live  # cancelled while queued, or already running
                    or (self.cluster is not None and not await self.cluster.leases.claim(session_id))):
                self._slots.release()
                continue
            run = SessionRun(self, session_id)
            self.live[session_id] = run
            SESSIONS_LIVE.set(len(self.live))
            run.task = self._spawn(self._run(run))

    async def _run(self, run: SessionRun) -> None:
        try:
            await run.run()
        finally:
            release = asyncio.get_running_loop().create_task(self._release(run))
            self._releasing.add(release)
            release.add_done_callback(self._releasing.discard)
            await asyncio.shield(release)
        await self._follow_up(run.session_id)

    async def _follow_up(self, session_id: str) -> None:
        """A message that arrived after the run's last turn but before its desktop was released went to the
        inbox (``message``): continue the session with it, as a message to a finished session would."""
        row = await self.store.get_session(session_id)
        if row.inbox and row.status not in ("queued", "cancelled"):
            await self.requeue(session_id)

    async def _release(self, run: SessionRun) -> None:
        if self.cluster is not None and run.session_id in self.live:
            # Not queued again: nobody runs it now. Still active (this replica is stopping): another adopts it.
            with contextlib.suppress(Exception):
                await self.cluster.leases.set_desktop(run.session_id, None)  # before the desktop goes
            with contextlib.suppress(Exception):
                if (await self.store.get_session(run.session_id)).status != "queued":
                    await self.cluster.leases.release(run.session_id)
        self.live.pop(run.session_id, None)
        SESSIONS_LIVE.set(len(self.live))
        self.frames.stop(run.session_id)
        run.kick_vnc()
        run.egress.detach()
        handle, run.handle = run.handle, None
        if handle is not None:
            try:
                await self.backend().release(handle)
            except Exception:
                log.exception("releasing the desktop failed")
        if run.task is not None:
            run.task = None
            self._slots.release()

    # --- control ---
    def _running(self, row: SessionRow, action: str) -> tuple[SessionRun, AgentLoop]:
        run = self.live.get(row.id)
        if run is None or run.loop is None or not run.loop.running:
            raise Conflict(f"cannot {action}: the session is {row.status}")
        return run, run.loop

    async def _forwarded(self, row: SessionRow, kind: str, data: dict[str, Any] | None = None) -> bool:
        """Another replica runs the session: send it the command (it applies it) and report that."""
        if self.cluster is None or row.id in self.live or not await self.cluster.elsewhere(row.id):
            return False
        await self.cluster.forward(row.id, kind, data)
        return True

    async def pause(self, row: SessionRow) -> None:
        if await self._forwarded(row, "pause"):
            return
        run, loop = self._running(row, "pause")
        if run.hold == "takeover":
            raise Conflict("you hold control; the agent is already waiting")
        loop.pause()  # takes effect at the next step boundary; the loop reports "paused" then
        await self.store.update_session(row.id, status="paused")

    async def resume(self, row: SessionRow) -> None:
        if await self._forwarded(row, "resume"):
            return
        if row.status == "interrupted":
            await self.requeue(row.id)
            return
        if row.status == "paused" and row.id not in self.live:
            raise Conflict("the session is not running")
        run, loop = self._running(row, "resume")
        if run.hold == "takeover":
            raise Conflict("you hold control; hand back instead")
        loop.resume()

    async def cancel(self, row: SessionRow) -> None:
        if row.status in FINAL_STATES:
            raise Conflict(f"the session already {row.status}")
        if await self._forwarded(row, "cancel"):
            return
        run = self.live.get(row.id)
        if run is None or run.task is None:
            await self.set_status(row.id, "cancelled", "user")
            return
        await run.cancel()

    async def message(self, row: SessionRow, text: str) -> None:
        """Into the running loop's next turn; otherwise kept and the session (re)queued to continue."""
        run = self.live.get(row.id)
        if run is not None and run.loop is not None and run.loop.running:
            run.loop.add_user_message(text)
            return
        if self.cluster is not None and run is None and await self.cluster.elsewhere(row.id):
            await self.store.add_inbox(row.id, text)  # its replica takes it from there into the loop
            await self.cluster.forward(row.id, "message")
            return
        if row.status == "starting" or (run is not None and run.task is not None):
            await self.store.add_inbox(row.id, text)
            return
        if row.status == "cancelled":
            raise Conflict("the session was cancelled; start a new one")
        await self.store.add_inbox(row.id, text)
        if row.status != "queued":
            await self.requeue(row.id)

    async def decide(self, row: SessionRow, approval_id: str, decision: Decision) -> ApprovalRow:
        # The conditional UPDATE is the single point of truth: of two racing deciders exactly one gets here.
        decided = await self.store.decide_approval(row.id, approval_id, decision.kind, decision.note or None,
                                                   decision.input)
        run = self.live.get(row.id)
        if run is None and await self._forwarded(row, "decide", {"approval_id": approval_id}):
            return decided
        if run is None:
            if row.status == "interrupted":
                await self.requeue(row.id)  # the run goes on from where the restart cut it
            return decided
        run.decide(approval_id, decision)
        return decided

    async def takeover(self, row: SessionRow) -> None:
        run = self.live.get(row.id)
        if run is None and self.cluster is not None and await self.cluster.elsewhere(row.id):
            await self.cluster.take_over(row)
            return
        if run is None or run.handle is None:
            raise Conflict(f"cannot take over: the session is {row.status}")
        if run.hold == "takeover":
            raise Conflict("you already hold control")
        await run.takeover()

    async def handback(self, row: SessionRow, note: str | None) -> None:
        run = self.live.get(row.id)
        if run is None and self.cluster is not None and await self.cluster.elsewhere(row.id):
            await self.cluster.hand_back(row, note)
            return
        if run is None or run.hold != "takeover":
            raise Conflict("nobody has taken over this session")
        await run.handback(note)

    async def allow_host(self, row: SessionRow, host: str, *, by: str, address: str) -> str:
        """Allow ``host`` for the rest of the running session (the user's one click on an egress_blocked card)."""
        run = self.live.get(row.id)
        if run is None or run.handle is None:
            raise Conflict(f"cannot change the network policy: the session is {row.status}")
        name = await run.egress.allow(host, by)
        row = await self.store.get_session(row.id)
        await self.store.update_session(row.id, policy=with_allowed(dict(row.policy or {}), self.settings, name))
        await self.store.append_audit(row.owner, by, "egress.allow", {"host": name}, session_id=row.id,
                                      address=address)
        return name
