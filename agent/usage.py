"""Token usage and cost per model call, running totals, and the budget check.

One price table for every provider, keyed by ``provider/model`` prefix (a bare or ``anthropic/`` name is a
Claude model). Adapters report usage in the Messages-API keys (``input_tokens`` = uncached input,
``cache_read_input_tokens``, ``cache_creation_input_tokens``, ``output_tokens`` incl. reasoning), so one
``CallUsage`` and one meter serve them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# USD per million tokens: input, output, cache write (5-minute), cache read. Longest prefix wins.
# Published list prices when written; DESKPILOT_MODEL_PRICES overrides any row (same keys).
PRICES: dict[str, tuple[float, float, float, float]] = {
    # OpenAI (Responses API): no cache-write surcharge, cached input at a tenth.
    "openai/computer-use-preview": (3.0, 12.0, 3.0, 3.0),
    "openai/gpt-5": (1.25, 10.0, 1.25, 0.125),
    "openai/gpt-5-mini": (0.25, 2.0, 0.25, 0.025),
    "openai/gpt-5.4": (2.5, 15.0, 2.5, 0.25),
    # Gemini: implicit caching, cached input at a quarter.
    "gemini/gemini-2.5-computer-use": (1.25, 10.0, 1.25, 0.3125),
    "gemini/gemini-2.5-pro": (1.25, 10.0, 1.25, 0.3125),
    "gemini/gemini-2.5-flash": (0.30, 2.50, 0.30, 0.075),
    "gemini/gemini-3": (2.0, 12.0, 2.0, 0.5),
    "gemini/gemini-3.5-flash": (0.5, 3.0, 0.5, 0.125),
    # Open-weight models on your own server: no per-token price unless you set one.
    "openai-compatible/": (0.0, 0.0, 0.0, 0.0),
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-6": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-7": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-8": (5.0, 25.0, 6.25, 0.50),
    "claude-opus-4-1": (15.0, 75.0, 18.75, 1.50),
    "claude-opus-4": (15.0, 75.0, 18.75, 1.50),
    "claude-sonnet": (3.0, 15.0, 3.75, 0.30),
    "claude-3-7-sonnet": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
}
# A model we have no price for is costed like Opus 4.5, so budgets err on the safe side.
FALLBACK_PRICE = (5.0, 25.0, 6.25, 0.50)


def price_for(model: str, overrides: dict[str, list[float]] | None = None) -> tuple[float, float, float, float]:
    model = model.removeprefix("anthropic/")
    table: dict[str, tuple[float, float, float, float]] = dict(PRICES)
    for name, values in (overrides or {}).items():
        if len(values) != 4:
            raise ValueError(f"price for {name} needs 4 numbers [input, output, cache_write, cache_read]")
        table[name] = (values[0], values[1], values[2], values[3])
    best = max((p for p in table if model.startswith(p)), key=len, default="")
    return table[best] if best else FALLBACK_PRICE


@dataclass(slots=True)
class CallUsage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_api(cls, usage: dict[str, Any] | None) -> CallUsage:
        u = usage or {}
        return cls(
            input_tokens=int(u.get("input_tokens") or 0),
            output_tokens=int(u.get("output_tokens") or 0),
            cache_read_tokens=int(u.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(u.get("cache_creation_input_tokens") or 0),
        )

    def cost(self, price: tuple[float, float, float, float]) -> float:
        p_in, p_out, p_write, p_read = price
        return (self.input_tokens * p_in + self.output_tokens * p_out
                + self.cache_write_tokens * p_write + self.cache_read_tokens * p_read) / 1e6

    def as_dict(self) -> dict[str, int]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens}


@dataclass(slots=True)
class UsageTotals:
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, usage: CallUsage, cost: float) -> None:
        self.steps += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_read_tokens += usage.cache_read_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.cost_usd += cost

    def as_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cache_read_tokens": self.cache_read_tokens, "cache_write_tokens": self.cache_write_tokens,
                "cost_usd": round(self.cost_usd, 6)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageTotals:
        return cls(steps=int(data.get("steps", 0)), input_tokens=int(data.get("input_tokens", 0)),
                   output_tokens=int(data.get("output_tokens", 0)),
                   cache_read_tokens=int(data.get("cache_read_tokens", 0)),
                   cache_write_tokens=int(data.get("cache_write_tokens", 0)),
                   cost_usd=float(data.get("cost_usd", 0.0)))


def budget_exceeded(totals: UsageTotals, max_steps: int, max_cost_usd: float) -> tuple[str, str] | None:
    """``(reason_code, message)`` when the next model call would break a budget, else None."""
    if totals.steps >= max_steps:
        return "max_steps", f"stopped: max_steps reached ({totals.steps} of {max_steps} model calls)"
    if max_cost_usd > 0 and totals.cost_usd >= max_cost_usd:
        return "max_cost", f"stopped: max_cost_usd reached (${totals.cost_usd:.4f} of ${max_cost_usd:.2f})"
    return None
