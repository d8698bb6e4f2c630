"""The gate every agent action passes, and who holds control of a running session's desktop.

The agent reaches its desktop only through ``GatedDesktop``; takeover closes the gate, so the agent stops
*between* actions, never in the middle of one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from desktop.client import DesktopClient
from desktop.tools.base import ToolResult

Hold = Literal["takeover"]


@dataclass
class Handover:
    """What the user did while holding control, told to the model at handback."""

    seconds: float
    note: str | None


class Gate:
    """Open unless someone holds control; counts and times the actions that pass it."""

    def __init__(self) -> None:
        self.hold: Hold | None = None
        self.actions_started = 0
        self._took_over_at = 0.0
        self._handover: Handover | None = None
        self._open = asyncio.Event()
        self._idle = asyncio.Event()
        self._open.set()
        self._idle.set()

    @property
    def acting(self) -> bool:
        """An action is running on the desktop."""
        return not self._idle.is_set()

    def close(self, reason: Hold) -> None:
        self.hold = reason
        self._open.clear()
        self._took_over_at = time.monotonic()

    def open(self, note: str | None = None) -> None:
        if self.hold == "takeover":
            self._handover = Handover(time.monotonic() - self._took_over_at, note)
        self.hold = None
        self._open.set()

    async def until_idle(self, limit_s: float) -> bool:
        """Wait for an action in flight to finish (takeover never interrupts one)."""
        try:
            await asyncio.wait_for(self._idle.wait(), limit_s)
        except TimeoutError:
            return False
        return True

    async def passing(self) -> Handover | None:
        """Wait until the gate is open; what the user did meanwhile, if they held control."""
        while not self._open.is_set():
            await self._open.wait()
        handover, self._handover = self._handover, None
        return handover

    def started(self) -> None:
        self._idle.clear()
        self.actions_started += 1

    def finished(self) -> None:
        self._idle.set()


class GatedDesktop:
    """The desktop as the agent sees it: every tool call first passes the session's gate.

    If the user took control while the agent waited here, the waiting action is not run: the screen it
    was planned for is gone. The model gets a fresh screenshot and what the user noted instead.
    """

    def __init__(self, gate: Gate, client: DesktopClient,
                 on_handback: Callable[[Handover], Awaitable[None]] | None = None) -> None:
        self.gate = gate
        self.client = client
        self.on_handback = on_handback

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        handover = await self.gate.passing()
        if handover is not None:
            shot = await self.client.screenshot()
            if self.on_handback is not None:
                await self.on_handback(handover)
            note = f" Their note: {handover.note}" if handover.note else ""
            return ToolResult(
                error=(f"Not executed: the user took control of the desktop for {handover.seconds:.0f} s and "
                       f"has handed it back.{note} The screen may have changed; this is the current screen."),
                image=shot.image, image_media_type=shot.image_media_type,
            )
        self.gate.started()
        try:
            return await self.client.tool(name, input, version=version)
        finally:
            self.gate.finished()

    async def screenshot(self) -> ToolResult:
        return await self.client.screenshot()

    async def active_window_title(self) -> str | None:
        """For the approval policy's window rules: read-only, so it does not wait at the gate."""
        return await self.client.active_window_title()

    async def active_tab_url(self) -> str | None:
        """For the approval policy's URL rules and sensitive sites: read-only, so it does not wait at the gate."""
        return await self.client.active_tab_url()
