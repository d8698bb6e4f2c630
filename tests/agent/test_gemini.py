"""The Gemini adapter through the real ``google-genai`` SDK and the fake generateContent API."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.approvals import Decision
from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from agent.providers.gemini import GeminiClient, Grid
from tests.agent.conftest import Collector, RecordingDesktop, make_config, png
from tests.support.fake_gemini import (
    FakeGemini,
    call,
    candidate,
    error,
    fake_gemini,
    function_responses,
    response_image,
    text,
    thought,
)

__all__ = ["fake_gemini"]
Build = Callable[..., tuple[AgentLoop, Collector, RecordingDesktop]]


@pytest.fixture
async def build(fake_gemini: FakeGemini) -> AsyncIterator[Build]:
    client = GeminiClient.create("k", fake_gemini.url, 10)

    def make(model: str = "gemini/gemini-2.5-computer-use-preview-10-2025", policy: str = "autonomous",
             **config: Any) -> tuple[AgentLoop, Collector, RecordingDesktop]:
        events, desktop = Collector(), RecordingDesktop()
        loop = AgentLoop(client=client, desktop=desktop, policy=ApprovalPolicy(policy), emit=events,
                         config=make_config(model=model, **config))
        return loop, events, desktop

    yield make
    await client.close()


@given(st.integers(0, 999), st.integers(0, 999))
def test_the_grid_maps_exactly_and_round_trips(gx: int, gy: int) -> None:
    grid = Grid(1366, 768)
    x, y = grid.to_pixels(gx, gy)
    # the pixel that contains the centre of the grid cell
    assert x * 1000 <= (2 * gx + 1) * 1366 // 2 < (x + 1) * 1000 or x == (2 * gx + 1) * 1366 // 2000
    assert x == (2 * gx + 1) * 1366 // 2000 and y == (2 * gy + 1) * 768 // 2000
    if 1366 >= 1000:  # the finer axis: every grid cell comes back as itself
        assert grid.to_grid(x, y)[0] == gx


def test_grid_edges() -> None:
    grid = Grid(1024, 768)
    assert grid.to_pixels(0, 0) == [0, 0]
    assert grid.to_pixels(1000, 1000) == [1023, 767]  # 1000 means the far edge: the last cell's pixel
    assert grid.to_pixels(500, 500) == [512, 384]


async def test_legacy_functions_map_to_desktop_actions(fake_gemini: FakeGemini, build: Build) -> None:
    fake_gemini.script(
        candidate(thought("find the box"), call("click_at", x=500, y=500, signature=b"\x00sig\xff")),
        candidate(call("type_text_at", x=100, y=200, text="deskpilot")),
        candidate(call("key_combination", keys="Control+Shift+T"), call("scroll_document", direction="down")),
        candidate(call("navigate", url="example.org/a"), call("go_back")),
        candidate(call("drag_and_drop", x=0, y=0, destination_x=999, destination_y=999)),
        candidate(text("done")))
    loop, events, desktop = build()
    result = await loop.run("search")
    assert (result.status, result.text) == ("succeeded", "done")
    assert [c[1] for c in desktop.calls] == [
        {"action": "left_click", "coordinate": [512, 384]},
        {"action": "left_click", "coordinate": [102, 153]}, {"action": "key", "text": "ctrl+a"},
        {"action": "key", "text": "BackSpace"}, {"action": "type", "text": "deskpilot\n"},
        {"action": "key", "text": "control+shift+T"},
        {"action": "scroll", "coordinate": [512, 384], "scroll_direction": "down", "scroll_amount": 5},
        {"action": "key", "text": "ctrl+l"}, {"action": "type", "text": "https://example.org/a\n"},
        {"action": "key", "text": "alt+Left"},
        {"action": "left_click_drag", "start_coordinate": [0, 0], "coordinate": [1023, 767]}]
    first, second = fake_gemini.requests[0].body, fake_gemini.requests[1].body
    assert first["tools"] == [{"computerUse": {"environment": "ENVIRONMENT_BROWSER"}}]
    # the model turn goes back verbatim, thought signature included
    sent = second["contents"][1]["parts"][1]["thoughtSignature"]  # the SDK sends bytes url-safe base64
    assert base64.urlsafe_b64decode(sent) == b"\x00sig\xff"
    answer = function_responses(fake_gemini.requests[1])
    assert [(a["name"], a["response"]) for a in answer] == [("click_at", {"url": "", "status": "ok"})]
    assert response_image(answer[0]) == png(1)
    # one function response per call, the screenshot after its last action
    third = function_responses(fake_gemini.requests[2])
    assert response_image(third[0]) == png(5)
    assert events.of("thinking")[0]["text"] == "find the box"
    usage = events.of("usage")[0]
    assert (usage["input_tokens"], usage["cache_read_tokens"], usage["output_tokens"]) == (1000, 500, 50)


async def test_newer_functions_and_the_desktop_environment(fake_gemini: FakeGemini, build: Build) -> None:
    fake_gemini.script(candidate(call("click", x=0, y=999, button="right"), call("hotkey", keys=["ctrl", "c"]),
                                 call("scroll", x=500, y=500, direction="up", amount=400),
                                 call("take_screenshot")),
                       candidate(text("ok")))
    loop, _, desktop = build(model="gemini/gemini-3.5-flash")
    assert (await loop.run("go")).status == "succeeded"
    assert fake_gemini.requests[0].body["tools"] == [{"computerUse": {"environment": "ENVIRONMENT_DESKTOP"}}]
    assert [c[1] for c in desktop.calls] == [
        {"action": "right_click", "coordinate": [0, 767]}, {"action": "key", "text": "ctrl+c"},
        {"action": "scroll", "coordinate": [512, 384], "scroll_direction": "up", "scroll_amount": 3},
        {"action": "screenshot"}]
    assert len(function_responses(fake_gemini.requests[1])) == 4


async def test_require_confirmation_waits_and_is_acknowledged_only_after_approval(
    fake_gemini: FakeGemini, build: Build
) -> None:
    fake_gemini.script(candidate(call("click_at", x=10, y=10, confirm="Accepting cookies on a banking site.")),
                       candidate(call("click_at", x=20, y=20, confirm="Submitting a payment.")),
                       candidate(text("stopped")))
    loop, events, desktop = build()
    task = asyncio.create_task(loop.run("go"))
    while not loop.approvals.pending:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    assert desktop.calls == []
    assert events.of("approval_requested")[0]["safety_checks"][0]["message"] == "Accepting cookies on a banking site."
    loop.decide(loop.approvals.pending[0], Decision.approve())
    while len(events.of("approval_requested")) < 2:
        await asyncio.sleep(0.01)
    assert len(desktop.calls) == 1  # the approved one ran, the second waits
    loop.decide(loop.approvals.pending[0], Decision.reject())
    assert (await task).status == "succeeded"
    assert len(desktop.calls) == 1
    approved = function_responses(fake_gemini.requests[1])[0]["response"]
    rejected = function_responses(fake_gemini.requests[2])[0]["response"]
    assert approved == {"url": "", "status": "ok", "safety_acknowledgement": "true"}
    assert rejected == {"url": "", "error": "the user rejected this action"}


async def test_malformed_calls_and_retries(fake_gemini: FakeGemini, build: Build) -> None:
    fake_gemini.script(error(429), error(503),
                       candidate(call("click_at", x=1200, y=5), call("teleport"), call("navigate", url="a b")),
                       candidate(text("sorry")))
    loop, events, desktop = build()
    assert (await loop.run("go")).status == "succeeded"
    assert [e["status_code"] for e in events.of("retrying")] == [429, 503]
    assert desktop.calls == []
    errors = [r["response"]["error"] for r in function_responses(fake_gemini.requests[3])]
    assert errors == ["click_at: coordinates 1200, 5 are outside the 0-1000 grid",
                      "teleport: unknown function 'teleport'",
                      "navigate: url must be a single URL without spaces, got 'a b'"]
