"""Key-name parsing against the X keysym table (no X server needed)."""

from __future__ import annotations

import pytest
from Xlib import XK

from deskpilot.errors import ToolInputError
from desktop.keys import (
    UNICODE_KEYSYM_BASE,
    Combo,
    char_keysym,
    parse_combo,
    parse_key,
    parse_key_action,
    parse_modifiers,
)


def ks(name: str) -> int:
    value = int(XK.string_to_keysym(name))
    assert value != XK.NoSymbol, name
    return value


def names(combo: Combo) -> list[int]:
    return [k.keysym for k in combo]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Return", ["Return"]), ("Enter", ["Return"]), ("enter", ["Return"]), ("RETURN", ["Return"]),
        ("ctrl+l", ["Control_L", "l"]), ("shift+Tab", ["Shift_L", "Tab"]), ("super", ["Super_L"]),
        ("Page_Down", ["Page_Down"]), ("pgdn", ["Page_Down"]), ("PageDown", ["Page_Down"]),
        ("pgup", ["Page_Up"]), ("F5", ["F5"]), ("f12", ["F12"]),
        ("ctrl+shift+t", ["Control_L", "Shift_L", "t"]), ("alt+F4", ["Alt_L", "F4"]),
        ("cmd", ["Super_L"]), ("command", ["Super_L"]), ("win", ["Super_L"]), ("meta", ["Super_L"]),
        ("esc", ["Escape"]), ("Escape", ["Escape"]), ("del", ["Delete"]), ("Delete", ["Delete"]),
        ("backspace", ["BackSpace"]), ("BackSpace", ["BackSpace"]), ("up", ["Up"]), ("arrowup", ["Up"]),
        ("ArrowDown", ["Down"]), ("space", ["space"]), ("tab", ["Tab"]), ("Home", ["Home"]), ("end", ["End"]),
        ("a", ["a"]), ("A", ["A"]), ("/", ["slash"]), ("+", ["plus"]), ("ctrl++", ["Control_L", "plus"]),
        ("ctrl+minus", ["Control_L", "minus"]), ("ctrl+-", ["Control_L", "minus"]), ("KP_Enter", ["KP_Enter"]),
        ("XF86AudioMute", ["XF86_AudioMute"]), ("mute", ["XF86_AudioMute"]),
        ("ctrl+alt+Delete", ["Control_L", "Alt_L", "Delete"]),
        ("control+a", ["Control_L", "a"]), ("option+left", ["Alt_L", "Left"]),
    ],
)
def test_single_combo(text: str, expected: list[str]) -> None:
    combos = parse_key_action(text)
    assert len(combos) == 1
    assert names(combos[0]) == [ks(n) for n in expected]


def test_case_of_single_letters_is_kept() -> None:
    assert parse_key("a").keysym == ord("a")
    assert parse_key("A").keysym == ord("A")
    assert parse_key("a").keysym != parse_key("A").keysym


def test_space_separated_combos_run_in_turn() -> None:
    combos = parse_key_action("ctrl+a Delete  Return")
    assert [names(c) for c in combos] == [[ks("Control_L"), ord("a")], [ks("Delete")], [ks("Return")]]


def test_a_single_space_is_the_space_key() -> None:
    assert [names(c) for c in parse_key_action(" ")] == [[ks("space")]]


def test_non_latin1_characters_use_unicode_keysyms() -> None:
    assert char_keysym("é") == 0xE9  # Latin-1 keysyms equal the code point
    assert char_keysym("€") == UNICODE_KEYSYM_BASE + 0x20AC
    assert parse_key("漢").keysym == UNICODE_KEYSYM_BASE + ord("漢")
    assert parse_key("😀").keysym == UNICODE_KEYSYM_BASE + 0x1F600


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("Return; touch /tmp/pwned", "Return;"),
        ("$(id)", "$(id)"),
        ("`id`", "`id`"),
        ("ctrl+l && rm -rf /", "&&"),
        ("ctrl+l|sh", "l|sh"),
        ("NoSuchKey", "NoSuchKey"),
        ("ctrl+NoSuchKey", "NoSuchKey"),
        ("a\x00b", "a\x00b"),
        ("ctrl+\x1b", "\x1b"),
    ],
)
def test_unknown_keys_name_the_bad_part(text: str, bad_part: str | None) -> None:
    with pytest.raises(ToolInputError) as info:
        parse_key_action(text)
    if bad_part is not None:
        assert repr(bad_part) in info.value.message
    assert "Unknown key" in info.value.message or "Malformed" in info.value.message


@pytest.mark.parametrize("text", ["", "   ", "ctrl+", "+ctrl", "ctrl++a", "a" * 501, "a " * 60])
def test_malformed_key_text(text: str) -> None:
    with pytest.raises(ToolInputError):
        parse_key_action(text)


def test_too_many_keys_in_one_combo() -> None:
    with pytest.raises(ToolInputError, match="more than"):
        parse_combo("+".join(["shift"] * 9))


def test_modifiers_accept_only_modifier_keys() -> None:
    assert names(parse_modifiers("shift")) == [ks("Shift_L")]
    assert names(parse_modifiers("ctrl+shift")) == [ks("Control_L"), ks("Shift_L")]
    assert names(parse_modifiers("cmd")) == [ks("Super_L")]
    for bad in ["a", "Return", "shift+a", "shift; touch /tmp/x", "$(id)"]:
        with pytest.raises(ToolInputError):
            parse_modifiers(bad)
