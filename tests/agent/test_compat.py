"""Open GUI models over an OpenAI-compatible chat API: parsers, exact coordinates, the loop end to end."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image

from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from agent.providers.compat import CompatClient, family_for, smart_resize
from agent.providers.gui_parsers import ParseError, parse_pyautogui, parse_qwen, parse_uitars
from tests.agent.conftest import Collector, RecordingDesktop, make_config
from tests.support.fake_compat import FakeCompat, error, fake_compat, last_user_texts, say

__all__ = ["fake_compat"]
Build = Callable[..., tuple[AgentLoop, Collector, RecordingDesktop]]


@pytest.fixture
async def build(fake_compat: FakeCompat) -> AsyncIterator[Build]:
    client = CompatClient.create("none", fake_compat.url + "/v1", 10)

    def make(model: str = "openai-compatible/ui-tars-1.5-7b", **config: Any) -> tuple[AgentLoop, Collector,
                                                                                       RecordingDesktop]:
        events, desktop = Collector(), RecordingDesktop()
        loop = AgentLoop(client=client, desktop=desktop, policy=ApprovalPolicy("autonomous"), emit=events,
                         config=make_config(model=model, **config))
        return loop, events, desktop

    yield make
    await client.close()


def test_smart_resize_matches_qwen() -> None:
    assert smart_resize(768, 1024) == (756, 1036)
    assert smart_resize(768, 1024, factor=32) == (768, 1024)
    assert smart_resize(800, 1280) == (812, 1288)
    assert smart_resize(10, 10) == (56, 56)  # below min_pixels: scaled up


@pytest.mark.parametrize("size", [(1024, 768), (1280, 800), (1366, 768)])
def test_resized_image_coordinates_map_exactly(size: tuple[int, int]) -> None:
    width, height = size
    scaler = family_for("ui-tars-1.5").scaler(width, height)
    for axis, (ours, theirs) in enumerate(((width, scaler.model_w), (height, scaler.model_h))):
        ours_of = [scaler.to_screen(v, 0)[0] if axis == 0 else scaler.to_screen(0, v)[1] for v in range(theirs)]
        theirs_of = [scaler.to_model(v, 0)[0] if axis == 0 else scaler.to_model(0, v)[1] for v in range(ours)]
        # every point the model can name lands in the pixel holding its centre
        assert ours_of == [(2 * v + 1) * ours // (2 * theirs) for v in range(theirs)]
        if theirs <= ours:  # the coarser side round-trips exactly
            assert [theirs_of[ours_of[v]] for v in range(theirs)] == list(range(theirs))
        else:
            assert [ours_of[theirs_of[v]] for v in range(ours)] == list(range(ours))


def test_parsers_read_each_family() -> None:
    tars = parse_uitars("Thought: open it\nAction: click(start_box='<|box_start|>(100,200)<|box_end|>')")
    assert (tars.thought, tars.actions) == ("open it", [{"action": "left_click", "coordinate": (100.0, 200.0)}])
    assert parse_uitars("Thought: x\nAction: type(content='hi\\n')").actions == [{"action": "type", "text": "hi\n"}]
    assert parse_uitars("Thought: x\nAction: hotkey(key='ctrl shift t')").actions == [
        {"action": "key", "text": "ctrl+shift+t"}]
    assert parse_uitars("Thought: x\nAction: click(start_box='[10, 20, 30, 40]')").actions[0]["coordinate"] == (20, 30)
    assert parse_uitars("Thought: stuck\nAction: call_user()").question == "stuck"
    qwen = parse_qwen('ok\n<tool_call>\n{"name": "computer_use", "arguments": {"action": "scroll", "pixels": -300, '
                      '"coordinate": [5, 6]}}\n</tool_call>')
    assert qwen.actions == [{"action": "scroll", "scroll_direction": "down", "scroll_amount": 3, "coordinate": (5, 6)}]
    cua = parse_pyautogui("## Thought: go\n## Code:\n```python\npyautogui.click(x=10, y=20)\n"
                          "pyautogui.hotkey('ctrl', 'l')\npyautogui.write(message='abc')\n```")
    assert cua.actions == [{"action": "left_click", "coordinate": (10.0, 20.0)}, {"action": "key", "text": "ctrl+l"},
                           {"action": "type", "text": "abc"}]


@pytest.mark.parametrize("text", [
    "Thought: x",  # no action
    "Thought: x\nAction: click(start_box='(1,2)'",  # unbalanced
    "Thought: x\nAction: launch_missiles()",
    "Thought: x\nAction: type(content=open('/etc/passwd').read())",
])
def test_uitars_rejects_malformed_output(text: str) -> None:
    with pytest.raises(ParseError):
        parse_uitars(text)


@pytest.mark.parametrize("code", [
    "import os; os.system('rm -rf /')",
    "os.system('id')",
    "pyautogui.click(x=__import__('os').system('id'), y=1)",
    "subprocess.run(['sh'])",
])
def test_pyautogui_code_is_never_run(code: str) -> None:
    with pytest.raises(ParseError):
        parse_pyautogui(f"## Code:\n```python\n{code}\n```")


async def test_uitars_end_to_end(fake_compat: FakeCompat, build: Build) -> None:
    fake_compat.script(
        say("Thought: click the box\nAction: click(start_box='<|box_start|>(518,378)<|box_end|>')"),
        say("Thought: type and submit\nAction: type(content='deskpilot\\n')"),
        say("Thought: scroll\nAction: scroll(start_box='(0,755)', direction='down')\n\nhotkey(key='ctrl a')"),
        say("Thought: done\nAction: finished(content='all done')"))
    loop, events, desktop = build()
    result = await loop.run("search for deskpilot")
    assert (result.status, result.text) == ("succeeded", "all done")
    assert [c[1] for c in desktop.calls] == [
        {"action": "screenshot"},  # the synthetic first step: no model call
        {"action": "left_click", "coordinate": [512, 384]},
        {"action": "type", "text": "deskpilot\n"},
        {"action": "scroll", "scroll_direction": "down", "scroll_amount": 5, "coordinate": [0, 767]},
        {"action": "key", "text": "ctrl+a"}]
    assert len(fake_compat.requests) == 4
    first = fake_compat.requests[0]
    assert first.body["model"] == "ui-tars-1.5-7b" and "1036x756" in first.body["messages"][0]["content"]
    assert [Image.open(io.BytesIO(i)).size for i in first.images] == [(1036, 756)]
    assert [m["role"] for m in fake_compat.requests[1].body["messages"]] == ["system", "user", "assistant", "user"]
    assert fake_compat.requests[1].body["messages"][2]["content"].startswith("Thought: click the box")
    assert events.of("thinking")[0]["text"] == "click the box"


async def test_malformed_output_is_an_error_the_model_can_fix(fake_compat: FakeCompat, build: Build) -> None:
    fake_compat.script(say("I think I should click somewhere"),
                       say("Thought: x\nAction: click(start_box='(5000,10)')"),
                       say("Thought: ok\nAction: finished(content='fine')"))
    loop, _, desktop = build()
    assert (await loop.run("go")).text == "fine"
    assert [c[1]["action"] for c in desktop.calls] == ["screenshot"]
    assert last_user_texts(fake_compat.requests[1])[0].startswith("Error: could not use your answer: no 'Action:'")
    assert "out of bounds (the screenshot is 1036x756)" in last_user_texts(fake_compat.requests[2])[0]


async def test_call_user_asks_the_user(fake_compat: FakeCompat, build: Build) -> None:
    fake_compat.script(say("Thought: I need the password\nAction: call_user()"),
                       say("Thought: thanks\nAction: finished(content='logged in')"))
    loop, events, _ = build()
    task = asyncio.create_task(loop.run("log in"))
    while loop.status != "paused":
        await asyncio.sleep(0.01)
    assert events.statuses()[-1] == ("paused", "question")
    assert events.of("assistant_text")[-1]["text"] == "I need the password"
    loop.add_user_message("it is hunter2")
    assert (await task).text == "logged in"
    assert "it is hunter2" in last_user_texts(fake_compat.requests[1])


async def test_qwen3_uses_the_grid_and_qwen25_the_resized_image(fake_compat: FakeCompat, build: Build) -> None:
    click = '<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}' \
            '\n</tool_call>'
    done = '<tool_call>\n{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}' \
           '\n</tool_call>'
    fake_compat.script(say(click), say(done), say(click), say(done))
    loop3, _, desk3 = build(model="openai-compatible/Qwen/Qwen3-VL-8B-Instruct")
    assert (await loop3.run("go")).text == "success"
    loop25, _, desk25 = build(model="openai-compatible/qwen2.5-vl-7b")
    assert (await loop25.run("go")).text == "success"
    assert desk3.calls[1][1]["coordinate"] == [512, 384]  # 0-1000 grid
    assert desk25.calls[1][1]["coordinate"] == [494, 508]  # pixels of the 1036x756 image
    assert [Image.open(io.BytesIO(i)).size for i in fake_compat.requests[0].images] == [(1024, 768)]


async def test_retries_work_here_too(fake_compat: FakeCompat, build: Build) -> None:
    fake_compat.script(error(500), error(429, headers={"retry-after": "0"}),
                       say("Thought: ok\nAction: finished(content='ok')"))
    loop, events, _ = build()
    assert (await loop.run("go")).status == "succeeded"
    assert [e["status_code"] for e in events.of("retrying")] == [500, 429]
