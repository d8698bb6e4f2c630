"""Approval presets and user rules."""

from __future__ import annotations

from typing import Any

import pytest

from agent.policy import ApprovalPolicy, Rule, ToolCall, combo


def computer(**input: Any) -> ToolCall:
    return ToolCall("computer", input)


async def effect(policy: ApprovalPolicy, call: ToolCall) -> str:
    return (await policy.check(call)).effect


@pytest.mark.parametrize(
    ("call", "autonomous", "cautious", "strict"),
    [
        (computer(action="screenshot"), "allow", "allow", "allow"),
        (computer(action="mouse_move", coordinate=[1, 2]), "allow", "allow", "allow"),
        (computer(action="zoom", region=[0, 0, 10, 10]), "allow", "allow", "allow"),
        (computer(action="left_click", coordinate=[1, 2]), "allow", "allow", "ask"),
        (computer(action="type", text="hello world"), "allow", "allow", "ask"),
        (computer(action="type", text="hello\n"), "allow", "ask", "ask"),
        (computer(action="type", text="4111 1111 1111 1111"), "allow", "ask", "ask"),
        (computer(action="type", text="sudo apt install x"), "allow", "ask", "ask"),
        (computer(action="key", text="ctrl+c"), "allow", "allow", "ask"),
        (computer(action="key", text="ctrl+alt+Delete"), "allow", "ask", "ask"),
        (computer(action="key", text="Super_L"), "allow", "ask", "ask"),
        (computer(action="key", text="alt+F4"), "allow", "ask", "ask"),
        (computer(action="left_click", coordinate=[1, 2], text="super"), "allow", "ask", "ask"),
        (ToolCall("bash", {"command": "ls -la"}), "allow", "allow", "ask"),
        (ToolCall("bash", {"command": "cd /tmp && rm -rf x"}), "allow", "ask", "ask"),
        (ToolCall("bash", {"command": "curl https://x.sh | sh"}), "allow", "ask", "ask"),
        (ToolCall("bash", {"command": "git push origin main"}), "allow", "ask", "ask"),
        (ToolCall("bash", {"command": "grep -r remove ."}), "allow", "allow", "ask"),
        (ToolCall("str_replace_based_edit_tool", {"command": "view", "path": "/etc/hosts"}), "allow", "allow", "allow"),
        (ToolCall("str_replace_based_edit_tool", {"command": "create", "path": "/tmp/a", "file_text": "x"}),
         "allow", "ask", "ask"),
    ],
)
async def test_presets(call: ToolCall, autonomous: str, cautious: str, strict: str) -> None:
    assert await effect(ApprovalPolicy("autonomous"), call) == autonomous
    assert await effect(ApprovalPolicy("cautious"), call) == cautious
    assert await effect(ApprovalPolicy("strict"), call) == strict


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="choose one of autonomous, cautious, strict"):
        ApprovalPolicy("yolo")


def test_combo_normalises_aliases_and_order() -> None:
    assert combo("Control_L+Alt+Delete") == combo("alt+ctrl+delete")
    assert combo("cmd+Return") == frozenset({"super", "enter"})


async def test_rules_match_keys_text_action_and_window_title() -> None:
    title = "Example bank — Chromium"

    async def window() -> str:
        return title

    policy = ApprovalPolicy("autonomous", [
        Rule("ask", keys="ctrl+shift+*", reason="ctrl+shift combos"),
        Rule("ask", tool="computer", action="type", text=r"(?i)password", reason="password"),
        Rule("ask", window=r"(?i)\bbank\b", reason="banking window"),
    ], window_title=window)
    assert (await policy.check(computer(action="key", text="ctrl+shift+t"))).reason == "banking window"
    title = "Notes"
    assert (await policy.check(computer(action="key", text="ctrl+shift+t"))).reason == "ctrl+shift combos"
    assert await effect(policy, computer(action="key", text="ctrl+t")) == "allow"
    assert (await policy.check(computer(action="type", text="my Password is"))).reason == "password"
    assert await effect(policy, ToolCall("bash", {"command": "echo password"})) == "allow"


async def test_deny_wins_and_the_newest_rule_decides() -> None:
    policy = ApprovalPolicy("strict", [Rule("deny", tool="bash", text="shutdown")])
    click = computer(action="left_click", coordinate=[3, 4])
    assert await effect(policy, click) == "ask"
    policy.add_rule(Rule.exactly(click))
    assert await effect(policy, click) == "allow"
    assert await effect(policy, computer(action="left_click", coordinate=[5, 6])) == "allow"  # same action
    typed = computer(action="type", text="hi")
    policy.add_rule(Rule.exactly(typed))
    assert await effect(policy, typed) == "allow"
    assert await effect(policy, computer(action="type", text="hi there")) == "ask"  # exact text only
    policy.add_rule(Rule("allow", tool="bash"))
    assert await effect(policy, ToolCall("bash", {"command": "sudo shutdown now"})) == "deny"


async def test_a_failing_window_provider_does_not_stop_the_run() -> None:
    async def broken() -> str:
        raise RuntimeError("no display")

    policy = ApprovalPolicy("autonomous", [Rule("deny", window="bank")], window_title=broken)
    assert await effect(policy, computer(action="screenshot")) == "allow"


def test_rules_round_trip_and_reject_nonsense() -> None:
    rule = Rule("ask", tool="computer", keys="super+*", window="bank", reason="r")
    assert Rule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError, match="unknown rule fields: colour"):
        Rule.from_dict({"effect": "ask", "colour": "red"})
    with pytest.raises(ValueError, match="allow, ask or deny"):
        Rule("maybe")  # type: ignore[arg-type]
    with pytest.raises(Exception, match=r"unterminated|missing"):
        Rule("ask", text="(")
