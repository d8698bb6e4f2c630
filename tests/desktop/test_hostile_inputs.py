"""Malformed and hostile computer-tool inputs: each is a clear ``ToolInputError``, nothing reaches the screen,
nothing runs a shell, and the tool keeps working afterwards.

The "no subprocess" check uses a real CPython audit hook (``sys.addaudithook``): it sees every
``subprocess.Popen``, ``os.system``, ``os.exec*``, ``os.posix_spawn`` and ``os.fork`` in this process.
"""

from __future__ import annotations

import math
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deskpilot.errors import ToolInputError
from desktop.display import Desktop
from desktop.input import XInput
from desktop.scaling import Scaler
from desktop.tools.computer import (
    FIELDS_20251124,
    MAX_DURATION_S,
    MAX_SCROLL_AMOUNT,
    MAX_TYPE_CHARS,
    ComputerTool20250124,
    ComputerTool20251124,
    parse_action,
)
from tests.desktop.conftest import SETTLE, MakeDesktop
from tests.support.testpage import TestPageServer, focus_field

CANARY = Path(f"/tmp/deskpilot_canary_{uuid.uuid4().hex}")
TOUCH = f"touch {CANARY}"
_SPAWN_EVENTS = ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
                 "os.forkpty", "pty.spawn")
_spawned: list[tuple[str, str]] = []
_armed = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _armed and event.startswith(_SPAWN_EVENTS):
        _spawned.append((event, repr(args)[:200]))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while armed


@pytest.fixture
def no_spawn() -> Iterator[None]:
    global _armed
    _spawned.clear()
    _armed = True
    try:
        yield
    finally:
        _armed = False
    assert _spawned == [], f"a subprocess was started: {_spawned}"
    assert not CANARY.exists(), "a payload ran"


@pytest.fixture(scope="module")
def desk(make_desktop: MakeDesktop, page: TestPageServer) -> Desktop:
    # 1280×960 is shown to the model as 1024×768: x=1100 is on the screen but outside the model's image.
    desktop = make_desktop(width=1280, height=960, start_url=page.url, kiosk=True)
    page.wait_ready()
    with XInput(desktop.display) as inp:  # the window gets pointer and focus before any test runs
        focus_field(page, inp, (100, 60))
    return desktop


@pytest.fixture(scope="module")
def tools(desk: Desktop) -> Iterator[tuple[ComputerTool20250124, ComputerTool20251124]]:
    old, new = ComputerTool20250124(desk.display, settle=SETTLE), ComputerTool20251124(desk.display, settle=SETTLE)
    yield old, new
    old.close()
    new.close()


NAN = math.nan
CASES: list[tuple[str, Any, str]] = [
    # (id, input, expected fragment of the message)
    ("not-an-object", "left_click", "must be an object"),
    ("list", [{"action": "screenshot"}], "must be an object"),
    ("empty", {}, "action is required"),
    ("action-number", {"action": 5}, "Invalid action: 5"),
    ("action-shell", {"action": "rm -rf /"}, "Invalid action: rm -rf /"),
    ("action-case", {"action": "LEFT_CLICK"}, "Invalid action: LEFT_CLICK"),
    ("zoom-old-version", {"action": "zoom", "region": [0, 0, 10, 10]}, "Invalid action: zoom"),
    ("move-no-coordinate", {"action": "mouse_move"}, "coordinate is required for mouse_move"),
    ("type-no-text", {"action": "type"}, "text is required for type"),
    ("type-empty", {"action": "type", "text": ""}, "text is required for type"),
    ("key-empty", {"action": "key", "text": ""}, "text is required for key"),
    ("negative", {"action": "mouse_move", "coordinate": [-1, 5]}, "Coordinates -1, 5 are out of bounds"),
    ("beyond-model", {"action": "left_click", "coordinate": [1100, 10]}, "Coordinates 1100, 10 are out of bounds"),
    ("edge", {"action": "left_click", "coordinate": [1024, 767]}, "Coordinates 1024, 767 are out of bounds"),
    ("huge", {"action": "mouse_move", "coordinate": [10**18, 1]}, "are out of bounds"),
    ("float", {"action": "mouse_move", "coordinate": [10.5, 3]}, "two non-negative integers"),
    ("bool", {"action": "mouse_move", "coordinate": [True, 3]}, "two non-negative integers"),
    ("strings", {"action": "mouse_move", "coordinate": ["10", "20"]}, "two non-negative integers"),
    ("three", {"action": "mouse_move", "coordinate": [1, 2, 3]}, "two non-negative integers"),
    ("string-coordinate", {"action": "mouse_move", "coordinate": "10,20"}, "two non-negative integers"),
    ("extra-field", {"action": "left_click", "coordinate": [1, 1], "foo": 1}, "foo is not accepted for left_click"),
    ("text-on-move", {"action": "mouse_move", "coordinate": [1, 1], "text": "x"}, "text is not accepted"),
    ("coordinate-on-down", {"action": "left_mouse_down", "coordinate": [1, 1]}, "coordinate is not accepted"),
    ("coordinate-on-screenshot", {"action": "screenshot", "coordinate": [1, 1]}, "coordinate is not accepted"),
    ("drag-no-start", {"action": "left_click_drag", "coordinate": [5, 5]}, "start_coordinate is required"),
    ("type-huge", {"action": "type", "text": "a" * 10_001}, "too long"),
    ("type-nul", {"action": "type", "text": "a\x00b"}, "U+0000"),
    ("type-escape", {"action": "type", "text": "\x1b[2J"}, "U+001B"),
    ("type-surrogate", {"action": "type", "text": "x\ud800"}, "U+D800"),
    ("type-number", {"action": "type", "text": 123}, "must be a string"),
    ("key-shell-semicolon", {"action": "key", "text": f"Return; {TOUCH}"}, "Unknown key 'Return;'"),
    ("key-shell-subst", {"action": "key", "text": f"$({TOUCH})"}, "Unknown key '$(touch'"),
    ("key-backticks", {"action": "key", "text": "`id`"}, "Unknown key '`id`'"),
    ("key-and", {"action": "key", "text": f"ctrl+l && {TOUCH}"}, "Unknown key '&&'"),
    ("key-pipe", {"action": "key", "text": "ctrl+l|sh"}, "Unknown key 'l|sh'"),
    ("key-newline", {"action": "key", "text": f"Return\n{TOUCH}"}, "Unknown key 'touch'"),
    ("key-too-long", {"action": "key", "text": "a" * 501}, "too long"),
    ("key-list", {"action": "key", "text": ["ctrl", "c"]}, "must be a string of key names"),
    ("modifier-shell", {"action": "left_click", "coordinate": [1, 1], "text": f"shift; {TOUCH}"}, "Unknown key"),
    ("modifier-subst", {"action": "left_click", "text": f"$({TOUCH})"}, "Unknown key"),
    ("modifier-not-modifier", {"action": "left_click", "text": "a"}, "not a modifier key"),
    ("scroll-huge", {"action": "scroll", "scroll_direction": "down", "scroll_amount": 10**9}, "scroll_amount"),
    ("scroll-negative", {"action": "scroll", "scroll_direction": "down", "scroll_amount": -3}, "scroll_amount"),
    ("scroll-float", {"action": "scroll", "scroll_direction": "down", "scroll_amount": 2.5}, "scroll_amount"),
    ("scroll-sideways", {"action": "scroll", "scroll_direction": "sideways", "scroll_amount": 1}, "scroll_direction"),
    ("scroll-no-amount", {"action": "scroll", "scroll_direction": "up"}, "scroll_amount is required for scroll"),
    ("scroll-modifier-shell", {"action": "scroll", "scroll_direction": "up", "scroll_amount": 1,
                               "text": f"ctrl;{TOUCH}"}, "Unknown key"),
    ("hold-forever", {"action": "hold_key", "text": "shift", "duration": 1e9}, "duration"),
    ("hold-two-combos", {"action": "hold_key", "text": "shift a", "duration": 1}, "one key or combination"),
    ("hold-shell", {"action": "hold_key", "text": f"shift;{TOUCH}", "duration": 1}, "Unknown key"),
    ("wait-negative", {"action": "wait", "duration": -1}, "duration"),
    ("wait-nan", {"action": "wait", "duration": NAN}, "duration"),
    ("wait-inf", {"action": "wait", "duration": math.inf}, "duration"),
    ("wait-string", {"action": "wait", "duration": "5"}, "duration"),
    ("wait-bool", {"action": "wait", "duration": True}, "duration"),
]
NEW_CASES: list[tuple[str, Any, str]] = [
    ("zoom-inverted", {"action": "zoom", "region": [10, 10, 5, 5]}, "is invalid"),
    ("zoom-outside", {"action": "zoom", "region": [0, 0, 2000, 10]}, "is invalid"),
    ("zoom-short", {"action": "zoom", "region": [0, 0, 10]}, "four integers"),
    ("zoom-floats", {"action": "zoom", "region": [0.5, 0, 10, 10]}, "four integers"),
    ("zoom-missing", {"action": "zoom"}, "region is required for zoom"),
]


@pytest.mark.parametrize(("data", "fragment"), [pytest.param(d, f, id=i) for i, d, f in CASES])
async def test_hostile_input_is_a_clear_error(tools: tuple[ComputerTool20250124, ComputerTool20251124],
                                              no_spawn: None, data: Any, fragment: str) -> None:
    with pytest.raises(ToolInputError) as info:
        await tools[0].run(data)
    assert fragment in info.value.message


@pytest.mark.parametrize(("data", "fragment"), [pytest.param(d, f, id=i) for i, d, f in NEW_CASES])
async def test_hostile_zoom_is_a_clear_error(tools: tuple[ComputerTool20250124, ComputerTool20251124],
                                             no_spawn: None, data: Any, fragment: str) -> None:
    with pytest.raises(ToolInputError) as info:
        await tools[1].run(data)
    assert fragment in info.value.message


async def test_rejected_inputs_never_touch_the_screen(tools: tuple[ComputerTool20250124, ComputerTool20251124],
                                                      page: TestPageServer, no_spawn: None) -> None:
    """Validation is complete before acting: a bad scroll amount does not move the pointer first, etc."""
    await tools[0].run({"action": "mouse_move", "coordinate": [5, 700]})
    page.settle(0.3)
    page.reset()
    before = await tools[0].run({"action": "cursor_position"})
    for _, data, _ in CASES:
        with pytest.raises(ToolInputError):
            await tools[0].run(data)
    events = page.settle(0.5)
    assert [e for e in events if e["type"] in ("mousedown", "mouseup", "mousemove", "keydown", "wheel")] == []
    assert (await tools[0].run({"action": "cursor_position"})).output == before.output
    # ...and the tool still works afterwards.
    assert (await tools[0].run({"action": "screenshot"})).image


@pytest.mark.parametrize("payload", [f"$({TOUCH})", f"`{TOUCH}`", f"; {TOUCH}", f"' && {TOUCH} #", f"\n{TOUCH}\n"])
async def test_shell_payloads_are_typed_literally(tools: tuple[ComputerTool20250124, ComputerTool20251124],
                                                  page: TestPageServer, no_spawn: None, payload: str) -> None:
    tool = tools[0]
    await tool.run({"action": "left_click", "coordinate": [80, 50]})  # into the text field
    await tool.run({"action": "key", "text": "ctrl+a BackSpace"})
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["key"] == "Backspace" for e in evs))
    page.reset()
    await tool.run({"action": "type", "text": payload})
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == payload for e in evs))


def test_the_spawn_detector_sees_a_subprocess() -> None:
    """Guards the guard: the audit hook above really notices a subprocess."""
    import subprocess

    global _armed
    _spawned.clear()
    _armed = True
    try:
        subprocess.run(["true"], check=True)
    finally:
        _armed = False
    assert any(event == "subprocess.Popen" for event, _ in _spawned)
    _spawned.clear()


@pytest.mark.parametrize("data", [
    {"action": "type", "text": "a" * MAX_TYPE_CHARS},
    {"action": "scroll", "scroll_direction": "left", "scroll_amount": MAX_SCROLL_AMOUNT},
    {"action": "hold_key", "text": "shift", "duration": MAX_DURATION_S},
    {"action": "wait", "duration": 0},
    {"action": "left_click", "coordinate": [1023, 767], "text": None},  # null = absent; the last model pixel
    {"action": "zoom", "region": [0, 0, 1024, 768]},
])
def test_limits_are_inclusive(data: dict[str, Any]) -> None:
    """Validation only (nothing is run): the largest allowed values pass."""
    action = parse_action(data, FIELDS_20251124, Scaler.for_screen(1280, 960))
    assert action.name == data["action"]
