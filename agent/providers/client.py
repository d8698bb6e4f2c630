"""What the loop asks of a model API: one ``ModelClient`` per provider (the canonical types are in
``agent.providers.base``, which imports nothing of the loop's, so ``agent.stream`` can use them)."""

from __future__ import annotations

from typing import Protocol

from agent.config import LoopConfig
from agent.providers.base import Message, Reply
from agent.retry import Verdict


class ModelClient(Protocol):
    """One model API behind the loop. ``complete`` is retried as a whole by ``agent.retry``."""

    provider: str

    async def complete(self, history: list[Message], config: LoopConfig) -> Reply: ...

    def classify(self, exc: BaseException) -> Verdict | None:
        """How ``agent.retry`` treats this failure; None = not an API failure (it propagates)."""
        ...

    async def close(self) -> None: ...
