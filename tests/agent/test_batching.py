"""Several tool calls in one reply (Claude's parallel tool_use): run in order, one screenshot back."""

from __future__ import annotations

from typing import Any

from agent.actions import BATCH_OMITTED
from tests.agent.conftest import LoopFactory, RecordingDesktop
from tests.support.fake_messages import FakeMessages, reply, text, tool_use


def results(body: dict[str, Any]) -> list[dict[str, Any]]:
    last = body["messages"][-1]
    return [b for b in last["content"] if b["type"] == "tool_result"]


async def test_parallel_calls_run_in_order_and_only_the_last_returns_a_screenshot(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    calls = [tool_use("computer", {"action": "left_click", "coordinate": [10, 10]}, id="a"),
             tool_use("computer", {"action": "type", "text": "hello"}, id="b"),
             tool_use("computer", {"action": "key", "text": "Tab"}, id="c")]
    fake_messages.script(reply(*calls), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    assert (await loop.run("fill the form")).status == "succeeded"

    assert [c[1]["action"] for c in desktop.calls] == ["left_click", "type", "key"]
    sent = results(fake_messages.requests[1].body)
    assert [b["tool_use_id"] for b in sent] == ["a", "b", "c"]
    assert [[c["type"] for c in b["content"]] for b in sent] == [["text"], ["text"], ["text", "image"]]
    assert sent[0]["content"][0]["text"] == f"did left_click\n{BATCH_OMITTED}"
    assert len(fake_messages.requests[1].images) == 1
    # the timeline still shows every screenshot
    assert [bool(e.image) for e in events.events if e.type == "tool_result"] == [True, True, True]


async def test_a_failing_call_stops_the_rest_of_the_turn(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    calls = [tool_use("computer", {"action": "fly"}, id="a"),
             tool_use("computer", {"action": "type", "text": "hello"}, id="b")]
    fake_messages.script(reply(*calls), reply(text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop)

    assert (await loop.run("go")).status == "succeeded"

    assert [c[1]["action"] for c in desktop.calls] == ["fly"]
    sent = results(fake_messages.requests[1].body)
    assert sent[0]["is_error"]
    assert sent[1]["content"] == [{"type": "text", "text": "not run: an earlier action of this turn failed"}]
    assert [d["meta"].get("outcome") for d in events.of("tool_result")] == [None, "not_run"]
