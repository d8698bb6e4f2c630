"""Every event the loop emits matches the typed payload ``agent.events.PAYLOADS`` declares for its type —
the contract the service publishes at /api/schema/events.json."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, get_args

import pytest
from pydantic import TypeAdapter, ValidationError

from agent import events
from agent.approvals import Decision
from agent.policy import ApprovalPolicy
from tests.agent.conftest import LoopFactory, RecordingDesktop
from tests.agent.test_control import TYPE_ENTER, run_until_ask
from tests.support.fake_messages import FakeMessages, reply, text, thinking, tool_use


def check(kind: str, data: Mapping[str, Any]) -> None:
    """Valid for its type, and no key the type does not declare."""
    payload: Any = events.PAYLOADS[kind]
    TypeAdapter(payload).validate_python(dict(data), strict=True)
    declared = payload.__required_keys__ | payload.__optional_keys__
    assert set(data) <= declared, f"{kind}: undeclared {set(data) - declared}"


def test_every_event_type_has_a_payload() -> None:
    assert set(get_args(events.EventType)) == set(events.PAYLOADS)


async def test_a_run_emits_only_declared_payloads(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    fake_messages.script(
        reply(thinking("plan"), text("typing"), tool_use("computer", TYPE_ENTER, id="t1"),
              tool_use("computer", {"action": "fly"}, id="t2")),
        reply(text("done")))
    loop, collected = make_loop(RecordingDesktop(), policy=ApprovalPolicy("cautious"))
    task, approval_id = await run_until_ask(loop, "type it")
    loop.decide(approval_id, Decision.approve())
    assert (await asyncio.wait_for(task, 30)).status == "succeeded"
    kinds = {e.type for e in collected.events}
    assert {"status", "thinking", "assistant_text", "tool_call", "tool_result", "approval_requested",
            "approval_decided", "usage", "user_message"} <= kinds
    for event in collected.events:
        check(event.type, event.data)


def test_the_constructors_build_valid_events() -> None:
    result = events.unanswered_result("t1", "computer", "outcome unknown", "unknown", step=None)
    check(result.type, result.data)
    assert (result.data["is_error"], result.data["meta"]) == (True, {"outcome": "unknown"})
    ok = events.tool_result("t2", "bash", output="hi", step=3)
    check(ok.type, ok.data)
    assert ok.data["is_error"] is False
    check("status", events.status("taken_over", "user").data)


@pytest.mark.parametrize("kind, data", [
    ("status", {"status": "asleep", "reason": ""}),
    ("tool_result", {"id": "t1", "tool": "bash", "output": "", "error": "", "system": "", "is_error": "no",
                     "step": 1, "meta": {}}),
    ("usage", {"step": 1}),
])
def test_a_wrong_payload_is_caught(kind: str, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        check(kind, data)
