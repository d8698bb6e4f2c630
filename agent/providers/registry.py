"""Which adapter answers a model string, and the clients a process keeps (one per provider and endpoint).

Adding a provider: one module with a class satisfying ``client.ModelClient`` and a ``_need_*``/``_make_*`` row in
``_PROVIDERS`` (plus its prices in ``agent.usage.PRICES``); see docs/providers.md.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.providers.client import ModelClient
from agent.providers.names import split_model
from deskpilot.errors import ConfigError
from deskpilot.settings import Settings


def _secret(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter()) if callable(getter) else ""


def _need_anthropic(settings: Settings, base_url: str | None) -> str | None:
    if _secret(settings.anthropic_api_key):
        return None
    return ("no Anthropic API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL to use a proxy or gateway), "
            "e.g. `export ANTHROPIC_API_KEY=sk-ant-...`")


def _need_openai(settings: Settings, base_url: str | None) -> str | None:
    return None if _secret(settings.openai_api_key) else "no OpenAI API key: set OPENAI_API_KEY (and " \
        "OPENAI_BASE_URL for a proxy)"


def _need_gemini(settings: Settings, base_url: str | None) -> str | None:
    return None if _secret(settings.gemini_api_key) else "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY)"


def _need_compat(settings: Settings, base_url: str | None) -> str | None:
    if base_url or settings.openai_compat_base_url:
        return None
    return ("an openai-compatible model needs an endpoint: set DESKPILOT_OPENAI_COMPAT_BASE_URL "
            "(e.g. http://127.0.0.1:8000/v1 for vLLM) or give the session a base_url")


def _make_anthropic(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.models import make_client
    from agent.providers.anthropic import AnthropicClient

    key = _secret(settings.anthropic_api_key)
    return AnthropicClient(make_client(key, base_url or settings.anthropic_base_url, settings.model_timeout_s))


def _make_openai(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.openai_responses import OpenAIResponsesClient

    key = _secret(settings.openai_api_key)
    return OpenAIResponsesClient.create(key, base_url or settings.openai_base_url, settings.model_timeout_s)


def _make_gemini(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.gemini import GeminiClient

    key = _secret(settings.gemini_api_key)
    return GeminiClient.create(key, base_url or settings.gemini_base_url, settings.model_timeout_s)


def _make_compat(settings: Settings, base_url: str | None) -> ModelClient:
    from agent.providers.compat import CompatClient

    configured = settings.openai_compat_base_url
    url = base_url or configured or ""
    # The configured key goes only to the configured endpoint: a session's own base_url never receives it.
    key = _secret(settings.openai_compat_api_key) if url == configured else ""
    return CompatClient.create(key or "none", url, settings.model_timeout_s)


_Maker = Callable[[Settings, str | None], ModelClient]
_Need = Callable[[Settings, str | None], "str | None"]
_PROVIDERS: dict[str, tuple[_Need, _Maker]] = {
    "anthropic": (_need_anthropic, _make_anthropic),
    "openai": (_need_openai, _make_openai),
    "gemini": (_need_gemini, _make_gemini),
    "openai-compatible": (_need_compat, _make_compat),
}


def missing_setting(settings: Settings, model: str, base_url: str | None = None) -> str | None:
    """Why ``model`` cannot run with these settings (the setting to set), or None when it can.
    ``ConfigError`` for an unknown provider."""
    return _PROVIDERS[check_model(model)][0](settings, base_url)


def check_model(model: str) -> str:
    """The provider of ``model``; ``ConfigError`` for an unknown one (before anything starts)."""
    provider = split_model(model)[0]
    if provider not in _PROVIDERS:
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
            need, make = _PROVIDERS[provider]
            missing = need(self.settings, base_url)
            if missing:
                raise ConfigError(missing)
            self._clients[key] = make(self.settings, base_url)
        return self._clients[key]

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    async def close(self) -> None:  # the name web/runner.py calls on its model client
        await self.aclose()
