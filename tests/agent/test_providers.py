"""The provider seam: model strings, the registry, one source per default, one price table."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import SecretStr

from agent.config import LoopConfig
from agent.providers.anthropic import AnthropicClient
from agent.providers.compat import CompatClient
from agent.providers.gemini import GeminiClient
from agent.providers.names import split_model
from agent.providers.openai_responses import OpenAIResponsesClient
from agent.providers.registry import ModelClients, missing_setting
from agent.retry import RetryConfig
from agent.usage import CallUsage, price_for
from deskpilot.errors import ConfigError
from deskpilot.settings import Settings


@pytest.mark.parametrize(("model", "split"), [
    ("claude-sonnet-4-6", ("anthropic", "claude-sonnet-4-6")),
    ("anthropic/claude-sonnet-4-6", ("anthropic", "claude-sonnet-4-6")),
    ("openai/computer-use-preview", ("openai", "computer-use-preview")),
    ("gemini/gemini-3.5-flash", ("gemini", "gemini-3.5-flash")),
    ("openai-compatible/ByteDance-Seed/UI-TARS-1.5-7B", ("openai-compatible", "ByteDance-Seed/UI-TARS-1.5-7B")),
])
def test_model_strings(model: str, split: tuple[str, str]) -> None:
    assert split_model(model) == split


@pytest.mark.parametrize("model", ["", "mistral/large", "openai/", "  "])
def test_bad_model_strings_are_config_errors(model: str) -> None:
    with pytest.raises(ConfigError):
        split_model(model)


async def test_one_client_per_provider_and_endpoint() -> None:
    settings = Settings(anthropic_api_key=SecretStr("a"), openai_api_key=SecretStr("o"),
                        gemini_api_key=SecretStr("g"), openai_compat_base_url="http://127.0.0.1:9/v1")
    clients = ModelClients(settings)
    assert isinstance(clients.for_model("claude-opus-4-5"), AnthropicClient)
    assert clients.for_model("anthropic/claude-opus-4-5") is clients.for_model("claude-sonnet-4-6")
    assert isinstance(clients.for_model("openai/gpt-5.4"), OpenAIResponsesClient)
    assert isinstance(clients.for_model("gemini/gemini-3.5-flash"), GeminiClient)
    compat = clients.for_model("openai-compatible/ui-tars-1.5")
    assert isinstance(compat, CompatClient) and str(compat.sdk.base_url) == "http://127.0.0.1:9/v1/"
    other = clients.for_model("openai-compatible/ui-tars-1.5", "http://127.0.0.1:10/v1")  # a session's own
    assert other is not compat and str(other.sdk.base_url) == "http://127.0.0.1:10/v1/"  # type: ignore[attr-defined]
    await clients.aclose()


def test_missing_keys_say_what_to_set() -> None:
    clients = ModelClients(Settings(anthropic_api_key=None, openai_api_key=None, gemini_api_key=None,
                                    openai_compat_base_url=None))
    for model, hint in [("claude-opus-4-5", "ANTHROPIC_API_KEY"), ("openai/x", "OPENAI_API_KEY"),
                        ("gemini/x", "GEMINI_API_KEY"), ("openai-compatible/x", "DESKPILOT_OPENAI_COMPAT_BASE_URL")]:
        with pytest.raises(ConfigError, match=hint):
            clients.for_model(model)


def test_loop_and_retry_defaults_come_from_settings() -> None:
    fields = Settings.model_fields
    loop = {f.name: f.default for f in dataclasses.fields(LoopConfig)}
    assert loop["max_steps"] == fields["max_steps"].default
    assert loop["max_cost_usd"] == fields["max_cost_usd"].default
    assert loop["keep_screenshots"] == fields["keep_screenshots"].default
    assert loop["removal_chunk"] == fields["screenshot_removal_chunk"].default
    assert loop["thinking_budget"] == fields["thinking_budget_tokens"].default
    assert RetryConfig() == RetryConfig.from_settings(Settings())


def test_one_price_table_for_every_provider() -> None:
    usage = CallUsage(input_tokens=1_000_000, output_tokens=1_000_000, cache_read_tokens=1_000_000)
    assert usage.cost(price_for("anthropic/claude-opus-4-5")) == usage.cost(price_for("claude-opus-4-5"))
    assert usage.cost(price_for("openai/computer-use-preview")) == pytest.approx(3 + 12 + 3)
    assert usage.cost(price_for("gemini/gemini-2.5-computer-use-preview-10-2025")) == pytest.approx(
        1.25 + 10 + 0.3125)
    assert usage.cost(price_for("openai-compatible/ui-tars-1.5")) == 0
    assert price_for("openai-compatible/ui-tars", {"openai-compatible/ui-tars": [1, 1, 1, 1]}) == (1, 1, 1, 1)
    assert price_for("openai/some-new-model") == price_for("claude-unknown")  # unknown: the safe fallback


async def test_the_compat_key_goes_only_to_the_configured_endpoint() -> None:
    settings = Settings(openai_compat_base_url="http://127.0.0.1:9/v1", openai_compat_api_key=SecretStr("s3cret"))
    clients = ModelClients(settings)
    configured = clients.for_model("openai-compatible/ui-tars-1.5")
    own = clients.for_model("openai-compatible/ui-tars-1.5", "http://127.0.0.1:10/v1")  # a session's base_url
    assert configured.sdk.api_key == "s3cret"  # type: ignore[attr-defined]
    assert own.sdk.api_key == "none"  # type: ignore[attr-defined]
    await clients.aclose()


def test_missing_setting_names_it_per_provider_without_making_a_client() -> None:
    settings = Settings(anthropic_api_key=None, openai_api_key=SecretStr("o"), gemini_api_key=None,
                        openai_compat_base_url=None)
    assert missing_setting(settings, "openai/gpt-5.4") is None
    assert "ANTHROPIC_API_KEY" in str(missing_setting(settings, "claude-opus-4-5"))
    assert "GEMINI_API_KEY" in str(missing_setting(settings, "gemini/gemini-3.5-flash"))
    assert missing_setting(settings, "openai-compatible/ui-tars-1.5", "http://127.0.0.1:9/v1") is None
    assert "base_url" in str(missing_setting(settings, "openai-compatible/ui-tars-1.5"))
    with pytest.raises(ConfigError, match="unknown model provider"):
        missing_setting(settings, "mistral/x")
