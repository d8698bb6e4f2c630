"""Leases and commands on PostgreSQL (web/leases.py): one holder at a time, lapsed leases taken over,
orphans found, commands handed over once. Times are the database's; claims with a 0.2 s TTL let leases lapse."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from deskpilot.errors import ConfigError
from deskpilot.settings import Settings
from desktop.client import DesktopEndpoint
from tests.web.pg import PgCluster
from web.app import create_app
from web.leases import Leases
from web.store import Store


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database()


async def test_one_holder_lapsed_leases_orphans_and_commands(tmp_path: Path, pg_url: str) -> None:
    store = Store(tmp_path, pg_url)
    await store.init()
    try:
        fields = {"owner": "alice", "task": "t", "model": "m", "policy": {}, "max_steps": 1, "width": 800,
                  "height": 600}
        a, b = Leases(store, "a", 30), Leases(store, "b", 30)
        a_brief = Leases(store, "a", 0.2)  # the same replica, claiming with a lease that lapses at once
        leased = await store.create_session(leased_to=("a", 30.0), **fields)
        free = await store.create_session(**fields)  # queued, never leased: an orphan
        assert await a.holder(leased.id) == "a"
        assert list(await b.orphans()) == [free.id]

        assert not await b.claim(leased.id)  # a's lease is live
        assert await a.claim(leased.id)  # renewing one's own is a claim too
        results = await asyncio.gather(a.claim(free.id), b.claim(free.id))
        assert sorted(results) == [False, True]  # racing claims: exactly one wins
        winner = "a" if results[0] else "b"
        assert await a.holder(free.id) == winner

        brief = a_brief if winner == "a" else Leases(store, "b", 0.2)
        assert await brief.claim(free.id)
        await brief.set_desktop(free.id, DesktopEndpoint(token="t", base_url="http://desk:7000"))
        assert await a.desktop(free.id) == DesktopEndpoint(token="t", base_url="http://desk:7000")
        assert await a_brief.claim(leased.id)
        await asyncio.sleep(0.5)  # both leases have lapsed
        assert await a.holder(free.id) is None and set(await a.orphans()) == {free.id, leased.id}
        assert await b.claim(free.id) and await a.holder(free.id) == "b"  # taken over once lapsed
        assert await a.desktop(free.id) is None  # the dead holder's desktop is not the new holder's
        async with store.sessionmaker() as db:
            assert await db.scalar(text("SELECT desktop IS NULL FROM session_leases WHERE session_id = :id"),
                                   {"id": free.id})
        assert await b.renew() == {free.id}
        await b.release(free.id)
        assert await a.holder(free.id) is None

        await b.send(leased.id, "pause")
        await b.send(leased.id, "decide", {"approval_id": "ap_1"})
        assert list(await a.sessions_with_commands()) == [leased.id]
        taken = await a.take_commands(leased.id)
        assert [(c.kind, c.data) for c in taken] == [("pause", {}), ("decide", {"approval_id": "ap_1"})]
        assert await a.take_commands(leased.id) == []  # handed over once
    finally:
        await store.close()


def test_replicas_on_sqlite_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PostgreSQL"):
        create_app(Settings(data_dir=tmp_path, cluster=True), first_token=False)
