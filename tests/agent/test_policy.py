"""Approval presets and user rules."""

from __future__ import annotations

import asyncio
import random
import re
import time
from typing import Any

import pytest

from agent.policy import ApprovalPolicy, Rule, ToolCall, combo
from deskpilot.errors import PolicyError


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
    with pytest.raises(PolicyError, match=r"not a valid RE2 regular expression: missing \)"):
        Rule("ask", text="(")


def test_a_catastrophic_pattern_matches_in_linear_time() -> None:
    """``(.*)*Z`` backtracks for hours in Python's ``re``; RE2 answers at once, even on a long title."""
    rule = Rule.from_dict({"effect": "deny", "window": "(.*)*Z"})
    started = time.monotonic()
    assert not rule.matches(computer(action="screenshot"), "a" * 200_000 + "Y")
    assert rule.matches(computer(action="screenshot"), "a" * 200_000 + "Z")
    assert time.monotonic() - started < 5  # Python's re needs longer than the universe on this


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"rules": [{"effect": "ask", "text": "(?=x)y"}]}, "look-around and backreferences are not supported"),
        ({"rules": [{"effect": "ask", "window": "(a)\\1"}]}, "not a valid RE2 regular expression"),
        ({"rules": [{"effect": "ask", "text": "x" * 501}]}, "501 characters; at most 500"),
        ({"rules": [{"effect": "ask", "text": "(?s)a.{900}b"}]}, "too complex"),
        ({"rules": [{"effect": "ask", "text": "a{1001}"}]}, "invalid repetition size"),
        ({"rules": [{"effect": "ask"}] * 101}, "101 rules; at most 100"),
        ({"rules": [{"effect": "ask", "text": 5}]}, "rule text must be a string, not int"),
        ({"rules": ["ask"]}, "each rule must be an object"),
        ({"rules": [{"tool": "bash"}]}, "a rule needs an effect"),
        ({"rules": {"effect": "ask"}}, "policy rules must be a list"),
        ({"preset": "yolo"}, "choose one of"),
        ({"presets": "strict"}, "unknown policy fields: presets"),
        ([], "policy must be an object"),
    ],
)
def test_user_policies_are_checked_with_a_clear_message(spec: Any, message: str) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        ApprovalPolicy.from_spec(spec, "cautious")


async def test_user_policy_from_spec_keeps_rules_and_default_preset() -> None:
    policy = ApprovalPolicy.from_spec({"rules": [{"effect": "deny", "tool": "bash", "text": "(?i)drop table"}]},
                                      "strict")
    assert policy.preset == "strict"
    assert await effect(policy, ToolCall("bash", {"command": "psql -c 'DROP TABLE x'"})) == "deny"
    assert ApprovalPolicy.from_spec({"preset": "autonomous"}, "strict").preset == "autonomous"


async def test_always_allow_of_a_long_command_is_exact_and_not_capped() -> None:
    command = "echo " + "(.*)*[x" * 2000  # regex syntax in the text is matched literally
    policy = ApprovalPolicy("strict")
    policy.add_rule(Rule.exactly(ToolCall("bash", {"command": command})))
    assert await effect(policy, ToolCall("bash", {"command": command})) == "allow"
    assert await effect(policy, ToolCall("bash", {"command": command + " "})) == "ask"


async def test_the_event_loop_keeps_running_while_rules_are_matched() -> None:
    """Matching happens off the loop: a ticker keeps ticking while a costly (but allowed) rule searches.

    Random text defeats RE2's DFA cache for this pattern, so the search takes a noticeable while (~0.5 s).
    """
    policy = ApprovalPolicy("autonomous", [Rule.from_dict({"effect": "ask", "text": "(?s).*a.{140}c"})])
    rnd = random.Random(7)
    text = "".join(rnd.choice("ab ") for _ in range(300_000))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    assert await effect(policy, ToolCall("bash", {"command": text})) == "allow"
    task.cancel()
    assert ticks >= 10  # on the loop, the ticker could not have run at all
