"""The store on a real SQLite file: sequence numbers, exactly-once decisions, screenshots by hash."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deskpilot.errors import Conflict, NotFound
from web.store import ApprovalRow, Store


async def session(store: Store, owner: str = "alice") -> str:
    row = await store.create_session(owner=owner, task="t", model="m", max_steps=1, width=800, height=600)
    return str(row.id)


async def test_concurrent_appends_get_gapless_unique_sequence_numbers(store: Store) -> None:
    a, b = await session(store), await session(store)
    await asyncio.gather(*(store.append_event(sid, "status", {"i": i}) for i in range(60) for sid in (a, b)))
    for sid in (a, b):
        seqs = [e.seq for e in await store.events_after(sid, 0)]
        assert seqs == list(range(1, 61))
        assert [e.seq for e in await store.events_after(sid, 57)] == [58, 59, 60]
        assert (await store.get_session(sid)).last_seq == 60
    with pytest.raises(NotFound):
        await store.append_event("nope", "status", {})


async def test_a_decision_is_recorded_exactly_once(store: Store) -> None:
    sid = await session(store)
    await store.add_approval(ApprovalRow(id="ap_1", session_id=sid, tool="bash", input={"command": "ls"}))
    results = await asyncio.gather(
        *(store.decide_approval(sid, "ap_1", d, None, None) for d in ("approve", "reject", "approve", "approve")),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 3
    other = await session(store, "bob")
    with pytest.raises(NotFound):
        await store.decide_approval(other, "ap_1", "approve", None, None)  # ids are scoped to their session


async def test_screenshots_are_stored_once_by_content_hash(store: Store, tmp_path: Path) -> None:
    ref = store.save_image(b"\x89PNG fake bytes", "image/png")
    assert ref == store.save_image(b"\x89PNG fake bytes", "image/png")
    assert len(list((tmp_path / "screenshots").iterdir())) == 1
    path = store.image_path(ref)
    assert path is not None and path.read_bytes() == b"\x89PNG fake bytes"
    for bad in ("../deskpilot.db", "x" * 64 + ".png", ref.replace(".png", ".exe"), ""):
        assert store.image_path(bad) is None


async def test_other_owners_do_not_see_a_session(store: Store) -> None:
    sid = await session(store, "alice")
    assert (await store.get_session(sid, "alice")).id == sid
    with pytest.raises(NotFound):
        await store.get_session(sid, "bob")
    rows, total = await store.list_sessions("bob", None, 10, 0)
    assert total == 0 and list(rows) == []
