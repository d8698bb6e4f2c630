"""The computer-use loop: model call → approvals → tool calls → repeat, controllable from outside.

Control (safe from any task on the same event loop): ``pause()`` holds the run at the next step
boundary, ``resume()`` continues (also after a ``model_unavailable`` pause), ``cancel()`` interrupts at
once — a model call in flight is dropped, every unanswered ``tool_use`` gets an error result, so the
history stays valid — and ``add_user_message()`` joins the next user turn (or, after the run ended,
the next ``run()``, which continues it). ``decide()`` answers an approval.

Budgets and auth errors end the run as ``failed`` with a clear reason; retries running out pause it.
A loop built from saved history answers tool calls with no recorded result as "outcome unknown"
instead of running them again — except asks handed back with ``restore_approval()``, which wait for
their decision under the same approval id. One tool call's path lives in ``agent.actions`` (``ToolRunner``).

The model is any ``agent.providers.base.ModelClient`` (a bare ``AsyncAnthropic`` is wrapped): the loop sees
canonical replies only. Several tool calls in one reply (Claude's parallel tool_use, an OpenAI batch) run in
order; only the last one's screenshot goes back to the model. A reply that asks the user something
(``stop_reason == "question"``) pauses the run until the user answers with a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic

from agent import history as hist
from agent.actions import INTERRUPTED_PENDING, INTERRUPTED_RUNNING, Desktop, Interrupted, ToolRunner
from agent.approvals import Approvals, Decision
from agent.config import LoopConfig
from agent.events import Emit, Event, EventType, RunStatus
from agent.policy import ApprovalPolicy, Rule
from agent.providers.anthropic import AnthropicClient
from agent.providers.base import Reply
from agent.providers.client import ModelClient
from agent.retry import RetryInfo, with_retries
from agent.usage import CallUsage, UsageTotals, budget_exceeded, price_for
from agent.watchdog import Watchdog
from deskpilot.errors import Conflict, ModelAuthError, ModelUnavailable

__all__ = ["INTERRUPTED_PENDING", "INTERRUPTED_RUNNING", "AgentLoop", "Desktop", "RunResult"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RunResult:
    status: RunStatus
    reason: str  # a code: end_turn, max_steps, max_cost, auth, desktop_lost, user, refusal…
    message: str  # the same in plain words
    text: str  # the model's last words
    usage: dict[str, Any]


class AgentLoop:
    def __init__(self, *, client: ModelClient | anthropic.AsyncAnthropic, desktop: Desktop, policy: ApprovalPolicy,
                 emit: Emit, config: LoopConfig, history: list[dict[str, Any]] | None = None,
                 usage: UsageTotals | None = None,
                 on_history: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None) -> None:
        self.client: ModelClient = AnthropicClient(client) if isinstance(client, anthropic.AsyncAnthropic) else client
        self.desktop, self.policy, self.config = desktop, policy, config
        # Window-title and URL rules need the desktop's title and tab URL; duck-typed, so any desktop with
        # the method supplies it.
        title_of = getattr(desktop, "active_window_title", None)
        if policy.window_title is None and callable(title_of):
            policy.use_window_title(title_of)
        url_of = getattr(desktop, "active_tab_url", None)
        if policy.tab_url is None and callable(url_of):
            policy.use_tab_url(url_of)
        self._emit, self._on_history = emit, on_history
        self.history: list[dict[str, Any]] = history if history is not None else []
        self.usage = usage or UsageTotals()
        self.tools = ToolRunner(self, desktop, policy, config.version_for, config.step_classifier)
        self.watchdog = Watchdog(config.watchdog)
        self.status: RunStatus | None = None  # None until the first run starts
        self._announced: tuple[str, str] | None = None
        self._running = False
        self._paused = False
        self._cancelled = False
        self._resume = asyncio.Event()
        self._inbox: list[str] = []
        self._answered = asyncio.Event()  # a user message arrived (the model asked a question)
        self._inflight: asyncio.Future[Any] | None = None
        self._price = price_for(config.model, config.prices)
        self._sent: dict[str, Any] = {}  # the last model request's manifest (agent.history.request_manifest)
        self._params: dict[str, Any] | None = None  # the request params last put in a manifest

    # ---- control -------------------------------------------------------------------------------
    def pause(self) -> None:
        self._paused = True
        self._resume.clear()

    def resume(self) -> None:
        self._paused = False
        self._resume.set()

    def cancel(self) -> None:
        self._cancelled = True
        self._resume.set()
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()

    def add_user_message(self, text: str) -> None:
        if not text.strip():
            raise ValueError("a user message needs some text")
        self._inbox.append(text)
        self._answered.set()

    @property
    def approvals(self) -> Approvals:
        return self.tools.approvals

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return self.tools.decisions

    def decide(self, approval_id: str, decision: Decision) -> None:
        self.approvals.decide(approval_id, decision)

    def restore_approval(self, tool_use_id: str, approval_id: str, *, reason: str = "") -> None:
        """Before ``run()`` on saved history: the call ``tool_use_id`` was awaiting a person's decision under
        ``approval_id``. The run waits for ``decide(approval_id, …)`` (already possible now) instead of
        answering it "outcome unknown"; no new ``approval_requested`` is emitted."""
        self.approvals.open(approval_id)
        self.tools.restored[tool_use_id] = (approval_id, reason)

    def add_rule(self, rule: Rule) -> None:
        self.policy.add_rule(rule)

    @property
    def running(self) -> bool:
        return self._running

    # ---- the run -------------------------------------------------------------------------------
    async def run(self, message: str | None = None) -> RunResult:
        """Run until the model is done, the run fails, or it is cancelled. Call again to continue."""
        if self._running:
            raise Conflict("this run is already running")
        self._running, self._cancelled, self._paused = True, False, False
        try:
            if message is not None:
                self.add_user_message(message)
            # Cut off by a restart: never re-run; only calls awaiting a person's decision go on.
            await self.tools.answer_pending(hist.RESTART_UNKNOWN, "unknown", keep=set(self.tools.restored))
            await self.set_status("running", "")
            if not await self.tools.settle_restored():
                return await self._lost()
            return await self._steps()
        except Interrupted:
            await self.tools.answer_pending(INTERRUPTED_PENDING, "not_run")
            await self.checkpoint()
            return await self._finish("cancelled", "user", "cancelled by the user")
        finally:
            self._running = False

    async def _steps(self) -> RunResult:
        while True:
            await self.gate()
            await self._take_inbox()
            over = budget_exceeded(self.usage, self.config.max_steps, self.config.max_cost_usd)
            if over is not None:
                await self.event("error", {"message": over[1], "kind": over[0]})
                return await self._finish("failed", over[0], over[1])
            await self._watch()  # after the budgets: a spent budget ends the run, a watchdog only pauses it
            await self._take_inbox()  # a hint sent while paused
            if not self.history or self.history[-1].get("role") != "user":
                return await self._finish("succeeded", "end_turn", "done")  # nothing new to answer
            try:
                reply = await self.interruptible(self._call_model())
            except ModelAuthError as exc:
                await self.event("error", {"message": exc.message, "kind": "auth"})
                return await self._finish("failed", "auth", exc.message)
            except ModelUnavailable as exc:
                await self.event("error", {"message": exc.message, "kind": "model_unavailable"})
                self.pause()
                await self.set_status("paused", "model_unavailable", exc.message)
                continue
            self.history.append(reply.message())
            await self.checkpoint()
            await self._account(reply)
            await self._narrate(reply)
            uses = [b for b in reply.content if b["type"] == "tool_use"]
            if not uses:
                if self._inbox:
                    continue
                if reply.stop_reason == "question":
                    await self._await_answer()
                    continue
                if reply.stop_reason == "refusal":
                    return await self._finish("failed", "refusal", "the model declined the task")
                return await self._finish("succeeded", reply.stop_reason or "end_turn", "done")
            if not await self._run_calls(reply, uses):
                return await self._lost()

    async def _run_calls(self, reply: Reply, uses: list[dict[str, Any]]) -> bool:
        """The reply's tool calls in order; False when the desktop is gone."""
        halted: dict[str, str] = {}  # tool_use id -> why it must not run
        for index, use in enumerate(uses):
            await self.gate()
            use_id = str(use["id"])
            if use_id in halted:
                block = await self.tools.not_run(use, halted[use_id])
            else:
                outcome = await self.tools.step(use, reply.malformed.get(use_id), final=index == len(uses) - 1)
                if outcome is None:
                    return False
                block = outcome.block
                if outcome.halt:
                    later = [str(u["id"]) for u in uses[index + 1:]]
                    group = set(later) if outcome.whole_turn else set(reply.group_of(use_id))
                    halted.update({u: outcome.halt for u in later if u in group})
            hist.add_tool_result(self.history, block)
            await self.checkpoint()
        return True

    async def _watch(self) -> None:
        """Before the next model call: if the watchdog tripped, pause with its reason until the user resumes or
        sends a hint (which goes in with the next call), or cancels."""
        trip = self.watchdog.take()
        if trip is None:
            return
        await self.event("watchdog", {**trip.as_dict(), "step": self.step})
        await self._wait_for_user(trip.reason, trip.message)

    async def _await_answer(self) -> None:
        """The model asked the user something: paused until a message (or resume/cancel) arrives."""
        await self._wait_for_user("question", "the model asked a question: answer with a message")

    async def _wait_for_user(self, reason: str, message: str) -> None:
        """Paused with ``reason`` until a message arrives, or resume, or cancel."""
        # Cleared before the status goes out: whoever it reaches may answer, resume or cancel at once.
        self._answered.clear()
        self._resume.clear()
        await self.set_status("paused", reason, message)
        waiter = asyncio.ensure_future(self._answered.wait())
        resumed = asyncio.ensure_future(self._resume.wait())
        try:
            await asyncio.wait({waiter, resumed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            resumed.cancel()
        if self._cancelled:
            raise Interrupted
        await self.set_status("running", "")

    async def _call_model(self) -> Reply:
        hist.prune_images(self.history, self.config.keep_screenshots, self.config.removal_chunk)
        self._sent = hist.request_manifest(self.history)  # goes out with the call's usage event
        if self.client.provider == "anthropic":  # the rest of the request, fixed for a run: sent when it changes
            params = {k: v for k, v in self.config.request_params([]).items() if k != "messages"}
            if params != self._params:
                self._sent["params"] = self._params = params

        async def on_retry(info: RetryInfo) -> None:
            await self.event("retrying", info.as_dict())

        client = self.client
        return await with_retries(lambda: client.complete(self.history, self.config), self.config.retry, on_retry,
                                  classify=client.classify)

    async def _account(self, reply: Reply) -> None:
        usage = CallUsage.from_api(reply.usage)
        cost = usage.cost(self._price)
        self.usage.add(usage, cost)
        await self.event("usage", {"step": self.usage.steps, "model": reply.model or self.config.model,
                                    **usage.as_dict(), "cost_usd": round(cost, 6), "total": self.usage.as_dict(),
                                    "request": self._sent})

    async def _narrate(self, reply: Reply) -> None:
        step = self.usage.steps
        for block in reply.content:
            if block["type"] == "text" and block["text"].strip():
                await self.event("assistant_text", {"text": block["text"], "step": step})
            elif block["type"] == "thinking":
                await self.event("thinking", {"text": block["thinking"], "step": step})
            elif block["type"] == "redacted_thinking":
                await self.event("thinking", {"text": "", "redacted": True, "step": step})

    # ---- plumbing (also what ToolRunner reaches through, see agent.actions.RunControl) -------------
    @property
    def step(self) -> int:
        return self.usage.steps

    async def interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._cancelled:
            coro.close()
            raise Interrupted(started=False)
        task = asyncio.ensure_future(coro)
        self._inflight = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._cancelled and (current is None or not current.cancelling()):
                raise Interrupted from None
            raise
        finally:
            self._inflight = None

    async def gate(self) -> None:
        if self._cancelled:
            raise Interrupted
        if self._paused:
            if self.status != "paused":
                await self.set_status("paused", "user")
            await self._resume.wait()
            if self._cancelled:
                raise Interrupted
            await self.set_status("running", "")

    async def _take_inbox(self) -> None:
        while self._inbox:
            text = self._inbox.pop(0)
            if self.history and self.history[-1].get("role") == "assistant" and hist.pending_tool_uses(self.history):
                await self.tools.answer_pending(INTERRUPTED_PENDING, "not_run")
            hist.add_user_text(self.history, text)
            await self.event("user_message", {"text": text})
        await self.checkpoint()

    async def _lost(self) -> RunResult:
        await self.tools.answer_pending("the desktop was lost", "not_run")
        await self.checkpoint()
        return await self._finish("failed", "desktop_lost", "the desktop was lost")

    async def _finish(self, status: RunStatus, reason: str, message: str) -> RunResult:
        await self.set_status(status, reason, message)
        last = next((m for m in reversed(self.history) if m.get("role") == "assistant"), None)
        text = "\n".join(b["text"] for b in (last or {}).get("content", []) if b.get("type") == "text")
        return RunResult(status, reason, message, text.strip(), self.usage.as_dict())

    async def set_status(self, status: RunStatus, reason: str, message: str = "") -> None:
        if self._announced == (status, reason):
            return
        self.status, self._announced = status, (status, reason)
        await self.event("status", {"status": status, "reason": reason, "message": message})

    async def checkpoint(self) -> None:
        if self._on_history is not None:
            await self._on_history(self.history)

    async def event(self, kind: EventType, data: dict[str, Any], *, image: bytes | None = None,
                     media_type: str = "image/png") -> None:
        await self.emit(Event(kind, data, image=image, image_media_type=media_type))

    async def emit(self, event: Event) -> None:
        self.watchdog.observe(event)
        await self._emit(event)
