"""The computer tool end to end: model-space actions on a *scaled* screen (1280×960 shown as 1024×768),
checked against what chromium recorded on the test page, for both tool versions."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from PIL import Image
from Xlib import X
from Xlib.display import Display

from deskpilot.errors import DesktopLostError, ToolInputError
from desktop.display import Desktop
from desktop.input import XInput
from desktop.scaling import Scaler
from desktop.tools.computer import ComputerTool20250124, ComputerTool20251124
from desktop.windows import ActiveWindow
from tests.desktop.conftest import SETTLE, MakeDesktop
from tests.support.testpage import BIG_BUTTON, BIG_BUTTON_RGB, TestPageServer, focus_field

SCREEN = (1280, 960)
MODEL = (1024, 768)
Tool = ComputerTool20250124


@pytest.fixture(scope="module")
def desk(make_desktop: MakeDesktop, page: TestPageServer) -> Desktop:
    desktop = make_desktop(width=SCREEN[0], height=SCREEN[1], start_url=page.url, kiosk=True)
    page.wait_ready()
    with XInput(desktop.display) as inp:  # the window gets pointer and focus before any test runs
        focus_field(page, inp, (100, 60))
    return desktop


@pytest.fixture(scope="module")
def tools(desk: Desktop) -> Iterator[dict[str, Tool]]:
    made = {"computer_20250124": ComputerTool20250124(desk.display, settle=SETTLE),
            "computer_20251124": ComputerTool20251124(desk.display, settle=SETTLE)}
    yield made
    for tool in made.values():
        tool.close()


@pytest.fixture(params=["computer_20250124", "computer_20251124"])
def tool(request: pytest.FixtureRequest, tools: dict[str, Tool], page: TestPageServer) -> Tool:
    page.reset()
    return tools[request.param]


@pytest.fixture(scope="module")
def scaler() -> Scaler:
    s = Scaler.for_screen(*SCREEN)
    assert s.model_size == MODEL
    return s


def png_size(data: bytes | None) -> tuple[int, int]:
    assert data is not None and data.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(data)).size


async def clear_field_with_tool(tool: Tool, page: TestPageServer, scaler: Scaler) -> None:
    await tool.run({"action": "left_click", "coordinate": list(scaler.to_model(100, 60))})
    await tool.run({"action": "key", "text": "ctrl+a BackSpace"})
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["key"] == "Backspace" for e in evs))
    page.reset()


def at(event: dict[str, object]) -> tuple[object, object]:
    return event["screenX"], event["screenY"]


async def test_screenshot_is_model_size_and_shows_the_page(tool: Tool, scaler: Scaler) -> None:
    result = await tool.run({"action": "screenshot"})
    assert not result.is_error and png_size(result.image) == MODEL
    img = Image.open(io.BytesIO(result.image or b"")).convert("RGB")
    cx, cy = scaler.to_model(BIG_BUTTON[0] + 20, BIG_BUTTON[1] + 10)  # a plain corner of the button
    assert img.getpixel((cx, cy)) == BIG_BUTTON_RGB


async def test_mouse_move_and_cursor_position_in_model_space(tool: Tool, page: TestPageServer,
                                                            scaler: Scaler) -> None:
    result = await tool.run({"action": "mouse_move", "coordinate": [412, 301]})
    assert png_size(result.image) == MODEL and "settle_ms" in result.meta
    screen = scaler.to_screen(412, 301)
    page.wait_until(lambda evs: any(e["type"] == "mousemove" and at(e) == screen for e in evs))
    pos = await tool.run({"action": "cursor_position"})
    assert pos.output == "X=412,Y=301" and not pos.is_error


@pytest.mark.parametrize(("action", "dom_button", "dom_event"), [
    ("left_click", 0, "click"), ("right_click", 2, "contextmenu"), ("middle_click", 1, "auxclick")])
async def test_clicks_land_on_the_scaled_point(tool: Tool, page: TestPageServer, scaler: Scaler, action: str,
                                               dom_button: int, dom_event: str) -> None:
    model = scaler.to_model(BIG_BUTTON[0] + 100, BIG_BUTTON[1] + 50)
    result = await tool.run({"action": action, "coordinate": list(model)})
    assert png_size(result.image) == MODEL
    events = page.wait_until(lambda evs: {dom_event, "mouseup"} <= {e["type"] for e in evs})
    event = next(e for e in events if e["type"] == dom_event)
    assert event["button"] == dom_button and event["target"] == "big-button"
    assert at(event) == scaler.to_screen(*model)


@pytest.mark.parametrize(("action", "count", "model"), [("double_click", 2, (600, 150)),
                                                        ("triple_click", 3, (700, 620))])
async def test_double_and_triple_click(tool: Tool, page: TestPageServer, scaler: Scaler, action: str, count: int,
                                       model: tuple[int, int]) -> None:
    # Each version clicks a little apart so one test's clicks never continue the other's count.
    offset = 40 if tool.api_type.endswith("1124") else 0
    await tool.run({"action": action, "coordinate": [model[0] + offset, model[1]]})
    clicks = page.wait_for("click", count)
    assert [c["detail"] for c in clicks] == list(range(1, count + 1))
    assert at(clicks[-1]) == scaler.to_screen(model[0] + offset, model[1])
    if count == 2:
        assert page.wait_for("dblclick")


# alt and super too: the window manager binds nothing on a modifier + button (desktop/openbox-rc.xml).
@pytest.mark.parametrize(("text", "held"), [("shift", {"shift"}), ("ctrl", {"ctrl"}), ("alt", {"alt"}),
                                            ("super", {"meta"}), ("ctrl+shift", {"ctrl", "shift"}),
                                            ("alt+shift", {"alt", "shift"}), ("", set())])
async def test_click_with_modifier_keys(tool: Tool, page: TestPageServer, text: str, held: set[str]) -> None:
    await tool.run({"action": "left_click", "coordinate": [800, 100], "text": text})
    click = page.wait_for("click")[-1]
    assert {m for m in ("ctrl", "shift", "alt", "meta") if click[m]} == held
    await tool.run({"action": "left_click", "coordinate": [800, 140]})
    assert not any(page.wait_for("click", 2)[-1][m] for m in ("ctrl", "shift", "alt", "meta"))


async def test_click_without_coordinate_uses_the_pointer(tool: Tool, page: TestPageServer, scaler: Scaler) -> None:
    await tool.run({"action": "mouse_move", "coordinate": [900, 500]})
    await tool.run({"action": "left_click"})
    assert at(page.wait_for("click")[-1]) == scaler.to_screen(900, 500)


async def test_left_click_drag(tool: Tool, page: TestPageServer, scaler: Scaler) -> None:
    await tool.run({"action": "left_click_drag", "start_coordinate": [100, 250], "coordinate": [300, 400]})
    up = page.wait_for("mouseup")[-1]
    down = page.events("mousedown")[-1]
    assert at(down) == scaler.to_screen(100, 250) and at(up) == scaler.to_screen(300, 400)


async def test_left_mouse_down_and_up(tool: Tool, page: TestPageServer, scaler: Scaler) -> None:
    await tool.run({"action": "mouse_move", "coordinate": [150, 500]})
    await tool.run({"action": "left_mouse_down"})
    await tool.run({"action": "mouse_move", "coordinate": [250, 550]})
    await tool.run({"action": "left_mouse_up"})
    up = page.wait_for("mouseup")[-1]
    down = page.events("mousedown")[-1]
    assert at(down) == scaler.to_screen(150, 500) and at(up) == scaler.to_screen(250, 550)
    assert down["button"] == up["button"] == 0


@pytest.mark.parametrize(("direction", "axis", "sign"), [("up", "deltaY", -1), ("down", "deltaY", 1),
                                                         ("left", "deltaX", -1), ("right", "deltaX", 1)])
async def test_scroll(tool: Tool, page: TestPageServer, scaler: Scaler, direction: str, axis: str,
                      sign: int) -> None:
    await tool.run({"action": "scroll", "coordinate": [700, 600], "scroll_direction": direction,
                    "scroll_amount": 2})
    page.wait_until(lambda evs: abs(sum(e[axis] for e in evs if e["type"] == "wheel")) >= 240)
    wheels = [e for e in page.settle(0.2) if e["type"] == "wheel"]
    assert sum(e[axis] for e in wheels) == sign * 240  # 120 per wheel click in chromium
    assert at(wheels[0]) == scaler.to_screen(700, 600)


# Not ctrl: chromium zooms on ctrl+wheel. alt+wheel switched desktops under openbox's default bindings.
@pytest.mark.parametrize(("text", "held"), [("shift", {"shift"}), ("alt", {"alt"}), ("super", {"meta"})])
async def test_scroll_with_modifier(tool: Tool, page: TestPageServer, text: str, held: set[str]) -> None:
    await tool.run({"action": "scroll", "coordinate": [700, 600], "scroll_direction": "down",
                    "scroll_amount": 1, "text": text})
    wheel = page.wait_for("wheel")[-1]
    assert {m for m in ("ctrl", "shift", "alt", "meta") if wheel[m]} == held
    assert at(wheel) == Scaler.for_screen(*SCREEN).to_screen(700, 600)


async def test_key_combos(tool: Tool, page: TestPageServer) -> None:
    result = await tool.run({"action": "key", "text": "ctrl+shift+Z"})
    assert png_size(result.image) == MODEL
    page.wait_until(lambda evs: sum(e["type"] == "keyup" for e in evs) >= 3)
    assert [(e["type"], e["key"]) for e in page.events("keydown", "keyup")] == [
        ("keydown", "Control"), ("keydown", "Shift"), ("keydown", "Z"),
        ("keyup", "Z"), ("keyup", "Shift"), ("keyup", "Control")]


@pytest.mark.parametrize(("text", "code"), [("Enter", "Enter"), ("pgdn", "PageDown"), ("esc", "Escape"),
                                            ("shift+Tab", "Tab"), ("arrowup", "ArrowUp")])
async def test_key_aliases(tool: Tool, page: TestPageServer, text: str, code: str) -> None:
    await tool.run({"action": "key", "text": text})
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["code"] == code for e in evs))


# Openbox's default bindings took these (desktop switching, show desktop, lower window); ours pass them on.
@pytest.mark.parametrize(("text", "code"), [("ctrl+alt+Left", "ArrowLeft"), ("shift+alt+Up", "ArrowUp"),
                                            ("super+d", "KeyD"), ("alt+Escape", "Escape")])
async def test_key_combos_the_window_manager_leaves_to_the_page(tool: Tool, page: TestPageServer, text: str,
                                                               code: str) -> None:
    await tool.run({"action": "key", "text": text})
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["code"] == code for e in evs))
    assert [e["code"] for e in page.events("keydown")][-1] == code


async def test_type_unicode_and_newline(tool: Tool, page: TestPageServer, scaler: Scaler) -> None:
    await clear_field_with_tool(tool, page, scaler)
    text = "café Straße 漢字 🙂\nline two\tTab"
    result = await tool.run({"action": "type", "text": text})
    assert png_size(result.image) == MODEL
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == text for e in evs))


async def test_hold_key(tool: Tool, page: TestPageServer) -> None:
    await tool.run({"action": "hold_key", "text": "shift", "duration": 0.8})
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["key"] == "Shift" for e in evs))
    down = next(e for e in page.events("keydown") if e["key"] == "Shift")
    up = next(e for e in page.events("keyup") if e["key"] == "Shift")
    assert 500 <= up["t"] - down["t"] <= 3000  # page-side times: a loaded machine delays either event a bit


async def test_wait(tool: Tool) -> None:
    started = time.monotonic()
    result = await tool.run({"action": "wait", "duration": 0.3})
    assert time.monotonic() - started >= 0.3
    assert png_size(result.image) == MODEL


async def test_zoom_only_in_the_newer_version(tools: dict[str, Tool], scaler: Scaler) -> None:
    with pytest.raises(ToolInputError, match="Invalid action: zoom"):
        await tools["computer_20250124"].run({"action": "zoom", "region": [0, 0, 100, 100]})
    x0, y0 = scaler.to_model(BIG_BUTTON[0] + 10, BIG_BUTTON[1] + 5)
    region = [x0, y0, x0 + 64, y0 + 48]  # inside the button, above its label
    result = await tools["computer_20251124"].run({"action": "zoom", "region": region})
    size = png_size(result.image)
    assert size == MODEL  # a 4:3 region fills the model's image: 16x the pixels of the region
    img = Image.open(io.BytesIO(result.image or b"")).convert("RGB")
    assert img.getpixel((size[0] // 2, size[1] // 8)) == BIG_BUTTON_RGB


async def test_tool_params(tools: dict[str, Tool]) -> None:
    assert tools["computer_20251124"].to_params() == {
        "name": "computer", "type": "computer_20251124", "display_width_px": 1024, "display_height_px": 768}


async def test_a_dead_display_is_desktop_lost(make_desktop: MakeDesktop) -> None:
    desktop = make_desktop(browser=False, wm=False)
    tool = ComputerTool20250124(desktop.display, settle=SETTLE)
    try:
        desktop.stop()
        with pytest.raises(DesktopLostError):
            await tool.run({"action": "mouse_move", "coordinate": [10, 10]})
    finally:
        tool.close()


class _Window:
    """A managed (not override-redirect) X window that, like a real app, asks for WM_DELETE_WINDOW."""

    def __init__(self, display: Display, name: str) -> None:
        self.d = display
        screen = display.screen()
        self.win = screen.root.create_window(0, 0, 300, 200, 0, screen.root_depth, X.InputOutput,
                                             X.CopyFromParent, event_mask=X.StructureNotifyMask)
        self.win.set_wm_name(name)
        self.delete = display.intern_atom("WM_DELETE_WINDOW")
        self.win.set_wm_protocols([self.delete])
        self.win.map()
        display.sync()

    def asked_to_close(self, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while self.d.pending_events():
                event = self.d.next_event()
                if event.type == X.ClientMessage and event.window == self.win and event.data[1][0] == self.delete:
                    return True
            time.sleep(0.02)
        return False


def wait_active(active: ActiveWindow, wid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while active.read().id != wid:
        assert time.monotonic() < deadline, f"window {wid:#x} never became active"
        time.sleep(0.02)


async def test_alt_tab_switches_windows_and_alt_f4_closes_one(make_desktop: MakeDesktop) -> None:
    """The only window-manager keys (desktop/openbox-rc.xml): what a model trained on desktops expects."""
    desktop = make_desktop(browser=False)
    tool = ComputerTool20250124(desktop.display, settle=SETTLE)
    conn = Display(desktop.display)
    active = ActiveWindow(desktop.display)
    try:
        first = _Window(conn, "first")
        wait_active(active, first.win.id)
        second = _Window(conn, "second")
        wait_active(active, second.win.id)  # focusNew
        await tool.run({"action": "key", "text": "alt+Tab"})
        wait_active(active, first.win.id)
        await tool.run({"action": "key", "text": "alt+Tab"})  # a quick alt+tab toggles the two latest
        wait_active(active, second.win.id)
        await tool.run({"action": "key", "text": "alt+shift+Tab"})
        wait_active(active, first.win.id)
        await tool.run({"action": "key", "text": "alt+F4"})
        assert first.asked_to_close()
        assert not second.asked_to_close(timeout=0.3)
    finally:
        active.close()
        conn.close()
        tool.close()
        desktop.stop()
