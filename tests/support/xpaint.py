"""Paint solid-colour windows on an X display with python-xlib, to give capture tests known pixels.

    painter = Painter(":5")
    win = painter.rect(100, 50, 200, 100, (220, 20, 30))   # override-redirect: exactly there, no WM
    painter.recolour(win, (0, 0, 255))
    painter.close()                                        # destroys its windows

One connection per Painter; use a Painter from one thread only (make one per thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PIL import Image
from Xlib import X
from Xlib.display import Display

RGB = tuple[int, int, int]


class Painter:
    def __init__(self, display: str) -> None:
        self.d = Display(display)
        self.screen = self.d.screen()
        self.windows: list[Any] = []

    def pixel(self, rgb: RGB) -> int:
        r, g, b = rgb
        return int(self.screen.default_colormap.alloc_color(r * 257, g * 257, b * 257).pixel)

    def rect(self, x: int, y: int, w: int, h: int, rgb: RGB) -> Any:
        win = self.screen.root.create_window(
            x, y, w, h, 0, self.screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=self.pixel(rgb), override_redirect=True)
        win.map()
        self.d.sync()
        self.windows.append(win)
        return win

    def recolour(self, win: Any, rgb: RGB) -> None:
        win.change_attributes(background_pixel=self.pixel(rgb))
        win.clear_area()
        self.d.sync()

    def warp_pointer(self, x: int, y: int) -> None:
        self.screen.root.warp_pointer(x, y)
        self.d.sync()

    def close(self) -> None:
        for win in self.windows:
            win.destroy()
        self.d.sync()
        self.d.close()


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` until true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def px(img: Image.Image, x: int, y: int) -> RGB:
    value = img.getpixel((x, y))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))
