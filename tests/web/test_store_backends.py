"""The store on both backends it supports: a SQLite file and a throwaway PostgreSQL cluster (tests/web/pg.py).

The store's own tests (test_store.py) run again here on each backend, plus what only shows with two
processes on one database (two Store instances = two engines, no shared in-process lock), a restart,
and the column types PostgreSQL is strict about (JSON, timezones, text). At the end, the service itself
on PostgreSQL: the approval race through HTTP and the SIGKILL-restart recovery (the same tests as on SQLite).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import make_url

from deskpilot.errors import Conflict
from tests.web import test_api, test_approvals, test_restart, test_stream
from tests.web import test_store as base
from tests.web.conftest import Service, start_service, stop_service
from tests.web.pg import PgCluster, cluster_for_tests
from web.store import ApprovalRow, Store


@pytest.fixture
async def store(tmp_path: Path, db_url: str | None) -> AsyncIterator[Store]:
    s = Store(tmp_path, db_url)
    await s.init()
    yield s
    await s.close()


async def open_store(path: Path, url: str | None) -> Store:
    s = Store(path, url)
    await s.init()
    return s


# The store's own tests, once per backend.
test_concurrent_appends_get_gapless_unique_sequence_numbers = (
    base.test_concurrent_appends_get_gapless_unique_sequence_numbers
)
test_a_decision_is_recorded_exactly_once = base.test_a_decision_is_recorded_exactly_once
test_screenshots_are_stored_once_by_content_hash = base.test_screenshots_are_stored_once_by_content_hash
test_other_owners_do_not_see_a_session = base.test_other_owners_do_not_see_a_session


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_without_postgresql_ci_fails_and_a_developer_gets_a_skip(
    ci: str, outcome: type[BaseException], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="apt-get install -y postgresql"):
        next(cluster_for_tests(tmp_path))  # an empty dir: no PostgreSQL installed there


def test_the_backend_is_the_one_named(store: Store, db_url: str | None) -> None:
    assert store.engine.dialect.name == ("sqlite" if db_url is None else "postgresql")


async def test_two_processes_appending_to_one_session_get_gapless_sequence_numbers(
    store: Store, tmp_path: Path, db_url: str | None
) -> None:
    other = await open_store(tmp_path, db_url)  # its own engine and append locks, like a second worker
    try:
        sid = await base.session(store)
        await asyncio.gather(*(s.append_event(sid, "status", {"i": i, "by": n})
                               for i in range(40) for n, s in enumerate((store, other))))
        events = await other.events_after(sid, 0)
        assert [e.seq for e in events] == list(range(1, 81))
        assert sorted((e.data["by"], e.data["i"]) for e in events) == [(n, i) for n in (0, 1) for i in range(40)]
        assert (await store.get_session(sid)).last_seq == 80
    finally:
        await other.close()


async def test_two_processes_deciding_one_approval_one_wins(store: Store, tmp_path: Path, db_url: str | None) -> None:
    other = await open_store(tmp_path, db_url)
    try:
        sid = await base.session(store)
        await store.add_approval(ApprovalRow(id="ap_1", session_id=sid, tool="bash", input={"command": "ls"}))
        results = await asyncio.gather(
            *(s.decide_approval(sid, "ap_1", d, f"by {n}", {"command": f"ls {n}"} if d == "edit" else None)
              for n, (s, d) in enumerate([(store, "approve"), (other, "edit"), (store, "reject"), (other, "approve")])),
            return_exceptions=True,
        )
        winners = [r for r in results if isinstance(r, ApprovalRow)]
        assert len(winners) == 1 and sum(isinstance(r, Conflict) for r in results) == 3
        stored = await other.get_approval(sid, "ap_1")
        assert (stored.status, stored.note, stored.edited_input) == (
            winners[0].status, winners[0].note, winners[0].edited_input)
    finally:
        await other.close()


async def test_everything_survives_a_restart(tmp_path: Path, db_url: str | None) -> None:
    first = await open_store(tmp_path, db_url)
    sid = await base.session(first)
    await first.append_event(sid, "status", {"status": "running"})
    await first.append_event(sid, "tool_result", {"output": "ok"}, image_ref="a" * 64 + ".png")
    await first.add_approval(ApprovalRow(id="ap_9", session_id=sid, tool="bash", input={"command": "rm -r x"},
                                         tool_use_id="toolu_1", reason="destructive"))
    await first.add_inbox(sid, "and then this")
    await first.add_usage(sid, input_tokens=10, output_tokens=5, cost_usd=0.25)
    await first.update_session(sid, status="awaiting_approval", usage_totals={"input_tokens": 10})
    await first.close()  # the process dies; a new one opens the same database (init again is harmless)

    again = await open_store(tmp_path, db_url)
    try:
        assert [s.id for s in await again.sessions_in(["awaiting_approval"])] == [sid]
        row = await again.get_session(sid)
        assert (row.last_seq, row.input_tokens, row.output_tokens, row.cost_usd) == (2, 10, 5, 0.25)
        assert row.usage_totals == {"input_tokens": 10}
        pending = await again.pending_approval(sid)
        assert pending is not None and pending.id == "ap_9" and pending.input == {"command": "rm -r x"}
        assert (await again.approval_for_tool_use(sid, "toolu_1")) is not None
        assert await again.last_image(sid) == "a" * 64 + ".png"
        assert await again.take_inbox(sid) == ["and then this"]
        assert await again.take_inbox(sid) == []
        event = await again.append_event(sid, "status", {"status": "interrupted"})
        assert event.seq == 3  # the sequence goes on where it stopped
    finally:
        await again.close()


async def test_two_processes_initialising_a_fresh_database_at_once(tmp_path: Path, db_url: str | None) -> None:
    stores = [Store(tmp_path, db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.init() for s in stores))
        assert await stores[2].count_tokens() == 0
    finally:
        for s in stores:
            await s.close()


async def test_json_and_timestamps_round_trip_the_same_on_both_backends(store: Store) -> None:
    before = datetime.now(UTC)
    data = {"text": "naïve café ✓ 日本", "nested": {"list": [1, 2.5, None, True], "empty": {}}, "quote": "it's \"x\""}
    row = await store.create_session(owner="alice", task="t", model="m", max_steps=1, width=800, height=600,
                                     policy={"preset": "strict", "allow": ["bash"]}, max_cost_usd=1.5)
    event = await store.append_event(row.id, "tool_call", data)
    [stored] = await store.events_after(row.id, 0)
    assert stored.data == data and stored.id == event.id
    got = await store.get_session(row.id)
    assert got.policy == {"preset": "strict", "allow": ["bash"]} and got.inbox == [] and got.max_cost_usd == 1.5
    # Timestamps come back as naive UTC on both backends (what the SQLite store has always returned).
    for ts in (stored.created_at, got.created_at, got.updated_at):
        assert ts.tzinfo is None
        assert before - timedelta(seconds=1) <= ts.replace(tzinfo=UTC) <= datetime.now(UTC) + timedelta(seconds=1)
    await store.update_session(row.id, taken_over_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert (await store.get_session(row.id)).taken_over_at == datetime(2026, 1, 2, 3, 4, 5)
    rows, total = await store.list_sessions("alice", None, 10, 0)
    assert total == 1 and rows[0].id == row.id


async def test_text_with_nul_characters_is_stored_not_a_server_error(store: Store) -> None:
    # PostgreSQL text cannot hold U+0000 (SQLite can); user input and model output may contain it.
    sid = (await store.create_session(owner="alice", task="a\x00b", model="m", max_steps=1, width=800,
                                      height=600)).id
    await store.append_event(sid, "assistant_text", {"text": "x\x00y"})
    await store.update_session(sid, result="done\x00")
    await store.add_inbox(sid, "hi\x00there")
    row = await store.get_session(sid)
    assert row.task.replace("\ufffd", "\x00") == "a\x00b" and row.result is not None
    assert [e.data["text"] for e in await store.events_after(sid, 0)] == ["x\x00y"]
    assert await store.take_inbox(sid) == ["hi\x00there"]


async def test_an_over_long_model_supplied_id_is_stored_and_found_again(store: Store) -> None:
    sid = await base.session(store)
    use_id = "toolu_" + "x" * 300  # the column holds 128; PostgreSQL enforces that, SQLite does not
    await store.add_approval(ApprovalRow(id="ap_1", session_id=sid, tool="t" * 100, input={}, tool_use_id=use_id))
    found = await store.approval_for_tool_use(sid, use_id)
    assert found is not None and found.id == "ap_1" and found.tool_use_id.startswith("toolu_xxx")


# --- the service on PostgreSQL ---


@pytest.fixture
def pg_db(pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh database named by DESKPILOT_DATABASE_URL, as a deployment would (subprocesses inherit it)."""
    url = pg_cluster.create_database()
    monkeypatch.setenv("DESKPILOT_DATABASE_URL", url)
    yield str(make_url(url).database)


def rows_in(cluster: PgCluster, db: str, table: str) -> int:
    return int(cluster.psql(f"SELECT count(*) FROM {table}", db))


@pytest.fixture
def pg_service(pg_db: str, tmp_path: Path) -> Iterator[Service]:
    svc = start_service(tmp_path / "data")
    try:
        yield svc
    finally:
        stop_service(svc)


def test_the_rest_contract_on_postgresql(pg_service: Service, pg_cluster: PgCluster, pg_db: str) -> None:
    assert pg_service.app.state.store.engine.dialect.name == "postgresql"
    test_api.test_create_get_list_and_event_log(pg_service)
    test_api.test_other_owner_sees_nothing(pg_service)
    assert rows_in(pg_cluster, pg_db, "sessions") >= 2


def test_the_live_stream_replays_from_the_event_log_on_postgresql(pg_service: Service) -> None:
    test_stream.test_reconnect_with_after_misses_nothing(pg_service)


@pytest.fixture
def pg_agent_service(pg_db: str, agent_service: Service) -> Service:
    """``agent_service`` on PostgreSQL: ``pg_db`` comes first, so the service starts with its URL set."""
    return agent_service


def test_the_approval_race_through_the_service_on_postgresql(
    pg_agent_service: Service, pg_cluster: PgCluster, pg_db: str, tmp_path: Path
) -> None:
    assert pg_agent_service.app.state.store.engine.dialect.name == "postgresql"
    test_approvals.test_two_concurrent_decisions_one_wins_and_the_action_runs_once(pg_agent_service, tmp_path)
    assert rows_in(pg_cluster, pg_db, "approvals") == 1 and rows_in(pg_cluster, pg_db, "events") > 3


@pytest.mark.desktop  # a real `deskpilot serve`, SIGKILLed, with real desktops
def test_restart_recovery_on_postgresql(pg_cluster: PgCluster, pg_db: str, tmp_path: Path) -> None:
    test_restart.test_restart_mid_step_and_during_a_pending_approval(tmp_path)
    assert rows_in(pg_cluster, pg_db, "sessions") == 2
    assert not (tmp_path / "data" / "deskpilot.db").exists()  # nothing went to a SQLite file instead


@pytest.mark.desktop  # a real `deskpilot serve`, SIGKILLed, with real desktops
def test_resume_after_a_restart_on_postgresql(pg_cluster: PgCluster, pg_db: str, tmp_path: Path) -> None:
    test_restart.test_after_a_restart_resume_waits_for_the_pending_decision(tmp_path)
    assert rows_in(pg_cluster, pg_db, "approvals") == 1


# --- browser sessions and the audit log (revision 0002) ---


async def test_a_browser_session_lives_until_revoked_expired_or_its_token_is_revoked(store: Store) -> None:
    alice = await store.add_token("alice", "a" * 64)
    bob = await store.add_token("bob", "b" * 64)
    soon = datetime.now(UTC) + timedelta(hours=1)
    await store.create_browser_session("1" * 64, alice, soon, ip="::1", user_agent="UA")
    await store.create_browser_session("2" * 64, alice, datetime.now(UTC) - timedelta(seconds=1))
    await store.create_browser_session("3" * 64, bob, soon)
    live = await store.browser_session("1" * 64)
    assert live is not None and (live.owner, live.token_id, live.ip, live.user_agent) == (
        "alice", alice.id, "::1", "UA")
    assert live.expires_at == soon.replace(tzinfo=None)  # naive UTC, like every timestamp of the store
    assert await store.browser_session("2" * 64) is None  # expired
    assert await store.browser_session("f" * 64) is None  # unknown
    await store.touch_browser_session("1" * 64)
    touched = await store.browser_session("1" * 64)
    assert touched is not None and touched.last_seen_at >= live.last_seen_at
    assert await store.revoke_browser_session("1" * 64) is True
    assert await store.revoke_browser_session("1" * 64) is False
    assert await store.browser_session("1" * 64) is None
    assert await store.browser_session("3" * 64) is not None
    await store.revoke_token("bob")  # revoking the token ends the sessions it logged in
    assert await store.browser_session("3" * 64) is None


async def test_the_audit_log_lists_an_owners_entries_newest_first(store: Store) -> None:
    sid = await base.session(store)
    first = await store.append_audit("alice", "alice", "session.create", {"task": "t"}, session_id=sid,
                                     address="127.0.0.1")
    second = await store.append_audit("alice", "alice", "approval.decide", {"decision": "approve"}, session_id=sid)
    third = await store.append_audit("alice", "admin", "token.revoke")
    await store.append_audit("bob", "bob", "session.create")
    assert [a.id for a in await store.list_audit("alice")] == [third.id, second.id, first.id]
    assert [a.id for a in await store.list_audit("alice", session_id=sid)] == [second.id, first.id]
    assert [a.id for a in await store.list_audit("alice", before_id=third.id, limit=1)] == [second.id]
    [entry] = await store.list_audit("alice", session_id=sid, before_id=second.id)
    assert (entry.actor, entry.action, entry.detail, entry.address) == (
        "alice", "session.create", {"task": "t"}, "127.0.0.1")
    assert entry.at.tzinfo is None and third.detail == {}
