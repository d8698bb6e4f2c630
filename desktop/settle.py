"""Wait until the screen has settled after an action, instead of the reference demo's fixed 2 s sleep.

Frames are polled and compared by their bytes (a memcmp, well under a millisecond); the pointer is not part
of them (see ``desktop.capture``). Two phases:

1. **first change** — the action's effect may take a moment to reach the screen (the app must read the X
   event, then repaint; a link must fetch its page). Poll until a frame differs from ``before`` (taken just
   before the action) for at most ``first_change_ms`` — three times that (within ``cap_ms``) when the
   pointer's image changed meanwhile, because the app visibly reacted and its repaint is coming (Chromium
   shows its progress cursor while a navigation is pending). No change by then: no visible effect; done.
2. **quiet** — then poll until nothing has changed for ``quiet_ms``, never longer than ``cap_ms`` in total
   (animations, spinners). While everything that changed is *small* (its bounding box under ``small_area``
   of the screen: a pressed button, a link turning visited, a caret), the quiet needed is ``small_quiet_ms``
   instead: such immediate feedback often precedes the real response (the next page) by a few hundred ms.
   Keep ``small_quiet_ms`` under 500 ms, the caret blink period, or a focused text field never settles.

The frame returned is the last one seen, so a page load is photographed after its last paint, not halfway.
Measured on Chromium page loads: ``python -m bench.desktop_bench``. A pure pointer move rarely repaints
anything but a hover effect, which is immediate: pass a rule with a short ``first_change_ms`` for it
(``rule.for_pointer_move()``) instead of waiting the full window for a change that is not coming.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from deskpilot.settings import Settings, get_settings
from desktop.capture import RawFrame

POINTER_PATIENCE = 3  # first_change_ms is multiplied by this once the pointer image changed


class FrameSource(Protocol):
    def grab_raw(self) -> RawFrame: ...


@dataclass(frozen=True, slots=True)
class SettleRule:
    """How to decide that the screen is settled; all times in milliseconds."""

    first_change_ms: int = 300
    quiet_ms: int = 250
    cap_ms: int = 3000
    poll_ms: int = 15
    small_quiet_ms: int = 300
    small_area: float = 0.05

    def __post_init__(self) -> None:
        if (min(self.first_change_ms, self.quiet_ms, self.cap_ms, self.small_quiet_ms) < 0 or self.poll_ms <= 0
                or not 0 <= self.small_area <= 1):
            raise ValueError(f"invalid settle rule {self}")

    def for_pointer_move(self, first_change_ms: int = 100) -> SettleRule:
        """The same rule with a short first-change window, for actions that only move the pointer."""
        return replace(self, first_change_ms=min(self.first_change_ms, first_change_ms))

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> SettleRule:
        s = settings or get_settings()
        return cls(first_change_ms=s.settle_first_change_ms, quiet_ms=s.settle_quiet_ms, cap_ms=s.settle_cap_ms,
                   poll_ms=s.settle_poll_ms, small_quiet_ms=s.settle_small_quiet_ms)


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome of ``wait_settled``.

    ``changed``: the screen differed from ``before`` at some point. ``waited_ms``: time spent in
    ``wait_settled``. ``frames_polled``: frames grabbed, including the first.
    """

    frame: RawFrame
    changed: bool
    waited_ms: float
    frames_polled: int
    capped: bool = False  # the cap ended the wait while the screen was still changing


def wait_settled(
    capture: FrameSource,
    rule: SettleRule,
    before: RawFrame | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Settled:
    """Poll ``capture`` until the screen settles after an action (see the module docstring).

    ``before`` is the frame taken just before the action; ``None`` skips phase 1 (nothing to compare with)
    and only waits for quiet.
    """
    start = clock()
    poll = rule.poll_ms / 1000
    deadline = start + rule.cap_ms / 1000
    frame = capture.grab_raw()
    polled = 1
    next_poll = start + poll

    def wait_next() -> float:
        # Poll on a fixed schedule from ``start`` so slow grabs don't stretch the interval.
        nonlocal next_poll
        now = clock()
        if next_poll > now:
            sleep(next_poll - now)
        next_poll = max(next_poll + poll, clock())
        return clock()

    changed = before is not None and frame != before
    if before is not None and not changed:
        first_ms = rule.first_change_ms
        while not changed:
            if frame.cursor_serial != before.cursor_serial:
                first_ms = rule.first_change_ms * POINTER_PATIENCE
            if clock() >= start + min(first_ms, rule.cap_ms) / 1000:
                return Settled(frame, False, (clock() - start) * 1000, polled)
            wait_next()
            frame = capture.grab_raw()
            polled += 1
            changed = frame != before

    # Phase 2: the quiet clock restarts at every change, stamped with the time of the grab that saw it.
    last_change = clock()
    reference = before if before is not None else frame
    large = before is None or frame.changed_fraction(before) >= rule.small_area
    capped = False
    while clock() - last_change < (rule.quiet_ms if large else rule.small_quiet_ms) / 1000:
        if clock() >= deadline:
            capped = True
            break
        at = wait_next()
        latest = capture.grab_raw()
        polled += 1
        if latest != frame:
            frame, last_change, changed = latest, at, True
            large = large or frame.changed_fraction(reference) >= rule.small_area
    return Settled(frame, changed, (clock() - start) * 1000, polled, capped)
