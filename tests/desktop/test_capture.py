from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from deskpilot.errors import DesktopLostError
from desktop.capture import RawFrame, ScreenCapture
from desktop.display import Desktop
from tests.support.xpaint import Painter, px, wait_for

RED = (220, 20, 30)
BLUE = (10, 40, 200)
GREEN = (0, 160, 60)


@pytest.fixture
def painter(bare_display: Desktop) -> Iterator[Painter]:
    p = Painter(bare_display.display)
    yield p
    p.close()


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


def test_cursor_is_painted_by_grab_but_not_in_raw_frames(bare_display: Desktop, painter: Painter) -> None:
    painter.rect(0, 0, 1024, 768, BLUE)
    painter.warp_pointer(400, 300)
    with ScreenCapture(bare_display.display, with_cursor=False) as plain, \
            ScreenCapture(bare_display.display, with_cursor=True) as cursor:
        wait_for(lambda: px(plain.grab(), 400, 300) == BLUE)
        without, with_ = plain.grab(), cursor.grab()
        box = (380, 280, 420, 320)
        assert without.crop(box).getcolors() == [(40 * 40, BLUE)]
        assert len(with_.crop(box).getcolors() or []) > 1  # the pointer is drawn around its hotspot
        assert px(with_, 10, 10) == BLUE
        cur = cursor.cursor()
        assert cur is not None and cur.image.mode == "RGBA"
        assert cur.left <= 400 < cur.left + cur.image.width and cur.top <= 300 < cur.top + cur.image.height
        # Raw frames never contain the pointer: moving it changes nothing there.
        raw = cursor.grab_raw()
        assert raw == plain.grab_raw()
        painter.warp_pointer(700, 500)
        wait_for(lambda: (c := cursor.cursor()) is not None and c.left > 600)
        assert cursor.grab_raw() == raw
        assert px(cursor.grab(), 400, 300) == BLUE


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


def test_changed_fraction_is_the_bounding_box_of_the_difference() -> None:
    a = RawFrame(bytes(10 * 8 * 4), 10, 8)
    data = bytearray(a.data)
    for x, y in [(2, 1), (4, 3)]:  # two changed pixels: box 3 wide × 3 high
        data[(y * 10 + x) * 4] = 255
    b = RawFrame(data, 10, 8)
    assert a.changed_fraction(a) == 0.0
    assert b.changed_fraction(a) == 9 / 80
    assert RawFrame(bytes(4 * 4 * 4), 4, 4).changed_fraction(a) == 1.0  # another size: all changed
    assert a != b and a == RawFrame(bytes(10 * 8 * 4), 10, 8, cursor_serial=7)  # the pointer is not content


@pytest.fixture
def xvfb_without_xfixes() -> Iterator[str]:
    """An Xvfb of our own with the XFixes extension switched off."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "320x240x24", "-nolisten", "tcp",
                             "-noreset", "-extension", "XFIXES"], pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()
        assert number.isdigit(), "Xvfb did not report its display"
        yield f":{number}"
    finally:
        proc.terminate()  # SIGTERM: Xvfb removes its lock file and socket
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


NO_XFIXES_CHECK = """
import sys
from desktop.capture import ScreenCapture
with ScreenCapture(sys.argv[1]) as cap:
    assert cap.cursor() is None and cap.cursor_serial() == 0
    assert cap.grab().size == (320, 240)
    assert cap.grab_raw() == cap.grab_raw()
print("ok")
"""


@pytest.mark.desktop
def test_without_xfixes_pixels_work_and_there_is_no_pointer(xvfb_without_xfixes: str) -> None:
    # In a child process: python-xlib keeps extension event codes in a process-wide table, and a server with
    # other codes (no XFixes shifts them) would break later connections of this test process.
    done = subprocess.run([sys.executable, "-c", NO_XFIXES_CHECK, xvfb_without_xfixes],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
