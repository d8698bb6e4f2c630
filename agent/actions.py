"""One tool call, from the model's request to its result block: policy, approval, the desktop, interrupts.

A mixin of ``agent.loop.AgentLoop`` (which supplies the state and the plumbing declared below). Every
``tool_use`` gets exactly one result — in the history *and* as a ``tool_result`` event — including the
ones answered because of an interrupt (cancel, a follow-up message, a restart, a lost desktop).
Asks restored from saved history (``restore_approval``) wait under their stored approval id.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

from agent import history as hist
from agent.approvals import Approvals
from agent.config import LoopConfig
from agent.events import EventType, RunStatus
from agent.models import DESKTOP_TOOL
from agent.policy import ApprovalPolicy, Rule, ToolCall
from agent.usage import UsageTotals
from deskpilot.errors import DesktopLostError, ToolError
from desktop.tools.base import ToolResult

log = logging.getLogger(__name__)
T = TypeVar("T")
INTERRUPTED_RUNNING = "interrupted by the user while this action ran; its outcome is unknown — take a screenshot"
INTERRUPTED_PENDING = "not run: the user interrupted the run"


class Desktop(Protocol):
    async def tool(self, name: str, input: dict[str, Any], *, version: str = ...) -> ToolResult: ...


class Interrupted(Exception):
    def __init__(self, started: bool = True) -> None:
        super().__init__()
        self.started = started  # False: cancelled before the awaited work began


class ToolActions:
    history: list[dict[str, Any]]
    desktop: Desktop
    policy: ApprovalPolicy
    config: LoopConfig
    usage: UsageTotals
    approvals: Approvals
    decisions: list[dict[str, Any]]
    _restored: dict[str, tuple[str, str]]  # tool_use_id -> (approval_id, reason)

    # supplied by AgentLoop
    async def _interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        raise NotImplementedError

    async def _gate(self) -> None:
        raise NotImplementedError

    async def _set_status(self, status: RunStatus, reason: str, message: str = "") -> None:
        raise NotImplementedError

    async def _checkpoint(self) -> None:
        raise NotImplementedError

    async def _event(self, kind: EventType, data: dict[str, Any], *, image: bytes | None = None,
                     media_type: str = "image/png") -> None:
        raise NotImplementedError

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
        except Interrupted as exc:
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

    async def _answer_pending(self, why: str, outcome: str, keep: set[str] | None = None) -> None:
        """Answer every unanswered ``tool_use`` (but ``keep``) with an error, in the history and as an event."""
        for use in hist.pending_tool_uses(self.history):
            use_id = str(use["id"])
            if use_id not in (keep or set()):
                hist.add_tool_result(self.history, hist.error_result(use_id, why))
                await self._interrupted_result(use_id, str(use.get("name", "")), why, outcome)

    async def _interrupted_result(self, use_id: str, name: str, why: str, outcome: str) -> None:
        await self._event("tool_result", {"id": use_id, "tool": name, "output": "", "error": why, "system": "",
                                          "is_error": True, "step": self.usage.steps, "meta": {"outcome": outcome}})
