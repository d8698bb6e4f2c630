"""User-supplied regular expressions, compiled with RE2: matching time is linear in the text, never exponential.

Python's ``re`` backtracks, so a rule like ``(.*)*Z`` can hold the event loop for hours on one window title.
RE2 has no backtracking (and so no look-around or backreferences); on top of that the pattern's length and
compiled size are capped, because RE2's cost still grows with program size × text length.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import re2

from deskpilot.errors import PolicyError

MAX_PATTERN_CHARS = 500
MAX_PROGRAM_SIZE = 1000  # RE2 instructions; ``[a-z]{1,450}x`` is ~900, ``(?i)bank|checkout`` ~20

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are raised to the caller, not printed to stderr by the C++ library


def _message(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else exc
    return detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)


def compile_pattern(pattern: object, field: str = "pattern", *, limited: bool = True) -> Any:
    """The compiled RE2 program, or ``PolicyError`` naming the field and what is wrong.

    ``limited`` (user input) also caps length and compiled size; the service's own rules (an "always allow"
    of one long command, matched literally) are exempt.
    """
    if not isinstance(pattern, str):
        raise PolicyError(f"rule {field} must be a string (a regular expression)")
    if limited and len(pattern) > MAX_PATTERN_CHARS:
        raise PolicyError(f"rule {field} pattern is {len(pattern)} characters; at most {MAX_PATTERN_CHARS} allowed")
    try:
        compiled = _compiled(pattern)
    except re2.error as exc:
        raise PolicyError(
            f"rule {field} pattern {pattern[:80]!r} is not a valid RE2 regular expression: {_message(exc)} "
            "(look-around and backreferences are not supported)"
        ) from None
    if limited and compiled.programsize > MAX_PROGRAM_SIZE:
        raise PolicyError(
            f"rule {field} pattern {pattern!r} is too complex ({compiled.programsize} RE2 instructions, "
            f"at most {MAX_PROGRAM_SIZE}); use smaller repetition counts"
        )
    return compiled


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _OPTIONS)


def search(pattern: str, text: str, field: str = "pattern") -> bool:
    return compile_pattern(pattern, field, limited=False).search(text) is not None


def escape(text: str) -> str:
    """``text`` as a pattern that matches it literally."""
    return str(re2.escape(text))
