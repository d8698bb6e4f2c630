"""The model table, the one client, the request parameters, prices."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import SecretStr

from agent.config import LoopConfig
from agent.models import get_client, thinking_param, toolset_for
from agent.prompts import DesktopFacts, system_prompt
from agent.usage import CallUsage, price_for
from deskpilot.errors import ConfigError
from deskpilot.settings import Settings


@pytest.mark.parametrize(
    ("model", "computer", "beta", "thinking"),
    [
        ("claude-opus-4-5", "computer_20251124", "computer-use-2025-11-24", "budget"),
        ("claude-opus-4-5-20251101", "computer_20251124", "computer-use-2025-11-24", "budget"),
        ("claude-opus-4-6", "computer_20251124", "computer-use-2025-11-24", "adaptive"),
        ("claude-sonnet-5", "computer_20251124", "computer-use-2025-11-24", "adaptive"),
        ("claude-sonnet-4-5-20250929", "computer_20250124", "computer-use-2025-01-24", "budget"),
        ("claude-opus-4-1", "computer_20250124", "computer-use-2025-01-24", "budget"),
        ("claude-3-7-sonnet-20250219", "computer_20250124", "computer-use-2025-01-24", "budget"),
        ("some-future-model", "computer_20251124", "computer-use-2025-11-24", "adaptive"),
    ],
)
def test_tool_versions_follow_the_model(model: str, computer: str, beta: str, thinking: str) -> None:
    tools = toolset_for(model)
    assert (tools.computer, tools.beta, tools.thinking) == (computer, beta, thinking)


def test_settings_override_the_tool_version() -> None:
    settings = Settings(model="claude-opus-4-5", computer_tool_version="computer_20250124",
                        computer_beta_flag="computer-use-2025-01-24")
    tools = toolset_for(settings.model, settings)
    assert (tools.computer, tools.beta) == ("computer_20250124", "computer-use-2025-01-24")


def test_the_37_editor_is_called_by_its_own_name() -> None:
    assert toolset_for("claude-3-7-sonnet-latest").editor_name == "str_replace_editor"


def test_thinking_parameter() -> None:
    assert thinking_param(toolset_for("claude-opus-4-5"), 2048) == {"type": "enabled", "budget_tokens": 2048}
    assert thinking_param(toolset_for("claude-opus-4-5"), 10) == {"type": "enabled", "budget_tokens": 1024}
    assert thinking_param(toolset_for("claude-opus-4-5"), 0) is None
    assert thinking_param(toolset_for("claude-opus-4-6"), 2048) == {"type": "adaptive"}


def test_one_client_per_process_and_a_clear_error_without_a_key() -> None:
    with pytest.raises(ConfigError, match="set ANTHROPIC_API_KEY"):
        get_client(Settings(anthropic_api_key=None))
    settings = Settings(anthropic_api_key=SecretStr("k"), anthropic_base_url="http://127.0.0.1:9")
    first = get_client(settings)
    assert get_client(settings) is first
    assert first.max_retries == 0
    assert str(first.base_url).startswith("http://127.0.0.1:9")


def test_config_from_settings_follows_a_per_run_model() -> None:
    settings = Settings(model="claude-sonnet-4-5", thinking_budget_tokens=4096, max_tokens=2048)
    facts = DesktopFacts(width=1366, height=768)
    config = LoopConfig.from_settings(settings, facts, model="claude-opus-4-5", max_steps=None,
                                      today=dt.date(2026, 11, 22))
    assert config.tools.computer == "computer_20251124"
    assert config.max_steps == settings.max_steps
    params = config.request_params([{"role": "user", "content": "hi"}])
    assert params["max_tokens"] > params["thinking"]["budget_tokens"] == 4096
    assert params["tools"][0]["display_width_px"] == 1366
    assert "1366x768" in config.system and "Sunday, 22 November 2026" in config.system


def test_system_prompt_is_stable_for_a_run() -> None:
    day = dt.date(2026, 1, 2)
    assert system_prompt(DesktopFacts(), today=day) == system_prompt(DesktopFacts(), today=day)


def test_prices() -> None:
    usage = CallUsage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=1_000_000,
                      cache_write_tokens=1_000_000)
    assert usage.cost(price_for("claude-opus-4-5")) == pytest.approx(5 + 25 + 6.25 + 0.5)
    assert usage.cost(price_for("claude-sonnet-4-5-20250929")) == pytest.approx(3 + 15 + 3.75 + 0.3)
    assert price_for("claude-haiku-4-5", {"claude-haiku": [1, 2, 3, 4]}) == (1.0, 5.0, 1.25, 0.10)  # longest wins
    assert price_for("claude-haiku-9", {"claude-haiku": [1, 2, 3, 4]}) == (1, 2, 3, 4)
    with pytest.raises(ValueError, match="needs 4 numbers"):
        price_for("x", {"x": [1]})
