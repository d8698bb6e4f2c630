"""The computer tool: ``computer_20250124`` and ``computer_20251124`` (which adds ``zoom``).

Threading contract (for the daemon): build the tool **on the X thread** (``ComputerTool20250124(display)``)
and await its ``async run(input) -> ToolResult`` on that thread's event loop (``XThread.run``). X calls block
that loop briefly; ``wait`` and ``hold_key`` await ``asyncio.sleep`` so frame grabs can interleave.
``close()`` (sync) releases the X connections, also on the X thread.

Every input is validated in full before anything touches the screen (``parse_action``): unknown actions,
missing or extra fields, non-integer/negative/out-of-bounds coordinates, unknown keys, over-long text,
absurd scroll amounts or durations all raise ``ToolInputError`` with a message for the model. Coordinates
are in model space and mapped to the screen with the ``Scaler``. Actions that change the screen return the
settled screenshot (PNG at model resolution); ``cursor_position`` returns ``X=…,Y=…`` in model space.
"""

from __future__ import annotations

import asyncio
import math
import time
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar

from Xlib import error as xerror

from deskpilot.errors import DesktopLostError, ToolInputError
from desktop.input import XInput
from desktop.keys import Combo, parse_key_action, parse_modifiers
from desktop.scaling import Scaler
from desktop.screen import Screenshotter
from desktop.settle import SettleRule
from desktop.tools.base import ToolResult

MAX_TYPE_CHARS = 10_000
MAX_SCROLL_AMOUNT = 50
MAX_DURATION_S = 100.0
SCROLL_DIRECTIONS = ("up", "down", "left", "right")
_CLICKS: dict[str, tuple[int, int]] = {  # action -> (X button, count)
    "left_click": (1, 1), "right_click": (3, 1), "middle_click": (2, 1),
    "double_click": (1, 2), "triple_click": (1, 3),
}
_CLICK_FIELDS: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset({"coordinate", "text"}))
# action -> (required fields, optional fields); "action" itself is implied.
FIELDS_20250124: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "key": (frozenset({"text"}), frozenset()),
    "type": (frozenset({"text"}), frozenset()),
    "mouse_move": (frozenset({"coordinate"}), frozenset()),
    **{name: _CLICK_FIELDS for name in _CLICKS},
    "left_click_drag": (frozenset({"start_coordinate", "coordinate"}), frozenset()),
    "left_mouse_down": (frozenset(), frozenset()),
    "left_mouse_up": (frozenset(), frozenset()),
    "scroll": (frozenset({"scroll_direction", "scroll_amount"}), frozenset({"coordinate", "text"})),
    "hold_key": (frozenset({"text", "duration"}), frozenset()),
    "wait": (frozenset({"duration"}), frozenset()),
    "screenshot": (frozenset(), frozenset()),
    "cursor_position": (frozenset(), frozenset()),
}
FIELDS_20251124 = {**FIELDS_20250124, "zoom": (frozenset({"region"}), frozenset())}

Point = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Action:
    """A validated action; points are already in **screen** pixels."""

    name: str
    at: Point | None = None
    start: Point | None = None
    text: str = ""
    combos: tuple[Combo, ...] = ()
    modifiers: Combo = ()
    direction: str = ""
    amount: int = 0
    duration: float = 0.0
    region: tuple[int, int, int, int] | None = None  # model space (zoom crops from the full frame itself)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _point(value: Any, field: str, scaler: Scaler) -> Point:
    if not isinstance(value, list | tuple) or len(value) != 2 or any(type(v) is not int for v in value):
        raise ToolInputError(f"{field} must be a list of two non-negative integers [x, y], got {_short(value)}")
    return scaler.to_screen(value[0], value[1])  # raises "Coordinates X, Y are out of bounds"


def _region(value: Any, scaler: Scaler) -> tuple[int, int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 4 or any(type(v) is not int for v in value):
        raise ToolInputError(f"region must be a list of four integers [x0, y0, x1, y1], got {_short(value)}")
    x0, y0, x1, y1 = value
    scaler.region_to_screen(x0, y0, x1, y1)  # validates order and bounds
    return x0, y0, x1, y1


def _type_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ToolInputError(f"text must be a string, got {type(value).__name__}")
    if not value:
        raise ToolInputError("text is required for type")
    if len(value) > MAX_TYPE_CHARS:
        raise ToolInputError(f"text is too long for type ({len(value)} characters, at most {MAX_TYPE_CHARS}); "
                             "split it into several type actions")
    for char in value:
        # Control characters other than newline/tab have no key; lone surrogates are not characters.
        if char not in "\n\r\t" and unicodedata.category(char) in ("Cc", "Cs"):
            raise ToolInputError(f"text contains U+{ord(char):04X}, a control or invalid character that "
                                 "cannot be typed")
    return value


def _duration(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value <= MAX_DURATION_S:
        raise ToolInputError(f"duration must be a number of seconds from 0 to {MAX_DURATION_S:g}, "
                             f"got {_short(value)}")
    return float(value)


def parse_action(data: Any, fields: dict[str, tuple[frozenset[str], frozenset[str]]], scaler: Scaler) -> Action:
    """Validate one tool input completely; raise ``ToolInputError`` naming the first problem."""
    if not isinstance(data, dict):
        raise ToolInputError("the computer tool input must be an object with an `action`")
    name = data.get("action")
    if name is None:
        raise ToolInputError("action is required")
    if not isinstance(name, str) or name not in fields:
        raise ToolInputError(f"Invalid action: {name if isinstance(name, str) and len(name) <= 60 else _short(name)}")
    required, optional = fields[name]
    given = {str(k) for k, v in data.items() if k != "action" and v is not None}  # null = absent
    missing, extra = sorted(required - given), sorted(given - required - optional)
    if missing:
        raise ToolInputError(f"{missing[0]} is required for {name}")
    if extra:
        field = extra[0] if len(extra[0]) <= 40 else _short(extra[0])
        raise ToolInputError(f"{field} is not accepted for {name}")

    def get(field: str) -> Any:
        return data.get(field)

    if name in ("key", "hold_key"):
        text = get("text")
        if not isinstance(text, str):
            raise ToolInputError(f"text must be a string of key names, e.g. 'ctrl+s', got {_short(text)}")
        if not text:
            raise ToolInputError(f"text is required for {name}")
        combos = tuple(parse_key_action(text))
        if name == "hold_key":
            if len(combos) != 1:
                raise ToolInputError(f"hold_key takes one key or combination, got {len(combos)}")
            return Action(name, combos=combos, duration=_duration(get("duration")))
        return Action(name, combos=combos)
    if name == "type":
        return Action(name, text=_type_text(get("text")))
    if name == "wait":
        return Action(name, duration=_duration(get("duration")))
    if name == "zoom":
        return Action(name, region=_region(get("region"), scaler))
    if name == "left_click_drag":
        return Action(name, start=_point(get("start_coordinate"), "start_coordinate", scaler),
                      at=_point(get("coordinate"), "coordinate", scaler))
    at = _point(get("coordinate"), "coordinate", scaler) if "coordinate" in given else None
    modifiers = parse_modifiers(get("text")) if get("text") != "" and "text" in given else ()  # "" = none
    if name == "scroll":
        direction, amount = get("scroll_direction"), get("scroll_amount")
        if direction not in SCROLL_DIRECTIONS:
            raise ToolInputError(f"scroll_direction must be one of {', '.join(SCROLL_DIRECTIONS)}, "
                                 f"got {_short(direction)}")
        if type(amount) is not int or not 1 <= amount <= MAX_SCROLL_AMOUNT:
            raise ToolInputError(f"scroll_amount must be an integer from 1 to {MAX_SCROLL_AMOUNT}, "
                                 f"got {_short(amount)}")
        return Action(name, at=at, modifiers=modifiers, direction=direction, amount=amount)
    return Action(name, at=at, modifiers=modifiers)


class ComputerTool20250124:
    """Mouse, keyboard and screen of one X display, as the model's ``computer`` tool."""

    api_type: ClassVar[str] = "computer_20250124"
    fields: ClassVar[dict[str, tuple[frozenset[str], frozenset[str]]]] = FIELDS_20250124

    def __init__(self, display: str, *, settle: SettleRule, screen: Screenshotter | None = None,
                 xinput: XInput | None = None) -> None:
        """``settle``: how its own screenshots settle (a given ``screen`` brings its rule)."""
        self.display = display
        self.screen = screen or Screenshotter(display, rule=settle)
        try:
            self.input = xinput or XInput(display)
        except BaseException:
            if screen is None:
                self.screen.close()
            raise
        self.scaler = self.screen.scaler

    def to_params(self) -> dict[str, Any]:
        """The tool definition for the Messages API."""
        return {"name": "computer", "type": self.api_type,
                "display_width_px": self.scaler.model_w, "display_height_px": self.scaler.model_h}

    async def run(self, input: dict[str, Any]) -> ToolResult:
        action = parse_action(input, self.fields, self.scaler)
        try:
            return await self._run(action)
        except (xerror.ConnectionClosedError, ConnectionError) as exc:  # Xvfb died under us
            raise DesktopLostError(f"the X display {self.display} is gone: {exc}") from exc

    async def _run(self, action: Action) -> ToolResult:
        started = time.perf_counter()
        if action.name == "screenshot":
            return ToolResult(image=self.screen.screenshot(), meta=_ms(started, action.name))
        if action.name == "cursor_position":
            x, y = self.scaler.to_model(*self.input.cursor_position())
            return ToolResult(output=f"X={x},Y={y}", meta=_ms(started, action.name))
        if action.name == "zoom":
            assert action.region is not None
            return ToolResult(image=self.screen.zoom(action.region), meta=_ms(started, action.name))
        if action.name == "wait":
            await asyncio.sleep(action.duration)
            return ToolResult(image=self.screen.screenshot(), meta=_ms(started, action.name))
        before = self.screen.grab_raw()
        await self._act(action)
        acted = time.perf_counter()
        # A pure pointer move shows at most a hover effect, at once: no long wait for a first change.
        rule = self.screen.rule.for_pointer_move() if action.name == "mouse_move" else None
        image = self.screen.settled_screenshot(before, rule)
        meta = _ms(started, action.name)
        meta["action_ms"] = round((acted - started) * 1000, 1)
        settled = self.screen.last_settled
        if settled is not None:
            meta.update(settle_ms=round(settled.waited_ms, 1), changed=settled.changed, capped=settled.capped)
        return ToolResult(image=image, meta=meta)

    async def screenshot(self) -> ToolResult:
        return ToolResult(image=self.screen.screenshot())

    async def _act(self, a: Action) -> None:
        inp = self.input
        if a.name in _CLICKS:
            button, count = _CLICKS[a.name]
            inp.click(button, count=count, at=a.at, modifiers=a.modifiers)
        elif a.name == "mouse_move":
            assert a.at is not None
            inp.move(*a.at)
        elif a.name == "left_click_drag":
            assert a.start is not None and a.at is not None
            inp.drag(a.start, a.at)
        elif a.name == "left_mouse_down":
            inp.button_down(1)
        elif a.name == "left_mouse_up":
            inp.button_up(1)
        elif a.name == "scroll":
            inp.scroll(a.direction, a.amount, at=a.at, modifiers=a.modifiers)  # type: ignore[arg-type]
        elif a.name == "key":
            inp.press_combos(a.combos)
        elif a.name == "hold_key":
            with inp.holding(a.combos[0]):
                await asyncio.sleep(a.duration)
        elif a.name == "type":
            inp.type_text(a.text)
        else:  # parse_action only lets known actions through
            raise AssertionError(a.name)

    def close(self) -> None:
        try:
            self.input.close()
        finally:
            self.screen.close()


class ComputerTool20251124(ComputerTool20250124):
    """Adds ``zoom``: ``region: [x0, y0, x1, y1]`` in model space, returned at higher resolution."""

    api_type: ClassVar[str] = "computer_20251124"
    fields: ClassVar[dict[str, tuple[frozenset[str], frozenset[str]]]] = FIELDS_20251124


def _ms(started: float, action: str) -> dict[str, Any]:
    return {"action": action, "total_ms": round((time.perf_counter() - started) * 1000, 1)}
