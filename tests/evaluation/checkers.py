"""A custom checker for the metric tests (named ``python:tests.evaluation.checkers:half``)."""

from typing import Any


def half(result: Any, expected: Any) -> float:
    return 0.5
