from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from deskpilot.errors import ToolInputError
from desktop.capture import ScreenCapture
from desktop.display import Desktop
from desktop.scaling import Scaler
from desktop.screen import Screenshotter
from desktop.settle import SettleRule
from tests.desktop.conftest import MakeDesktop
from tests.support.xpaint import Painter, px, wait_for

RED = (220, 20, 30)
BLUE = (10, 40, 200)
WHITE = (255, 255, 255)
FAST = SettleRule(first_change_ms=200, quiet_ms=60, cap_ms=2000, poll_ms=10)


def png(data: bytes) -> Image.Image:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.fixture(scope="module")
def big(make_desktop: MakeDesktop) -> Iterator[Desktop]:
    """A 1920×1080 X server: the model sees it at 1366×768."""
    desktop = make_desktop(width=1920, height=1080, browser=False, wm=False, vnc=False)
    yield desktop
    desktop.stop()


@pytest.fixture
def small(bare_display: Desktop) -> Iterator[tuple[Screenshotter, Painter]]:
    painter = Painter(bare_display.display)
    shots = Screenshotter(bare_display.display, rule=FAST,
                          capture=ScreenCapture(bare_display.display, with_cursor=False))
    yield shots, painter
    shots.close()
    painter.close()


@pytest.fixture
def scaled(big: Desktop) -> Iterator[tuple[Screenshotter, Painter]]:
    painter = Painter(big.display)
    shots = Screenshotter(big.display, rule=FAST, capture=ScreenCapture(big.display, with_cursor=False))
    yield shots, painter
    shots.close()
    painter.close()


def test_unscaled_screenshot_is_the_screen(small: tuple[Screenshotter, Painter]) -> None:
    shots, painter = small
    assert shots.scaler == Scaler(1024, 768, 1024, 768)
    painter.rect(0, 0, 1024, 768, BLUE)
    painter.rect(10, 20, 30, 40, RED)
    wait_for(lambda: px(shots.capture.grab(), 10, 20) == RED)
    img = png(shots.screenshot())
    assert img.size == (1024, 768) and img.mode == "RGB"
    assert np.array_equal(np.asarray(img), np.asarray(shots.capture.grab()))


def test_scaled_screenshot_is_at_model_size_and_maps_back(scaled: tuple[Screenshotter, Painter]) -> None:
    shots, painter = scaled
    assert shots.scaler.model_size == (1366, 768)
    painter.rect(0, 0, 1920, 1080, BLUE)
    painter.rect(960, 540, 400, 200, RED)  # screen coordinates
    wait_for(lambda: px(shots.capture.grab(), 1000, 600) == RED)
    img = png(shots.screenshot())
    assert img.size == (1366, 768)
    mx, my = shots.scaler.to_model(1100, 640)  # well inside the rectangle
    assert px(img, mx, my) == RED
    assert px(img, *shots.scaler.to_model(900, 500)) == BLUE
    # A model pixel inside the red box maps to a screen pixel inside it.
    sx, sy = shots.scaler.to_screen(mx, my)
    assert 960 <= sx < 1360 and 540 <= sy < 740


def test_settled_screenshot_waits_for_the_change(small: tuple[Screenshotter, Painter]) -> None:
    shots, painter = small
    win = painter.rect(0, 0, 1024, 768, WHITE)
    wait_for(lambda: px(shots.capture.grab(), 5, 5) == WHITE)
    before = shots.grab_raw()
    painter.recolour(win, RED)
    img = png(shots.settled_screenshot(before))
    assert px(img, 500, 500) == RED
    assert shots.last_settled is not None and shots.last_settled.changed


def test_zoom_crops_full_resolution_and_fits_model_size(scaled: tuple[Screenshotter, Painter]) -> None:
    shots, painter = scaled
    painter.rect(0, 0, 1920, 1080, WHITE)
    # A 1-screen-pixel-wide line pattern: lost when the whole screen is shrunk, visible when zoomed in.
    for i in range(10):
        painter.rect(100 + 4 * i, 100, 1, 60, RED)
    wait_for(lambda: px(shots.capture.grab(), 136, 120) == RED)
    x0, y0 = shots.scaler.to_model(90, 90)
    x1, y1 = shots.scaler.to_model(150, 170)
    img = png(shots.zoom((x0, y0, x1 + 1, y1 + 1)))
    w, h = img.size
    assert w <= 1366 and h <= 768 and (w == 1366 or h == 768)  # fits the model size
    sx0, sy0, sx1, sy1 = shots.scaler.region_to_screen(x0, y0, x1 + 1, y1 + 1)
    assert abs(w / h - (sx1 - sx0) / (sy1 - sy0)) < 0.02  # aspect kept
    # Each 1-pixel line is now ~10 pixels wide: count the red runs across the middle row.
    row = np.asarray(img.convert("RGB"))[h // 2]
    reddish = (row[:, 0] > 150) & (row[:, 2] < 120)
    runs = int(np.count_nonzero(reddish[1:] & ~reddish[:-1]))
    assert runs == 10
    with pytest.raises(ToolInputError, match="Region"):
        shots.zoom((0, 0, 1367, 10))
    with pytest.raises(ToolInputError, match="Region"):
        shots.zoom((50, 50, 40, 60))


def test_frame_jpeg_etag_and_max_width(small: tuple[Screenshotter, Painter]) -> None:
    shots, painter = small
    win = painter.rect(0, 0, 1024, 768, BLUE)
    wait_for(lambda: px(shots.capture.grab(), 5, 5) == BLUE)
    first = shots.frame_jpeg(quality=60, max_width=512)
    assert first.data is not None and (first.width, first.height) == (512, 384)
    img = Image.open(io.BytesIO(first.data))
    assert img.format == "JPEG" and img.size == (512, 384)
    r, g, b = px(img.convert("RGB"), 100, 100)
    assert abs(r - BLUE[0]) < 10 and abs(g - BLUE[1]) < 10 and abs(b - BLUE[2]) < 10
    again = shots.frame_jpeg(quality=60, max_width=512)
    assert again.etag == first.etag and again.data == first.data
    unchanged = shots.frame_jpeg(quality=60, max_width=512, if_none_match=first.etag)
    assert unchanged.data is None and unchanged.etag == first.etag
    assert shots.frame_jpeg(quality=80, max_width=512).etag != first.etag
    full = shots.frame_jpeg(quality=60, max_width=4096)
    assert (full.width, full.height) == (1024, 768)
    painter.recolour(win, RED)
    wait_for(lambda: px(shots.capture.grab(), 5, 5) == RED)
    changed = shots.frame_jpeg(quality=60, max_width=512, if_none_match=first.etag)
    assert changed.data is not None and changed.etag != first.etag
    with pytest.raises(ValueError, match="quality"):
        shots.frame_jpeg(quality=0)


def test_scaler_must_match_the_screen(bare_display: Desktop) -> None:
    with pytest.raises(ValueError, match="scaler is for"):
        Screenshotter(bare_display.display, scaler=Scaler.for_screen(1920, 1080), rule=FAST)
