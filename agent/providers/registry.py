"""Which adapter answers a model string, and the clients a process keeps (one per provider and endpoint).

Adding a provider: one module with a class satisfying ``base.ModelClient`` and a ``_make_*`` row in
``_MAKERS`` (plus its prices in ``agent.usage.PRICES``); see docs/providers.md.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.providers.base import ModelClient
from agent.providers.names import split_model
from deskpilot.errors import ConfigError
from deskpilot.settings import Settings


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter()) if callable(getter) else ""


def _make_anthropic(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.models import make_client
    from agent.providers.anthropic import AnthropicClient

    key = _secret(settings.anthropic_api_key)
    if not key:
        raise ConfigError("no Anthropic API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL to use a proxy or "
                          "gateway), e.g. `export ANTHROPIC_API_KEY=sk-ant-...`")
    return AnthropicClient(make_client(key, base_url or settings.anthropic_base_url, settings.model_timeout_s))


def _make_openai(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.openai_responses import OpenAIResponsesClient

    key = _secret(settings.openai_api_key)
    if not key:
        raise ConfigError("no OpenAI API key: set OPENAI_API_KEY (and OPENAI_BASE_URL for a proxy)")
    return OpenAIResponsesClient.create(key, base_url or settings.openai_base_url, settings.model_timeout_s)


def _make_gemini(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.gemini import GeminiClient

    key = _secret(settings.gemini_api_key)
    if not key:
        raise ConfigError("no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)")
    return GeminiClient.create(key, base_url or settings.gemini_base_url, settings.model_timeout_s)


def _make_compat(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.compat import CompatClient

    url = base_url or settings.openai_compat_base_url
    if not url:
        raise ConfigError("an openai-compatible model needs an endpoint: set DESKPILOT_OPENAI_COMPAT_BASE_URL "
                          "(e.g. http://127.0.0.1:8000/v1 for vLLM) or give the session a base_url")
    return CompatClient.create(_secret(settings.openai_compat_api_key) or "none", url, settings.model_timeout_s)


_MAKERS: dict[str, Callable[[Settings, str | None], ModelClient]] = {
    "anthropic": _make_anthropic,
    "openai": _make_openai,
    "gemini": _make_gemini,
    "openai-compatible": _make_compat,
}


def check_model(model: str) -> str:
    """The provider of ``model``; ``ConfigError`` for an unknown one (before anything starts)."""
    provider = split_model(model)[0]
    if provider not in _MAKERS:
        raise ConfigError(f"no adapter for provider {provider!r}")
    return provider


class ModelClients:
    """The process's model clients: one per (provider, endpoint), each with its SDK's connection pool and its
    own retries off (``agent.retry`` decides). ``for_model`` raises ``ConfigError`` when a key is missing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[tuple[str, str | None], ModelClient] = {}

    def for_model(self, model: str, base_url: str | None = None) -> ModelClient:
        provider = check_model(model)
        key = (provider, base_url)
        if key not in self._clients:
            self._clients[key] = _MAKERS[provider](self.settings, base_url)
        return self._clients[key]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def close(self) -> None:  # the name web/runner.py calls on its model client
        await self.aclose()
