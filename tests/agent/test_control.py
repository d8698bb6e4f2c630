"""Control from outside: approvals, cancel, budgets, follow-ups, malformed input, restart from history."""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
from typing import Any

import pytest

from agent.approvals import Approvals, Decision
from agent.history import RESTART_UNKNOWN
from agent.loop import INTERRUPTED_PENDING, INTERRUPTED_RUNNING, AgentLoop
from agent.policy import ApprovalPolicy, Rule
from deskpilot.errors import BadRequest, DesktopLostError, NotFound
from tests.agent.conftest import Collector, LoopFactory, RecordingDesktop
from tests.support.fake_messages import FakeMessages, reply, text, tool_use

TYPE_ENTER = {"action": "type", "text": "rm -rf ~\n"}


def results(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """tool_use_id -> tool_result block, across the request's messages."""
    return {b["tool_use_id"]: b for m in body["messages"] if m["role"] == "user" and isinstance(m["content"], list)
            for b in m["content"] if b.get("type") == "tool_result"}


def result_text(block: dict[str, Any]) -> str:
    return " ".join(c["text"] for c in block["content"] if c["type"] == "text")


def assert_valid(history: list[dict[str, Any]]) -> None:
    """Roles alternate and every tool_use is answered in the very next turn."""
    assert history[0]["role"] == "user"
    for a, b in itertools.pairwise(history):
        assert a["role"] != b["role"]
    for i, msg in enumerate(history):
        if msg["role"] == "assistant":
            uses = {b["id"] for b in msg["content"] if b["type"] == "tool_use"}
            if uses:
                answered = {b["tool_use_id"] for b in history[i + 1]["content"] if b.get("type") == "tool_result"}
                assert uses == answered


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "condition not reached"
        await asyncio.sleep(0.01)


async def run_until_ask(loop: AgentLoop, message: str) -> tuple[asyncio.Task[Any], str]:
    task = asyncio.create_task(loop.run(message))
    await wait_for(lambda: bool(loop.approvals.pending))
    return task, loop.approvals.pending[0]


async def test_ask_then_approve_runs_the_call(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1")), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop, policy=ApprovalPolicy("cautious"))
    task, approval_id = await run_until_ask(loop, "type it")
    assert loop.status == "awaiting_approval"
    assert desktop.calls == []
    loop.decide(approval_id, Decision.approve())
    assert (await task).status == "succeeded"
    assert desktop.calls == [("computer", TYPE_ENTER, "computer_20251124")]
    asked = events.of("approval_requested")[0]
    assert (asked["tool"], asked["input"], asked["reason"]) == (
        "computer", TYPE_ENTER, "typed text contains a line break (submits or runs something)")
    assert events.of("approval_decided")[0]["decision"] == "approve"
    assert ("awaiting_approval", "approval") in events.statuses()


async def test_reject_with_a_note_tells_the_model(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1")), reply(text("ok, I won't")))
    desktop = RecordingDesktop()
    loop, _events = make_loop(desktop, policy=ApprovalPolicy("cautious"))
    task, approval_id = await run_until_ask(loop, "type it")
    loop.decide(approval_id, Decision.reject("never delete my home"))
    assert (await task).status == "succeeded"
    assert desktop.calls == []
    block = results(fake_messages.requests[1].body)["t1"]
    assert block["is_error"] is True
    assert result_text(block) == "the user rejected this action: never delete my home"
    assert loop.decisions[-1]["decision"] == "reject"


async def test_edit_runs_the_corrected_input(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1")), reply(text("done")))
    desktop = RecordingDesktop()
    loop, _ = make_loop(desktop, policy=ApprovalPolicy("cautious"))
    task, approval_id = await run_until_ask(loop, "type it")
    fixed = {"action": "type", "text": "ls ~"}
    loop.decide(approval_id, Decision.edit(fixed))
    assert (await task).status == "succeeded"
    assert desktop.calls == [("computer", fixed, "computer_20251124")]
    block = results(fake_messages.requests[1].body)["t1"]
    assert "is_error" not in block
    assert result_text(block).startswith('The user edited this action\'s input to {"action": "type", "text": "ls ~"}')


async def test_deny_rule_tells_the_model_why(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("bash", {"command": "sudo reboot"}, id="t1")), reply(text("fine")))
    desktop = RecordingDesktop()
    policy = ApprovalPolicy("autonomous", [Rule("deny", tool="bash", text=r"\bsudo\b", reason="no sudo here")])
    loop, events = make_loop(desktop, policy=policy)
    assert (await loop.run("reboot")).status == "succeeded"
    assert desktop.calls == []
    assert result_text(results(fake_messages.requests[1].body)["t1"]) == "denied by the approval policy: no sudo here"
    decided = events.of("approval_decided")[0]
    assert (decided["decision"], decided["by"], decided["rule"]["text"]) == ("deny", "policy", r"\bsudo\b")


async def test_always_allow_adds_a_rule_for_the_rest_of_the_run(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1")),
                         reply(tool_use("computer", TYPE_ENTER, id="t2")), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop, policy=ApprovalPolicy("cautious"))
    task, approval_id = await run_until_ask(loop, "type it twice")
    loop.decide(approval_id, Decision.approve(always=True))
    assert (await task).status == "succeeded"
    assert len(desktop.calls) == 2
    assert len(events.of("approval_requested")) == 1
    assert [d["by"] for d in events.of("approval_decided")] == ["user", "policy"]


async def test_cancel_during_an_action_leaves_a_valid_history(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    two = [tool_use("computer", {"action": "left_click", "coordinate": [5, 5]}, id="t1"),
           tool_use("computer", {"action": "screenshot"}, id="t2")]
    fake_messages.script(reply(*two), reply(text("continuing")))
    desktop = RecordingDesktop(block=asyncio.Event())
    loop, events = make_loop(desktop)
    task = asyncio.create_task(loop.run("click"))
    await asyncio.wait_for(desktop.started.wait(), 10)
    loop.cancel()
    result = await asyncio.wait_for(task, 10)

    assert (result.status, result.reason) == ("cancelled", "user")
    assert len(desktop.calls) == 1
    assert_valid(loop.history)
    answers = {b["tool_use_id"]: result_text(b) for b in loop.history[-1]["content"]}
    assert answers == {"t1": INTERRUPTED_RUNNING, "t2": INTERRUPTED_PENDING}
    # the timeline shows each call's outcome exactly once, with the words the model gets
    shown = [(r["id"], r["tool"], r["error"], r["is_error"]) for r in events.of("tool_result")]
    assert shown == [("t1", "computer", INTERRUPTED_RUNNING, True), ("t2", "computer", INTERRUPTED_PENDING, True)]

    # a follow-up message continues the cancelled run, and the API accepts the history
    desktop.block = None
    result = await loop.run("please go on")
    assert (result.status, result.text) == ("succeeded", "continuing")
    last_user = fake_messages.requests[-1].body["messages"][-1]
    assert last_user["content"][-1]["text"] == "please go on"
    assert len(desktop.calls) == 1  # nothing was re-run
    assert events.statuses()[-1] == ("succeeded", "end_turn")


async def test_cancel_during_the_model_call(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(text("slow"), delay_s=5))
    loop, _ = make_loop()
    task = asyncio.create_task(loop.run("hi"))
    await wait_for(lambda: len(fake_messages.requests) == 1)
    loop.cancel()
    result = await asyncio.wait_for(task, 5)
    assert result.status == "cancelled"
    assert [m["role"] for m in loop.history] == ["user"]


async def test_cancel_while_awaiting_approval(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop, policy=ApprovalPolicy("cautious"))
    task, _approval = await run_until_ask(loop, "type")
    loop.cancel()
    assert (await asyncio.wait_for(task, 5)).status == "cancelled"
    assert desktop.calls == [] and loop.approvals.pending == []
    assert_valid(loop.history)
    assert [(r["id"], r["error"]) for r in events.of("tool_result")] == [("t1", INTERRUPTED_PENDING)]


async def test_pause_holds_at_the_next_step_and_resume_continues(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    fake_messages.script(reply(tool_use("computer", {"action": "screenshot"}, id="t1")), reply(text("done")))
    desktop = RecordingDesktop(block=asyncio.Event())
    loop, events = make_loop(desktop)
    task = asyncio.create_task(loop.run("look"))
    await asyncio.wait_for(desktop.started.wait(), 10)
    loop.pause()
    desktop.block.set()  # type: ignore[union-attr]
    await wait_for(lambda: loop.status == "paused")
    assert len(fake_messages.requests) == 1
    loop.add_user_message("also say hello")
    loop.resume()
    assert (await asyncio.wait_for(task, 10)).status == "succeeded"
    sent = fake_messages.requests[1].body["messages"][-1]["content"]
    assert [b["type"] for b in sent] == ["tool_result", "text"] and sent[1]["text"] == "also say hello"
    assert ("paused", "user") in events.statuses()
    assert events.of("user_message")[-1] == {"text": "also say hello"}


async def test_malformed_tool_input_becomes_an_error_result(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    fake_messages.script(reply(tool_use("computer", None, id="bad_json", raw_input='{"action": "left_cl'),
                               tool_use("computer", "not an object", id="not_obj"),
                               tool_use("teleport", {"to": "mars"}, id="unknown"),
                               tool_use("computer", {"action": "fly"}, id="bad_action")),
                         reply(text("sorry")))
    desktop = RecordingDesktop()
    loop, _ = make_loop(desktop)
    assert (await loop.run("go")).status == "succeeded"
    got = results(fake_messages.requests[1].body)
    assert all(b["is_error"] for b in got.values())
    assert result_text(got["bad_json"]).startswith("tool input is not valid JSON")
    assert result_text(got["not_obj"]) == "tool input must be a JSON object, got str"
    assert result_text(got["unknown"]) == "unknown tool 'teleport'"
    assert result_text(got["bad_action"]) == "Invalid action: fly"
    assert [c[1] for c in desktop.calls] == [{"action": "fly"}]  # only the well-formed one reached the desktop
    assert fake_messages.requests[1].body["messages"][1]["content"][0]["input"] == {}


async def test_max_steps_stops_cleanly(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(*[reply(tool_use("computer", {"action": "screenshot"})) for _ in range(3)])
    loop, _events = make_loop(max_steps=2)
    result = await loop.run("loop forever")
    assert (result.status, result.reason) == ("failed", "max_steps")
    assert result.message == "stopped: max_steps reached (2 of 2 model calls)"
    assert len(fake_messages.requests) == 2
    assert_valid(loop.history)


async def test_max_cost_stops_cleanly(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    usage = {"input_tokens": 100_000, "output_tokens": 1000}  # $0.525 per call at Opus 4.5 prices
    fake_messages.script(*[reply(tool_use("computer", {"action": "screenshot"}), usage=usage) for _ in range(5)])
    loop, events = make_loop(max_cost_usd=1.0)
    result = await loop.run("spend")
    assert (result.status, result.reason) == ("failed", "max_cost")
    assert len(fake_messages.requests) == 2
    assert events.of("usage")[-1]["total"]["cost_usd"] == 1.05


async def test_desktop_lost_fails_the_run(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(reply(tool_use("computer", {"action": "screenshot"}, id="t1")))
    loop, _ = make_loop(RecordingDesktop(fail_with=DesktopLostError("Xvfb died")))
    result = await loop.run("look")
    assert (result.status, result.reason) == ("failed", "desktop_lost")
    assert_valid(loop.history)


async def test_restart_from_saved_history_never_reruns_a_tool(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    fake_messages.script(reply(tool_use("computer", {"action": "left_click", "coordinate": [1, 1]}, id="t1"),
                               tool_use("computer", {"action": "screenshot"}, id="t2")))
    saved: list[list[dict[str, Any]]] = []
    desktop = RecordingDesktop(block=asyncio.Event())
    loop, _ = make_loop(desktop)

    async def checkpoint(history: list[dict[str, Any]]) -> None:
        saved.append(copy.deepcopy(history))

    loop._on_history = checkpoint
    task = asyncio.create_task(loop.run("click"))
    await asyncio.wait_for(desktop.started.wait(), 10)
    task.cancel()  # the process "dies" mid-action: the task is torn down, not interrupted politely
    await asyncio.gather(task, return_exceptions=True)

    fake_messages.script(reply(text("I will check")))
    fresh = RecordingDesktop()
    again, events = make_loop(fresh, history=saved[-1])
    result = await again.run()
    assert result.status == "succeeded"
    assert fresh.calls == []
    got = results(fake_messages.requests[-1].body)
    assert result_text(got["t1"]) == RESTART_UNKNOWN and result_text(got["t2"]) == RESTART_UNKNOWN
    shown = [(r["id"], r["error"], r["meta"]) for r in events.of("tool_result")]
    assert shown == [("t1", RESTART_UNKNOWN, {"outcome": "unknown"}), ("t2", RESTART_UNKNOWN, {"outcome": "unknown"})]
    assert_valid(again.history)


def test_an_edit_needs_an_object_and_unknown_approvals_are_not_found() -> None:
    with pytest.raises(BadRequest, match="corrected input as a JSON object"):
        Decision("edit", input=None)
    with pytest.raises(BadRequest, match="approve, reject or edit"):
        Decision("maybe")  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no pending approval ap_x"):
        Approvals().decide("ap_x", Decision.approve())


async def test_approval_ids_are_unique_across_waiting_rooms() -> None:
    ids = [Approvals().open() for _ in range(50)]  # a fresh room per "process": ids must still never repeat
    assert len(set(ids)) == 50 and all(re.fullmatch(r"ap_[0-9a-f]{16}", i) for i in ids)


async def crash_while_asking(fake_messages: FakeMessages, make_loop: LoopFactory) -> tuple[list[Any], str]:
    """A run asks about t1 (t2 comes after it); the process dies; returns the saved history and the ask's id."""
    fake_messages.script(reply(tool_use("computer", TYPE_ENTER, id="t1"),
                               tool_use("computer", {"action": "screenshot"}, id="t2")))
    saved: list[list[dict[str, Any]]] = []
    loop, _ = make_loop(RecordingDesktop(), policy=ApprovalPolicy("cautious"))

    async def checkpoint(history: list[dict[str, Any]]) -> None:
        saved.append(copy.deepcopy(history))

    loop._on_history = checkpoint
    task, approval_id = await run_until_ask(loop, "type it")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return saved[-1], approval_id


async def restored_after_crash(fake_messages: FakeMessages, make_loop: LoopFactory, *, reason: str = ""
                               ) -> tuple[AgentLoop, Collector, RecordingDesktop, str]:
    """``crash_while_asking``, then a fresh loop on the saved history with the ask about t1 handed back;
    returns it, its events, its desktop and the ask's id."""
    history, approval_id = await crash_while_asking(fake_messages, make_loop)
    desktop = RecordingDesktop()
    again, events = make_loop(desktop, policy=ApprovalPolicy("cautious"), history=history)
    again.restore_approval("t1", approval_id, reason=reason)
    return again, events, desktop, approval_id


async def test_a_restored_ask_waits_for_its_decision_under_the_same_id(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    again, events, fresh, approval_id = await restored_after_crash(fake_messages, make_loop,
                                                                   reason="asked before the restart")
    fake_messages.script(reply(text("typed")))
    task = asyncio.create_task(again.run())
    await wait_for(lambda: again.status == "awaiting_approval")
    assert again.approvals.pending == [approval_id] and fresh.calls == []
    again.decide(approval_id, Decision.approve())
    assert (await asyncio.wait_for(task, 10)).status == "succeeded"
    assert fresh.calls == [("computer", TYPE_ENTER, "computer_20251124")]  # the approved call, once
    assert events.of("approval_requested") == []  # the same question, not a new one
    decided = events.of("approval_decided")
    assert [(d["approval_id"], d["decision"], d["reason"]) for d in decided] == [
        (approval_id, "approve", "asked before the restart")]
    shown = {r["id"]: r for r in events.of("tool_result")}
    assert shown["t2"]["error"] == RESTART_UNKNOWN and shown["t1"]["output"] == "did type"
    assert len(events.of("tool_result")) == 2
    assert_valid(again.history)


async def test_a_decision_made_while_down_is_applied_at_once(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    again, events, fresh, approval_id = await restored_after_crash(fake_messages, make_loop)
    fake_messages.script(reply(text("not typed")))
    again.decide(approval_id, Decision.reject("changed my mind"))
    assert (await again.run()).status == "succeeded"
    assert fresh.calls == [] and ("awaiting_approval", "approval") not in events.statuses()
    got = results(fake_messages.requests[-1].body)
    assert result_text(got["t1"]) == "the user rejected this action: changed my mind"
    assert result_text(got["t2"]) == RESTART_UNKNOWN


async def test_cancel_while_a_restored_ask_waits(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    again, events, _, _ = await restored_after_crash(fake_messages, make_loop)
    task = asyncio.create_task(again.run())
    await wait_for(lambda: again.status == "awaiting_approval")
    again.cancel()
    assert (await asyncio.wait_for(task, 10)).status == "cancelled"
    assert again.approvals.pending == []
    assert [(r["id"], r["error"]) for r in events.of("tool_result")] == [
        ("t2", RESTART_UNKNOWN), ("t1", INTERRUPTED_PENDING)]
    assert_valid(again.history)
