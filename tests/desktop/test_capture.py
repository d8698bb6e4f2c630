from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from PIL import Image
from Xlib import X
from Xlib.display import Display

from deskpilot.errors import DesktopLostError
from desktop.capture import RawFrame, ScreenCapture
from desktop.display import Desktop

RED = (220, 20, 30)
BLUE = (10, 40, 200)
GREEN = (0, 160, 60)


class Painter:
    """Draws solid-colour override-redirect windows on a display with python-xlib (its own connection)."""

    def __init__(self, display: str) -> None:
        self.d = Display(display)
        self.screen = self.d.screen()
        self.windows: list[object] = []

    def pixel(self, rgb: tuple[int, int, int]) -> int:
        r, g, b = rgb
        return int(self.screen.default_colormap.alloc_color(r * 257, g * 257, b * 257).pixel)

    def rect(self, x: int, y: int, w: int, h: int, rgb: tuple[int, int, int]) -> object:
        win = self.screen.root.create_window(
            x, y, w, h, 0, self.screen.root_depth, X.InputOutput, X.CopyFromParent,
            background_pixel=self.pixel(rgb), override_redirect=True)
        win.map()
        self.d.sync()
        self.windows.append(win)
        return win

    def recolour(self, win: object, rgb: tuple[int, int, int]) -> None:
        win.change_attributes(background_pixel=self.pixel(rgb))  # type: ignore[attr-defined]
        win.clear_area()  # type: ignore[attr-defined]
        self.d.sync()

    def close(self) -> None:
        for win in self.windows:
            win.destroy()  # type: ignore[attr-defined]
        self.d.sync()
        self.d.close()


@pytest.fixture
def painter(bare_display: Desktop) -> Iterator[Painter]:
    p = Painter(bare_display.display)
    yield p
    p.close()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def px(img: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    value = img.getpixel((x, y))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


@pytest.mark.parametrize("use_shm", [True, False])
def test_grab_returns_the_real_pixels(bare_display: Desktop, painter: Painter, use_shm: bool) -> None:
    painter.rect(0, 0, 1024, 768, BLUE)
    painter.rect(100, 50, 200, 100, RED)
    with ScreenCapture(bare_display.display, with_cursor=False, use_shm=use_shm) as cap:
        assert cap.method == ("MIT-SHM" if use_shm else "XGetImage")
        wait_for(lambda: px(cap.grab(), 150, 100) == RED)
        img = cap.grab()
        assert img.mode == "RGB" and img.size == (1024, 768) == cap.size
        # The rectangle's exact edges, and the colour channels in the right order.
        assert px(img, 100, 50) == RED and px(img, 299, 149) == RED
        for outside in [(99, 50), (100, 49), (300, 149), (299, 150), (0, 0), (1023, 767)]:
            assert px(img, *outside) == BLUE, outside


def test_grab_raw_is_bgrx_and_compares_by_content(bare_display: Desktop, painter: Painter) -> None:
    win = painter.rect(0, 0, 1024, 768, GREEN)
    with ScreenCapture(bare_display.display, with_cursor=False) as cap:
        wait_for(lambda: px(cap.grab(), 5, 5) == GREEN)
        a, b = cap.grab_raw(), cap.grab_raw()
        assert isinstance(a, RawFrame) and a.size == (1024, 768)
        assert len(a.data) == 1024 * 768 * 4
        assert bytes(a.data[:3]) == bytes(reversed(GREEN))  # B, G, R
        assert a == b and a.data is not b.data and a.digest() == b.digest()
        painter.recolour(win, RED)
        wait_for(lambda: cap.grab_raw() != a)
        c = cap.grab_raw()
        assert c != a and c.digest() != a.digest()
        assert px(c.to_image(), 500, 500) == RED


def test_cursor_is_painted_when_asked(bare_display: Desktop, painter: Painter) -> None:
    painter.rect(0, 0, 1024, 768, BLUE)
    painter.d.screen().root.warp_pointer(400, 300)
    painter.d.sync()
    with ScreenCapture(bare_display.display, with_cursor=False) as plain, \
            ScreenCapture(bare_display.display, with_cursor=True) as cursor:
        wait_for(lambda: px(plain.grab(), 400, 300) == BLUE)
        without, with_ = plain.grab(), cursor.grab()
        box = (380, 280, 420, 320)
        assert without.crop(box).getcolors() == [(40 * 40, BLUE)]
        assert len(with_.crop(box).getcolors() or []) > 1  # the pointer is drawn around its hotspot
        assert px(with_, 10, 10) == BLUE


def test_closed_capture_and_missing_display_raise_desktop_lost(bare_display: Desktop) -> None:
    cap = ScreenCapture(bare_display.display)
    cap.close()
    cap.close()  # idempotent
    with pytest.raises(DesktopLostError, match="closed"):
        cap.grab_raw()
    with pytest.raises(DesktopLostError, match="cannot open X display :4093"):
        ScreenCapture(":4093")


def test_dead_x_server_raises_desktop_lost(make_desktop: Callable[..., Desktop]) -> None:
    desktop = make_desktop(width=640, height=480, browser=False, wm=False, vnc=False)
    cap = ScreenCapture(desktop.display)
    assert cap.size == (640, 480)
    desktop.stop()
    with pytest.raises(DesktopLostError, match="failed"):
        cap.grab_raw()
    cap.close()
