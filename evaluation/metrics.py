"""Metrics: ``func(result, expected, **options) -> score in [0, 1]``. Named in a task's ``evaluator.func``.

``expected`` given as OSWorld's ``{"type": "rule", "rules": X}`` is unwrapped to ``X`` first. A custom checker
is ``"python:package.module:function"`` (or ``"python:package.module.function"``), called the same way.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

from deskpilot.errors import ConfigError

Metric = Callable[..., float]


def _text(value: Any, *, strip: bool = True, ignore_case: bool = False, collapse_space: bool = False) -> str:
    text = value if isinstance(value, str) else json.dumps(value) if value is not None else ""
    if collapse_space:
        text = " ".join(text.split())
    if strip:
        text = text.strip()
    return text.casefold() if ignore_case else text


def exact_match(result: Any, expected: Any, *, strip: bool = True, ignore_case: bool = False,
                collapse_space: bool = False) -> float:
    if not isinstance(expected, str):  # numbers, booleans, lists, objects: compared as values
        return float(result == expected)
    opts = {"strip": strip, "ignore_case": ignore_case, "collapse_space": collapse_space}
    return float(result is not None and _text(result, **opts) == _text(expected, **opts))


def contains(result: Any, expected: Any, *, ignore_case: bool = False, collapse_space: bool = False) -> float:
    if result is None:
        return 0.0
    if isinstance(result, list) and not isinstance(expected, str | list):
        return float(expected in result)
    needles = expected if isinstance(expected, list) else [expected]
    hay = _text(result, ignore_case=ignore_case, collapse_space=collapse_space)
    return float(all(_text(n, ignore_case=ignore_case, collapse_space=collapse_space) in hay for n in needles))


def not_contains(result: Any, expected: Any, *, ignore_case: bool = True) -> float:
    """1 when none of ``expected`` appears (a missing result counts as not containing it)."""
    needles = expected if isinstance(expected, list) else [expected]
    hay = _text(result, ignore_case=ignore_case)
    return float(not any(_text(n, ignore_case=ignore_case) in hay for n in needles))


def regex_match(result: Any, expected: Any, *, full: bool = False, ignore_case: bool = False) -> float:
    if result is None or not isinstance(expected, str):
        return 0.0
    try:
        pattern = re.compile(expected, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise ConfigError(f"regex_match: bad pattern {expected!r}: {exc}") from exc
    text = _text(result, strip=False)
    return float((pattern.fullmatch(text) if full else pattern.search(text)) is not None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.search(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+", value)
        if match:
            try:
                return float(match.group().replace(",", ""))
            except ValueError:
                return None
    return None


def numeric(result: Any, expected: Any, *, abs_tol: float = 1e-9, rel_tol: float = 0.0) -> float:
    """The first number in ``result`` equals ``expected`` within the tolerances."""
    got, want = _number(result), _number(expected)
    if got is None or want is None:
        return 0.0
    return float(math.isclose(got, want, rel_tol=rel_tol, abs_tol=abs_tol))


def _subset(want: Any, got: Any) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _subset(v, got[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(
            _subset(w, g) for w, g in zip(want, got, strict=True))
    return bool(want == got)


def json_subset(result: Any, expected: Any) -> float:
    """Every key of ``expected`` is in ``result`` with the same value (recursively; lists match item by item).
    A string result is parsed as JSON first."""
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            return 0.0
    return float(_subset(expected, result))


def file_exists(result: Any, expected: Any = True) -> float:
    """``result`` is a file getter's answer: ``None`` when the file is missing."""
    return float((result is not None) == bool(expected if expected is not None else True))


def file_equals(result: Any, expected: Any, *, strip: bool = False) -> float:
    if result is None or not isinstance(expected, str):
        return 0.0
    return float(_text(result, strip=strip) == _text(expected, strip=strip))


METRICS: dict[str, Metric] = {
    "exact_match": exact_match, "contains": contains, "not_contains": not_contains, "regex_match": regex_match,
    "numeric": numeric, "json_subset": json_subset, "file_exists": file_exists, "file_equals": file_equals,
    # OSWorld spellings of the same checks
    "check_include_exclude": contains, "is_in_list": contains, "literal_match": exact_match,
    "match_in_list": contains, "exact_match_json": json_subset,
}


def metric(name: str) -> Metric:
    if name in METRICS:
        return METRICS[name]
    if name.startswith("python:"):
        target = name[len("python:"):]
        module_name, sep, attr = target.partition(":")
        if not sep:
            module_name, _, attr = target.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"custom checker {target!r} not found: {exc}") from exc
        if not callable(fn):
            raise ConfigError(f"custom checker {target!r} is not callable")
        checker: Metric = fn
        return checker
    raise ConfigError(f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}, or python:module:function")


def unwrap_expected(expected: Any) -> Any:
    if isinstance(expected, dict) and expected.get("type") == "rule" and "rules" in expected:
        return expected["rules"]
    if isinstance(expected, dict) and expected.get("type") == "value" and "value" in expected:
        return expected["value"]
    return expected


def score(name: str, result: Any, expected: Any, options: dict[str, Any]) -> float:
    try:
        value = float(metric(name)(result, unwrap_expected(expected), **options))
    except TypeError as exc:
        raise ConfigError(f"metric {name}: bad options {sorted(options)}: {exc}") from exc
    return min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
