from __future__ import annotations

import pytest

from deskpilot.errors import ToolInputError
from desktop.scaling import TARGETS, Scaler

# (screen, expected model size)
TABLE = [
    ((1920, 1080), (1366, 768)),
    ((1920, 1200), (1280, 800)),
    ((2560, 1600), (1280, 800)),
    ((3840, 2160), (1366, 768)),
    ((1600, 1200), (1024, 768)),
    ((1280, 960), (1024, 768)),
    ((4096, 2160), (4096, 2160)),  # 1.896: no target within 0.02
    ((1024, 768), (1024, 768)),  # matches XGA but is not wider than it
    ((1366, 768), (1366, 768)),
    ((800, 600), (800, 600)),  # 4:3 but narrower than XGA
    ((1000, 1000), (1000, 1000)),
]


def test_targets_are_the_reference_table() -> None:
    assert [(t.name, t.width, t.height) for t in TARGETS] == [
        ("XGA", 1024, 768), ("WXGA", 1280, 800), ("FWXGA", 1366, 768)]


@pytest.mark.parametrize(("screen", "model"), TABLE)
def test_for_screen_picks_target(screen: tuple[int, int], model: tuple[int, int]) -> None:
    s = Scaler.for_screen(*screen)
    assert s.screen_size == screen
    assert s.model_size == model
    assert s.scaled == (screen != model)


def test_disabled_is_unscaled() -> None:
    s = Scaler.for_screen(1920, 1080, enabled=False)
    assert s.model_size == (1920, 1080)
    assert not s.scaled


@pytest.mark.parametrize(("screen", "model"), TABLE)
def test_round_trip_every_model_pixel(screen: tuple[int, int], model: tuple[int, int]) -> None:
    # The mapping is separable (x only depends on x, y on y), so walking both axes fully covers every pixel.
    s = Scaler.for_screen(*screen)
    for x in range(s.model_w):
        sx, _ = s.to_screen(x, 0)
        assert 0 <= sx < s.screen_w
        assert s.to_model(sx, 0) == (x, 0)
    for y in range(s.model_h):
        _, sy = s.to_screen(0, y)
        assert 0 <= sy < s.screen_h
        assert s.to_model(0, sy) == (0, y)


def test_round_trip_full_grid_1920x1080() -> None:
    s = Scaler.for_screen(1920, 1080)
    for x in range(0, s.model_w, 7):
        for y in range(s.model_h):
            assert s.to_model(*s.to_screen(x, y)) == (x, y)


def test_known_points_1920x1080() -> None:
    s = Scaler.for_screen(1920, 1080)
    assert s.to_screen(0, 0) == (0, 0)
    assert s.to_screen(1365, 767) == (1919, 1079)
    assert s.to_screen(683, 384) == (960, 540)
    # pixel centre of model x=1 is 1.5 * 1920/1366 = 2.108 → screen pixel 2
    assert s.to_screen(1, 1) == (2, 2)
    assert s.to_model(1919, 1079) == (1365, 767)
    assert s.to_model(960, 540) == (683, 384)


def test_unscaled_is_identity() -> None:
    s = Scaler.for_screen(1024, 768)
    for p in [(0, 0), (1023, 767), (512, 384)]:
        assert s.to_screen(*p) == p
        assert s.to_model(*p) == p


@pytest.mark.parametrize("point", [(-1, 0), (0, -1), (1366, 0), (0, 768), (5000, 5000)])
def test_out_of_bounds_model_point_rejected(point: tuple[int, int]) -> None:
    s = Scaler.for_screen(1920, 1080)
    with pytest.raises(ToolInputError) as e:
        s.to_screen(*point)
    assert e.value.message == f"Coordinates {point[0]}, {point[1]} are out of bounds"


def test_point_inside_screen_but_outside_model_rejected() -> None:
    # The reference checked against the full screen; (1500, 800) is a screen pixel but not a model pixel.
    s = Scaler.for_screen(1920, 1080)
    assert s.screen_w > 1500 and s.screen_h > 800
    with pytest.raises(ToolInputError, match="Coordinates 1500, 800 are out of bounds"):
        s.check_model_point(1500, 800)


@pytest.mark.parametrize("point", [(1.5, 2), (True, 3), ("10", 10)])
def test_non_integer_coordinates_rejected(point: tuple[object, object]) -> None:
    s = Scaler.for_screen(1024, 768)
    with pytest.raises(ToolInputError, match="must be integers"):
        s.check_model_point(*point)  # type: ignore[arg-type]


def test_to_model_clamps_off_screen_points() -> None:
    s = Scaler.for_screen(1920, 1080)
    assert s.to_model(-5, 5000) == (0, 767)


def test_region_to_screen() -> None:
    s = Scaler.for_screen(1920, 1080)
    assert s.region_to_screen(0, 0, 1366, 768) == (0, 0, 1920, 1080)
    x0, y0, x1, y1 = s.region_to_screen(100, 100, 101, 101)
    # x: 140.56..141.97 → [140, 142); y: 140.63..142.03 → [140, 143)
    assert (x0, y0, x1, y1) == (140, 140, 142, 143)
    for bad in [(10, 10, 10, 20), (20, 10, 10, 20), (-1, 0, 10, 10), (0, 0, 1367, 10), (0, 0, 10, 769)]:
        with pytest.raises(ToolInputError, match="Region"):
            s.region_to_screen(*bad)
