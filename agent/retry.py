"""Our retry layer over the SDK (whose own retries are off).

A model call is retried as a whole: a streamed response is only used once it is complete, so a
retry can never repeat a ``tool_use`` — tools run after the call returns, never inside it.

- 429: wait ``retry-after`` (or ``retry-after-ms``), at most ``retry_after_cap_s``; backoff if absent.
- 408/409/5xx/529, timeouts, connection resets, and an ``overloaded_error``/``api_error`` event
  inside a streamed 200: exponential backoff with full jitter (a ``retry-after`` is honoured when sent).
- 400/401/403/404/413 and other 4xx: ``ModelAuthError`` at once, with a plain message.
- Retries exhausted: ``ModelUnavailable`` — the loop pauses the run (resumable), it does not fail it.

The rules are the same for every provider: each adapter's ``classify`` reads its SDK's exception into a
``Verdict`` (``verdict_for_status`` is the shared part), so retries behave alike whoever answers.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import httpx2

from agent.stream import IncompleteResponse
from deskpilot.errors import ModelAuthError, ModelUnavailable
from deskpilot.settings import Settings, default_of

T = TypeVar("T")
Classify = Callable[[BaseException], "Verdict | None"]


@dataclass(frozen=True, slots=True)
class RetryConfig:
    max_retries: int = default_of("model_retries", int)
    backoff_s: float = default_of("retry_backoff_s", float)
    max_backoff_s: float = 30.0
    retry_after_cap_s: float = default_of("retry_after_cap_s", float)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryConfig:
        return cls(max_retries=settings.model_retries, backoff_s=settings.retry_backoff_s,
                   retry_after_cap_s=settings.retry_after_cap_s)


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """What a ``retrying`` event reports."""

    attempt: int  # the attempt that is about to start (2 = first retry)
    max_attempts: int
    delay_s: float
    retry_at: float  # unix time
    reason: str
    status_code: int | None

    def as_dict(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "max_attempts": self.max_attempts, "delay_s": round(self.delay_s, 3),
                "retry_at": self.retry_at, "reason": self.reason, "status_code": self.status_code}


@dataclass(frozen=True, slots=True)
class Verdict:
    retry: bool
    reason: str
    status_code: int | None = None
    retry_after: float | None = None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date), None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to our own backoff
    return max(0.0, parsed.timestamp() - time.time())


_FATAL = {
    400: "the request was rejected as invalid (400)",
    401: "the API key was rejected (401): check the provider's API key (e.g. ANTHROPIC_API_KEY)",
    403: "the API key is not allowed to use this model or feature (403)",
    404: "the model or endpoint was not found (404): check DESKPILOT_MODEL and the base URL",
    413: "the request was too large for the API (413)",
}


def verdict_for_status(status: int, kind: str, headers: Any, detail: str) -> Verdict:
    """The shared rules for an HTTP status (``kind``: the API's error type, for errors inside a 200)."""
    after = parse_retry_after(headers)
    if status == 200:  # an error event inside a streamed 200
        return Verdict(kind in {"overloaded_error", "api_error", "rate_limit_error"},
                       f"{kind or 'error'} during the stream", status, after)
    if status == 429:
        return Verdict(True, "rate limited (429)", status, after)
    if status in (408, 409) or status >= 500:
        reason = "overloaded (529)" if status == 529 else f"server error ({status})"
        return Verdict(True, reason, status, after)
    base = _FATAL.get(status, f"the API refused the request ({status})")
    return Verdict(False, f"{base}: {detail}" if detail else base, status)


def classify(exc: BaseException) -> Verdict:
    """The Anthropic SDK's failures (the other SDKs are read by their adapters)."""
    if isinstance(exc, IncompleteResponse):
        return Verdict(True, "the response stream was cut off")
    if isinstance(exc, anthropic.APITimeoutError):
        return Verdict(True, "timeout")
    if isinstance(exc, anthropic.APIConnectionError):
        return Verdict(True, "connection error")
    if isinstance(exc, httpx2.TransportError):  # a reset while reading a stream arrives unwrapped
        return Verdict(True, f"connection error ({type(exc).__name__})")
    if isinstance(exc, anthropic.APIStatusError):
        return verdict_for_status(exc.status_code, exc.type or "", exc.response.headers, exc.api_message or "")
    return Verdict(False, f"unexpected error: {type(exc).__name__}: {exc}")


def classify_anthropic(exc: BaseException) -> Verdict | None:
    if isinstance(exc, anthropic.APIError | httpx2.TransportError | IncompleteResponse):
        return classify(exc)
    return None


def delay_for(verdict: Verdict, retry_index: int, cfg: RetryConfig) -> float:
    if verdict.retry_after is not None:
        return min(verdict.retry_after, cfg.retry_after_cap_s)
    ceiling = min(cfg.max_backoff_s, cfg.backoff_s * (2 ** retry_index))
    return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread out, never zero


async def with_retries(
    call: Callable[[], Awaitable[T]],
    cfg: RetryConfig,
    on_retry: Callable[[RetryInfo], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    classify: Classify = classify_anthropic,
) -> T:
    """Run ``call`` until it succeeds, a fatal error, or ``cfg.max_retries`` retries are spent."""
    attempts = cfg.max_retries + 1
    last = ""
    for index in range(attempts):
        try:
            return await call()
        except Exception as exc:
            verdict = classify(exc)
            if verdict is None:  # not the API's failure: a bug or a cancellation, not ours to retry
                raise
            if not verdict.retry:
                raise ModelAuthError(verdict.reason) from exc
            last = verdict.reason
            if index == attempts - 1:
                break
            delay = delay_for(verdict, index, cfg)
            await on_retry(RetryInfo(index + 2, attempts, delay, time.time() + delay, verdict.reason,
                                     verdict.status_code))
            await sleep(delay)
    raise ModelUnavailable(f"the model is unavailable after {attempts} attempts (last: {last})")
