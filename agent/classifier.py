"""The optional step classifier: a callable, named in settings (``DESKPILOT_STEP_CLASSIFIER=pkg.module:func``),
asked about every tool call the approval policy would allow; it can make that call wait for a person.

It gets a ``StepContext`` (the proposed call, the user's task, the model's latest words, the active tab's
URL and window title) and returns a ``StepVerdict`` (``allow`` or ``ask``, and why) — a second model call,
a heuristic, a company service. It may be sync (run in a thread) or async. It only ever adds approvals:
it cannot allow what the policy asks about or denies. If it fails or answers nonsense, the step is asked
about (fail closed), with the failure as the reason.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from deskpilot.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StepContext:
    tool: str  # canonical: computer, bash, str_replace_based_edit_tool
    input: dict[str, Any]
    task: str  # the user's first message of the run
    recent_text: str  # the model's words in the turn that proposed the call
    url: str | None
    window_title: str | None


@dataclass(frozen=True, slots=True)
class StepVerdict:
    effect: Literal["allow", "ask"]
    reason: str = ""


StepClassifier = Callable[[StepContext], "StepVerdict | Awaitable[StepVerdict]"]


def load_classifier(spec: str) -> StepClassifier:
    """The callable ``spec`` names (``package.module:function``); ``ConfigError`` says what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"step classifier {spec!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"step classifier {spec!r}: cannot import {module_name}: {exc}") from exc
    found = getattr(module, attr, None)
    if not callable(found):
        raise ConfigError(f"step classifier {spec!r}: {module_name} has no callable {attr!r}")
    classifier: StepClassifier = found
    return classifier


async def classify(classifier: StepClassifier, context: StepContext) -> StepVerdict:
    """The classifier's verdict; ``ask`` with the reason when it fails or returns something else."""
    try:
        if inspect.iscoroutinefunction(classifier):
            answer: Any = await classifier(context)
        else:
            answer = await asyncio.to_thread(classifier, context)
            if inspect.isawaitable(answer):
                answer = await answer
    except Exception as exc:
        log.warning("step classifier failed: %r", exc)
        return StepVerdict("ask", f"the step classifier failed ({type(exc).__name__}), so a person decides")
    if not isinstance(answer, StepVerdict) or answer.effect not in ("allow", "ask"):
        return StepVerdict("ask", f"the step classifier returned {answer!r:.100}, not a StepVerdict")
    return answer


def task_of(history: list[dict[str, Any]]) -> str:
    """The text of the run's first user message (the task)."""
    for message in history:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            blocks = [b for b in content or [] if isinstance(b, dict) and b.get("type") == "text"]
            return "\n".join(str(b.get("text", "")) for b in blocks)
    return ""


def recent_text(history: list[dict[str, Any]]) -> str:
    """The model's words in its latest turn."""
    for message in reversed(history):
        if message.get("role") == "assistant":
            content = message.get("content") or []
            return "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""
