"""End to end: the real SDK, the fake Messages API, the real desktop daemon, Chromium and the test page.

The fake model finds the magenta button in the screenshot it receives and clicks its centre in model
coordinates; the page records the click. The screen is 1600x900, so screenshots are scaled to
1366x768 and the click is mapped back — capture, scaling and input are all exercised.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import anthropic
import pytest
from PIL import Image

from agent.loop import AgentLoop
from agent.policy import ApprovalPolicy
from deskpilot.settings import Settings
from desktop.local import start_local_desktop
from tests.agent.conftest import Collector, make_config
from tests.support.fake_messages import (
    ErrorReply,
    FakeMessages,
    Reply,
    Request,
    centre,
    find_color,
    reply,
    text,
    thinking,
    tool_use,
)
from tests.support.testpage import BIG_BUTTON, BIG_BUTTON_RGB, TestPageServer

pytestmark = pytest.mark.desktop


def click_the_button(request: Request) -> Reply | ErrorReply:
    box = find_color(request.images[-1], BIG_BUTTON_RGB)
    if box is None:
        return reply(text("I cannot see the button"))
    return reply(thinking(f"the button is at {box}"), tool_use("computer", {"action": "left_click",
                                                                            "coordinate": list(centre(box))}))


def confirm(request: Request) -> Reply | ErrorReply:
    last = request.body["messages"][-1]["content"][0]
    ok = not last.get("is_error") and request.images
    return reply(text("clicked the button" if ok else f"the click failed: {last}"))


async def test_the_model_clicks_the_button_it_sees(fake_messages: FakeMessages, tmp_path: Path) -> None:
    fake_messages.script(
        reply(tool_use("computer", {"action": "screenshot"})),
        reply(tool_use("computer", {"action": "left_click", "coordinate": [5000, 10]})),  # out of bounds
        click_the_button,
        confirm,
    )
    with TestPageServer() as page:
        async with start_local_desktop(1600, 900, start_url=page.url, kiosk=True, data_dir=tmp_path,
                                       settings=Settings()) as desk:
            await asyncio.to_thread(page.wait_ready)
            info = await desk.client.info()
            assert (info.model_width, info.model_height) == (1366, 768)
            client = anthropic.AsyncAnthropic(api_key="k", base_url=fake_messages.url, max_retries=0)
            events = Collector()
            loop = AgentLoop(client=client, desktop=desk.client, policy=ApprovalPolicy("cautious"), emit=events,
                             config=make_config(width=info.model_width, height=info.model_height))
            result = await loop.run("click the big magenta button")
            await client.close()
            clicks = await asyncio.to_thread(page.wait_for, "click")

    assert (result.status, result.text) == ("succeeded", "clicked the button")
    assert [c["target"] for c in clicks] == ["big-button"]
    x, y, w, h = BIG_BUTTON
    assert x <= clicks[0]["clientX"] < x + w and y <= clicks[0]["clientY"] < y + h
    # every screenshot the model got was at model resolution
    shots = [Image.open(io.BytesIO(b)).size for r in fake_messages.requests for b in r.images[-1:]]
    assert set(shots) == {(1366, 768)}
    tools = fake_messages.requests[0].body["tools"]
    assert tools[0] == {"type": "computer_20251124", "name": "computer", "display_width_px": 1366,
                        "display_height_px": 768, "enable_zoom": True}
    # the out-of-bounds click came back as an error result that still carries a screenshot
    bad = fake_messages.requests[2].body["messages"][-1]["content"][0]
    assert bad["is_error"] is True
    assert [c["type"] for c in bad["content"]] == ["text", "image"]
    assert "out of bounds" in bad["content"][0]["text"]
    assert [d["is_error"] for d in events.of("tool_result")] == [False, True, False]
