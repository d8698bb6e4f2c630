"""A desktop another replica runs, without X (docs/scale-out.md): its endpoint next to the lease, the client
built from it, and the input VNC connections a handback closes. The real thing across replicas is
tests/web/test_replicas_live.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from desktop.client import DesktopClient, DesktopEndpoint
from web.leases import Leases
from web.remote import RemoteDesktops
from web.store import Store, utcnow
from web.tables import LeaseRow

FIELDS = {"owner": "alice", "task": "t", "model": "m", "policy": {}, "max_steps": 1, "width": 800, "height": 600}


def test_an_endpoint_round_trips_and_never_shows_its_token() -> None:
    tcp = DesktopClient("http://desk-1:7000", token="s3cret-tcp", timeout_s=5)
    unix = DesktopClient(uds="/run/d/daemon.sock", token="s3cret-uds", timeout_s=5)
    for client in (tcp, unix):
        endpoint = client.endpoint(vnc=False)
        again = DesktopEndpoint.from_json(endpoint.to_json())
        assert again == endpoint and not again.vnc
        remote = DesktopClient.to(again, timeout_s=5)
        assert (remote.base_url, remote.uds, remote.endpoint(vnc=False)) == (client.base_url, client.uds, endpoint)
        assert "s3cret" not in repr(endpoint) + repr(remote) + repr(client)
    assert tcp.endpoint().to_json() == {"token": "s3cret-tcp", "base_url": "http://desk-1:7000", "uds": None,
                                        "vnc": True}
    for bad in ({"token": "t"}, {"token": "t", "base_url": "http://a", "uds": "/s"}, {"uds": "/s"},
                {"token": 5, "uds": "/s"}):
        with pytest.raises(ValueError, match="exactly one"):
            DesktopEndpoint.from_json(bad)


async def lease(store: Store, session_id: str, replica: str, ttl_s: float) -> None:
    async with store.sessionmaker.begin() as db:
        db.add(LeaseRow(session_id=session_id, replica=replica, expires_at=utcnow() + timedelta(seconds=ttl_s)))


async def test_the_holder_records_its_desktop_and_others_read_it(tmp_path: Path) -> None:
    store = Store(tmp_path)
    await store.init()
    try:
        mine, theirs, lapsed = [await store.create_session(**FIELDS) for _ in range(3)]
        await lease(store, mine.id, "a", 60)
        await lease(store, theirs.id, "b", 60)
        await lease(store, lapsed.id, "a", -1)
        a, b = Leases(store, "a", 60), Leases(store, "b", 60)
        endpoint = DesktopEndpoint(token="tok", uds="/run/a/daemon.sock")
        assert await b.desktop(mine.id) is None  # leased, no desktop up yet

        await a.set_desktop(mine.id, endpoint)
        await a.set_desktop(theirs.id, endpoint)  # not a's lease: nothing changes
        await a.set_desktop(lapsed.id, endpoint)
        assert await b.desktop(mine.id) == endpoint
        assert await b.desktop(theirs.id) is None
        assert await b.desktop(lapsed.id) is None  # the lease lapsed: the desktop died with its replica

        await b.set_desktop(mine.id, None)  # only the holder can clear it either
        assert await b.desktop(mine.id) == endpoint
        await a.set_desktop(mine.id, None)  # released
        assert await b.desktop(mine.id) is None
        async with store.sessionmaker() as db:  # SQL NULL, not a JSON null: `WHERE desktop IS NULL` finds it
            assert await db.scalar(text("SELECT desktop IS NULL FROM session_leases WHERE session_id = :id"),
                                   {"id": mine.id}) == 1
    finally:
        await store.close()


async def test_clients_follow_the_endpoint_and_inputs_end_with_their_takeover(tmp_path: Path) -> None:
    store = Store(tmp_path)
    await store.init()
    try:
        row = await store.create_session(**FIELDS)
        await lease(store, row.id, "a", 60)
        holder = Leases(store, "a", 60)
        remote = RemoteDesktops(Leases(store, "b", 60), store, refresh_s=0.2)
        assert await remote.client(row.id) is None

        await holder.set_desktop(row.id, DesktopEndpoint(token="one", uds="/run/a/one.sock"))
        first = await remote.client(row.id)
        assert first is not None and first.uds == "/run/a/one.sock" and remote.vnc_available(row.id)
        assert await remote.client(row.id) is first  # cached
        await holder.set_desktop(row.id, None)
        assert await remote.client(row.id) is first  # cached for refresh_s …
        assert await remote.client(row.id, fresh=True) is None  # … unless asked afresh
        await holder.set_desktop(row.id, DesktopEndpoint(token="one", uds="/run/a/one.sock"))
        first = await remote.client(row.id)
        assert first is not None
        await holder.set_desktop(row.id, DesktopEndpoint(token="two", base_url="http://desk-2:7000", vnc=False))
        await asyncio.sleep(0.3)
        second = await remote.client(row.id)
        assert second is not None and second is not first and second.base_url == "http://desk-2:7000"
        assert not await first.healthz()  # the old client was closed
        assert not remote.vnc_available(row.id)
        await remote.prune(keep=[])
        assert not await second.healthz()

        taken_at = utcnow()
        await store.update_session(row.id, control="user", taken_over_at=taken_at)
        kick = remote.open_input(row.id, (await store.get_session(row.id)).taken_over_at)
        stale = remote.open_input(row.id, taken_at - timedelta(seconds=30))  # opened in an earlier takeover
        await remote.check(row.id)
        assert not kick.is_set() and stale.is_set()
        await store.update_session(row.id, control="agent", taken_over_at=None)  # handed back
        await remote.check(row.id)
        assert kick.is_set()
        remote.close_input(row.id, kick)
        remote.close_input(row.id, stale)
        assert remote.with_inputs() == []

        remote.observe(row.id, "tool_call", {})
        assert remote.acting(row.id)
        remote.observe(row.id, "approval_requested", {})
        assert not remote.acting(row.id)
        remote.observe(row.id, "approval_decided", {"decision": "approve"})
        assert remote.acting(row.id)
        remote.observe(row.id, "tool_result", {})
        assert not remote.acting(row.id)
        await remote.aclose()
        assert await remote.client(row.id) is None  # stopping: no new clients
    finally:
        await store.close()
