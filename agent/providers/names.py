"""Model strings: ``provider/model``; a bare name is a Claude model (``anthropic/``)."""

from __future__ import annotations

from deskpilot.errors import ConfigError

PROVIDERS = ("anthropic", "openai", "gemini", "openai-compatible")


def split_model(model: str) -> tuple[str, str]:
    """``"openai/computer-use-preview"`` -> ``("openai", "computer-use-preview")``; ``"claude-x"`` -> anthropic."""
    model = model.strip()
    if not model:
        raise ConfigError("no model given: set DESKPILOT_MODEL, e.g. anthropic/claude-sonnet-4-6")
    head, sep, rest = model.partition("/")
    if not sep:
        return "anthropic", model
    if head not in PROVIDERS:
        raise ConfigError(f"unknown model provider {head!r} in {model!r}; use one of {', '.join(PROVIDERS)}")
    if not rest.strip():
        raise ConfigError(f"no model name after {head}/ in {model!r}")
    return head, rest.strip()
