"""One tool call, from the model's request to its result block: policy, vendor safety checks, approval,
the desktop, interrupts.

``ToolRunner`` is the loop's collaborator for tool calls; it reaches back into the run only through the
``RunControl`` protocol (events, status, the interrupt gate, checkpoints). Every ``tool_use`` gets exactly one
result — in the history *and* as a ``tool_result`` event — including the ones answered because of an
interrupt (cancel, a follow-up message, a restart, a lost desktop). Asks restored from saved history
(``restore_approval``) wait under their stored approval id.

A vendor safety check (OpenAI ``pending_safety_checks``, Gemini ``require_confirmation``) always makes the
call an ask, whatever the preset or rules say (a deny still denies): nothing runs before a person approves,
and the approved checks are recorded on the result (``acknowledged_safety_checks``) for the adapter to send.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from agent import history as hist
from agent.approvals import Approvals
from agent.classifier import StepClassifier, StepContext, classify, recent_text, task_of
from agent.events import Event, EventType, RunStatus, ToolOutcome, tool_result, unanswered_result
from agent.models import DESKTOP_TOOL
from agent.policy import ApprovalPolicy, PolicyDecision, Rule, ToolCall
from agent.providers.base import ACKNOWLEDGED, SafetyCheck
from agent.untrusted import UNTRUSTED_TOOLS, mark
from deskpilot.errors import DesktopLostError, ToolError
from desktop.tools.base import ToolResult

log = logging.getLogger(__name__)
T = TypeVar("T")
INTERRUPTED_RUNNING = "interrupted by the user while this action ran; its outcome is unknown — take a screenshot"
INTERRUPTED_PENDING = "not run: the user interrupted the run"
BATCH_OMITTED = "(screenshot omitted: more actions of this turn follow; the last one returns the screen)"
KEEPS_IMAGE = {"zoom", "screenshot"}  # their image is the point of the call, even mid-batch


class Desktop(Protocol):
    async def tool(self, name: str, input: dict[str, Any], *, version: str = ...) -> ToolResult: ...


class Interrupted(Exception):
    def __init__(self, started: bool = True) -> None:
        super().__init__()
        self.started = started  # False: cancelled before the awaited work began


class RunControl(Protocol):
    """What a tool call needs from the run around it (``agent.loop.AgentLoop``)."""

    history: list[dict[str, Any]]

    @property
    def step(self) -> int: ...

    async def interruptible(self, coro: Coroutine[Any, Any, T]) -> T: ...

    async def gate(self) -> None: ...

    async def set_status(self, status: RunStatus, reason: str, message: str = "") -> None: ...

    async def checkpoint(self) -> None: ...

    async def event(self, kind: EventType, data: dict[str, Any], *, image: bytes | None = None,
                    media_type: str = "image/png") -> None: ...

    async def emit(self, event: Event) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """A call's result block; ``halt``: why the calls after it must not run ("" = they may)."""

    block: dict[str, Any]
    halt: str = ""
    whole_turn: bool = False  # halt every later call of the turn, not only those of the same vendor call


def _safety_reason(checks: list[SafetyCheck]) -> str:
    return "the model's provider flagged this action: " + "; ".join(f"{c.code}: {c.message}" for c in checks)


class ToolRunner:
    def __init__(self, run: RunControl, desktop: Desktop, policy: ApprovalPolicy,
                 version_for: Callable[[str], str], classifier: StepClassifier | None = None) -> None:
        self.run, self.desktop, self.policy, self._version_for = run, desktop, policy, version_for
        self.classifier = classifier
        self.approvals = Approvals()
        self.decisions: list[dict[str, Any]] = []
        self.restored: dict[str, tuple[str, str]] = {}  # tool_use_id -> (approval_id, reason)

    async def step(self, use: dict[str, Any], malformed: str | None, *, final: bool = True) -> Outcome | None:
        """Run one call; None when the desktop is gone. ``final=False``: more calls of this turn follow, so its
        screenshot is left out of the history (the last call's settled screenshot shows the screen)."""
        use_id, name, given = str(use["id"]), str(use["name"]), use.get("input")
        safety = SafetyCheck.all_from(use)
        await self.run.event("tool_call", {"id": use_id, "tool": name, "input": given, "step": self.run.step})
        tool = DESKTOP_TOOL.get(name)
        if malformed or tool is None or not isinstance(given, dict):
            why = malformed or (f"unknown tool {name!r}" if tool is None else "tool input must be a JSON object")
            return Outcome(await self.result(use_id, name, ToolResult(error=why)))
        call = ToolCall(tool, given)
        verdict = await self.policy.check(call)
        if verdict.effect == "allow" and self.classifier is not None:
            verdict = await self._second_opinion(call, verdict)
        record: dict[str, Any] = {"tool_use_id": use_id, "by": "policy", "reason": verdict.reason,
                                  "rule": verdict.rule.to_dict() if verdict.rule else None}
        if verdict.effect == "deny":
            await self._decided({**record, "decision": "deny"})
            denied = ToolResult(error=f"denied by the approval policy: {verdict.reason}")
            return Outcome(await self.result(use_id, name, denied), halt="an earlier action of this call was denied")
        if verdict.effect == "allow" and not safety:
            await self._decided({**record, "decision": "allow"})
            return await self._run_tool(use_id, name, tool, given, final=final)
        reason = _safety_reason(safety) if safety else verdict.reason
        approval_id = self.approvals.open()
        data: dict[str, Any] = {"approval_id": approval_id, "tool_use_id": use_id, "tool": name, "input": given,
                                "reason": reason}
        if safety:
            data["safety_checks"] = [c.as_dict() for c in safety]
        await self.run.event("approval_requested", data)
        return await self.after_ask(use_id, name, tool, given, approval_id, reason, safety, final=final)

    async def _second_opinion(self, call: ToolCall, verdict: PolicyDecision) -> PolicyDecision:
        """The step classifier may turn the policy's allow into an ask (never the other way)."""
        assert self.classifier is not None
        title, url = await self.policy.where()
        history = self.run.history
        flagged = await classify(self.classifier, StepContext(call.tool, call.input, task_of(history),
                                                              recent_text(history), url, title))
        if flagged.effect == "ask":
            return PolicyDecision("ask", f"the step classifier flagged this action: {flagged.reason or 'no reason'}")
        return verdict

    async def after_ask(self, use_id: str, name: str, tool: str, given: dict[str, Any], approval_id: str,
                        reason: str, safety: list[SafetyCheck] | None = None, *,
                        final: bool = True) -> Outcome | None:
        """Wait for the person's decision (unless it is already in), record it, then act on it."""
        waiting = approval_id in self.approvals.pending
        if waiting:
            await self.run.set_status("awaiting_approval", "approval", reason)
        try:
            decision = await self.run.interruptible(self.approvals.wait(approval_id))
        except Interrupted:  # cancelled, maybe before the wait even started: nobody waits for this ask now
            self.approvals.close(approval_id)
            raise
        if waiting:
            await self.run.set_status("running", "")
        rule = None
        if decision.always and decision.kind == "approve" and not safety:  # a vendor check is per call
            rule = Rule.exactly(ToolCall(tool, given))
            self.policy.add_rule(rule)
        await self._decided({"approval_id": approval_id, "tool_use_id": use_id, "by": "user",
                             "decision": decision.kind, "note": decision.note, "input": decision.input,
                             "reason": reason, "rule": rule.to_dict() if rule else None})
        if decision.kind == "reject":
            why = "the user rejected this action" + (f": {decision.note}" if decision.note else "")
            return Outcome(await self.result(use_id, name, ToolResult(error=why)),
                           halt="not run: the user rejected an earlier action of this call")
        note = ""
        if decision.kind == "edit" and decision.input is not None:
            given = decision.input
            note = f"The user edited this action's input to {json.dumps(given)}. {decision.note}".strip()
        return await self._run_tool(use_id, name, tool, given, note, final=final, acknowledged=safety or [])

    async def _run_tool(self, use_id: str, name: str, tool: str, given: dict[str, Any], note: str = "", *,
                        final: bool = True, acknowledged: list[SafetyCheck] | None = None) -> Outcome | None:
        try:
            result = await self.run.interruptible(self.desktop.tool(tool, given, version=self._version_for(tool)))
        except Interrupted as exc:
            # The history and the timeline both get the call's outcome, once (run() answers only the rest).
            outcome: ToolOutcome = "unknown" if exc.started else "not_run"
            why = INTERRUPTED_RUNNING if exc.started else INTERRUPTED_PENDING
            hist.add_tool_result(self.run.history, hist.error_result(use_id, why))
            await self.interrupted_result(use_id, name, why, outcome)
            raise
        except DesktopLostError as exc:
            await self.run.event("error", {"message": f"the desktop was lost: {exc.message}", "kind": "desktop_lost"})
            return None
        except ToolError as exc:
            result = ToolResult(error=exc.message)
        except Exception as exc:  # a broken tool must not kill the run; the model is told plainly
            log.exception("tool %s failed", tool)
            result = ToolResult(error=f"internal error: {type(exc).__name__}")
        shown = final or result.is_error or given.get("action") in KEEPS_IMAGE
        block = await self.result(use_id, name, result, note, show_image=shown)
        if acknowledged:
            block[ACKNOWLEDGED] = [c.as_dict() for c in acknowledged]
        if result.is_error and not final:
            return Outcome(block, halt="not run: an earlier action of this turn failed", whole_turn=True)
        return Outcome(block)

    async def settle_restored(self) -> bool:
        """Restored asks (see ``restore_approval``) wait for their decision; False if the desktop was lost."""
        restored, self.restored = self.restored, {}
        try:
            for use in hist.pending_tool_uses(self.run.history):
                entry = restored.pop(str(use["id"]), None)
                if entry is None:
                    continue
                use_id, name, given = str(use["id"]), str(use.get("name", "")), use.get("input")
                tool = DESKTOP_TOOL.get(name)
                if tool is None or not isinstance(given, dict):  # cannot have been asked about; answer plainly
                    self.approvals.close(entry[0])
                    block = await self.result(use_id, name, ToolResult(error=f"cannot run {name!r} with {given!r}"))
                else:
                    await self.run.gate()
                    maybe = await self.after_ask(use_id, name, tool, given, *entry, SafetyCheck.all_from(use))
                    if maybe is None:
                        return False
                    block = maybe.block
                hist.add_tool_result(self.run.history, block)
                await self.run.checkpoint()
        finally:
            for approval_id, _reason in restored.values():  # their calls are answered; nobody will wait
                self.approvals.close(approval_id)
        return True

    async def _decided(self, record: dict[str, Any]) -> None:
        self.decisions.append(record)
        await self.run.event("approval_decided", record)

    async def result(self, use_id: str, name: str, result: ToolResult, note: str = "", *,
                     show_image: bool = True) -> dict[str, Any]:
        """The ``tool_result`` block for the history, and its event (which always keeps the screenshot)."""
        omitted = BATCH_OMITTED if result.image is not None and not show_image else ""
        said = result.error or result.output
        tool = DESKTOP_TOOL.get(name, name)
        if tool in UNTRUSTED_TOOLS and not result.error:  # a program's output, a file's text: data, not orders
            said = mark(said, tool)
        text = "\n".join(p for p in (note, f"<system>{result.system}</system>" if result.system else "",
                                     said, omitted) if p)
        content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        if result.image is not None and show_image:
            content.append({"type": "image", "source": {"type": "base64", "media_type": result.image_media_type,
                                                        "data": base64.b64encode(result.image).decode()}})
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": use_id, "content": content}
        if result.is_error:
            block["is_error"] = True
        await self.run.emit(tool_result(use_id, name, output=result.output, error=result.error,
                                        system=result.system, step=self.run.step, meta=result.meta,
                                        image=result.image, image_media_type=result.image_media_type))
        return block

    async def not_run(self, use: dict[str, Any], why: str) -> dict[str, Any]:
        """Answer a call that must not run (an earlier one of its batch was rejected or failed)."""
        use_id = str(use["id"])
        await self.run.event("tool_call", {"id": use_id, "tool": use.get("name"), "input": use.get("input"),
                                           "step": self.run.step})
        await self.interrupted_result(use_id, str(use.get("name", "")), why, "not_run")
        return hist.error_result(use_id, why)

    async def answer_pending(self, why: str, outcome: ToolOutcome, keep: set[str] | None = None) -> None:
        """Answer every unanswered ``tool_use`` (but ``keep``) with an error, in the history and as an event."""
        for use in hist.answer_pending(self.run.history, why, keep or ()):
            await self.interrupted_result(str(use["id"]), str(use.get("name", "")), why, outcome)

    async def interrupted_result(self, use_id: str, name: str, why: str, outcome: ToolOutcome) -> None:
        await self.run.emit(unanswered_result(use_id, name, why, outcome, self.run.step))
