"""The scripted oracle itself (tests/evaluation/oracle.py), on hand-made requests: when the element it must
click is not on the screen yet, it waits and looks again (bounded) instead of failing or clicking blind."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from evaluation.tasks import load_suite
from tests.evaluation.oracle import LOOK_AGAIN, WAITING, NotOnScreen, ScriptedAgent
from tests.support.fake_messages import Request

EVALS = Path(__file__).resolve().parents[2] / "evals"


def png(rgb: tuple[int, int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", (200, 100), rgb).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def shot(rgb: tuple[int, int, int]) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png(rgb)}}


def request(instruction: str, turns: list[dict[str, Any]], screen: tuple[int, int, int]) -> Request:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": instruction}]}]
    for i, content in enumerate(turns):
        messages.append({"role": "assistant", "content": [content, {"type": "tool_use", "id": f"t{i}",
                                                                    "name": "computer", "input": {}}]})
        messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                      "content": [shot(screen)]}]})
    return Request("/v1/messages", {}, b"", {"messages": messages}, 0.0)


def test_a_missing_target_is_waited_for_then_clicked_as_the_next_step() -> None:
    suite = load_suite(EVALS, "nav-price")
    agent, instruction = ScriptedAgent(suite), suite.tasks[0].instruction
    looked, first_click = {"type": "text", "text": "looked"}, {"type": "text", "text": "clicked"}
    waiting = {"type": "text", "text": WAITING}
    # Step 2 wants #00b0ff; the screen is still white: wait (and look) again, up to LOOK_AGAIN times.
    for waits in range(LOOK_AGAIN):
        answer = agent.respond(request(instruction, [looked, first_click] + [waiting] * waits, (255, 255, 255)))
        assert answer.content[0] == {"type": "text", "text": WAITING}
        assert answer.content[1]["input"] == {"action": "wait", "duration": 1}
    with pytest.raises(NotOnScreen, match="#00b0ff is not on the screen"):
        agent.respond(request(instruction, [looked, first_click] + [waiting] * LOOK_AGAIN, (255, 255, 255)))
    # Once it shows, the waits do not count as steps: the click is step 2, then the answer.
    answer = agent.respond(request(instruction, [looked, first_click, waiting], (0, 0xB0, 0xFF)))
    assert answer.content[0]["input"]["action"] == "left_click"
    answer = agent.respond(request(instruction, [looked, first_click, waiting, first_click], (0, 0xB0, 0xFF)))
    assert answer.content == [{"type": "text", "text": "34.90"}]
