"""XTest input against a real Xvfb + chromium, checked by what the test page recorded (screen pixels)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from Xlib.display import Display

from desktop.display import Desktop
from desktop.input import XInput
from desktop.keys import parse_key_action, parse_modifiers
from tests.desktop.conftest import MakeDesktop
from tests.support import testpage
from tests.support.testpage import BIG_BUTTON, FIELD_POINT, TestPageServer

BUTTON_CENTRE = (BIG_BUTTON[0] + BIG_BUTTON[2] // 2, BIG_BUTTON[1] + BIG_BUTTON[3] // 2)


@pytest.fixture(scope="module")
def desk(make_desktop: MakeDesktop, page: TestPageServer) -> Desktop:
    desktop = make_desktop(start_url=page.url, kiosk=True)
    page.wait_ready()
    return desktop


@pytest.fixture(scope="module")
def inp(desk: Desktop, page: TestPageServer) -> Iterator[XInput]:
    with XInput(desk.display) as x:
        focus_field(x, page)  # the window may have mapped before the window manager focused it
        yield x


@pytest.fixture(autouse=True)
def fresh(page: TestPageServer, inp: XInput) -> None:
    page.settle(0.1)  # late events of the previous test (a modifier's keyup) must not count here
    page.reset()


def focus_field(inp: XInput, page: TestPageServer) -> None:
    testpage.focus_field(page, inp, FIELD_POINT)


def test_move_reports_screen_position(inp: XInput, page: TestPageServer) -> None:
    inp.move(700, 500)
    inp.move(613, 457)
    page.wait_until(lambda evs: any(e["type"] == "mousemove" and e["screenX"] == 613 for e in evs))
    last = page.events("mousemove")[-1]
    assert (last["screenX"], last["screenY"]) == (613, 457)
    assert inp.cursor_position() == (613, 457)


@pytest.mark.parametrize(("button", "dom_button", "dom_event"), [(1, 0, "click"), (3, 2, "contextmenu"),
                                                                   (2, 1, "auxclick")])
def test_click_buttons_at_position(inp: XInput, page: TestPageServer, button: int, dom_button: int,
                                   dom_event: str) -> None:
    inp.click(button, at=BUTTON_CENTRE)
    page.wait_until(lambda evs: {dom_event, "mouseup"} <= {e["type"] for e in evs})  # Linux: contextmenu on down
    down, up = page.events("mousedown")[-1], page.events("mouseup")[-1]
    for event in (down, up, page.events(dom_event)[-1]):
        assert event["button"] == dom_button
        assert (event["screenX"], event["screenY"]) == BUTTON_CENTRE
    assert down["target"] == "big-button"
    assert down["seq"] < up["seq"]


@pytest.mark.parametrize(("count", "at"), [(2, (600, 200)), (3, (700, 120))])
def test_double_and_triple_click(inp: XInput, page: TestPageServer, count: int, at: tuple[int, int]) -> None:
    inp.click(1, at=at, count=count)  # a new place each time: a click near the last one would continue its count
    clicks = page.wait_for("click", count)
    assert [c["detail"] for c in clicks] == list(range(1, count + 1))
    if count == 2:
        assert page.wait_for("dblclick")[0]["detail"] == 2


@pytest.mark.parametrize(("mods", "held"), [("shift", {"shift"}), ("ctrl", {"ctrl"}), ("super", {"meta"}),
                                            ("alt", {"alt"}), ("ctrl+shift", {"ctrl", "shift"})])
def test_click_holds_modifiers_during_the_click(inp: XInput, page: TestPageServer, mods: str,
                                                held: set[str]) -> None:
    inp.click(1, at=(650, 150), modifiers=parse_modifiers(mods))
    click = page.wait_for("click")[-1]
    assert {m for m in ("ctrl", "shift", "alt", "meta") if click[m]} == held
    inp.click(1, at=(650, 160))  # and released afterwards
    assert not any(page.wait_for("click", 2)[-1][m] for m in ("ctrl", "shift", "alt", "meta"))


def test_button_down_and_up_separately(inp: XInput, page: TestPageServer) -> None:
    inp.move(520, 600)
    inp.button_down(1)
    down = page.wait_for("mousedown")[-1]
    assert page.events("mouseup") == []
    inp.move(560, 640)
    inp.button_up(1)
    up = page.wait_for("mouseup")[-1]
    assert (down["screenX"], down["screenY"], up["screenX"], up["screenY"]) == (520, 600, 560, 640)


def test_drag_from_a_to_b(inp: XInput, page: TestPageServer) -> None:
    inp.drag((120, 300), (330, 520))
    up = page.wait_for("mouseup")[-1]
    down = page.events("mousedown")[-1]
    assert (down["screenX"], down["screenY"]) == (120, 300)
    assert (up["screenX"], up["screenY"]) == (330, 520)
    moves = [e for e in page.events("mousemove") if down["seq"] < e["seq"] < up["seq"]]
    assert moves and all(e["buttons"] == 1 for e in moves)  # moved with the button held


@pytest.mark.parametrize(("direction", "axis", "sign"), [("up", "deltaY", -1), ("down", "deltaY", 1),
                                                         ("left", "deltaX", -1), ("right", "deltaX", 1)])
def test_scroll_directions_and_amount(inp: XInput, page: TestPageServer, direction: str, axis: str,
                                      sign: int) -> None:
    inp.scroll(direction, 3, at=(700, 550))  # type: ignore[arg-type]
    page.wait_until(lambda evs: abs(sum(e[axis] for e in evs if e["type"] == "wheel")) >= 360)
    wheels = page.settle(0.2)
    wheels = [e for e in wheels if e["type"] == "wheel"]
    assert sum(e[axis] for e in wheels) == sign * 360  # chromium: 120 per wheel click (events may coalesce)
    other = "deltaX" if axis == "deltaY" else "deltaY"
    assert all(e[other] == 0 for e in wheels)
    assert (wheels[0]["screenX"], wheels[0]["screenY"]) == (700, 550)


def test_scroll_with_modifier(inp: XInput, page: TestPageServer) -> None:
    # shift: chromium zooms on ctrl+wheel.
    inp.scroll("down", 1, at=(700, 550), modifiers=parse_modifiers("shift"))
    wheel = page.wait_for("wheel")[-1]
    assert wheel["shift"] and not wheel["ctrl"]


def test_key_combo_pressed_in_order_released_in_reverse(inp: XInput, page: TestPageServer) -> None:
    inp.press_combos(parse_key_action("ctrl+shift+Z"))  # redo; not ctrl+shift+A, chromium's tab search
    page.wait_until(lambda evs: sum(e["type"] == "keyup" for e in evs) >= 3)
    keys = [(e["type"], e["key"]) for e in page.events("keydown", "keyup")]
    assert keys == [("keydown", "Control"), ("keydown", "Shift"), ("keydown", "Z"),
                    ("keyup", "Z"), ("keyup", "Shift"), ("keyup", "Control")]
    a_down = page.events("keydown")[2]
    assert a_down["ctrl"] and a_down["shift"] and a_down["code"] == "KeyZ"


@pytest.mark.parametrize(("text", "key", "code", "mods"), [
    ("Return", "Enter", "Enter", set()), ("shift+Tab", "Tab", "Tab", {"shift"}),
    ("Page_Down", "PageDown", "PageDown", set()), ("super", "Meta", "MetaLeft", set()),
    ("esc", "Escape", "Escape", set()), ("arrowup", "ArrowUp", "ArrowUp", set()),
    ("ctrl+Home", "Home", "Home", {"ctrl"}), ("alt+x", "x", "KeyX", {"alt"}), ("slash", "/", "Slash", set()),
])
def test_named_keys(inp: XInput, page: TestPageServer, text: str, key: str, code: str, mods: set[str]) -> None:
    inp.press_combos(parse_key_action(text))
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["code"] == code for e in evs))
    down = next(e for e in page.events("keydown") if e["code"] == code)
    assert down["key"] == key
    assert {m for m in ("ctrl", "shift", "alt", "meta") if down[m]} == mods


def test_several_combos_in_one_action(inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    inp.press_combos(parse_key_action("h i shift+1 Return"))
    value = page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == "hi!\n" for e in evs))
    assert [e["key"] for e in value if e["type"] == "keydown" and e["key"] != "Shift"] == ["h", "i", "!", "Enter"]


def test_type_unicode_newline_and_tab(inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    text = "Hé ß 漢字 😀 ok\nsecond line\tend ~!@#$%^&*()_+{}|:\"<>?"
    inp.type_text(text)
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == text for e in evs))


def test_type_crlf_is_one_newline(inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    inp.type_text("a\r\nb")
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == "a\nb" for e in evs))


def test_type_more_distinct_characters_than_spare_keycodes(inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    text = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 40)) + "αβγδεζηθ"  # 48 unmapped characters
    inp.type_text(text)
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == text for e in evs), timeout=30)
    focus_field(inp, page)  # again, on keycodes that were just released and rebound
    inp.type_text(text[::-1])
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == text[::-1] for e in evs), timeout=30)


def keymap(display_name: str) -> list[list[int]]:
    d = Display(display_name)
    try:
        info = d.display.info
        return [list(r) for r in d.get_keyboard_mapping(info.min_keycode, info.max_keycode - info.min_keycode + 1)]
    finally:
        d.close()


def test_spare_keycodes_are_restored(desk: Desktop, inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    before = keymap(desk.display)
    inp.type_text("ß€")
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == "ß€" for e in evs))
    assert keymap(desk.display) != before  # bound while the client may still be reading them
    inp.move(10, 700)  # the next action releases the bindings
    assert keymap(desk.display) == before


def test_hold_key_for_a_duration(inp: XInput, page: TestPageServer) -> None:
    inp.hold(parse_key_action("shift")[0], 0.8)
    page.wait_until(lambda evs: any(e["type"] == "keyup" and e["key"] == "Shift" for e in evs))
    down = next(e for e in page.events("keydown") if e["key"] == "Shift")
    up = next(e for e in page.events("keyup") if e["key"] == "Shift")
    assert 500 <= up["t"] - down["t"] <= 3000  # page-side times: a loaded machine delays either event a bit


def test_follows_a_layout_change_made_by_someone_else(desk: Desktop, inp: XInput, page: TestPageServer) -> None:
    """Another client (say ``setxkbmap`` run by the model) remaps the q key to ö/Ö between actions."""
    other = Display(desk.display)
    q_code = other.keysym_to_keycode(ord("q"))
    original = [list(row) for row in other.get_keyboard_mapping(q_code, 1)]
    try:
        other.change_keyboard_mapping(q_code, [[0xF6, 0xD6] + [0] * (len(original[0]) - 2)])
        other.sync()
        time.sleep(0.5)  # the browser reloads its keymap
        focus_field(inp, page)
        inp.type_text("qöÖ")  # q now needs a spare keycode; ö and Ö are on the layout
        # The text and all four keyups: by then every keydown has arrived (the page posts in order, and re-sends
        # a batch whose POST failed instead of dropping it: the keydowns were once missing that way).
        events = page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == "qöÖ" for e in evs)
                                 and sum(e["type"] == "keyup" for e in evs) >= 4)
        codes = [e["code"] for e in events if e["type"] == "keydown"]
        # q went through a spare keycode; ö and Ö through the remapped Q key (chromium's `key` still says q/Q:
        # it names keys from its own layout, but the text comes from the X keysym).
        assert codes[1:] == ["KeyQ", "ShiftLeft", "KeyQ"] and codes[0] != "KeyQ", [
            (e["type"], e.get("code"), e.get("value")) for e in events]
    finally:
        other.change_keyboard_mapping(q_code, original)
        other.sync()
        other.close()
        inp.move(10, 700)  # next pointer action: the bindings go back before the next test
        time.sleep(0.5)


def test_page_resends_a_failed_batch(inp: XInput, page: TestPageServer) -> None:
    """The harness itself: a POST the server fails is sent again, in order, and kept once."""
    page.fail_posts(2)
    inp.press_combos(parse_key_action("Left Right Up"))
    page.wait_until(lambda evs: sum(e["type"] == "keyup" for e in evs) >= 3)
    assert [e["code"] for e in page.events("keydown")] == ["ArrowLeft", "ArrowRight", "ArrowUp"]
    seqs = [e["seq"] for e in page.settle(0.2)]
    assert seqs == sorted(set(seqs))


def test_key_action_with_a_character_off_the_layout(inp: XInput, page: TestPageServer) -> None:
    focus_field(inp, page)
    inp.press_combos(parse_key_action("é ß shift+ß"))
    page.wait_until(lambda evs: any(e["type"] == "input" and e["value"] == "éßß" for e in evs))
