"""The computer-use loop: model call → approvals → tool calls → repeat, controllable from outside.

Control (safe from any task on the same event loop): ``pause()`` holds the run at the next step
boundary, ``resume()`` continues (also after a ``model_unavailable`` pause), ``cancel()`` interrupts at
once — a model call in flight is dropped, every unanswered ``tool_use`` gets an error result, so the
history stays valid — and ``add_user_message()`` joins the next user turn (or, after the run ended,
the next ``run()``, which continues it). ``decide()`` answers an approval.

Budgets and auth errors end the run as ``failed`` with a clear reason; retries running out pause it.
A loop built from saved history answers tool calls with no recorded result as "outcome unknown"
instead of running them again.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anthropic

from agent import history as hist
from agent.approvals import Approvals, Decision
from agent.config import LoopConfig
from agent.events import Emit, Event, EventType, RunStatus
from agent.models import DESKTOP_TOOL
from agent.policy import ApprovalPolicy, Rule, ToolCall
from agent.retry import RetryInfo, with_retries
from agent.stream import Reply, call_json, call_stream
from agent.usage import CallUsage, UsageTotals, budget_exceeded, price_for
from deskpilot.errors import Conflict, DesktopLostError, ModelAuthError, ModelUnavailable, ToolError
from desktop.tools.base import ToolResult

log = logging.getLogger(__name__)
T = TypeVar("T")
INTERRUPTED_RUNNING = "interrupted by the user while this action ran; its outcome is unknown — take a screenshot"
INTERRUPTED_PENDING = "not run: the user interrupted the run"


class Desktop(Protocol):
    async def tool(self, name: str, input: dict[str, Any], *, version: str = ...) -> ToolResult: ...


class _Interrupted(Exception):
    def __init__(self, started: bool = True) -> None:
        super().__init__()
        self.started = started  # False: cancelled before the awaited work began


@dataclass(frozen=True, slots=True)
class RunResult:
    status: RunStatus
    reason: str  # a code: end_turn, max_steps, max_cost, auth, desktop_lost, user, refusal…
    message: str  # the same in plain words
    text: str  # the model's last words
    usage: dict[str, Any]


class AgentLoop:
    def __init__(self, *, client: anthropic.AsyncAnthropic, desktop: Desktop, policy: ApprovalPolicy,
                 emit: Emit, config: LoopConfig, history: list[dict[str, Any]] | None = None,
                 usage: UsageTotals | None = None,
                 on_history: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None) -> None:
        self.client, self.desktop, self.policy, self.config = client, desktop, policy, config
        # Window-title rules need the desktop's title; duck-typed, so any desktop with the method supplies it.
        title_of = getattr(desktop, "active_window_title", None)
        if policy.window_title is None and callable(title_of):
            policy.use_window_title(title_of)
        self._emit, self._on_history = emit, on_history
        self.history: list[dict[str, Any]] = history if history is not None else []
        self.usage = usage or UsageTotals()
        self.approvals = Approvals()
        self.decisions: list[dict[str, Any]] = []
        self.status: RunStatus | None = None  # None until the first run starts
        self._announced: tuple[str, str] | None = None
        self._running = False
        self._paused = False
        self._cancelled = False
        self._resume = asyncio.Event()
        self._inbox: list[str] = []
        self._restored: dict[str, tuple[str, str]] = {}  # tool_use_id -> (approval_id, reason)
        self._inflight: asyncio.Future[Any] | None = None
        self._price = price_for(config.model, config.prices)

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

    def decide(self, approval_id: str, decision: Decision) -> None:
        self.approvals.decide(approval_id, decision)

    def restore_approval(self, tool_use_id: str, approval_id: str, *, reason: str = "") -> None:
        """Before ``run()`` on saved history: the call ``tool_use_id`` was awaiting a person's decision under
        ``approval_id``. The run waits for ``decide(approval_id, …)`` (already possible now) instead of
        answering it "outcome unknown"; no new ``approval_requested`` is emitted."""
        self.approvals.open(approval_id)
        self._restored[tool_use_id] = (approval_id, reason)

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
            await self._answer_pending(hist.RESTART_UNKNOWN, "unknown", keep=set(self._restored))
            await self._set_status("running", "")
            if not await self._settle_restored():
                return await self._lost()
            return await self._steps()
        except _Interrupted:
            await self._answer_pending(INTERRUPTED_PENDING, "not_run")
            await self._checkpoint()
            return await self._finish("cancelled", "user", "cancelled by the user")
        finally:
            self._running = False

    async def _steps(self) -> RunResult:
        while True:
            await self._gate()
            await self._take_inbox()
            over = budget_exceeded(self.usage, self.config.max_steps, self.config.max_cost_usd)
            if over is not None:
                await self._event("error", {"message": over[1], "kind": over[0]})
                return await self._finish("failed", over[0], over[1])
            if not self.history or self.history[-1].get("role") != "user":
                return await self._finish("succeeded", "end_turn", "done")  # nothing new to answer
            try:
                reply = await self._interruptible(self._call_model())
            except ModelAuthError as exc:
                await self._event("error", {"message": exc.message, "kind": "auth"})
                return await self._finish("failed", "auth", exc.message)
            except ModelUnavailable as exc:
                await self._event("error", {"message": exc.message, "kind": "model_unavailable"})
                self.pause()
                await self._set_status("paused", "model_unavailable", exc.message)
                continue
            self.history.append(reply.message())
            await self._checkpoint()
            await self._account(reply)
            await self._narrate(reply)
            uses = [b for b in reply.content if b["type"] == "tool_use"]
            if not uses:
                if self._inbox:
                    continue
                if reply.stop_reason == "refusal":
                    return await self._finish("failed", "refusal", "the model declined the task")
                return await self._finish("succeeded", reply.stop_reason or "end_turn", "done")
            for use in uses:
                await self._gate()
                block = await self._tool_step(use, reply.malformed.get(use["id"]))
                if block is None:  # the desktop is gone
                    return await self._lost()
                hist.add_tool_result(self.history, block)
                await self._checkpoint()

    async def _call_model(self) -> Reply:
        hist.prune_images(self.history, self.config.keep_screenshots, self.config.removal_chunk)
        params = self.config.request_params(hist.with_cache_breakpoints(self.history))
        call = call_stream if self.config.stream else call_json

        async def on_retry(info: RetryInfo) -> None:
            await self._event("retrying", info.as_dict())

        return await with_retries(lambda: call(self.client, params), self.config.retry, on_retry)

    async def _account(self, reply: Reply) -> None:
        usage = CallUsage.from_api(reply.usage)
        cost = usage.cost(self._price)
        self.usage.add(usage, cost)
        await self._event("usage", {"step": self.usage.steps, "model": reply.model or self.config.model,
                                    **usage.as_dict(), "cost_usd": round(cost, 6), "total": self.usage.as_dict()})

    async def _narrate(self, reply: Reply) -> None:
        step = self.usage.steps
        for block in reply.content:
            if block["type"] == "text" and block["text"].strip():
                await self._event("assistant_text", {"text": block["text"], "step": step})
            elif block["type"] == "thinking":
                await self._event("thinking", {"text": block["thinking"], "step": step})
            elif block["type"] == "redacted_thinking":
                await self._event("thinking", {"text": "", "redacted": True, "step": step})

    # ---- one tool call -------------------------------------------------------------------------
    async def _tool_step(self, use: dict[str, Any], malformed: str | None) -> dict[str, Any] | None:
        use_id, name, given = str(use["id"]), str(use["name"]), use.get("input")
        await self._event("tool_call", {"id": use_id, "tool": name, "input": given, "step": self.usage.steps})
        tool = DESKTOP_TOOL.get(name)
        if malformed or tool is None or not isinstance(given, dict):
            why = malformed or (f"unknown tool {name!r}" if tool is None else "tool input must be a JSON object")
            return await self._result(use_id, name, ToolResult(error=why))
        call = ToolCall(tool, given)
        verdict = await self.policy.check(call)
        record: dict[str, Any] = {"tool_use_id": use_id, "by": "policy", "reason": verdict.reason,
                                  "rule": verdict.rule.to_dict() if verdict.rule else None}
        if verdict.effect == "deny":
            await self._decided({**record, "decision": "deny"})
            denied = ToolResult(error=f"denied by the approval policy: {verdict.reason}")
            return await self._result(use_id, name, denied)
        if verdict.effect == "allow":
            await self._decided({**record, "decision": "allow"})
            return await self._run_tool(use_id, name, tool, given)
        approval_id = self.approvals.open()
        await self._event("approval_requested", {"approval_id": approval_id, "tool_use_id": use_id,
                                                 "tool": name, "input": given, "reason": verdict.reason})
        return await self._after_ask(use_id, name, tool, given, approval_id, verdict.reason)

    async def _after_ask(self, use_id: str, name: str, tool: str, given: dict[str, Any], approval_id: str,
                         reason: str) -> dict[str, Any] | None:
        """Wait for the person's decision (unless it is already in), record it, then act on it."""
        waiting = approval_id in self.approvals.pending
        if waiting:
            await self._set_status("awaiting_approval", "approval", reason)
        decision = await self._interruptible(self.approvals.wait(approval_id))
        if waiting:
            await self._set_status("running", "")
        rule = None
        if decision.always and decision.kind == "approve":
            rule = Rule.exactly(ToolCall(tool, given))
            self.policy.add_rule(rule)
        await self._decided({"approval_id": approval_id, "tool_use_id": use_id, "by": "user",
                             "decision": decision.kind, "note": decision.note, "input": decision.input,
                             "reason": reason, "rule": rule.to_dict() if rule else None})
        if decision.kind == "reject":
            why = "the user rejected this action" + (f": {decision.note}" if decision.note else "")
            return await self._result(use_id, name, ToolResult(error=why))
        note = ""
        if decision.kind == "edit" and decision.input is not None:
            given = decision.input
            note = f"The user edited this action's input to {json.dumps(given)}. {decision.note}".strip()
        return await self._run_tool(use_id, name, tool, given, note)

    async def _run_tool(self, use_id: str, name: str, tool: str, given: dict[str, Any],
                        note: str = "") -> dict[str, Any] | None:
        try:
            result = await self._interruptible(self.desktop.tool(tool, given, version=self.config.version_for(tool)))
        except _Interrupted as exc:
            # The history and the timeline both get the call's outcome, once (run() answers only the rest).
            why, outcome = (INTERRUPTED_RUNNING, "unknown") if exc.started else (INTERRUPTED_PENDING, "not_run")
            hist.add_tool_result(self.history, hist.error_result(use_id, why))
            await self._interrupted_result(use_id, name, why, outcome)
            raise
        except DesktopLostError as exc:
            await self._event("error", {"message": f"the desktop was lost: {exc.message}", "kind": "desktop_lost"})
            return None
        except ToolError as exc:
            result = ToolResult(error=exc.message)
        except Exception as exc:  # a broken tool must not kill the run; the model is told plainly
            log.exception("tool %s failed", tool)
            result = ToolResult(error=f"internal error: {type(exc).__name__}")
        return await self._result(use_id, name, result, note)

    async def _settle_restored(self) -> bool:
        """Restored asks (see ``restore_approval``) wait for their decision; False if the desktop was lost."""
        restored, self._restored = self._restored, {}
        try:
            for use in hist.pending_tool_uses(self.history):
                entry = restored.pop(str(use["id"]), None)
                if entry is None:
                    continue
                use_id, name, given = str(use["id"]), str(use.get("name", "")), use.get("input")
                tool = DESKTOP_TOOL.get(name)
                if tool is None or not isinstance(given, dict):  # cannot have been asked about; answer plainly
                    self.approvals.close(entry[0])
                    block = await self._result(use_id, name, ToolResult(error=f"cannot run {name!r} with {given!r}"))
                else:
                    await self._gate()
                    maybe = await self._after_ask(use_id, name, tool, given, *entry)
                    if maybe is None:
                        return False
                    block = maybe
                hist.add_tool_result(self.history, block)
                await self._checkpoint()
        finally:
            for approval_id, _reason in restored.values():  # their calls are answered; nobody will wait
                self.approvals.close(approval_id)
        return True

    async def _decided(self, record: dict[str, Any]) -> None:
        self.decisions.append(record)
        await self._event("approval_decided", record)

    async def _result(self, use_id: str, name: str, result: ToolResult, note: str = "") -> dict[str, Any]:
        text = "\n".join(p for p in (note, f"<system>{result.system}</system>" if result.system else "",
                                     result.error or result.output) if p)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if result.image is not None:
            content.append({"type": "image", "source": {"type": "base64", "media_type": result.image_media_type,
                                                        "data": base64.b64encode(result.image).decode()}})
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": content}
        if result.is_error:
            block["is_error"] = True
        await self._event("tool_result", {"id": use_id, "tool": name, "output": result.output,
                                          "error": result.error, "system": result.system,
                                          "is_error": result.is_error, "step": self.usage.steps,
                                          "meta": result.meta}, image=result.image,
                          media_type=result.image_media_type)
        return block

    # ---- plumbing ------------------------------------------------------------------------------
    async def _interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._cancelled:
            coro.close()
            raise _Interrupted(started=False)
        task = asyncio.ensure_future(coro)
        self._inflight = task
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._cancelled and (current is None or not current.cancelling()):
                raise _Interrupted from None
            raise
        finally:
            self._inflight = None

    async def _gate(self) -> None:
        if self._cancelled:
            raise _Interrupted
        if self._paused:
            if self.status != "paused":
                await self._set_status("paused", "user")
            await self._resume.wait()
            if self._cancelled:
                raise _Interrupted
            await self._set_status("running", "")

    async def _take_inbox(self) -> None:
        while self._inbox:
            text = self._inbox.pop(0)
            if self.history and self.history[-1].get("role") == "assistant" and hist.pending_tool_uses(self.history):
                await self._answer_pending(INTERRUPTED_PENDING, "not_run")
            hist.add_user_text(self.history, text)
            await self._event("user_message", {"text": text})
        await self._checkpoint()

    async def _answer_pending(self, why: str, outcome: str, keep: set[str] | None = None) -> None:
        """Answer every unanswered ``tool_use`` (but ``keep``) with an error, in the history and as an event."""
        for use in hist.pending_tool_uses(self.history):
            use_id = str(use["id"])
            if use_id not in (keep or set()):
                hist.add_tool_result(self.history, hist.error_result(use_id, why))
                await self._interrupted_result(use_id, str(use.get("name", "")), why, outcome)

    async def _lost(self) -> RunResult:
        await self._answer_pending("the desktop was lost", "not_run")
        await self._checkpoint()
        return await self._finish("failed", "desktop_lost", "the desktop was lost")

    async def _interrupted_result(self, use_id: str, name: str, why: str, outcome: str) -> None:
        await self._event("tool_result", {"id": use_id, "tool": name, "output": "", "error": why, "system": "",
                                          "is_error": True, "step": self.usage.steps, "meta": {"outcome": outcome}})

    async def _finish(self, status: RunStatus, reason: str, message: str) -> RunResult:
        await self._set_status(status, reason, message)
        last = next((m for m in reversed(self.history) if m.get("role") == "assistant"), None)
        text = "\n".join(b["text"] for b in (last or {}).get("content", []) if b.get("type") == "text")
        return RunResult(status, reason, message, text.strip(), self.usage.as_dict())

    async def _set_status(self, status: RunStatus, reason: str, message: str = "") -> None:
        if self._announced == (status, reason):
            return
        self.status, self._announced = status, (status, reason)
        await self._event("status", {"status": status, "reason": reason, "message": message})

    async def _checkpoint(self) -> None:
        if self._on_history is not None:
            await self._on_history(self.history)

    async def _event(self, kind: EventType, data: dict[str, Any], *, image: bytes | None = None,
                     media_type: str = "image/png") -> None:
        await self._emit(Event(kind, data, image=image, image_media_type=media_type))
