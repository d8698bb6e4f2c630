"""The in-memory side of one running session: who holds control, and the gate every action passes.

The agent reaches its desktop only through ``GatedDesktop``; pause and takeover close the gate, so the
agent stops *between* actions, never in the middle of one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from desktop.tools.base import ToolResult


@dataclass
class Handover:
    """What the user did while holding control, told to the model at handback."""

    seconds: float
    note: str | None


@dataclass
class Live:
    session_id: str
    owner: str
    task: asyncio.Task[None] | None = None
    handle: Any = None  # desktop backend handle (``.client``, ``.id``, ``.vnc_available``)
    hold: str | None = None  # "pause" | "takeover" | None
    took_over_at: float = 0.0
    handover: Handover | None = None
    cancelled: bool = False
    actions_started: int = 0
    messages: list[str] = field(default_factory=list)
    vnc_kicks: set[asyncio.Event] = field(default_factory=set)  # input-capable VNC connections, closed on handback
    loop: Any = None  # agent.loop.AgentLoop once built
    gated: GatedDesktop | None = None
    _open: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._open.set()
        self._idle.set()

    @property
    def acting(self) -> bool:
        """An action is running on the desktop."""
        return not self._idle.is_set()

    @property
    def client(self) -> Any:
        return self.handle.client if self.handle is not None else None

    def close_gate(self, reason: str) -> None:
        self.hold = reason
        self._open.clear()
        if reason == "takeover":
            self.took_over_at = time.monotonic()

    def open_gate(self, note: str | None = None) -> None:
        if self.hold == "takeover":
            self.handover = Handover(time.monotonic() - self.took_over_at, note)
        self.hold = None
        self._open.set()

    async def until_idle(self, limit_s: float) -> bool:
        """Wait for an action in flight to finish (takeover never interrupts one)."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit_s)
        except TimeoutError:
            return False
        return True

    async def pass_gate(self) -> Handover | None:
        while not self._open.is_set():
            await self._open.wait()
        handover, self.handover = self.handover, None
        return handover


class GatedDesktop:
    """The desktop as the agent sees it: every tool call first passes the session's gate.

    If the user took control while the agent waited here, the waiting action is not run: the screen it
    was planned for is gone. The model gets a fresh screenshot and what the user noted instead.
    """

    def __init__(self, live: Live, on_handback: Callable[[Handover], Awaitable[None]] | None = None) -> None:
        self.live = live
        self.on_handback = on_handback

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        handover = await self.live.pass_gate()
        if handover is not None:
            shot = await self.live.client.screenshot()
            if self.on_handback is not None:
                await self.on_handback(handover)
            note = f" Their note: {handover.note}" if handover.note else ""
            return ToolResult(
                error=(f"Not executed: the user took control of the desktop for {handover.seconds:.0f} s and "
                       f"has handed it back.{note} The screen may have changed; this is the current screen."),
                image=shot.image, image_media_type=shot.image_media_type,
            )
        self.live._idle.clear()
        self.live.actions_started += 1
        try:
            result: ToolResult = await self.live.client.tool(name, input, version=version)
            return result
        finally:
            self.live._idle.set()

    async def screenshot(self) -> ToolResult:
        result: ToolResult = await self.live.client.screenshot()
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.live.client, name)
