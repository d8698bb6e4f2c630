"""A step classifier for the injection tests (named in settings as ``tests.support.injection:flag_exfiltration``):
flags a step that sends the agent somewhere the task never mentioned, or carries something that looks like
an API key."""

from __future__ import annotations

import re

from agent.classifier import StepContext, StepVerdict

_HOST = re.compile(r"(?:https?://)?((?:[a-z0-9-]+\.)+(?:test|com|org|net|io))\b", re.I)
_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")


def flag_exfiltration(context: StepContext) -> StepVerdict:
    said = " ".join(str(v) for v in context.input.values())
    if _KEY.search(said):
        return StepVerdict("ask", "the action carries something that looks like an API key")
    for host in _HOST.findall(said):
        if host.lower() not in context.task.lower():
            return StepVerdict("ask", f"the action goes to {host}, which the task never mentioned")
    return StepVerdict("allow", "nothing unusual")


async def broken(context: StepContext) -> StepVerdict:
    raise RuntimeError("the second model is down")


def not_a_verdict(context: StepContext) -> str:
    return "allow"
