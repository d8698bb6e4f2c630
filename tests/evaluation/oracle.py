"""Scripted agents for a suite, served as a Messages API (``tests/support/fake_messages``), so every action goes
through the whole loop: SDK → loop → policy → desktop daemon → settle → screenshot → next request.

- ``oracle``: each task's ``oracle`` steps, in order. A step is ``{"computer"|"bash"|"str_replace_based_edit_tool":
  input}`` or ``{"answer": text}``; a coordinate may be ``{"color": "#rrggbb", "origin"?: "center"|"topleft",
  "offset"?: [dx, dy]}``, found on the last screenshot the model was sent, as a model would look for it.
- ``nothing``: answers "Done." at once. ``random``: five clicks at random points, then "Done.".
- Agents that never get anywhere, for the watchdog (agent/watchdog.py): ``stuck`` clicks one empty corner of
  the page again and again, ``staring`` only takes screenshots, ``fidgeting`` clicks a new empty spot each
  time (the screen never changes, no two actions are alike); each says "Done." after 40 calls.

The task of a request is recognised from its first user message (the instruction, placeholders and all).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from evaluation.tasks import Suite, Task, fill
from tests.support.fake_messages import FakeMessages, Reply, Request, centre, find_color, reply, text, tool_use

TOOLS = ("computer", "bash", "str_replace_based_edit_tool")
_PLACEHOLDERS = {"pages": r"http://[^/\s]+", "workdir": r"/tmp/deskpilot-eval-[A-Za-z0-9._-]+"}


def _pattern(task: Task) -> re.Pattern[str]:
    regex, seen = "^", set()
    for i, part in enumerate(re.split(r"\{(pages|workdir)\}", task.instruction)):
        if i % 2 == 0:
            regex += re.escape(part)
        else:  # the first use of a placeholder captures it, later ones must repeat it
            regex += f"(?P={part})" if part in seen else f"(?P<{part}>{_PLACEHOLDERS[part]})"
            seen.add(part)
    return re.compile(regex)


def _first_text(request: Request) -> str:
    content = request.body["messages"][0]["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


DRIFTING = {  # turn -> the action of an agent that makes no progress
    "stuck": lambda turn: tool_use("computer", {"action": "left_click", "coordinate": [1010, 755]}),
    "staring": lambda turn: tool_use("computer", {"action": "screenshot"}),
    "fidgeting": lambda turn: tool_use("computer", {"action": "left_click", "coordinate": [600 + 9 * turn, 755]}),
}


# What the oracle says when the element it wants to click is not on the screen yet (a page still loading
# under load): it waits a second and looks again, as a model would, at most LOOK_AGAIN times per step. These
# turns are not steps of the task's oracle.
WAITING = "It is not on the screen yet; waiting a moment."
LOOK_AGAIN = 3


class NotOnScreen(ValueError):
    pass


def _waits(messages: list[dict[str, Any]]) -> list[bool]:
    """For each assistant turn so far: was it a wait for the page?"""
    return [any(isinstance(b, dict) and b.get("text") == WAITING for b in m["content"])
            for m in messages if m["role"] == "assistant" and isinstance(m["content"], list)]


class ScriptedAgent:
    def __init__(self, suite: Suite, mode: str = "oracle", seed: int = 0) -> None:
        self.tasks = [(_pattern(t), t) for t in suite.tasks]
        self.mode, self.seed = mode, seed

    def install(self, fake: FakeMessages, calls: int) -> None:
        fake.script(*([self.respond] * calls))

    def _task(self, request: Request) -> tuple[Task, dict[str, str]]:
        first = _first_text(request)
        for pattern, task in self.tasks:
            match = pattern.match(first)
            if match:
                return task, {k: v for k, v in match.groupdict().items() if v is not None}
        raise LookupError(f"no task has the instruction {first[:80]!r}")

    def respond(self, request: Request) -> Reply:
        task, names = self._task(request)
        turn = sum(1 for m in request.body["messages"] if m["role"] == "assistant")
        if self.mode == "nothing":
            return reply(text("Done."))
        if self.mode in DRIFTING:
            return reply(DRIFTING[self.mode](turn) if turn < 40 else text("Done."))
        if self.mode == "random":
            if turn >= 5:
                return reply(text("Done."))
            rng = random.Random(f"{self.seed}:{task.id}:{turn}")
            return reply(tool_use("computer", {"action": "left_click",
                                               "coordinate": [rng.randrange(1024), rng.randrange(768)]}))
        waits = _waits(request.body["messages"])
        turn -= sum(waits)
        steps = task.oracle
        if turn >= len(steps):
            return reply(text("Done."))
        step = fill(steps[turn], names)
        if "answer" in step:
            return reply(text(str(step["answer"])))
        (name, given), = step.items()
        if name not in TOOLS:
            raise ValueError(f"{task.id}: oracle step {turn} uses unknown tool {name!r}")
        try:
            return reply(tool_use(name, self._resolve(given, request, task.id, turn)))
        except NotOnScreen:
            waited = next((n for n, w in enumerate(reversed(waits)) if not w), len(waits))  # waits in a row
            if waited >= LOOK_AGAIN:
                raise
            return reply(text(WAITING), tool_use("computer", {"action": "wait", "duration": 1}))

    def _resolve(self, given: dict[str, Any], request: Request, task_id: str, turn: int) -> dict[str, Any]:
        out = dict(given)
        for key in ("coordinate", "start_coordinate"):
            spec = out.get(key)
            if not isinstance(spec, dict):
                continue
            images = request.images
            if not images:
                raise ValueError(f"{task_id}: oracle step {turn} looks for a colour before any screenshot")
            rgb = tuple(int(spec["color"][i:i + 2], 16) for i in (1, 3, 5))
            box = find_color(images[-1], rgb)  # type: ignore[arg-type]
            if box is None:
                raise NotOnScreen(f"{task_id}: oracle step {turn}: colour {spec['color']} is not on the screen "
                                 f"({json.dumps(given)})")
            x, y = (box[0], box[1]) if spec.get("origin") == "topleft" else centre(box)
            dx, dy = spec.get("offset", [0, 0])
            out[key] = [x + dx, y + dy]
        return out
