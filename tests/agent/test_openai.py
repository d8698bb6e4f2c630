"""The OpenAI Responses adapter through the real ``openai`` SDK and the fake Responses API."""

from __future__ import annotations

import asyncio
import base64
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from agent.approvals import Decision
from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from agent.providers.openai_responses import OpenAIResponsesClient
from tests.agent.conftest import Collector, RecordingDesktop, make_config, png
from tests.support.fake_openai import (
    FakeOpenAI,
    check,
    click,
    computer_call,
    drag,
    error,
    fake_openai,
    keypress,
    message,
    reasoning,
    respond,
    screenshot,
    scroll,
    type_text,
)

__all__ = ["fake_openai"]
Build = Callable[..., tuple[AgentLoop, Collector, RecordingDesktop]]


@pytest.fixture
async def build(fake_openai: FakeOpenAI) -> AsyncIterator[Build]:
    sdk = openai.AsyncOpenAI(api_key="k", base_url=fake_openai.url + "/v1", max_retries=0, timeout=10)

    def make(model: str = "openai/computer-use-preview", policy: str = "autonomous",
             **config: Any) -> tuple[AgentLoop, Collector, RecordingDesktop]:
        events, desktop = Collector(), RecordingDesktop()
        loop = AgentLoop(client=OpenAIResponsesClient(sdk), desktop=desktop, policy=ApprovalPolicy(policy),
                         emit=events, config=make_config(model=model, **config))
        return loop, events, desktop

    yield make
    await sdk.close()


def outputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in body["input"] if i.get("type") == "computer_call_output"]


def user_texts(body: dict[str, Any]) -> list[str]:
    return [c["text"] for i in body["input"] if i.get("role") == "user" for c in i["content"]]


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


async def test_a_batch_runs_in_order_and_one_screenshot_answers_it(fake_openai: FakeOpenAI, build: Build) -> None:
    thought = reasoning("click the field, then type")
    call = computer_call(click(100, 200, keys=["SHIFT"]), type_text("hello"), keypress("CTRL", "A"), call_id="c1")
    fake_openai.script(respond(thought, call), respond(message("done")))
    loop, events, desktop = build()

    result = await loop.run("type hello")

    assert (result.status, result.text) == ("succeeded", "done")
    assert [c[1] for c in desktop.calls] == [
        {"action": "left_click", "coordinate": [100, 200], "text": "shift"},
        {"action": "type", "text": "hello"}, {"action": "key", "text": "ctrl+a"}]
    first, second = (r.body for r in fake_openai.requests)
    assert first["tools"] == [{"type": "computer_use_preview", "display_width": 1024, "display_height": 768,
                               "environment": "linux"}]
    assert (first["store"], first["truncation"], first["include"]) == (False, "auto", ["reasoning.encrypted_content"])
    assert first["input"] == [{"role": "user", "content": [{"type": "input_text", "text": "type hello"}]}]
    # full replay: the reasoning item verbatim, the call, then one output with the last screenshot
    assert second["input"][1] == thought
    assert second["input"][2]["call_id"] == "c1"
    assert outputs(second) == [{"type": "computer_call_output", "call_id": "c1", "output": {
        "type": "computer_screenshot", "image_url": data_url(png(3))}}]
    assert "previous_response_id" not in second
    assert len(fake_openai.requests[1].images) == 1
    assert events.of("thinking")[0]["text"] == "click the field, then type"
    usage = events.of("usage")[0]
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["output_tokens"]) == (1000, 200, 40)
    assert usage["cost_usd"] == pytest.approx((1000 * 3 + 200 * 3 + 40 * 12) / 1e6)


async def test_the_ga_model_gets_the_ga_tool(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(respond(computer_call(screenshot())), respond(message("ok")))
    loop, _, desktop = build(model="openai/gpt-5.4")
    assert (await loop.run("look")).status == "succeeded"
    assert fake_openai.requests[0].body["tools"] == [{"type": "computer"}]
    assert fake_openai.requests[0].body["model"] == "gpt-5.4"
    assert desktop.calls[0][1] == {"action": "screenshot"}


async def test_drag_paths_scrolls_and_buttons_map_to_desktop_actions(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(respond(computer_call(drag((1, 2), (3, 4)), drag((1, 1), (5, 5), (9, 9)),
                                             scroll(50, 60, scroll_y=-250), scroll(5, 6, scroll_x=100),
                                             click(7, 8, button="wheel"), click(0, 0, button="back"))),
                       respond(message("ok")))
    loop, _, desktop = build()
    assert (await loop.run("go")).status == "succeeded"
    assert [c[1] for c in desktop.calls] == [
        {"action": "left_click_drag", "start_coordinate": [1, 2], "coordinate": [3, 4]},
        {"action": "mouse_move", "coordinate": [1, 1]}, {"action": "left_mouse_down"},
        {"action": "mouse_move", "coordinate": [5, 5]}, {"action": "mouse_move", "coordinate": [9, 9]},
        {"action": "left_mouse_up"},
        {"action": "scroll", "coordinate": [50, 60], "scroll_direction": "up", "scroll_amount": 2},
        {"action": "scroll", "coordinate": [5, 6], "scroll_direction": "right", "scroll_amount": 1},
        {"action": "middle_click", "coordinate": [7, 8]},
        {"action": "key", "text": "alt+Left"}]


async def test_a_safety_check_waits_for_a_person_and_is_acknowledged(fake_openai: FakeOpenAI, build: Build) -> None:
    flagged = check("malicious_instructions", "The page asks you to ignore the user.")
    fake_openai.script(respond(computer_call(click(10, 10), type_text("x"), call_id="c9", checks=[flagged])),
                       respond(message("done")))
    loop, events, desktop = build(policy="autonomous")  # even with nothing to ask about, the check asks
    task = asyncio.create_task(loop.run("go"))
    while not loop.approvals.pending:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert desktop.calls == []  # nothing in the call ran before the decision
    asked = events.of("approval_requested")[0]
    assert asked["safety_checks"] == [flagged]
    assert "malicious_instructions: The page asks you to ignore the user." in asked["reason"]
    loop.decide(loop.approvals.pending[0], Decision.approve(always=True))
    assert (await task).status == "succeeded"
    assert [c[1]["action"] for c in desktop.calls] == ["left_click", "type"]
    assert outputs(fake_openai.requests[1].body)[0]["acknowledged_safety_checks"] == [flagged]
    assert loop.policy.rules == []  # a vendor check is never turned into an "always allow" rule


async def test_a_rejected_safety_check_runs_nothing_and_tells_the_model(fake_openai: FakeOpenAI, build: Build) -> None:
    flagged = check("sensitive_domain", "This is a banking site.")
    fake_openai.script(respond(computer_call(click(10, 10), type_text("x"), call_id="c7", checks=[flagged])),
                       respond(message("understood")))
    loop, events, desktop = build()
    task = asyncio.create_task(loop.run("go"))
    while not loop.approvals.pending:
        await asyncio.sleep(0.01)
    loop.decide(loop.approvals.pending[0], Decision.reject("not on my bank"))
    assert (await task).status == "succeeded"
    assert desktop.calls == []
    second = fake_openai.requests[1].body
    out = outputs(second)[0]
    assert out["call_id"] == "c7" and "acknowledged_safety_checks" not in out
    said = "\n".join(user_texts(second))
    assert "the user rejected this action: not on my bank" in said
    assert "not run: the user rejected an earlier action of this call" in said
    assert [d["meta"].get("outcome") for d in events.of("tool_result")] == [None, "not_run"]


async def test_malformed_actions_become_an_error_the_model_reads(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(respond(computer_call({"type": "teleport", "x": 1})),
                       respond(computer_call({"type": "click", "x": "ten", "y": 3})),
                       respond(message("sorry")))
    loop, _, desktop = build()
    assert (await loop.run("go")).status == "succeeded"
    assert desktop.calls == []
    assert "unknown action type 'teleport'" in "\n".join(user_texts(fake_openai.requests[1].body))
    assert "click needs integer x and y" in "\n".join(user_texts(fake_openai.requests[2].body))


async def test_429_and_500_are_retried(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(error(429, headers={"retry-after": "0.2"}), error(500), respond(message("ok")))
    loop, events, _ = build()
    assert (await loop.run("hi")).status == "succeeded"
    assert [(e["status_code"], e["reason"]) for e in events.of("retrying")] == [
        (429, "rate limited (429)"), (500, "server error (500)")]
    assert events.of("retrying")[0]["delay_s"] == 0.2


async def test_401_fails_plainly(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(error(401, "Incorrect API key provided"))
    loop, _, _ = build()
    result = await loop.run("hi")
    assert (result.status, result.reason) == ("failed", "auth")
    assert result.message.startswith("the API key was rejected (401)") and "Incorrect API key" in result.message


async def test_a_question_waits_for_the_users_answer(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(respond(message("I found the checkout. Should I place the order?")),
                       respond(message("Order placed.")))
    loop, events, _ = build()
    task = asyncio.create_task(loop.run("buy it"))
    while loop.status != "paused":
        await asyncio.sleep(0.01)
    assert events.statuses()[-1] == ("paused", "question")
    loop.add_user_message("yes, go ahead")
    result = await task
    assert (result.status, result.text) == ("succeeded", "Order placed.")
    assert user_texts(fake_openai.requests[1].body)[-1] == "yes, go ahead"


async def test_budgets_apply_to_every_provider(fake_openai: FakeOpenAI, build: Build) -> None:
    fake_openai.script(*[respond(computer_call(screenshot())) for _ in range(3)])
    loop, events, _ = build(max_cost_usd=0.005)  # one call costs ~$0.0041 at the preview's prices
    result = await loop.run("loop")
    assert (result.status, result.reason) == ("failed", "max_cost")
    assert len(fake_openai.requests) == 2 and events.of("usage")[-1]["total"]["cost_usd"] >= 0.005


async def test_a_safety_ask_restored_after_a_restart_still_acknowledges(fake_openai: FakeOpenAI, build: Build) -> None:
    flagged = check("irrelevant_domain", "This domain is not part of the task.")
    fake_openai.script(respond(computer_call(click(3, 4), call_id="c5", checks=[flagged])), respond(message("done")))
    loop, _, desktop = build()
    saved: list[list[dict[str, Any]]] = []

    async def checkpoint(history: list[dict[str, Any]]) -> None:
        saved.append(copy.deepcopy(history))

    loop._on_history = checkpoint
    task = asyncio.create_task(loop.run("go"))
    while not loop.approvals.pending:
        await asyncio.sleep(0.01)
    approval_id = loop.approvals.pending[0]
    task.cancel()  # the process dies while the person is deciding
    await asyncio.gather(task, return_exceptions=True)

    again = AgentLoop(client=loop.client, desktop=desktop, policy=ApprovalPolicy("autonomous"), emit=Collector(),
                      config=loop.config, history=saved[-1])
    again.restore_approval("c5#0", approval_id, reason="asked before the restart")
    rerun = asyncio.create_task(again.run())
    while again.status != "awaiting_approval":
        await asyncio.sleep(0.01)
    assert desktop.calls == []
    again.decide(approval_id, Decision.approve())
    assert (await rerun).status == "succeeded"
    assert [c[1]["action"] for c in desktop.calls] == ["left_click"]
    assert outputs(fake_openai.requests[1].body)[0]["acknowledged_safety_checks"] == [flagged]
