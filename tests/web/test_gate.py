"""The gate every agent action passes (web/live.py), on a stand-in client: takeover holds the next action
between actions, never one in flight, and the held action is answered with the current screen instead."""

from __future__ import annotations

import asyncio
from typing import Any

from desktop.tools.base import ToolResult
from web.live import Gate, GatedDesktop, Handover


class Client:
    """Records calls; ``hold`` keeps a tool call running until set."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.hold: asyncio.Event | None = None

    async def tool(self, name: str, input: dict[str, Any], *, version: str = "computer_20250124") -> ToolResult:
        self.calls.append(str(input.get("action")))
        if self.hold is not None:
            await self.hold.wait()
        return ToolResult(output="ok")

    async def screenshot(self) -> ToolResult:
        self.calls.append("screenshot")
        return ToolResult(image=b"png", image_media_type="image/png")

    async def active_window_title(self) -> str | None:
        return "Inbox"


def gated(gate: Gate, client: Client, seen: list[Handover] | None = None) -> GatedDesktop:
    async def on_handback(handover: Handover) -> None:
        if seen is not None:
            seen.append(handover)

    return GatedDesktop(gate, client, on_handback)  # type: ignore[arg-type]  # has every method the gate calls


async def test_an_open_gate_runs_the_action_and_counts_it() -> None:
    gate, client = Gate(), Client()
    result = await gated(gate, client).tool("computer", {"action": "click"})
    assert (result.output, client.calls, gate.actions_started, gate.acting) == ("ok", ["click"], 1, False)


async def test_takeover_waits_for_the_action_in_flight_then_holds_the_next() -> None:
    gate, client, seen = Gate(), Client(), []
    desktop = gated(gate, client, seen)
    client.hold = asyncio.Event()
    first = asyncio.create_task(desktop.tool("computer", {"action": "type"}))
    await asyncio.sleep(0.01)
    assert gate.acting
    gate.close("takeover")
    assert not await gate.until_idle(0.05)  # never interrupts the action in flight
    client.hold.set()
    assert await gate.until_idle(5) and (await first).output == "ok"
    second = asyncio.create_task(desktop.tool("computer", {"action": "click"}))
    await asyncio.sleep(0.05)
    assert not second.done() and client.calls == ["type"]  # held at the gate
    assert await desktop.active_window_title() == "Inbox"  # reading the title does not wait at the gate
    gate.open("I logged in")
    held = await asyncio.wait_for(second, 5)
    assert client.calls == ["type", "screenshot"]  # the planned click never ran
    assert held.error.startswith("Not executed: the user took control") and "I logged in" in held.error
    assert held.image == b"png"
    assert [h.note for h in seen] == ["I logged in"]
    assert (await desktop.tool("computer", {"action": "click"})).output == "ok"  # the next one runs again
    assert gate.actions_started == 2
