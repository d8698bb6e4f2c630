"""The model client (one per process) and the table that picks tool versions from a model name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import anthropic

from deskpilot.errors import ConfigError
from deskpilot.settings import Settings

ThinkingMode = Literal["budget", "adaptive", "none"]


@dataclass(frozen=True, slots=True)
class ToolSet:
    """The tool definitions and beta flag one model family speaks."""

    computer: str  # e.g. "computer_20251124"
    beta: str  # e.g. "computer-use-2025-11-24"
    editor: str  # text editor tool type
    editor_name: str  # the name the model calls it by
    bash: str = "bash_20250124"
    thinking: ThinkingMode = "budget"


NEW = ToolSet("computer_20251124", "computer-use-2025-11-24", "text_editor_20250728", "str_replace_based_edit_tool")
# Opus 4.6 and later deprecate a fixed thinking budget in favour of adaptive thinking.
NEW_ADAPTIVE = ToolSet(
    "computer_20251124", "computer-use-2025-11-24", "text_editor_20250728", "str_replace_based_edit_tool",
    thinking="adaptive",
)
CLAUDE_4 = ToolSet(
    "computer_20250124", "computer-use-2025-01-24", "text_editor_20250728", "str_replace_based_edit_tool"
)
CLAUDE_37 = ToolSet("computer_20250124", "computer-use-2025-01-24", "text_editor_20250124", "str_replace_editor")

# Longest matching prefix wins; a model not listed gets the newest tool set.
MODEL_TABLE: dict[str, ToolSet] = {
    "claude-opus-4-5": NEW,
    "claude-opus-4-6": NEW_ADAPTIVE,
    "claude-opus-4-7": NEW_ADAPTIVE,
    "claude-opus-4-8": NEW_ADAPTIVE,
    "claude-sonnet-4-6": NEW_ADAPTIVE,
    "claude-opus-5": NEW_ADAPTIVE,
    "claude-sonnet-5": NEW_ADAPTIVE,
    "claude-haiku-5": NEW_ADAPTIVE,
    "claude-mythos": NEW_ADAPTIVE,
    "claude-fable": NEW_ADAPTIVE,
    "claude-sonnet-4-5": CLAUDE_4,
    "claude-haiku-4-5": CLAUDE_4,
    "claude-opus-4-1": CLAUDE_4,
    "claude-opus-4": CLAUDE_4,
    "claude-sonnet-4": CLAUDE_4,
    "claude-3-7-sonnet": CLAUDE_37,
}

# The desktop daemon's tool names; the 3.7 editor is called differently by the model.
DESKTOP_TOOL = {"computer": "computer", "bash": "bash", "str_replace_based_edit_tool": "str_replace_based_edit_tool",
                "str_replace_editor": "str_replace_based_edit_tool"}


def toolset_for(model: str, settings: Settings | None = None) -> ToolSet:
    best = ""
    for prefix in MODEL_TABLE:
        if model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    tools = MODEL_TABLE[best] if best else NEW_ADAPTIVE
    if settings is not None and (settings.computer_tool_version or settings.computer_beta_flag):
        computer = settings.computer_tool_version or tools.computer
        tools = ToolSet(computer, settings.computer_beta_flag or tools.beta, tools.editor, tools.editor_name,
                        tools.bash, tools.thinking)
    return tools


def tool_params(tools: ToolSet, width: int, height: int) -> list[dict[str, Any]]:
    """The ``tools`` request parameter: computer at model resolution, bash and the editor."""
    computer: dict[str, Any] = {"type": tools.computer, "name": "computer",
                                "display_width_px": width, "display_height_px": height}
    if tools.computer == "computer_20251124":
        computer["enable_zoom"] = True
    return [computer, {"type": tools.bash, "name": "bash"}, {"type": tools.editor, "name": tools.editor_name}]


def thinking_param(tools: ToolSet, budget: int) -> dict[str, Any] | None:
    if budget <= 0 or tools.thinking == "none":
        return None
    if tools.thinking == "adaptive":
        return {"type": "adaptive"}
    return {"type": "enabled", "budget_tokens": max(budget, 1024)}


_client: anthropic.AsyncAnthropic | None = None
_client_key: tuple[str | None, str | None, float] | None = None


def get_client(settings: Settings) -> anthropic.AsyncAnthropic:
    """The process's one ``AsyncAnthropic``; its own retries are off because ``agent.retry`` decides."""
    global _client, _client_key
    if settings.anthropic_api_key is None:
        raise ConfigError("no Anthropic API key: set ANTHROPIC_API_KEY (and ANTHROPIC_BASE_URL for a proxy)")
    key = settings.anthropic_api_key.get_secret_value()
    ident = (key, settings.anthropic_base_url, settings.model_timeout_s)
    if _client is None or _client_key != ident:
        _client = make_client(key, settings.anthropic_base_url, settings.model_timeout_s)
        _client_key = ident
    return _client


def make_client(api_key: str, base_url: str | None, timeout_s: float) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
