"""Schema migrations (web/migrations) on SQLite and PostgreSQL.

"A database of the current release" is built from the DDL deskpilot 0.1.0 ran (tests/web/release_schema,
frozen from its ``create_all``) and filled through the store, as that release would have; upgrading it must
lose nothing. Revision 0001 must be exactly that DDL, the head revision exactly web/tables.py, and a
database at a revision this code does not know must stop the service with a clear message.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from deskpilot.errors import ConfigError
from tests.support.cli import deskpilot
from tests.web.pg import PgCluster
from web.migrations import alembic_config
from web.store import ApprovalRow, Store
from web.tables import Base

RELEASE_DDL = Path(__file__).parent / "release_schema"
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def on_db(url: str, fn: Callable[[Connection], Any]) -> Any:
    """``fn`` on a sync connection to ``url``, in one committed transaction."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def create_release_schema(conn: Connection) -> None:
    ddl = (RELEASE_DDL / f"0.1.0.{conn.dialect.name}.sql").read_text()
    for statement in ddl.split(";"):
        lines = [line for line in statement.splitlines() if not line.startswith("--")]
        if "".join(lines).strip():
            conn.exec_driver_sql("\n".join(lines))


def migrate_to(revision: str) -> Callable[[Connection], None]:
    return lambda conn: command.upgrade(alembic_config(conn), revision)


def downgrade_to(revision: str) -> Callable[[Connection], None]:
    return lambda conn: command.downgrade(alembic_config(conn), revision)


def schema_of(conn: Connection) -> dict[str, Any]:
    """Tables with their columns (type, nullability), keys, indexes and unique constraints."""
    insp = inspect(conn)
    schema: dict[str, Any] = {}
    for table in sorted(set(insp.get_table_names()) - {"alembic_version"}):
        schema[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(table)],
            "pk": insp.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                          for f in insp.get_foreign_keys(table)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                              for i in insp.get_indexes(table)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(table)),
        }
    return schema


def all_rows(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
            for table in ("tokens", "sessions", "events", "approvals", "usage")}


def version_of(conn: Connection) -> tuple[str, ...]:
    return MigrationContext.configure(conn).get_current_heads()


@pytest.fixture
def other_db_url(db_url: str | None, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A second empty database on the same backend as ``db_url``."""
    if db_url is None:
        return f"sqlite+aiosqlite:///{tmp_path / 'other.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database()


async def fill_as_the_release_did(store: Store) -> dict[str, str]:
    """Tokens, sessions, events, approvals, usage and an inbox, written by the store's own methods."""
    await store.add_token("alice", "a" * 64)
    await store.add_token("bob", "b" * 64)
    await store.revoke_token("bob")
    sid = (await store.create_session(owner="alice", task="book a flight ✓", model="claude-x", max_steps=30,
                                      width=1280, height=800, policy={"preset": "strict"}, max_cost_usd=2.5)).id
    done = (await store.create_session(owner="alice", task="t", model="m", max_steps=1, width=800, height=600)).id
    await store.append_event(sid, "status", {"status": "running"})
    await store.append_event(sid, "tool_result", {"output": "ok", "nested": [1, None]}, image_ref="c" * 64 + ".png")
    await store.add_approval(ApprovalRow(id="ap_open", session_id=sid, tool="bash", input={"command": "rm x"},
                                         tool_use_id="toolu_1", reason="destructive"))
    await store.add_approval(ApprovalRow(id="ap_done", session_id=done, tool="bash", input={}))
    await store.decide_approval(done, "ap_done", "edit", "careful", {"command": "ls"})
    await store.add_usage(sid, input_tokens=100, output_tokens=20, cache_read_tokens=7, cost_usd=0.125)
    await store.add_inbox(sid, "then check the price")
    await store.update_session(sid, status="awaiting_approval", usage_totals={"input_tokens": 100},
                               taken_over_at=datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC))
    await store.update_session(done, status="succeeded", result="done")
    return {"open": sid, "done": done}


async def test_a_release_database_is_upgraded_and_loses_nothing(tmp_path: Path, db_url: str | None) -> None:
    store = Store(tmp_path, db_url)  # init() not yet: the release made these tables itself
    await on_db(store.url, create_release_schema)
    ids = await fill_as_the_release_did(store)
    before = await on_db(store.url, all_rows)
    assert await on_db(store.url, version_of) == ()
    try:
        await store.init()

        assert await on_db(store.url, version_of) == (HEAD,)
        assert await on_db(store.url, all_rows) == before
        row = await store.get_session(ids["open"])
        assert (row.status, row.policy, row.max_cost_usd, row.last_seq) == (
            "awaiting_approval", {"preset": "strict"}, 2.5, 2)
        assert (row.input_tokens, row.output_tokens, row.cost_usd) == (100, 20, 0.125)
        assert row.taken_over_at == datetime(2026, 5, 6, 7, 8, 9)
        assert [(e.seq, e.type) for e in await store.events_after(ids["open"], 0)] == [(1, "status"),
                                                                                      (2, "tool_result")]
        pending = await store.pending_approval(ids["open"])
        assert pending is not None and (pending.id, pending.input) == ("ap_open", {"command": "rm x"})
        decided = await store.get_approval(ids["done"], "ap_done")
        assert (decided.status, decided.edited_input) == ("edit", {"command": "ls"})
        assert await store.take_inbox(ids["open"]) == ["then check the price"]
        alice = await store.token_by_hash("a" * 64)
        assert alice is not None and await store.token_by_hash("b" * 64) is None  # still revoked
        assert (await store.append_event(ids["open"], "status", {"status": "running"})).seq == 3

        # The new tables work on the upgraded database.
        expires = datetime.now(UTC) + timedelta(hours=1)
        await store.create_browser_session("d" * 64, alice, expires, ip="127.0.0.1", user_agent="Firefox")
        live = await store.browser_session("d" * 64)
        assert live is not None and (live.owner, live.token_id, live.ip) == ("alice", alice.id, "127.0.0.1")
        entry = await store.append_audit("alice", "alice", "approval.decide", {"decision": "approve"},
                                         session_id=ids["open"], address="127.0.0.1")
        assert [a.id for a in await store.list_audit("alice")] == [entry.id]
    finally:
        await store.close()
    again = Store(tmp_path, db_url)  # the next start finds the head revision: nothing to do
    try:
        await again.init()
        assert await again.browser_session("d" * 64) is not None
    finally:
        await again.close()


async def test_processes_upgrading_one_release_database_at_once(tmp_path: Path, db_url: str | None) -> None:
    stores = [Store(tmp_path, db_url) for _ in range(3)]
    try:
        await on_db(stores[0].url, create_release_schema)
        await stores[0].add_token("alice", "a" * 64)
        await asyncio.gather(*(s.init() for s in stores))
        assert await on_db(stores[0].url, version_of) == (HEAD,)
        assert [t.name for t in await stores[2].list_tokens()] == ["alice"]
    finally:
        for s in stores:
            await s.close()


async def test_revision_0001_is_the_release_schema_and_downgrades_return_to_it(
    tmp_path: Path, db_url: str | None, other_db_url: str
) -> None:
    release_url = Store(tmp_path, db_url).url
    await on_db(release_url, create_release_schema)
    release = await on_db(release_url, schema_of)
    assert set(release) == {"tokens", "sessions", "events", "approvals", "usage"}

    await on_db(other_db_url, migrate_to("0001"))
    assert await on_db(other_db_url, schema_of) == release
    await on_db(other_db_url, migrate_to("head"))
    added = {"browser_sessions", "audit_log", "session_endpoints", "session_leases", "session_commands"}
    assert set(await on_db(other_db_url, schema_of)) == {*release, *added}
    await on_db(other_db_url, downgrade_to("0001"))
    assert await on_db(other_db_url, schema_of) == release
    assert await on_db(other_db_url, version_of) == ("0001",)


async def test_the_head_revision_is_exactly_the_tables_the_code_maps(tmp_path: Path, db_url: str | None) -> None:
    """A column or table added to web/tables.py without a revision fails here."""
    store = Store(tmp_path, db_url)
    try:
        await store.init()

        def differences(conn: Connection) -> list[Any]:
            context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return list(compare_metadata(context, Base.metadata))

        assert await on_db(store.url, differences) == []
    finally:
        await store.close()


async def set_version(url: str, version: str) -> None:
    await on_db(url, lambda conn: conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": version}))


async def test_a_database_newer_than_the_code_is_refused(tmp_path: Path, db_url: str | None) -> None:
    first = Store(tmp_path, db_url)
    await first.init()
    await first.close()
    await set_version(first.url, "0099")  # as a later release would leave it

    store = Store(tmp_path, db_url)
    try:
        with pytest.raises(ConfigError, match=r"schema revision 0099, which this deskpilot does not know"):
            await store.init()
    finally:
        await store.close()
    assert await on_db(first.url, version_of) == ("0099",)


async def test_a_failed_upgrade_leaves_the_database_as_it_was(tmp_path: Path, db_url: str | None) -> None:
    store = Store(tmp_path, db_url)
    await on_db(store.url, create_release_schema)
    # Someone's own table in the way of revision 0002 (which creates browser_sessions first).
    await on_db(store.url, lambda conn: conn.exec_driver_sql("CREATE TABLE audit_log (x INTEGER)"))
    try:
        with pytest.raises(ConfigError, match="left as it was"):
            await store.init()
    finally:
        await store.close()
    schema = await on_db(store.url, schema_of)
    assert "browser_sessions" not in schema and await on_db(store.url, version_of) == ()


@pytest.mark.parametrize(("change", "says"), [
    (lambda conn: conn.exec_driver_sql("CREATE TABLE tokens (id TEXT PRIMARY KEY)"),
     "no approvals, events, sessions, usage"),
    (lambda conn: (create_release_schema(conn), conn.exec_driver_sql("ALTER TABLE usage ADD COLUMN x INTEGER")),
     "other columns in usage"),
])
async def test_tables_like_the_release_but_not_its_schema_are_refused(
    tmp_path: Path, change: Callable[[Connection], Any], says: str
) -> None:
    store = Store(tmp_path)
    await on_db(store.url, change)
    try:
        with pytest.raises(ConfigError, match=rf"not its schema \({says}\), and no alembic_version table"):
            await store.init()
    finally:
        await store.close()
    assert await on_db(store.url, version_of) == ()


def test_serve_and_token_say_why_they_refuse_a_newer_database(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    def serving(*args: object, **kwargs: object) -> None:
        raise AssertionError("deskpilot serve started on a database newer than itself")

    monkeypatch.setattr(uvicorn, "run", serving)
    data = tmp_path / "data"
    store = Store(data)

    async def newer() -> None:
        await store.init()
        await store.close()
        await set_version(store.url, "0099")

    asyncio.run(newer())
    env = {**os.environ, "DESKPILOT_DATA_DIR": str(data), "DESKPILOT_PORT": "9", "DESKPILOT_HOST": "127.0.0.1"}
    env.pop("DESKPILOT_DATABASE_URL", None)
    for args in (["serve"], ["token", "list"]):
        result = deskpilot(*args, env=env)
        assert result.exit_code == 1, result.stderr
        assert "schema revision 0099, which this deskpilot does not know" in result.stderr
        assert "Traceback" not in result.stderr


def test_the_documented_alembic_commands_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/migrations.md: `alembic upgrade head`, then `alembic check` finds nothing to generate (alembic's own
    command line and the repository's pyproject.toml, in this process)."""
    import io

    from alembic.config import CommandLine, Config

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    monkeypatch.setenv("DESKPILOT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("DESKPILOT_DATABASE_URL", raising=False)
    cli, out = CommandLine(prog="alembic"), io.StringIO()
    for args in (["upgrade", "head"], ["check"], ["current"]):
        options = cli.parser.parse_args(args)
        cli.run_cmd(Config(toml_file=root / "pyproject.toml", cmd_opts=options, stdout=out), options)
    assert f"{HEAD} (head)" in out.getvalue()
    assert (tmp_path / "deskpilot.db").exists()
