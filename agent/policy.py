"""The approval policy: before each tool call it answers allow, ask or deny.

Order of evaluation: a matching **deny** rule always wins; otherwise the **newest** matching user
rule decides (so "always allow this", added during a run, overrides an older ask rule); otherwise
the preset decides. Rules match on tool, action, key combo, typed text (regex), the active
window's title (regex) and the active browser tab's URL (regex); every field that is set must match.
Patterns are RE2 (agent/patterns.py): linear-time, no look-around or backreferences, size-capped.

Presets (what each one asks about — everything else is allowed):

- ``autonomous``: asks about nothing. For sandboxes you are happy to lose.
- ``cautious`` (default): asks before
  * any click, drag, typing or key on a sensitive site (agent/sites.py: banks, payments, crypto,
    account and government sites, checkout and password pages) — needs the tab's URL (``use_tab_url``);
  * key combos that leave the app or touch the session: anything with super/meta, ctrl+alt+…,
    alt+F4, ctrl+q, ctrl+shift+q, ctrl+shift+delete;
  * typing text that contains a line break (it submits forms and runs terminal commands), looks like
    a payment card number (13–19 digits), or looks like a risky shell command;
  * bash commands that delete, escalate, install, download-and-run, push, or power off
    (rm, sudo, su, dd, mkfs, chmod, chown, kill, shutdown, reboot, apt, pip install, curl|sh, git push…);
  * every file write through the editor (create, str_replace, insert, undo_edit).
- ``strict``: asks before every action that can change something: all clicks, drags, mouse
  button presses, typing and keys, every bash command, every editor write. It allows only
  screenshot, zoom, cursor_position, mouse_move, scroll, wait and editor ``view``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from agent import patterns
from agent.sites import sensitive_site
from deskpilot.errors import PolicyError

Effect = Literal["allow", "ask", "deny"]
PRESETS = ("autonomous", "cautious", "strict")
WindowTitle = Callable[[], Awaitable[str | None]]
TabUrl = Callable[[], Awaitable[str | None]]  # the active browser tab's URL, None when there is none

_ALIASES = {"control": "ctrl", "control_l": "ctrl", "control_r": "ctrl", "alt_l": "alt", "alt_r": "alt",
            "shift_l": "shift", "shift_r": "shift", "super_l": "super", "super_r": "super", "win": "super",
            "meta": "super", "cmd": "super", "command": "super", "return": "enter", "kp_enter": "enter",
            "escape": "esc", "del": "delete"}


def combo(text: str) -> frozenset[str]:
    """A key combo as a set of normalised names: ``Control_L+Alt+Delete`` == ``ctrl+alt+delete``."""
    return frozenset(_ALIASES.get(p.strip().lower(), p.strip().lower()) for p in text.split("+") if p.strip())


@dataclass(frozen=True, slots=True)
class ToolCall:
    tool: str  # desktop tool name: computer | bash | str_replace_based_edit_tool
    input: dict[str, Any]

    @property
    def action(self) -> str:
        if self.tool == "computer":
            return str(self.input.get("action", ""))
        if self.tool == "bash":
            return "restart" if self.input.get("restart") else "run"
        return str(self.input.get("command", ""))

    @property
    def combos(self) -> list[frozenset[str]]:
        """Key combos pressed: ``key``/``hold_key`` text, and click modifiers."""
        if self.tool != "computer":
            return []
        text = self.input.get("text")
        if not isinstance(text, str):
            return []
        if self.action in ("key", "hold_key") or "click" in self.action or self.action == "scroll":
            return [combo(part) for part in text.split() if part]
        return []

    @property
    def text(self) -> str:
        """What the call types or runs: typed text, a bash command, or editor content."""
        if self.tool == "computer":
            return str(self.input.get("text", "")) if self.action == "type" else ""
        if self.tool == "bash":
            return str(self.input.get("command", ""))
        return "\n".join(str(self.input.get(k, "")) for k in ("path", "file_text", "new_str") if self.input.get(k))


@dataclass(frozen=True, slots=True)
class Rule:
    effect: Effect
    tool: str | None = None
    action: str | None = None
    keys: str | None = None  # a combo, "*" matches any further keys: "super+*"
    text: str | None = None  # regex, searched
    window: str | None = None  # regex, searched in the active window's title
    reason: str = ""
    url: str | None = None  # regex, searched in the active browser tab's URL: "(?i)bank|checkout|payment"

    def __post_init__(self) -> None:
        if self.effect not in ("allow", "ask", "deny"):
            raise PolicyError(f"rule effect must be allow, ask or deny, not {self.effect!r}")
        for name in _PATTERN_FIELDS:
            pattern = getattr(self, name)
            if pattern is not None:  # a bad pattern fails when the rule is made, not mid-run
                patterns.compile_pattern(pattern, name, limited=False)

    def matches(self, call: ToolCall, title: str | None = None, url: str | None = None) -> bool:
        if self.tool is not None and self.tool != call.tool:
            return False
        if self.action is not None and self.action != call.action:
            return False
        if self.keys is not None:
            want = combo(self.keys)
            fixed = want - {"*"}
            if not any((fixed <= c) if "*" in want else (fixed == c) for c in call.combos):
                return False
        if self.text is not None and not patterns.search(self.text, call.text):
            return False
        if self.url is not None and (url is None or not patterns.search(self.url, url)):
            return False
        return self.window is None or (title is not None and patterns.search(self.window, title))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: object) -> Rule:
        """A rule from user input (the REST API): every field checked, patterns within the size limits."""
        if not isinstance(data, dict):
            raise PolicyError("each rule must be an object such as {\"effect\": \"ask\", \"tool\": \"bash\"}")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise PolicyError(f"unknown rule fields: {', '.join(sorted(map(str, unknown)))}")
        if "effect" not in data:
            raise PolicyError("a rule needs an effect: allow, ask or deny")
        for name, value in data.items():
            if value is not None and not isinstance(value, str):
                raise PolicyError(f"rule {name} must be a string, not {type(value).__name__}")
            if name in _PATTERN_FIELDS and value is not None:
                patterns.compile_pattern(value, name)
        return cls(**data)

    @classmethod
    def exactly(cls, call: ToolCall, effect: Effect = "allow") -> Rule:
        """A rule for exactly this call ("always allow this")."""
        keys = "+".join(sorted(call.combos[0])) if len(call.combos) == 1 else None
        text = f"^{patterns.escape(call.text)}$" if call.text else None
        return cls(effect, tool=call.tool, action=call.action, keys=keys, text=text,
                   reason=f"user chose always {effect} for this action")


_FIELDS = ("effect", "tool", "action", "keys", "text", "window", "reason", "url")
_PATTERN_FIELDS = ("text", "window", "url")
MAX_RULES = 100


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    effect: Effect
    reason: str
    rule: Rule | None = None


_RISKY_KEYS = [combo(c) for c in ("alt+f4", "ctrl+q", "ctrl+shift+q", "ctrl+shift+delete")]
_RISKY_SHELL = patterns.compile_pattern(
    r"(^|[;&|(`\s])(rm|sudo|su|dd|mkfs\S*|chmod|chown|kill|pkill|killall|shutdown|reboot|poweroff|halt|"
    r"apt(-get)?|dpkg|pip3?\s+install|npm\s+install|git\s+push|crontab|systemctl|passwd|useradd)\b"
    r"|(curl|wget)\b[^|]*\|\s*(ba|z)?sh|>\s*/dev/(sd|nvme)|:\(\)\s*\{", limited=False)
_CARD = patterns.compile_pattern(r"\b(?:\d[ -]?){13,19}\b", limited=False)
_READ_ONLY = {"screenshot", "zoom", "cursor_position", "mouse_move", "scroll", "wait"}


def _cautious(call: ToolCall, url: str | None) -> PolicyDecision:
    if call.tool == "computer":
        if url and call.action not in _READ_ONLY and (site := sensitive_site(url)) is not None:
            return PolicyDecision("ask", f"{call.action} on a sensitive site ({site}: {url[:200]})")
        for keys in call.combos:
            if "super" in keys or {"ctrl", "alt"} <= keys or keys in _RISKY_KEYS:
                return PolicyDecision("ask", f"key combo {'+'.join(sorted(keys))} can leave the app or end the session")
        if call.action == "type":
            if "\n" in call.text or "\r" in call.text:
                return PolicyDecision("ask", "typed text contains a line break (submits or runs something)")
            if _CARD.search(call.text):
                return PolicyDecision("ask", "typed text looks like a payment card number")
            if _RISKY_SHELL.search(call.text):
                return PolicyDecision("ask", "typed text looks like a risky shell command")
        return PolicyDecision("allow", "cautious: ordinary desktop action")
    if call.tool == "bash":
        if _RISKY_SHELL.search(call.text):
            return PolicyDecision("ask", "bash command deletes, escalates, installs, pushes or powers off")
        return PolicyDecision("allow", "cautious: ordinary shell command")
    if call.action != "view":
        return PolicyDecision("ask", f"editor {call.action} writes a file")
    return PolicyDecision("allow", "cautious: reading a file")


def _strict(call: ToolCall) -> PolicyDecision:
    if (call.tool == "computer" and call.action in _READ_ONLY) or (call.tool != "computer" and call.action == "view"):
        return PolicyDecision("allow", "strict: read-only action")
    return PolicyDecision("ask", f"strict: {call.tool} {call.action} can change something")


class ApprovalPolicy:
    def __init__(self, preset: str = "cautious", rules: list[Rule] | None = None,
                 window_title: WindowTitle | None = None, tab_url: TabUrl | None = None) -> None:
        if preset not in PRESETS:
            raise PolicyError(f"unknown approval preset {preset!r}; choose one of {', '.join(PRESETS)}")
        self.preset = preset
        self.rules: list[Rule] = list(rules or [])
        self._window_title = window_title
        self._tab_url = tab_url

    @classmethod
    def from_spec(cls, spec: object, default_preset: str) -> ApprovalPolicy:
        """A policy from user input (``{"preset": ..., "rules": [...]}``); ``PolicyError`` says what is wrong."""
        if not isinstance(spec, dict):
            raise PolicyError("policy must be an object: {\"preset\": ..., \"rules\": [...]}")
        unknown = set(spec) - {"preset", "rules"}
        if unknown:
            raise PolicyError(f"unknown policy fields: {', '.join(sorted(map(str, unknown)))}")
        rules = spec.get("rules") or []
        if not isinstance(rules, list):
            raise PolicyError("policy rules must be a list")
        if len(rules) > MAX_RULES:
            raise PolicyError(f"policy has {len(rules)} rules; at most {MAX_RULES} allowed")
        return cls(str(spec.get("preset") or default_preset), [Rule.from_dict(r) for r in rules])

    @property
    def window_title(self) -> WindowTitle | None:
        return self._window_title

    def use_window_title(self, provider: WindowTitle | None) -> None:
        """Where window rules read the active window's title (``DesktopClient.active_window_title``)."""
        self._window_title = provider

    @property
    def tab_url(self) -> TabUrl | None:
        return self._tab_url

    def use_tab_url(self, provider: TabUrl | None) -> None:
        """Where URL rules and the sensitive-site list read the active tab's URL (a desktop's ``active_tab_url``)."""
        self._tab_url = provider

    def add_rule(self, rule: Rule) -> None:
        self.rules.append(rule)

    async def where(self) -> tuple[str | None, str | None]:
        """The active window's title and tab URL now (None when unknown), for whoever judges a step."""
        return await _observe(self._window_title), await _observe(self._tab_url)

    async def check(self, call: ToolCall) -> PolicyDecision:
        rules = list(self.rules)
        title = await _observe(self._window_title) if any(r.window is not None for r in rules) else None
        wants_url = any(r.url is not None for r in rules) or (
            self.preset == "cautious" and call.tool == "computer" and call.action not in _READ_ONLY)
        url = await _observe(self._tab_url) if wants_url else None
        # Matching is linear (RE2) but can still take a while on long text; a thread keeps the loop serving
        # everyone else meanwhile (RE2 releases the GIL while it searches).
        return await asyncio.to_thread(self._decide, rules, call, title, url)

    def _decide(self, rules: list[Rule], call: ToolCall, title: str | None, url: str | None) -> PolicyDecision:
        for rule in rules:
            if rule.effect == "deny" and rule.matches(call, title, url):
                return PolicyDecision("deny", rule.reason or "a deny rule matches this action", rule)
        for rule in reversed(rules):
            if rule.matches(call, title, url):
                return PolicyDecision(rule.effect, rule.reason or f"a user rule says {rule.effect}", rule)
        if self.preset == "autonomous":
            return PolicyDecision("allow", "autonomous")
        return _strict(call) if self.preset == "strict" else _cautious(call, url)


async def _observe(provider: WindowTitle | TabUrl | None) -> str | None:
    """The title or URL now; None when unknown. A broken provider must not stop the run: its rules just don't match."""
    if provider is None:
        return None
    try:
        return await provider()
    except Exception:
        return None
