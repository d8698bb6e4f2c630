"""Mouse and keyboard input through XTest, in-process, on a Display connection of its own.

Coordinates here are **screen** pixels (the tool maps model space first). Every public method ends with
``display.sync()``, so when it returns the X server has queued the events for the clients.

Characters missing from the keymap (é on a US layout, ß, 漢字, emoji) are typed through spare keycodes that
``desktop.keymap.Keymap`` binds to them, waiting out the clients' keymap reloads; a long text is typed in
runs that fit the spare slots. Keyboard actions keep the bindings; the next pointer action or ``close()``
gives them back. Text on the layout needs none of this and goes out at once.
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
from desktop.keymap import Keymap
from desktop.keys import Combo, char_keysym

ScrollDirection = Literal["up", "down", "left", "right"]
_SCROLL_BUTTONS: dict[str, int] = {"up": 4, "down": 5, "left": 6, "right": 7}
_SHIFT = XK.string_to_keysym("Shift_L")
_RETURN = XK.string_to_keysym("Return")
_TAB = XK.string_to_keysym("Tab")
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
        self._keys = Keymap(self._d)
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
            end = self._keys.bind_run(keysyms, start)
            self._keys.quiet()
            for i, keysym in enumerate(keysyms[start:end]):
                self._tap(keysym)
                if i % _SYNC_EVERY == _SYNC_EVERY - 1:
                    self._d.sync()
            self._d.sync()
            start = end

    def release_bindings(self) -> None:
        """Give the spare keycodes back their empty mapping."""
        self._keys.release()
        self._d.sync()

    # --- internals -----------------------------------------------------------------------------------
    def _begin(self, *, keyboard: bool = False) -> None:
        # A pointer action gives the spare keycodes back (the keymap reload it causes is harmless to the
        # pointer, and the next key waits for it in ``Keymap.quiet``); a keyboard action keeps them, so a
        # run of typing reuses its bindings instead of reloading the client's keymap twice per action.
        if self._keys.has_bindings and not keyboard:
            self.release_bindings()
        if keyboard and not self._keys.has_bindings:
            self._keys.read()  # ~1 ms; follows a layout change made meanwhile (e.g. setxkbmap in bash)

    def _move(self, x: int, y: int) -> None:
        xtest.fake_input(self._d, X.MotionNotify, x=int(x), y=int(y))

    def _tap(self, keysym: int) -> None:
        keycode, shifted = self._keys.keycode(keysym)
        shift_code = self._keys.lookup(_SHIFT) if shifted else None
        if shift_code:
            xtest.fake_input(self._d, X.KeyPress, shift_code[0])
        xtest.fake_input(self._d, X.KeyPress, keycode)
        xtest.fake_input(self._d, X.KeyRelease, keycode)
        if shift_code:
            xtest.fake_input(self._d, X.KeyRelease, shift_code[0])
        self._keys.typed_since_bind = True

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
        keys = o._keys
        keys.bind([k.keysym for k in self._combo if keys.lookup(k.keysym) is None])
        keys.quiet()
        keys.typed_since_bind = True
        shift = keys.lookup(_SHIFT)
        try:
            for key in self._combo:
                keycode, shifted = keys.keycode(key.keysym)
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
