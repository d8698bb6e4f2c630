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
A pure pointer move rarely repaints anything but a hover effect, which is immediate: pass a rule with a short
``first_change_ms`` for it (``rule.for_pointer_move()``) instead of waiting the full window for a change that
is not coming.

**With the browser's signal** (``browser``: the desktop's Chromium over DevTools, ``desktop.browser_signal``)
the long pixel windows are not needed, because the browser says whether a navigation or request is still in
flight. Then: while the browser is busy (a page loading, requests in flight — started after the wait began,
or at most ``browser_stale_ms`` before), wait (grabbing no frames: the CPU is the browser's); once it is
idle, settled when it has stayed idle *and* the pixels have been quiet for ``browser_quiet_ms`` and the pages
have decoded their visible images and drawn two animation frames (a "fence" sent when it went idle, at most
``fence_ms``), as seen by a frame grabbed after the fence answered. After a load, when every change came
before that fence answered (the load's own last paint), ``browser_load_quiet_ms`` is enough; a change after
it means an animation or a smooth scroll, whose frames come ~17 ms apart, so the longer quiet applies
(15 ms there photographed 14 of 15 smooth scrolls mid-way). Right after going idle the screen is polled
every few ms (the last paint is due within about a frame), and the confirming grab is timed for the moment
the quiet is complete rather than the next poll. Nothing busy (any more: requests such as a favicon may
come and go without being the action's effect) and no
pixel change within ``browser_first_change_ms``, and a page has handled the action's input (its input-event
count rose at one fence, and one more fence answered since): no visible effect; done. When no page ever sees
the input (a key the window manager took, a click on the browser's own toolbar), that last condition is
given up after the pixel rule's ``first_change_ms``.
Everything stays under ``cap_ms``. No signal (no browser, browser restarting, pipe broken) → the pixel rule.
Measured on Chromium page loads: ``python -m bench.desktop_bench``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from deskpilot.settings import Settings
from desktop.capture import RawFrame

POINTER_PATIENCE = 3  # first_change_ms is multiplied by this once the pointer image changed
# Browser rule, right after the browser went idle: poll this often for this long (a grab costs ~1 ms).
_DENSE_POLL_S, _DENSE_WINDOW_S = 0.004, 0.1


class FrameSource(Protocol):
    def grab_raw(self) -> RawFrame: ...


class Pending(Protocol):
    """A fence (``desktop.browser_signal.Fence``): answered yet? did a page see new input before it?"""

    def done(self) -> bool: ...

    def saw_input(self) -> bool: ...


class BrowserProbe(Protocol):
    """What settling needs from the browser (``desktop.browser_signal.BrowserSignal``)."""

    def busy(self, since: float | None = None, stale_s: float = 2.0) -> bool | None: ...

    def fence(self, timeout_s: float = 0.3) -> Pending: ...

    def version(self) -> int: ...

    def wait_change(self, version: int, timeout_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class SettleRule:
    """How to decide that the screen is settled; all times in milliseconds."""

    first_change_ms: int = 300
    quiet_ms: int = 250
    cap_ms: int = 3000
    poll_ms: int = 15
    small_quiet_ms: int = 300
    small_area: float = 0.05
    browser_first_change_ms: int = 100
    browser_quiet_ms: int = 30
    browser_load_quiet_ms: int = 15
    browser_stale_ms: int = 2000
    fence_ms: int = 300

    def __post_init__(self) -> None:
        if (min(self.first_change_ms, self.quiet_ms, self.cap_ms, self.small_quiet_ms, self.browser_first_change_ms,
                self.browser_quiet_ms, self.browser_load_quiet_ms, self.browser_stale_ms, self.fence_ms) < 0
                or self.poll_ms <= 0
                or not 0 <= self.small_area <= 1):
            raise ValueError(f"invalid settle rule {self}")

    def for_pointer_move(self, first_change_ms: int = 100) -> SettleRule:
        """The same rule with a short first-change window, for actions that only move the pointer."""
        return replace(self, first_change_ms=min(self.first_change_ms, first_change_ms),
                       browser_first_change_ms=min(self.browser_first_change_ms, first_change_ms))

    @classmethod
    def from_settings(cls, s: Settings) -> SettleRule:
        return cls(first_change_ms=s.settle_first_change_ms, quiet_ms=s.settle_quiet_ms, cap_ms=s.settle_cap_ms,
                   poll_ms=s.settle_poll_ms, small_quiet_ms=s.settle_small_quiet_ms,
                   browser_first_change_ms=s.settle_browser_first_change_ms,
                   browser_quiet_ms=s.settle_browser_quiet_ms, browser_load_quiet_ms=s.settle_browser_load_quiet_ms,
                   browser_stale_ms=s.settle_browser_stale_ms)


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
    capped: bool = False  # the cap ended the wait while the screen (or the browser) was still busy
    by: str = "pixels"  # which rule decided: "pixels" or "browser"
    idle_ms: float | None = None  # browser rule: when the browser was last seen going idle (from the start)


def wait_settled(
    capture: FrameSource,
    rule: SettleRule,
    before: RawFrame | None,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    browser: BrowserProbe | None = None,
) -> Settled:
    """Poll ``capture`` until the screen settles after an action (see the module docstring).

    ``before`` is the frame taken just before the action; ``None`` skips phase 1 (nothing to compare with)
    and only waits for quiet. ``browser``: the browser's signal, used when it answers (else the pixel rule).
    """
    if browser is not None:
        settled = _wait_with_browser(capture, rule, before, browser, clock)
        if settled is not None:
            return settled
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


def _wait_with_browser(capture: FrameSource, rule: SettleRule, before: RawFrame | None, browser: BrowserProbe,
                       clock: Callable[[], float]) -> Settled | None:
    """The browser-aware rule (module docstring); ``None`` when the browser gives no signal at all."""
    start = clock()
    stale = rule.browser_stale_ms / 1000
    if browser.busy(start, stale) is None:
        return None
    poll, quiet, fence_s = rule.poll_ms / 1000, rule.browser_quiet_ms / 1000, rule.fence_ms / 1000
    load_quiet = min(quiet, rule.browser_load_quiet_ms / 1000)
    post_load = False  # the pending/answered fence was sent when a load (busy episode) ended
    late = False  # a change was seen after a fence had answered: an animation, a scroll, not the load's paint
    deadline, first_deadline = start + rule.cap_ms / 1000, start + rule.browser_first_change_ms / 1000
    give_up = start + min(rule.first_change_ms, rule.cap_ms) / 1000  # input never reached a page: pixel window
    fence: Pending = browser.fence(fence_s)
    input_fences = 0  # fences answered since a page saw the action's input (2: it has handled all of it)
    frame = capture.grab_raw()
    polled = 1
    changed = before is not None and frame != before
    active = before is None or changed  # something is happening: wait for it to end, not just a window
    last_change = start
    idle_since: float | None = None
    next_poll = start + poll
    while True:
        # The fence first: the reader applies messages in order, so every event Chromium sent before the
        # fence's answer is already counted when ``busy`` is read next.
        version = browser.version()
        fenced = fence.done()
        busy = browser.busy(start, stale)
        now = clock()
        if busy is None:  # the browser went away mid-wait: the pixels alone decide, with the pixel quiet
            busy, fenced, quiet, input_fences = False, True, rule.quiet_ms / 1000, 2
            load_quiet = quiet  # no fence answers any more: a load's short quiet proves nothing now
        if busy:
            active, idle_since, post_load = True, None, False
        elif idle_since is None:
            idle_since = now
            if active:  # it just went idle: have the pages draw what they got
                fence, fenced, post_load, late = browser.fence(fence_s), False, True, False
        idle_ms = None if idle_since is None else (idle_since - start) * 1000
        # Nothing visible yet: only "no visible effect" can end the wait, and only once a page has handled the
        # input. Requests alone (a favicon, a beacon) may have come and gone meanwhile: they are not the effect.
        unseen = before is not None and not changed and not busy
        if unseen and fenced and input_fences < 2:
            if input_fences or fence.saw_input():
                input_fences += 1
            if input_fences < 2 and now < give_up:
                fence, fenced = browser.fence(fence_s), False
        if unseen and fenced and now >= first_deadline and (input_fences >= 2 or now >= give_up):
            return Settled(frame, False, (now - start) * 1000, polled, by="browser", idle_ms=idle_ms)
        if not busy:
            # A frame grabbed after the fence answered (``fenced`` was read before this grab) shows what the
            # pages drew for the idle state; settled once it has been the screen for ``quiet``.
            at = clock()
            latest = capture.grab_raw()
            polled += 1
            if latest != frame:
                frame, last_change = latest, at
                changed = changed or before is None or latest != before
                active, late = True, late or fenced
            elif (changed or before is None) and fenced and idle_since is not None and min(
                    at - idle_since, at - last_change) >= (load_quiet if post_load and not late else quiet):
                return Settled(frame, changed, (at - start) * 1000, polled, by="browser", idle_ms=idle_ms)
        if now >= deadline:
            return Settled(frame, changed, (now - start) * 1000, polled, capped=True, by="browser", idle_ms=idle_ms)
        wake = next_poll
        if active and idle_since is not None:
            # Just after the browser went idle its last paint is due: poll densely for a short while, so the
            # change is stamped near its true time, and grab exactly when the quiet could be complete.
            if now - idle_since < _DENSE_WINDOW_S:
                wake = min(wake, now + _DENSE_POLL_S)
            if fenced:
                wake = min(wake, max(idle_since, last_change) + (load_quiet if post_load and not late else quiet))
        if wake > now:
            browser.wait_change(version, wake - now)  # sooner when the browser has news (a fence's answer)
        if clock() >= next_poll:
            next_poll = max(next_poll + poll, clock())
