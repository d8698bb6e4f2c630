"""Glue between a session and the agent loop (``agent/loop.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from deskpilot.errors import ConfigError

if TYPE_CHECKING:
    from web.live import GatedDesktop, Live
    from web.runner import Runner
    from web.store import SessionRow


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str
    reason: str = ""
    result: str | None = None
    error: str | None = None


async def run_agent(runner: Runner, live: Live, desktop: GatedDesktop, row: SessionRow, *, resume: bool) -> Outcome:
    raise ConfigError("the agent loop is not available yet")


async def deliver_message(runner: Runner, row: SessionRow, live: Live | None, text: str) -> Any:
    raise ConfigError("the agent loop is not available yet")
