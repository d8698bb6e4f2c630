"""Key names a model sends → X keysyms, parsed against Xlib's keysym table and never passed to a shell.

Grammar (what xdotool and the reference demo accept, minus everything a shell would interpret):

    key-action := combo (whitespace combo)*        "ctrl+a Delete" presses two combos in turn
    combo      := name ("+" name)*                 "ctrl+shift+t", "alt+F4", "ctrl++" (ctrl and plus)
    name       := an X keysym name ("Return", "Page_Down", "F5", "a", "A"), a single character ("/", "é"),
                  or an alias models emit ("Enter", "cmd", "esc", "pgdn", "arrowup"); matching is
                  case-insensitive except for single characters, where "a" and "A" differ.

Anything else — ``Return;``, ``$(id)``, ``&&`` — is an unknown key and raises ``ToolInputError`` naming it.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from Xlib import XK

from deskpilot.errors import ToolInputError

# Keysym groups beyond latin1/miscellany, so names such as "XF86AudioMute" or "Greek_alpha" resolve.
for _group in ("xf86", "latin2", "latin3", "latin4", "greek", "cyrillic", "publishing", "technical",
               "special"):
    XK.load_keysym_group(_group)

MAX_KEY_TEXT = 500  # longest key action accepted; real combos are a few dozen characters
MAX_COMBOS = 50  # combos in one key action
MAX_KEYS_PER_COMBO = 8

UNICODE_KEYSYM_BASE = 0x01000000

# alias (lower case) -> X keysym name. Models trained on other platforms emit these.
_ALIASES: dict[str, str] = {
    "ctrl": "Control_L", "control": "Control_L", "lctrl": "Control_L", "rctrl": "Control_R",
    "ctl": "Control_L", "control_l": "Control_L", "control_r": "Control_R",
    "shift": "Shift_L", "lshift": "Shift_L", "rshift": "Shift_R",
    "alt": "Alt_L", "option": "Alt_L", "opt": "Alt_L", "lalt": "Alt_L", "ralt": "Alt_R", "altgr": "ISO_Level3_Shift",
    "super": "Super_L", "win": "Super_L", "windows": "Super_L", "cmd": "Super_L", "command": "Super_L",
    "meta": "Super_L", "logo": "Super_L", "lsuper": "Super_L", "rsuper": "Super_R", "os": "Super_L",
    "enter": "Return", "return": "Return", "ret": "Return", "kp_enter": "KP_Enter",
    "esc": "Escape", "escape": "Escape",
    "del": "Delete", "delete": "Delete", "backspace": "BackSpace", "back_space": "BackSpace", "bksp": "BackSpace",
    "ins": "Insert", "insert": "Insert",
    "tab": "Tab", "space": "space", "spacebar": "space",
    "pgdn": "Page_Down", "pagedown": "Page_Down", "page_down": "Page_Down", "pgdown": "Page_Down",
    "next": "Page_Down",
    "pgup": "Page_Up", "pageup": "Page_Up", "page_up": "Page_Up", "prior": "Page_Up",
    "home": "Home", "end": "End",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right",
    "arrowup": "Up", "arrowdown": "Down", "arrowleft": "Left", "arrowright": "Right",
    "arrow_up": "Up", "arrow_down": "Down", "arrow_left": "Left", "arrow_right": "Right",
    "capslock": "Caps_Lock", "caps_lock": "Caps_Lock", "numlock": "Num_Lock", "scrolllock": "Scroll_Lock",
    "printscreen": "Print", "print": "Print", "prtsc": "Print", "prtscn": "Print", "sysrq": "Sys_Req",
    "menu": "Menu", "contextmenu": "Menu", "apps": "Menu", "pause": "Pause", "break": "Break",
    "plus": "plus", "minus": "minus", "equal": "equal", "equals": "equal", "comma": "comma",
    "period": "period", "dot": "period", "slash": "slash", "backslash": "backslash",
    "semicolon": "semicolon", "apostrophe": "apostrophe", "quote": "apostrophe", "grave": "grave",
    "backtick": "grave",
    "volumeup": "XF86AudioRaiseVolume", "volumedown": "XF86AudioLowerVolume", "volumemute": "XF86AudioMute",
    "mute": "XF86AudioMute",
}

MODIFIER_KEYSYMS = frozenset(
    XK.string_to_keysym(n)
    for n in ("Shift_L", "Shift_R", "Control_L", "Control_R", "Alt_L", "Alt_R", "Super_L", "Super_R",
              "Meta_L", "Meta_R", "Hyper_L", "Hyper_R", "ISO_Level3_Shift")
)

_NAME_RE = re.compile(r"^[A-Za-z0-9_]{2,40}$")


@dataclass(frozen=True, slots=True)
class Key:
    """One key: the keysym to press and the name the model used (for messages)."""

    keysym: int
    name: str

    @property
    def is_modifier(self) -> bool:
        return self.keysym in MODIFIER_KEYSYMS


Combo = tuple[Key, ...]


@lru_cache(maxsize=1)
def _lower_names() -> dict[str, int]:
    """Case-insensitive index of every loaded XK name; names that differ only in case are left out."""
    seen: dict[str, int | None] = {}
    for attr in dir(XK):
        if attr.startswith("XK_"):
            name = attr[3:].lower().replace("xf86_", "xf86")
            value = getattr(XK, attr)
            if name in seen and seen[name] != value:
                seen[name] = None  # ambiguous, e.g. Greek_alpha / Greek_ALPHA
            else:
                seen[name] = value
    return {k: v for k, v in seen.items() if v is not None}


def _by_name(name: str) -> int:
    # python-xlib spells the X names "XF86AudioMute" as "XF86_AudioMute".
    if name.startswith("XF86") and not name.startswith("XF86_"):
        name = "XF86_" + name[4:]
    return int(XK.string_to_keysym(name))


def char_keysym(char: str) -> int:
    """The keysym that types one character: Latin-1 keysyms equal the code point, others are Unicode keysyms."""
    code = ord(char)
    if 0x20 <= code <= 0x7E or 0xA0 <= code <= 0xFF:
        return code
    return UNICODE_KEYSYM_BASE + code


def _describe(part: str) -> str:
    return repr(part) if len(part) <= 40 else repr(part[:40] + "…")


def parse_key(name: str) -> Key:
    """One key name → Key, or ToolInputError naming the bad part."""
    if len(name) == 1:
        if unicodedata.category(name).startswith("C"):
            raise ToolInputError(f"Unknown key {_describe(name)}: control characters are not key names")
        if name == " ":
            return Key(XK.string_to_keysym("space"), name)
        return Key(char_keysym(name), name)
    if not _NAME_RE.match(name):
        raise ToolInputError(f"Unknown key {_describe(name)}: use X key names like Return, ctrl, Page_Down, F5")
    keysym = _by_name(_ALIASES.get(name.lower(), name))
    if keysym == XK.NoSymbol:
        keysym = _lower_names().get(name.lower().replace("xf86_", "xf86"), XK.NoSymbol)
    if keysym == XK.NoSymbol:
        raise ToolInputError(f"Unknown key {_describe(name)}: use X key names like Return, ctrl, Page_Down, F5")
    return Key(keysym, name)


def _split_combo(combo: str) -> list[str]:
    """'ctrl+shift+t' → parts; a '+' that is itself the key ('+', 'ctrl++') is kept."""
    if combo == "+":
        return ["+"]
    if combo.endswith("++"):
        return [*combo[:-2].split("+"), "+"]
    parts = combo.split("+")
    if any(p == "" for p in parts):
        raise ToolInputError(f"Malformed key combination {_describe(combo)}: empty key name around '+'")
    return parts


def parse_combo(combo: str) -> Combo:
    """'ctrl+shift+t' → (Control_L, Shift_L, t)."""
    parts = _split_combo(combo)
    if len(parts) > MAX_KEYS_PER_COMBO:
        raise ToolInputError(f"Key combination {_describe(combo)} has more than {MAX_KEYS_PER_COMBO} keys")
    return tuple(parse_key(p) for p in parts)


def parse_key_action(text: str) -> list[Combo]:
    """The ``text`` of a ``key`` action → the combos to press one after another."""
    if not isinstance(text, str) or not text:
        raise ToolInputError("text is required for key")
    if len(text) > MAX_KEY_TEXT:
        raise ToolInputError(f"Key text is too long ({len(text)} characters, at most {MAX_KEY_TEXT})")
    if text.strip() == "":
        if text == " ":
            return [(parse_key(" "),)]
        raise ToolInputError("Key text is blank")
    combos = text.split()
    if len(combos) > MAX_COMBOS:
        raise ToolInputError(f"Too many key combinations ({len(combos)}, at most {MAX_COMBOS})")
    return [parse_combo(c) for c in combos]


def parse_modifiers(text: str) -> Combo:
    """The ``text`` of a click or scroll: modifier keys to hold, e.g. 'shift' or 'ctrl+shift'."""
    if not isinstance(text, str):
        raise ToolInputError("text must be a string of modifier keys, e.g. 'shift' or 'ctrl+shift'")
    if len(text) > 100:
        raise ToolInputError("Modifier text is too long")
    combo = parse_combo(text.strip())
    for key in combo:
        if not key.is_modifier:
            raise ToolInputError(
                f"{_describe(key.name)} is not a modifier key; text on a click or scroll may only hold "
                "modifiers such as shift, ctrl, alt, super"
            )
    return combo
