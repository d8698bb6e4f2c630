"""Shared pieces of the agent tests: the fake Messages API, a recording desktop, a loop factory."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import pytest
from PIL import Image

from agent.config import LoopConfig
from agent.events import Event
from agent.loop import AgentLoop
from agent.models import toolset_for
from agent.policy import ApprovalPolicy
from agent.prompts import DesktopFacts, system_prompt
from agent.retry import RetryConfig
from deskpilot.errors import ToolError
from desktop.tools.base import ToolResult
from tests.support.fake_messages import FakeMessages, fake_messages

__all__ = ["fake_messages"]
MODEL = "claude-opus-4-5"  # not deprecated in the installed SDK, so no DeprecationWarning


def png(shade: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small distinct PNG per step, so tests can tell screenshots apart."""
    buf = io.BytesIO()
    Image.new("RGB", size, (shade % 256, (shade * 7) % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


@dataclass
class RecordingDesktop:
    """Stands in for ``DesktopClient`` where the real desktop is not the subject: records every call.

    ``block`` makes a call wait until released (to interrupt mid-action)."""

    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)
    block: asyncio.Event | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    fail_with: Exception | None = None

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        self.calls.append((name, input, version))
        self.started.set()
        if self.block is not None:
            await self.block.wait()
        if self.fail_with is not None:
            raise self.fail_with
        if name == "computer" and input.get("action") == "fly":
            raise ToolError("Invalid action: fly")
        return ToolResult(output=f"did {input.get('action', name)}", image=png(len(self.calls)))


class Collector:
    def __init__(self) -> None:
        self.events: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.type == kind]

    def statuses(self) -> list[tuple[str, str]]:
        return [(d["status"], d["reason"]) for d in self.of("status")]


def make_config(**overrides: Any) -> LoopConfig:
    facts = DesktopFacts(width=1024, height=768)
    base: dict[str, Any] = dict(model=MODEL, tools=toolset_for(MODEL), width=1024, height=768,
                                system=system_prompt(facts), thinking_budget=1024,
                                retry=RetryConfig(max_retries=4, backoff_s=0.01, max_backoff_s=0.05))
    base.update(overrides)
    return LoopConfig(**base)


@pytest.fixture
async def client(fake_messages: FakeMessages) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = anthropic.AsyncAnthropic(api_key="test-key", base_url=fake_messages.url, max_retries=0, timeout=10)
    yield c
    await c.close()


LoopFactory = Callable[..., tuple[AgentLoop, Collector]]


@pytest.fixture
def make_loop(client: anthropic.AsyncAnthropic) -> LoopFactory:
    def build(desktop: Any = None, *, policy: ApprovalPolicy | None = None, history: list[dict[str, Any]] | None = None,
              **config: Any) -> tuple[AgentLoop, Collector]:
        events = Collector()
        loop = AgentLoop(client=client, desktop=desktop or RecordingDesktop(),
                         policy=policy or ApprovalPolicy("autonomous"), emit=events,
                         config=make_config(**config), history=history)
        return loop, events

    return build
