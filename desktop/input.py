"""Mouse and keyboard input through XTest, in-process, on a Display connection of its own.

Coordinates here are **screen** pixels (the tool maps model space first). Every public method ends with
``display.sync()``, so when it returns the X server has queued the events for the clients.

Characters missing from the keymap (é on a US layout, ß, 漢字, emoji) are typed by binding spare keycodes
(ones with no keysyms; two levels each, the second typed with Shift) to the characters' keysyms (Unicode
keysym = 0x01000000 + code point). Clients such as chromium re-load the keymap *asynchronously* after each
MappingNotify, and keys that arrive meanwhile come out garbled or reordered. So: all bindings of a run go out
in one request (one reload); no key is sent until ``_KEYMAP_PAUSE_S`` after our last keymap change; a
keycode whose key events may still be unread is never rebound (a long text is typed in runs that fit the
slots, with a pause between runs); and the bindings are restored to empty at the next pointer action or on
``close()``. Text on the layout needs none of this and goes out at once.
Not thread-safe: the daemon calls it from its single X worker thread.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from typing import Literal

from Xlib import XK, X
from Xlib.display import Display
from Xlib.ext import xtest

from deskpilot.errors import DesktopError
from desktop.keys import Combo, char_keysym

ScrollDirection = Literal["up", "down", "left", "right"]
_SCROLL_BUTTONS: dict[str, int] = {"up": 4, "down": 5, "left": 6, "right": 7}
_SHIFT = XK.string_to_keysym("Shift_L")
_RETURN = XK.string_to_keysym("Return")
_TAB = XK.string_to_keysym("Tab")
_KEYMAP_PAUSE_S = 0.2  # time for clients to re-read the keymap after we change it
_MULTI_CLICK_GAP_S = 0.02
_SYNC_EVERY = 64  # characters typed between round trips, so a long text streams without huge buffers


class XInput:
    """XTest input on one X display."""

    def __init__(self, display_name: str) -> None:
        try:
            self._d = Display(display_name)
        except Exception as exc:  # Xlib raises several unrelated types for "cannot connect"
            raise DesktopError(f"cannot open X display {display_name}: {exc}") from exc
        if not self._d.has_extension("XTEST"):
            self._d.close()
            raise DesktopError(f"X display {display_name} has no XTEST extension")
        self._root = self._d.screen().root
        info = self._d.display.info
        self._min_kc: int = info.min_keycode
        self._max_kc: int = info.max_keycode
        self._layout: dict[int, tuple[int, bool]] = {}  # keysym -> (keycode, needs shift)
        self._spares: list[int] = []
        self._slots: list[tuple[int, int]] = []
        self._read_layout()
        self._bound: dict[int, tuple[int, int]] = {}  # keysym -> slot, oldest first
        self._typed_since_bind = False
        self._keymap_written_at = 0.0
        self._held_buttons: set[int] = set()

    # --- lifecycle -----------------------------------------------------------------------------------
    def close(self) -> None:
        """Release held buttons and bound keycodes, then disconnect; quiet if the server is already gone."""
        with contextlib.suppress(Exception):
            for button in list(self._held_buttons):
                self.button_up(button)
            self.release_bindings()
        with contextlib.suppress(Exception):
            self._d.close()

    def __enter__(self) -> XInput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def screen_size(self) -> tuple[int, int]:
        screen = self._d.screen()
        return int(screen.width_in_pixels), int(screen.height_in_pixels)

    # --- pointer -------------------------------------------------------------------------------------
    def cursor_position(self) -> tuple[int, int]:
        reply = self._root.query_pointer()
        return int(reply.root_x), int(reply.root_y)

    def move(self, x: int, y: int) -> None:
        self._begin()
        self._move(x, y)
        self._d.sync()

    def button_down(self, button: int = 1) -> None:
        self._begin()
        xtest.fake_input(self._d, X.ButtonPress, button)
        self._held_buttons.add(button)
        self._d.sync()

    def button_up(self, button: int = 1) -> None:
        self._begin()
        xtest.fake_input(self._d, X.ButtonRelease, button)
        self._held_buttons.discard(button)
        self._d.sync()

    def click(self, button: int = 1, *, count: int = 1, at: tuple[int, int] | None = None,
              modifiers: Combo = ()) -> None:
        """``count`` clicks in a row (2 = double, 3 = triple), modifiers held around all of them."""
        self._begin()
        if at is not None:
            self._move(*at)
        with self._holding(modifiers):
            for i in range(count):
                if i:
                    # Clients ignore a repeat click with the very same timestamp as the last one.
                    self._d.sync()
                    time.sleep(_MULTI_CLICK_GAP_S)
                xtest.fake_input(self._d, X.ButtonPress, button)
                xtest.fake_input(self._d, X.ButtonRelease, button)
        self._d.sync()

    def drag(self, start: tuple[int, int], end: tuple[int, int], *, button: int = 1, steps: int = 10,
             step_delay_s: float = 0.01) -> None:
        """Press at ``start``, move in a few steps (apps ignore a teleport), release at ``end``."""
        self._begin()
        self._move(*start)
        xtest.fake_input(self._d, X.ButtonPress, button)
        self._d.sync()
        (x0, y0), (x1, y1) = start, end
        for i in range(1, steps + 1):
            self._move(round(x0 + (x1 - x0) * i / steps), round(y0 + (y1 - y0) * i / steps))
            self._d.sync()
            time.sleep(step_delay_s)
        xtest.fake_input(self._d, X.ButtonRelease, button)
        self._d.sync()

    def scroll(self, direction: ScrollDirection, amount: int, *, at: tuple[int, int] | None = None,
               modifiers: Combo = ()) -> None:
        """``amount`` wheel clicks (X buttons 4–7)."""
        self._begin()
        button = _SCROLL_BUTTONS[direction]
        if at is not None:
            self._move(*at)
        with self._holding(modifiers):
            for _ in range(amount):
                xtest.fake_input(self._d, X.ButtonPress, button)
                xtest.fake_input(self._d, X.ButtonRelease, button)
                self._d.sync()
        self._d.sync()

    # --- keyboard ------------------------------------------------------------------------------------
    def press_combos(self, combos: Iterable[Combo]) -> None:
        """Each combo: keys pressed in order, released in reverse; combos one after another."""
        self._begin(keyboard=True)
        for combo in combos:
            with self._holding(combo):
                pass
        self._d.sync()

    def hold(self, combo: Combo, duration_s: float) -> None:
        with self.holding(combo):
            time.sleep(duration_s)

    def holding(self, combo: Combo) -> _Held:
        """Context manager: the combo's keys are down (and synced) inside, released in reverse on exit."""
        self._begin(keyboard=True)
        return _Held(self, combo, sync=True)

    def type_text(self, text: str) -> None:
        """Type any text: keymap characters directly, others through spare keycodes; \\n and \\t as keys."""
        self._begin(keyboard=True)
        keysyms = _text_keysyms(text)
        start = 0
        while start < len(keysyms):
            end = self._bind_run(keysyms, start)
            self._keymap_quiet()
            for i, keysym in enumerate(keysyms[start:end]):
                self._tap(keysym)
                if i % _SYNC_EVERY == _SYNC_EVERY - 1:
                    self._d.sync()
            self._d.sync()
            start = end

    def release_bindings(self) -> None:
        """Give the spare keycodes back their empty mapping."""
        if self._bound:
            keycodes = {keycode for keycode, _ in self._bound.values()}
            self._bound.clear()
            self._write_keymap(keycodes)
        self._d.sync()

    # --- internals -----------------------------------------------------------------------------------
    def _read_layout(self) -> None:
        """Snapshot the keymap: which keycode (and Shift) types each keysym, and which keycodes are empty."""
        rows = self._d.get_keyboard_mapping(self._min_kc, self._max_kc - self._min_kc + 1)
        layout: dict[int, tuple[int, bool]] = {}
        for column in (1, 0):  # column 0 (unshifted) wins over column 1
            for i in reversed(range(len(rows))):  # and the lowest keycode wins
                keysym = rows[i][column]
                if keysym:
                    layout[keysym] = (self._min_kc + i, column == 1)
        self._layout = layout
        # Keycode 8 is skipped: some XKB clients never map it.
        self._spares = [self._min_kc + i for i, row in enumerate(rows) if not any(row) and self._min_kc + i > 8]
        # Binding slots: (spare keycode, level). Level 1 (typed with Shift) doubles the capacity; every
        # level-0 slot comes first, so a short text never needs Shift.
        self._slots = [(keycode, level) for level in (0, 1) for keycode in self._spares]

    def _begin(self, *, keyboard: bool = False) -> None:
        # A pointer action gives the spare keycodes back (the keymap reload it causes is harmless to the
        # pointer, and the next key waits for it in ``_keymap_quiet``); a keyboard action keeps them, so a
        # run of typing reuses its bindings instead of reloading the client's keymap twice per action.
        if self._bound and not keyboard:
            self.release_bindings()
        if keyboard and not self._bound:
            self._read_layout()  # ~1 ms; follows a layout change made meanwhile (e.g. setxkbmap in bash)

    def _move(self, x: int, y: int) -> None:
        xtest.fake_input(self._d, X.MotionNotify, x=int(x), y=int(y))

    def _lookup(self, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs shift) from the keymap's first group, unshifted preferred."""
        return self._layout.get(keysym)

    def _keycode(self, keysym: int) -> tuple[int, bool]:
        """Keycode for a keysym already on the keymap or bound by ``_bind``."""
        found = self._lookup(keysym)
        if found is not None:
            return found
        keycode, level = self._bound[keysym]
        return keycode, level == 1

    def _bind_run(self, keysyms: list[int], start: int) -> int:
        """Bind the unmapped keysyms of the longest run from ``start`` that fits the spares; return its end."""
        need: list[int] = []
        end = start
        while end < len(keysyms):
            keysym = keysyms[end]
            if keysym not in need and self._lookup(keysym) is None:
                if len(need) == len(self._slots):
                    break
                need.append(keysym)
            end += 1
        self._bind(need)
        return end

    def _bind(self, keysyms: list[int]) -> None:
        """Put each keysym on a spare keycode (recycling bindings not in ``keysyms``), then let clients catch up."""
        missing = [k for k in keysyms if k not in self._bound]
        if not missing:
            return
        if len(set(keysyms)) > len(self._slots):
            raise DesktopError("the keymap has too few spare keycodes to type characters outside the layout")
        taken = set(self._bound.values())
        free = [slot for slot in self._slots if slot not in taken]
        stale = [k for k in self._bound if k not in keysyms]
        if len(free) < len(missing) and self._typed_since_bind:
            # Keys already sent with the old bindings must be translated before those keycodes change.
            self._d.sync()
            time.sleep(_KEYMAP_PAUSE_S)
        for keysym in missing:
            self._bound[keysym] = free.pop(0) if free else self._bound.pop(stale.pop(0))
        self._write_keymap({keycode for keycode, _ in self._bound.values()})
        self._d.sync()
        self._typed_since_bind = False

    def _keymap_quiet(self) -> None:
        """Before sending keys: give clients ``_KEYMAP_PAUSE_S`` since our last keymap change.

        Clients (chromium) re-load the keymap asynchronously after a MappingNotify; keys that arrive during
        the reload come out garbled or reordered — this covers bindings and the release of old ones alike.
        """
        left = self._keymap_written_at + _KEYMAP_PAUSE_S - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _write_keymap(self, keycodes: set[int]) -> None:
        """Write the rows of ``keycodes`` from ``_bound`` (no binding = empty row) in ONE request.

        Each request makes every client re-load its keymap (chromium compiles a new XKB keymap per
        MappingNotify); one request per keycode would queue a dozen reloads behind our key events. The rows
        between the spares are rewritten with their current content, read just before.
        """
        low, high = min(keycodes), max(keycodes)
        rows = [list(row) for row in self._d.get_keyboard_mapping(low, high - low + 1)]
        for keycode in keycodes:
            rows[keycode - low] = [X.NoSymbol] * len(rows[0])
        for keysym, (keycode, level) in self._bound.items():
            if keycode in keycodes:
                rows[keycode - low][level] = keysym
        for keycode in keycodes:
            row = rows[keycode - low]
            if row[0] and not row[1]:
                row[1] = row[0]  # one keysym on both levels: Shift held or not, the same character
        self._d.change_keyboard_mapping(low, rows)
        self._keymap_written_at = time.monotonic()

    def _tap(self, keysym: int) -> None:
        keycode, shifted = self._keycode(keysym)
        shift_code = self._lookup(_SHIFT) if shifted else None
        if shift_code:
            xtest.fake_input(self._d, X.KeyPress, shift_code[0])
        xtest.fake_input(self._d, X.KeyPress, keycode)
        xtest.fake_input(self._d, X.KeyRelease, keycode)
        if shift_code:
            xtest.fake_input(self._d, X.KeyRelease, shift_code[0])
        self._typed_since_bind = True

    def _holding(self, combo: Combo) -> _Held:
        return _Held(self, combo, sync=False)


def _text_keysyms(text: str) -> list[int]:
    """Characters → keysyms; \\r\\n and \\r are one Return, \\t is Tab."""
    keysyms: list[int] = []
    previous = ""
    for char in text:
        if not (char == "\n" and previous == "\r"):
            keysyms.append(_RETURN if char in "\r\n" else _TAB if char == "\t" else char_keysym(char))
        previous = char
    return keysyms


class _Held:
    """Context manager: press a combo's keys in order (adding Shift where a key needs it), release in reverse."""

    def __init__(self, owner: XInput, combo: Combo, *, sync: bool) -> None:
        self._owner = owner
        self._combo = combo
        self._sync = sync
        self._pressed: list[int] = []

    def __enter__(self) -> None:
        o = self._owner
        o._bind([k.keysym for k in self._combo if o._lookup(k.keysym) is None])
        o._keymap_quiet()
        o._typed_since_bind = True
        shift = o._lookup(_SHIFT)
        try:
            for key in self._combo:
                keycode, shifted = o._keycode(key.keysym)
                if shifted and shift is not None and shift[0] not in self._pressed:
                    xtest.fake_input(o._d, X.KeyPress, shift[0])
                    self._pressed.append(shift[0])
                if keycode not in self._pressed:
                    xtest.fake_input(o._d, X.KeyPress, keycode)
                    self._pressed.append(keycode)
        except BaseException:
            self.__exit__()  # never leave a key stuck down
            raise
        if self._sync:
            o._d.sync()

    def __exit__(self, *exc: object) -> None:
        o = self._owner
        for keycode in reversed(self._pressed):
            xtest.fake_input(o._d, X.KeyRelease, keycode)
        self._pressed.clear()
        if self._sync:
            o._d.sync()
