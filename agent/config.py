"""Everything one run of the loop needs to know, resolved once from Settings and the desktop's size."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from agent.classifier import StepClassifier, load_classifier
from agent.models import ToolSet, thinking_param, tool_params, toolset_for
from agent.prompts import DesktopFacts, system_prompt
from agent.providers.names import split_model
from agent.retry import RetryConfig
from agent.watchdog import WatchdogConfig
from deskpilot.settings import Settings, default_of


@dataclass(frozen=True, slots=True)
class LoopConfig:
    model: str  # as given: "claude-opus-4-5", "anthropic/…", "openai/…", "gemini/…", "openai-compatible/…"
    tools: ToolSet
    width: int  # model-space screen size
    height: int
    system: str
    max_tokens: int = default_of("max_tokens", int)
    thinking_budget: int = default_of("thinking_budget_tokens", int)
    keep_screenshots: int = default_of("keep_screenshots", int)
    removal_chunk: int = default_of("screenshot_removal_chunk", int)
    max_steps: int = default_of("max_steps", int)
    max_cost_usd: float = default_of("max_cost_usd", float)
    prices: dict[str, list[float]] = field(default_factory=dict)
    retry: RetryConfig = field(default_factory=RetryConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    step_classifier: StepClassifier | None = None  # agent.classifier: may flag a step for approval
    stream: bool = True  # SSE: how an overloaded_error inside a 200 reaches us

    @classmethod
    def from_settings(cls, settings: Settings, facts: DesktopFacts, *, today: dt.date | None = None,
                      **overrides: Any) -> LoopConfig:
        base: dict[str, Any] = dict(
            model=settings.model,
            tools=toolset_for(split_model(settings.model)[1], settings),
            width=facts.width,
            height=facts.height,
            system=system_prompt(facts, today=today),
            max_tokens=settings.max_tokens,
            thinking_budget=settings.thinking_budget_tokens,
            keep_screenshots=settings.keep_screenshots,
            removal_chunk=settings.screenshot_removal_chunk,
            max_steps=settings.max_steps,
            max_cost_usd=settings.max_cost_usd,
            prices=dict(settings.model_prices),
            retry=RetryConfig.from_settings(settings),
            watchdog=WatchdogConfig.from_settings(settings),
            step_classifier=load_classifier(settings.step_classifier) if settings.step_classifier else None,
        )
        overrides = {k: v for k, v in overrides.items() if v is not None}  # None = "use the setting"
        base.update(overrides)
        if "model" in overrides and "tools" not in overrides:  # the tool versions follow the model asked for
            base["tools"] = toolset_for(split_model(base["model"])[1], settings)
        return cls(**base)

    @property
    def provider(self) -> str:
        return split_model(self.model)[0]

    @property
    def model_name(self) -> str:
        """The model as its own API calls it (no provider prefix)."""
        return split_model(self.model)[1]

    def request_params(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything but the history is fixed for the run, so the cached prefix never drifts."""
        params: dict[str, Any] = {
            "model": self.model_name,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": self.system, "cache_control": {"type": "ephemeral"}}],
            "tools": tool_params(self.tools, self.width, self.height),
            "messages": messages,
            "betas": [self.tools.beta],
        }
        thinking = thinking_param(self.tools, self.thinking_budget)
        if thinking is not None:
            params["thinking"] = thinking
            if thinking["type"] == "enabled" and self.max_tokens <= thinking["budget_tokens"]:
                params["max_tokens"] = thinking["budget_tokens"] + 1024
        return params

    def version_for(self, tool: str) -> str:
        if tool == "computer":
            return self.tools.computer
        return self.tools.bash if tool == "bash" else self.tools.editor
