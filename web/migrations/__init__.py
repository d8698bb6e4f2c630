"""Schema migrations: Alembic revisions in ``versions/``, applied in-process when the service starts.

``upgrade(engine, lock_path)`` brings the database to the newest revision this code knows, under a lock
so processes starting at once take turns (an ``flock`` for SQLite, an advisory lock on PostgreSQL), all in
one transaction (SQLite too: the engine is set up to emit its own ``BEGIN IMMEDIATE``), so a failed
upgrade leaves the database as it was. A database that deskpilot 0.1.0 created (before Alembic: its
tables, no ``alembic_version``) is stamped as revision 0001 first. A database at a revision this code does
not know was upgraded by a newer release: ``ConfigError``, and nothing is touched.
How to add a revision: docs/migrations.md.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from pathlib import Path
from typing import IO, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from deskpilot.errors import ConfigError

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

# The schema deskpilot 0.1.0 created with ``create_all``: revision 0001 creates exactly this.
RELEASE_REVISION = "0001"
RELEASE_COLUMNS: dict[str, frozenset[str]] = {
    "tokens": frozenset({"id", "name", "hash", "created_at", "revoked_at"}),
    "sessions": frozenset({
        "id", "owner", "task", "model", "policy", "max_steps", "max_cost_usd", "width", "height", "status",
        "control", "result", "error", "last_seq", "input_tokens", "output_tokens", "cost_usd", "usage_totals",
        "inbox", "taken_over_at", "created_at", "updated_at",
    }),
    "events": frozenset({"id", "session_id", "seq", "type", "data", "image_ref", "created_at"}),
    "approvals": frozenset({
        "id", "session_id", "status", "tool_use_id", "tool", "input", "reason", "image_ref", "note",
        "edited_input", "created_at", "decided_at",
    }),
    "usage": frozenset({
        "id", "session_id", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
        "cost_usd", "created_at",
    }),
}

# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises migrations across processes.
_LOCK_KEY = 0x6465736B70696C6F


def alembic_config(connection: Connection | None = None) -> Config:
    """The Alembic configuration, without an ini file; ``env.py`` migrates ``connection`` when given."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, lock_path: Path) -> None:
    """Bring the database ``engine`` opens to the head revision. ``engine`` is for this alone (its SQLite
    connections are switched to explicit transactions); ``lock_path`` is the SQLite lock file."""
    if engine.dialect.name != "sqlite":
        await _upgrade(engine)
        return
    # Python's sqlite3 commits before DDL on its own; take over (SQLAlchemy's documented recipe) so the
    # whole upgrade is one transaction.
    event.listen(engine.sync_engine, "connect", _no_implicit_transactions)
    event.listen(engine.sync_engine, "begin", _begin_immediate)
    # Processes initialising one SQLite file at once: each reads the schema, then both want to write, and
    # SQLite answers one of them "database is locked" at once (no busy wait can resolve that). Take turns.
    lock = await asyncio.to_thread(_exclusive_lock, lock_path)
    try:
        await _upgrade(engine)
    finally:
        lock.close()


async def _upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        await conn.run_sync(_upgrade_on)


def _upgrade_on(conn: Connection) -> None:
    config = alembic_config(conn)
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn).get_current_heads()
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(set(current) - known)
    if unknown:
        where = make_url(str(conn.engine.url)).render_as_string(hide_password=True)
        raise ConfigError(
            f"the database {where} is at schema revision {', '.join(unknown)}, which this deskpilot does not "
            f"know (its newest is {script.get_current_head()}): a newer release has upgraded it. Run that "
            "release, or point DESKPILOT_DATABASE_URL / DESKPILOT_DATA_DIR at another database."
        )
    stamped = not current and _made_by_release(conn)
    if stamped:
        log.info("the database was made by deskpilot 0.1.0: recorded as schema revision %s", RELEASE_REVISION)
        command.stamp(config, RELEASE_REVISION)
    if set(current) != {script.get_current_head()}:
        start = ", ".join(current) or (RELEASE_REVISION if stamped else "")
        log.info("upgrading the database schema from %s to revision %s",
                 f"revision {start}" if start else "an empty database", script.get_current_head())
        try:
            command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise ConfigError(
                f"upgrading the database schema to revision {script.get_current_head()} failed, so the database "
                f"was left as it was: {exc}"
            ) from exc


def _made_by_release(conn: Connection) -> bool:
    """True for deskpilot 0.1.0's tables, False for none of them; anything in between is refused."""
    inspector = inspect(conn)
    present = set(inspector.get_table_names()) & RELEASE_COLUMNS.keys()
    if not present:
        return False
    found = {name: frozenset(c["name"] for c in inspector.get_columns(name)) for name in present}
    if found == RELEASE_COLUMNS:
        return True
    missing = sorted(RELEASE_COLUMNS.keys() - present)
    what = f"no {', '.join(missing)}" if missing else "other columns in " + ", ".join(
        sorted(name for name in present if found[name] != RELEASE_COLUMNS[name]))
    raise ConfigError(
        f"the database has tables named like deskpilot 0.1.0's but not its schema ({what}), and no "
        "alembic_version table: refusing to guess how to upgrade it"
    )


def _no_implicit_transactions(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _exclusive_lock(path: Path) -> IO[bytes]:
    """Open ``path`` and hold an exclusive ``flock`` on it until the returned file is closed (blocks)."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except BaseException:
        handle.close()
        raise
    return handle
