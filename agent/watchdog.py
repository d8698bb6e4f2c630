"""Stuck-loop and runaway detection: reads the run's own events and says when the run should pause.

Four detectors, each with its reason code (the ``status`` event's ``reason`` when it trips):

- ``stuck_repeat``: the same action (tool, action, text/keys/command, coordinates within ``radius_px``) done
  ``repeat_limit`` times in a row and the screen never changed (or, for bash/the editor, the same output);
- ``no_progress``: ``no_change_limit`` calls in a row after which the screen looked the same;
- ``rereading``: ``reread_limit`` looks in a row (screenshot/zoom/cursor_position) without acting;
- ``runaway_rate``: tokens (input, cache writes and output: what is billed at full price or more) or cost over
  the last minute above ``max_tokens_per_minute`` / ``max_cost_per_minute``.

Whether a call changed the screen comes from the computer tool's result (``meta.changed``, from
``desktop.settle``). A repeated action that brings back a screen already seen since the repeats began counts
as no change too: clicking the same spot of a page again and again selects a word, then the paragraph, then
nothing, in a cycle of screens that each differ from the one before (measured on the eval suite). A call
whose result does not say (a bash command, an editor call) counts as progress unless it repeats the previous
call exactly, output included. After a trip every counter starts afresh, so a resumed run gets a full
allowance again. A limit of 0 turns its detector off.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.events import Event
from deskpilot.settings import Settings, default_of

TRIP_REASONS = ("stuck_repeat", "no_progress", "rereading", "runaway_rate")
LOOKS = {"screenshot", "zoom", "cursor_position"}  # computer actions that only read the screen
POINTER_KEYS = ("coordinate", "start_coordinate")
WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class WatchdogConfig:
    repeat_limit: int = default_of("watchdog_repeat_limit", int)
    radius_px: int = default_of("watchdog_radius_px", int)
    no_change_limit: int = default_of("watchdog_no_change_limit", int)
    reread_limit: int = default_of("watchdog_reread_limit", int)
    max_tokens_per_minute: int = default_of("watchdog_max_tokens_per_minute", int)
    max_cost_per_minute: float = default_of("watchdog_max_cost_per_minute", float)

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchdogConfig:
        return cls(repeat_limit=settings.watchdog_repeat_limit, radius_px=settings.watchdog_radius_px,
                   no_change_limit=settings.watchdog_no_change_limit, reread_limit=settings.watchdog_reread_limit,
                   max_tokens_per_minute=settings.watchdog_max_tokens_per_minute,
                   max_cost_per_minute=settings.watchdog_max_cost_per_minute)


@dataclass(frozen=True, slots=True)
class Trip:
    """Why the run should pause: ``reason`` is the code, ``message`` the same in plain words."""

    reason: str
    message: str
    count: float  # what crossed the limit (calls, tokens or USD)
    limit: float

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "count": self.count, "limit": self.limit}


@dataclass(frozen=True, slots=True)
class _Action:
    key: str  # everything but the coordinates
    points: tuple[tuple[float, float], ...]
    outcome: str  # for results that do not say whether the screen changed: a digest of the output

    def same_as(self, other: _Action, radius: float) -> bool:
        return (self.key == other.key and self.outcome == other.outcome and len(self.points) == len(other.points)
                and all(math.dist(a, b) <= radius for a, b in zip(self.points, other.points, strict=True)))


def _points(given: dict[str, Any]) -> tuple[tuple[float, float], ...]:
    found = []
    for name in POINTER_KEYS:
        value = given.get(name)
        if isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
            found.append((float(value[0]), float(value[1])))
    return tuple(found)


class Watchdog:
    def __init__(self, config: WatchdogConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self._clock = config, clock
        self._calls: dict[str, tuple[str, dict[str, Any]]] = {}  # tool_use id -> (tool, input), until answered
        self._tripped: Trip | None = None
        self.reset()

    def reset(self) -> None:
        """Every counter from zero (after a trip, so a resumed run starts afresh)."""
        self._last: _Action | None = None  # the first action of the current run of repeats
        self._screens: set[str] = set()  # digests of the screens the current run of repeats has shown
        self.repeats = 0
        self.unchanged = 0
        self.looks = 0
        self._spend: deque[tuple[float, int, float]] = deque()  # (when, tokens, cost) in the last minute

    def take(self) -> Trip | None:
        """The trip since the last call, if any; counters restart once it is taken."""
        trip, self._tripped = self._tripped, None
        if trip is not None:
            self.reset()
        return trip

    def observe(self, event: Event) -> None:
        if event.type == "tool_call":
            given = event.data.get("input")
            self._calls[str(event.data.get("id"))] = (str(event.data.get("tool")),
                                                      given if isinstance(given, dict) else {})
        elif event.type == "tool_result":
            call = self._calls.pop(str(event.data.get("id")), None)
            meta = event.data.get("meta") or {}
            if call is not None and "outcome" not in meta:  # not run or cut short: says nothing about progress
                screen = hashlib.sha256(event.image).hexdigest() if event.image else None
                self._result(*call, event.data, screen)
        elif event.type == "usage":
            self._usage(event.data)

    def _trip(self, trip: Trip) -> None:
        if self._tripped is None:
            self._tripped = trip

    def _result(self, tool: str, given: dict[str, Any], data: Any, screen: str | None) -> None:
        cfg = self.config
        action = str(given.get("action", "")) if tool == "computer" else ""
        changed = (data.get("meta") or {}).get("changed")
        if tool == "computer" and action in LOOKS:
            self.looks += 1
            if cfg.reread_limit and self.looks >= cfg.reread_limit:
                self._trip(Trip("rereading", f"the agent looked at the screen {self.looks} times in a row without "
                                "acting", self.looks, cfg.reread_limit))
            return  # a look is neither an action nor a change
        self.looks = 0
        rest = {k: v for k, v in given.items() if k not in POINTER_KEYS}
        outcome = ""
        if not isinstance(changed, bool):  # bash, the editor: progress is a different output
            text = f"{data.get('output', '')}\0{data.get('error', '')}"
            outcome = hashlib.sha256(text.encode()).hexdigest()
        current = _Action(json.dumps([tool, rest], sort_keys=True, default=str), _points(given), outcome)
        # Compared with the first of the run, so clicks cannot drift away a few pixels at a time.
        repeated = self._last is not None and current.same_as(self._last, cfg.radius_px)
        if not repeated:
            self._last, self._screens = current, set()
        cycled = repeated and screen is not None and screen in self._screens
        if screen is not None:
            self._screens.add(screen)
        still = (changed is False or cycled or (not isinstance(changed, bool) and repeated)
                 or bool(data.get("is_error")))
        self.unchanged = self.unchanged + 1 if still else 0
        # A repeat counts the first of its run too, even when only the repeat showed that nothing changed.
        self.repeats = max(self.repeats, 1) + 1 if still and repeated else (1 if still else 0)
        if cfg.repeat_limit and self.repeats >= cfg.repeat_limit:
            what = f"{tool} {action}".strip()
            self._trip(Trip("stuck_repeat", f"the agent repeated the same {what} {self.repeats} times and nothing "
                            "changed", self.repeats, cfg.repeat_limit))
        elif cfg.no_change_limit and self.unchanged >= cfg.no_change_limit:
            self._trip(Trip("no_progress", f"{self.unchanged} actions in a row changed nothing on the screen",
                            self.unchanged, cfg.no_change_limit))

    def _usage(self, data: Any) -> None:
        cfg = self.config
        now = self._clock()
        tokens = sum(int(data.get(k) or 0) for k in ("input_tokens", "cache_write_tokens", "output_tokens"))
        self._spend.append((now, tokens, float(data.get("cost_usd") or 0.0)))
        while self._spend and self._spend[0][0] < now - WINDOW_S:
            self._spend.popleft()
        total_tokens = sum(t for _, t, _ in self._spend)
        total_cost = sum(c for _, _, c in self._spend)
        if cfg.max_tokens_per_minute and total_tokens > cfg.max_tokens_per_minute:
            self._trip(Trip("runaway_rate", f"{total_tokens} tokens in the last minute, over the cap of "
                            f"{cfg.max_tokens_per_minute}", total_tokens, cfg.max_tokens_per_minute))
        elif cfg.max_cost_per_minute and total_cost > cfg.max_cost_per_minute:
            self._trip(Trip("runaway_rate", f"${total_cost:.2f} spent in the last minute, over the cap of "
                            f"${cfg.max_cost_per_minute:.2f}", round(total_cost, 6), cfg.max_cost_per_minute))
