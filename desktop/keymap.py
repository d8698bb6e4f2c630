"""The X keymap as a typist needs it: which keycode (and Shift) types each keysym, and spare keycodes bound
on demand to characters the layout lacks (é on a US layout, ß, 漢字, emoji).

Spare keycodes are the ones with no keysyms; each gives two slots (level 0, and level 1 typed with Shift)
and is bound to a character's keysym (Unicode keysym = 0x01000000 + code point). Clients such as chromium
re-load the keymap *asynchronously* after each MappingNotify, and keys that arrive meanwhile come out
garbled or reordered. So: all bindings of a run go out in one request (one reload); ``quiet()`` holds keys
back until ``KEYMAP_PAUSE_S`` after our last keymap change; a keycode whose key events may still be unread
is never rebound; and ``release()`` gives the spares back their empty rows.
Sending the key events is ``desktop.input``'s job; this module only decides and writes the mapping.
"""

from __future__ import annotations

import time

from Xlib import X
from Xlib.display import Display

from deskpilot.errors import DesktopError

KEYMAP_PAUSE_S = 0.2  # time for clients to re-read the keymap after we change it


class Keymap:
    """The keymap seen through one Display connection (not thread-safe, like the connection)."""

    def __init__(self, display: Display) -> None:
        self._d = display
        info = display.display.info
        self._min_kc: int = info.min_keycode
        self._max_kc: int = info.max_keycode
        self._layout: dict[int, tuple[int, bool]] = {}  # keysym -> (keycode, needs shift)
        self._slots: list[tuple[int, int]] = []
        self._bound: dict[int, tuple[int, int]] = {}  # keysym -> slot, oldest first
        self._written_at = 0.0
        self.typed_since_bind = False  # set by the sender once a key went out on the current bindings
        self.read()

    @property
    def has_bindings(self) -> bool:
        return bool(self._bound)

    def read(self) -> None:
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
        spares = [self._min_kc + i for i, row in enumerate(rows) if not any(row) and self._min_kc + i > 8]
        # Binding slots: (spare keycode, level). Level 1 (typed with Shift) doubles the capacity; every
        # level-0 slot comes first, so a short text never needs Shift.
        self._slots = [(keycode, level) for level in (0, 1) for keycode in spares]

    def lookup(self, keysym: int) -> tuple[int, bool] | None:
        """(keycode, needs shift) from the keymap's first group, unshifted preferred."""
        return self._layout.get(keysym)

    def keycode(self, keysym: int) -> tuple[int, bool]:
        """Keycode for a keysym already on the keymap or bound by ``bind``."""
        found = self.lookup(keysym)
        if found is not None:
            return found
        keycode, level = self._bound[keysym]
        return keycode, level == 1

    def bind_run(self, keysyms: list[int], start: int) -> int:
        """Bind the unmapped keysyms of the longest run from ``start`` that fits the spares; return its end."""
        need: list[int] = []
        end = start
        while end < len(keysyms):
            keysym = keysyms[end]
            if keysym not in need and self.lookup(keysym) is None:
                if len(need) == len(self._slots):
                    break
                need.append(keysym)
            end += 1
        self.bind(need)
        return end

    def bind(self, keysyms: list[int]) -> None:
        """Put each keysym on a spare keycode (recycling bindings not in ``keysyms``), then let clients catch up."""
        missing = [k for k in keysyms if k not in self._bound]
        if not missing:
            return
        if len(set(keysyms)) > len(self._slots):
            raise DesktopError("the keymap has too few spare keycodes to type characters outside the layout")
        taken = set(self._bound.values())
        free = [slot for slot in self._slots if slot not in taken]
        stale = [k for k in self._bound if k not in keysyms]
        if len(free) < len(missing) and self.typed_since_bind:
            # Keys already sent with the old bindings must be translated before those keycodes change.
            self._d.sync()
            time.sleep(KEYMAP_PAUSE_S)
        for keysym in missing:
            self._bound[keysym] = free.pop(0) if free else self._bound.pop(stale.pop(0))
        self._write({keycode for keycode, _ in self._bound.values()})
        self._d.sync()
        self.typed_since_bind = False

    def release(self) -> None:
        """Give the spare keycodes back their empty mapping (the caller syncs)."""
        if self._bound:
            keycodes = {keycode for keycode, _ in self._bound.values()}
            self._bound.clear()
            self._write(keycodes)

    def quiet(self) -> None:
        """Before sending keys: give clients ``KEYMAP_PAUSE_S`` since our last keymap change.

        Clients (chromium) re-load the keymap asynchronously after a MappingNotify; keys that arrive during
        the reload come out garbled or reordered — this covers bindings and the release of old ones alike.
        """
        left = self._written_at + KEYMAP_PAUSE_S - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _write(self, keycodes: set[int]) -> None:
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
        self._written_at = time.monotonic()
