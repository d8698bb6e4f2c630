"""A session run's status after its end, on a real SQLite store: the loop can finish while the user holds
control (its last answer needs no action), and a takeover or handback that comes after must not bring the
session back to life. The service-level race (tests/web/test_audit.py lost it once) is pinned here in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import events
from deskpilot.errors import Conflict
from deskpilot.settings import Settings
from desktop.backends.base import DesktopBackend, DesktopHandle
from web.bus import Bus
from web.recorder import Recorder
from web.session_run import SessionRun
from web.store import Store


class Host:
    """Only what ``emit``, ``takeover`` and ``handback`` use; a run here never starts a desktop or a model."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.settings, self.store = settings, store
        self.recorder = Recorder(store, Bus(8))

    def backend(self) -> DesktopBackend:
        raise AssertionError("not used")

    def model(self, name: str, base_url: str | None = None) -> object:
        raise AssertionError("not used")

    async def desktop_ready(self, session_id: str, handle: DesktopHandle) -> None:
        raise AssertionError("not used")


async def taken_over_run(store: Store, tmp_path: Path) -> SessionRun:
    row = await store.create_session(owner="alice", task="t", model="m", max_steps=5, width=800, height=600)
    run = SessionRun(Host(store, Settings(data_dir=tmp_path)), row.id)  # type: ignore[arg-type]  # see Host
    await run.emit(events.status("running"))
    await run.takeover()
    return run


async def statuses(store: Store, sid: str) -> list[str]:
    return [str(e.data["status"]) for e in await store.events_after(sid, 0) if e.type == "status"]


async def test_a_handback_after_the_run_ended_in_the_users_hands_keeps_the_final_status(
        store: Store, tmp_path: Path) -> None:
    run = await taken_over_run(store, tmp_path)
    await run.emit(events.status("succeeded"))  # the loop's last answer, while the user holds control
    await run.emit(events.Event("user_message", {"text": "late", "handback": False}))  # not a status: kept
    assert (await store.get_session(run.session_id)).status == "succeeded"
    await run.handback("all yours")
    row = await store.get_session(run.session_id)
    assert (row.status, row.control) == ("succeeded", "agent")
    assert await statuses(store, run.session_id) == ["running", "taken_over", "succeeded"]
    with pytest.raises(Conflict, match="ended"):
        await run.takeover()


async def test_a_handback_before_the_end_is_recorded_and_the_end_comes_last(store: Store, tmp_path: Path) -> None:
    run = await taken_over_run(store, tmp_path)
    await run.handback(None)
    await run.emit(events.status("succeeded"))
    assert (await store.get_session(run.session_id)).status == "succeeded"
    assert await statuses(store, run.session_id) == ["running", "taken_over", "running", "succeeded"]


async def test_whoever_waits_on_a_cancel_can_itself_be_cancelled(store: Store, tmp_path: Path) -> None:
    """A replica stopping cancels the task applying a forwarded cancel; that task must stop, not swallow it."""
    row = await store.create_session(owner="alice", task="t", model="m", max_steps=5, width=800, height=600)
    run = SessionRun(Host(store, Settings(data_dir=tmp_path)), row.id)  # type: ignore[arg-type]  # see Host

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.shield(asyncio.sleep(2))  # releasing its desktop, say

    run.task = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(run.cancel())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiter, 1)
    await asyncio.wait({run.task}, timeout=5)
