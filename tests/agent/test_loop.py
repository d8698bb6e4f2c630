"""The loop over the real SDK and the fake Messages API: images, cache breakpoints, prefixes, thinking."""

from __future__ import annotations

import json
from typing import Any

from agent.history import PLACEHOLDER
from agent.watchdog import WatchdogConfig
from tests.agent.conftest import LoopFactory, RecordingDesktop, png
from tests.support.fake_messages import FakeMessages, reply, text, thinking, tool_use
from tests.support.fake_messages import without_cache_control as strip_cache


def marked(node: Any) -> int:
    if isinstance(node, dict):
        return int("cache_control" in node) + sum(marked(v) for v in node.values())
    if isinstance(node, list):
        return sum(marked(v) for v in node)
    return 0


async def test_multi_step_run_sends_documented_images_breakpoints_and_stable_prefixes(
    fake_messages: FakeMessages, make_loop: LoopFactory
) -> None:
    steps = 8
    thoughts = [thinking(f"step {i}: I should look at the screen", signature=f"sig-{i}") for i in range(steps)]
    for i in range(steps):
        fake_messages.script(reply(thoughts[i], text(f"step {i}"), tool_use("computer", {"action": "screenshot"})))
    fake_messages.script(reply(thinking("all done", signature="sig-end"), text("done")))
    desktop = RecordingDesktop()
    loop, events = make_loop(desktop, watchdog=WatchdogConfig(reread_limit=0))  # eight looks in a row, on purpose

    result = await loop.run("look at the screen 8 times")

    assert (result.status, result.text) == ("succeeded", "done")
    assert len(desktop.calls) == steps
    bodies = [r.body for r in fake_messages.requests]
    assert len(bodies) == steps + 1
    # keep=5, chunk=3: T screenshots so far -> T - ceil((T-5)/3)*3 sent (documented in agent/history.py)
    assert [len(r.images) for r in fake_messages.requests] == [0, 1, 2, 3, 4, 5, 3, 4, 5]
    # the images sent are always the newest ones, in order
    for r in fake_messages.requests:
        n = len(r.images)
        taken = len(r.body["messages"]) // 2
        assert r.images == [png(k) for k in range(taken - n + 1, taken + 1)]
    # removed screenshots leave a placeholder, so the count survives a restart
    assert json.dumps(bodies[-1]).count(PLACEHOLDER) == 3

    for body in bodies:
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
        users = [m for m in body["messages"] if m["role"] == "user"]
        # the two newest user turns, and the one before the oldest screenshot sent (the anchor)
        expected = set(range(len(users))[-2:])
        oldest = next((k for k, m in enumerate(users) if '"type": "image"' in json.dumps(m)), None)
        if oldest:
            expected.add(oldest - 1)
        assert [k for k, m in enumerate(users) if "cache_control" in m["content"][-1]] == sorted(expected)
        assert marked(body) == 1 + len(expected) <= 4  # + the system prompt's; nothing else
        assert body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert all(r.headers["anthropic-beta"] == "computer-use-2025-11-24" for r in fake_messages.requests)
    assert bodies[0]["tools"][0]["type"] == "computer_20251124"

    # byte-identical prefix (cache markers aside) between removals; broken only where a chunk was removed
    broke = []
    for i in range(1, len(bodies)):
        prev = json.dumps(strip_cache([bodies[i - 1]["tools"], bodies[i - 1]["system"], bodies[i - 1]["messages"]]))
        cur = strip_cache([bodies[i]["tools"], bodies[i]["system"], bodies[i]["messages"]])
        prefix = json.dumps([cur[0], cur[1], cur[2][: len(bodies[i - 1]["messages"])]])
        if prefix != prev:
            broke.append(i)
    assert broke == [6]

    # thinking blocks go back verbatim, signatures included
    last = bodies[-1]["messages"]
    sent_thinking = [b for m in last if m["role"] == "assistant" for b in m["content"] if b["type"] == "thinking"]
    assert sent_thinking == thoughts
    assert [m["role"] for m in last] == ["user"] + ["assistant", "user"] * steps

    usage = events.of("usage")
    assert len(usage) == steps + 1
    assert usage[-1]["total"]["input_tokens"] == 1000 * (steps + 1)
    assert usage[-1]["total"]["cost_usd"] > 0
    assert len([e for e in events.events if e.type == "tool_result" and e.image]) == steps
    assert events.statuses()[0] == ("running", "")
    assert events.statuses()[-1][0] == "succeeded"


async def test_plain_json_responses_work_too(fake_messages: FakeMessages, make_loop: LoopFactory) -> None:
    thought = thinking("look first", signature="sig-json")
    fake_messages.script(reply(thought, tool_use("computer", {"action": "screenshot"}, id="t1")),
                         reply(text("done")))
    desktop = RecordingDesktop()
    loop, _ = make_loop(desktop, stream=False)
    result = await loop.run("look")
    assert (result.status, result.text) == ("succeeded", "done")
    assert "stream" not in fake_messages.requests[0].body
    assert fake_messages.requests[1].body["messages"][1]["content"][0] == thought
    assert len(desktop.calls) == 1
