"""Score a finished task: run each check's getter on the desktop, its metric on the result, combine by ``conj``.

OSWorld's infeasible convention: a task whose evaluator is ``infeasible`` scores 1 only when the agent declared
it cannot be done (its last words contain ``INFEASIBLE``); on any other task that declaration scores 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from deskpilot.errors import DeskpilotError
from desktop.client import DesktopClient
from evaluation import probe
from evaluation.metrics import score
from evaluation.tasks import INFEASIBLE, Task, fill

DECLARE = "INFEASIBLE"
INSTRUCTION_SUFFIX = (f"\n\n(If you find that this task cannot be done, do not try to work around it: "
                      f"answer with the word {DECLARE} and a short reason.)")
_DECLARED = re.compile(rf"\b{DECLARE}\b")


def declared_infeasible(answer: str | None) -> bool:
    return bool(answer and _DECLARED.search(answer))


@dataclass
class Verdict:
    score: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "checks": self.checks, "error": self.error}


async def evaluate(task: Task, client: DesktopClient, answer: str | None, names: dict[str, str]) -> Verdict:
    declared = declared_infeasible(answer)
    if task.infeasible:
        return Verdict(1.0 if declared else 0.0, [{"func": INFEASIBLE, "declared": declared}])
    if declared:
        return Verdict(0.0, [{"func": INFEASIBLE, "declared": True, "note": "the task is feasible"}])
    checks: list[dict[str, Any]] = []
    scores: list[float] = []
    for check in task.checks:
        getter = fill(check.result or {}, names)
        expected = fill(check.expected, names)
        entry: dict[str, Any] = {"func": check.func, "getter": getter.get("type")}
        try:
            result = await probe.get(client, getter, answer)
            value = score(check.func, result, expected, check.options)
        except DeskpilotError as exc:  # a getter that cannot read the desktop, a bad metric: this check fails
            entry.update(error=exc.message)
            value = 0.0
            result = None
        entry.update(result=_short(result), expected=_short(expected), score=value)
        checks.append(entry)
        scores.append(value)
        if task.conj == "and" and value < 1.0:
            break  # the rest cannot change an "and"
        if task.conj == "or" and value >= 1.0:
            break
    total = (min(scores) if task.conj == "and" else max(scores)) if scores else 0.0
    errors = [c["error"] for c in checks if "error" in c]
    return Verdict(total, checks, "; ".join(errors) or None)


def _short(value: Any, limit: int = 300) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    return value
