"""Anthropic Messages API: the canonical history is its native shape, so the adapter only adds the prompt
cache breakpoints (``agent.history``) and streams the reply (``agent.stream``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anthropic

from agent import history as hist
from agent.providers.base import Message, Reply
from agent.retry import Verdict, classify_anthropic
from agent.stream import call_json, call_stream

if TYPE_CHECKING:
    from agent.config import LoopConfig


class AnthropicClient:
    provider = "anthropic"

    def __init__(self, sdk: anthropic.AsyncAnthropic) -> None:
        self.sdk = sdk

    async def complete(self, history: list[Message], config: LoopConfig) -> Reply:
        params = config.request_params(hist.with_cache_breakpoints(history))
        return await (call_stream if config.stream else call_json)(self.sdk, params)

    def classify(self, exc: BaseException) -> Verdict | None:
        return classify_anthropic(exc)

    async def close(self) -> None:
        await self.sdk.close()
