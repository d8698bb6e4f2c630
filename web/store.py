"""Persistence: tokens, sessions, the append-only event log, approvals, usage, and screenshot files.

SQLAlchemy 2 async; a SQLite file in ``data_dir`` unless ``database_url`` names another database
(PostgreSQL via ``postgresql+asyncpg://``). Screenshots are files named by the SHA-256 of their bytes,
so the same frame is stored once however many events point at it.

Both backends behave the same: timestamps come back as naive UTC (what SQLite returns), and on PostgreSQL
text that it cannot hold (U+0000, longer than the column) is adapted instead of failing the write.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine

from deskpilot.errors import Conflict, NotFound
from web.states import FINAL_STATES

# Any fixed 64-bit number: the PostgreSQL advisory lock that serialises schema creation across processes.
_INIT_LOCK_KEY = 0x6465736B70696C6F


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; read back as naive UTC on every backend, as SQLite always has."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)


class Str(TypeDecorator[str]):
    """String/Text that PostgreSQL accepts whatever the model or a user sends.

    PostgreSQL text cannot hold U+0000 and enforces VARCHAR lengths; SQLite does neither. On PostgreSQL a NUL
    becomes U+FFFD and an over-long value is cut to the column's length (in comparisons too, so lookups
    still match) — a changed character rather than a failed write. SQLite keeps the value as it is.
    """

    impl = Text
    cache_ok = True

    def __init__(self, length: int | None = None) -> None:
        super().__init__()
        self.length = length

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        return dialect.type_descriptor(String(self.length) if self.length else Text())

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None or dialect.name != "postgresql":
            return value
        value = value.replace("\x00", "\ufffd")
        return value[: self.length] if self.length else value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: UTCDateTime()}


class TokenRow(Base):
    __tablename__ = "tokens"
    id: Mapped[str] = mapped_column(Str(36), primary_key=True)
    name: Mapped[str] = mapped_column(Str(200), index=True)  # the owner of the sessions it creates
    hash: Mapped[str] = mapped_column(Str(64), unique=True)  # SHA-256 of the secret; the secret is never stored
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(Str(36), primary_key=True)
    owner: Mapped[str] = mapped_column(Str(200), index=True)
    task: Mapped[str] = mapped_column(Str())
    model: Mapped[str] = mapped_column(Str(200))
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_steps: Mapped[int] = mapped_column(Integer)
    max_cost_usd: Mapped[float | None] = mapped_column(Float, default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Str(32), index=True, default="queued")
    control: Mapped[str] = mapped_column(Str(16), default="agent")  # "agent" or "user"
    result: Mapped[str | None] = mapped_column(Str(), default=None)
    error: Mapped[str | None] = mapped_column(Str(), default=None)
    last_seq: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    usage_totals: Mapped[dict[str, Any]] = mapped_column(default=dict)  # the loop's running totals, for resume
    inbox: Mapped[list[str]] = mapped_column(JSON, default=list)  # follow-up messages not yet in the history
    taken_over_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(Str(32))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    image_ref: Mapped[str | None] = mapped_column(Str(80), default=None, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApprovalRow(Base):
    __tablename__ = "approvals"
    # The loop names approvals (``ap_`` + 16 random hex), unique across sessions and restarts.
    id: Mapped[str] = mapped_column(Str(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending|approve|reject|edit|expired
    tool_use_id: Mapped[str] = mapped_column(Str(128), default="")
    tool: Mapped[str] = mapped_column(Str(64))
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    reason: Mapped[str] = mapped_column(Str(), default="")
    image_ref: Mapped[str | None] = mapped_column(Str(80), default=None)
    note: Mapped[str | None] = mapped_column(Str(), default=None)
    edited_input: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(default=None)


class UsageRow(Base):
    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cache_creation_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def database_url(data_dir: Path, url: str | None) -> str:
    return url or f"sqlite+aiosqlite:///{data_dir / 'deskpilot.db'}"


class Store:
    """All database and screenshot-file access of the service."""

    def __init__(self, data_dir: Path, url: str | None = None) -> None:
        self.data_dir = data_dir
        self.shots_dir = data_dir / "screenshots"
        self.url = database_url(data_dir, url)
        self.engine: AsyncEngine = create_async_engine(self.url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # One writer per session at a time keeps seq allocation simple on SQLite; on PostgreSQL the
        # UPDATE … RETURNING row lock gives the same guarantee across processes.
        self._append_locks: dict[str, asyncio.Lock] = {}

    async def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        if self.engine.dialect.name != "sqlite":
            await self._create_tables()
            return
        # Processes initialising one SQLite file at once: each reads the schema, then both want to write, and
        # SQLite answers one of them "database is locked" at once (no busy wait can resolve that). Take turns.
        lock = await asyncio.to_thread(_exclusive_lock, self.data_dir / ".init.lock")
        try:
            await self._create_tables()
        finally:
            lock.close()

    async def _create_tables(self) -> None:
        tries = len(Base.metadata.tables) + 1  # each lost race means one more table exists
        for attempt in range(tries):
            try:
                async with self.engine.begin() as conn:
                    if self.engine.dialect.name == "postgresql":
                        # Processes starting at once would all see no tables and all CREATE them.
                        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _INIT_LOCK_KEY})
                    await conn.run_sync(Base.metadata.create_all)
                return
            except OperationalError as exc:
                # SQLite has no such lock: another process created a table between the check and our CREATE.
                if attempt == tries - 1 or "already exists" not in str(exc):
                    raise

    async def close(self) -> None:
        await self.engine.dispose()

    # --- tokens ---
    async def add_token(self, name: str, token_hash: str) -> TokenRow:
        row = TokenRow(id=str(uuid.uuid4()), name=name, hash=token_hash)
        async with self.sessionmaker.begin() as db:
            db.add(row)
        return row

    async def token_by_hash(self, token_hash: str) -> TokenRow | None:
        async with self.sessionmaker() as db:
            row = await db.scalar(select(TokenRow).where(TokenRow.hash == token_hash))
        return row if row is not None and row.revoked_at is None else None

    async def list_tokens(self) -> Sequence[TokenRow]:
        async with self.sessionmaker() as db:
            return (await db.scalars(select(TokenRow).order_by(TokenRow.created_at))).all()

    async def count_tokens(self) -> int:
        async with self.sessionmaker() as db:
            return int(await db.scalar(select(func.count()).select_from(TokenRow)) or 0)

    async def revoke_token(self, token_id_or_name: str) -> int:
        async with self.sessionmaker.begin() as db:
            res = await db.execute(
                update(TokenRow)
                .where((TokenRow.id == token_id_or_name) | (TokenRow.name == token_id_or_name))
                .where(TokenRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return int(getattr(res, "rowcount", 0) or 0)

    # --- sessions ---
    async def create_session(self, **fields: Any) -> SessionRow:
        row = SessionRow(id=str(uuid.uuid4()), **fields)
        async with self.sessionmaker.begin() as db:
            db.add(row)
        return row

    async def get_session(self, session_id: str, owner: str | None = None) -> SessionRow:
        """The session, or NotFound — also when it belongs to someone else, so ids don't leak."""
        async with self.sessionmaker() as db:
            row = await db.get(SessionRow, session_id)
        if row is None or (owner is not None and row.owner != owner):
            raise NotFound(f"session {session_id} not found")
        return row

    async def list_sessions(
        self, owner: str, status: str | None, limit: int, offset: int
    ) -> tuple[Sequence[SessionRow], int]:
        query = select(SessionRow).where(SessionRow.owner == owner)
        if status:
            query = query.where(SessionRow.status == status)
        async with self.sessionmaker() as db:
            total = int(await db.scalar(select(func.count()).select_from(query.subquery())) or 0)
            rows = (await db.scalars(
                query.order_by(SessionRow.created_at.desc(), SessionRow.id).limit(limit).offset(offset)
            )).all()
        return rows, total

    async def update_session(self, session_id: str, **fields: Any) -> None:
        async with self.sessionmaker.begin() as db:
            await db.execute(update(SessionRow).where(SessionRow.id == session_id).values(**fields))
            if fields.get("status") in FINAL_STATES:
                # A session that ended asks nothing any more: its open approvals can never be decided.
                await db.execute(
                    update(ApprovalRow)
                    .where(ApprovalRow.session_id == session_id, ApprovalRow.status == "pending")
                    .values(status="expired", decided_at=utcnow())
                )

    async def sessions_in(self, states: Sequence[str]) -> Sequence[SessionRow]:
        async with self.sessionmaker() as db:
            return (await db.scalars(
                select(SessionRow).where(SessionRow.status.in_(states)).order_by(SessionRow.created_at)
            )).all()

    async def add_inbox(self, session_id: str, text: str) -> None:
        async with self.sessionmaker.begin() as db:
            row = await db.get(SessionRow, session_id, with_for_update=True)
            if row is None:
                raise NotFound(f"session {session_id} not found")
            row.inbox = [*row.inbox, text]

    async def take_inbox(self, session_id: str) -> list[str]:
        async with self.sessionmaker.begin() as db:
            row = await db.get(SessionRow, session_id, with_for_update=True)
            if row is None:
                return []
            texts, row.inbox = list(row.inbox), []
        return texts

    # --- events ---
    async def append_event(
        self, session_id: str, type_: str, data: dict[str, Any], image_ref: str | None = None
    ) -> EventRow:
        """Append one event with the next sequence number of its session. Stored before anyone sees it."""
        lock = self._append_locks.setdefault(session_id, asyncio.Lock())
        async with lock, self.sessionmaker.begin() as db:
            seq = await db.scalar(
                update(SessionRow)
                .where(SessionRow.id == session_id)
                .values(last_seq=SessionRow.last_seq + 1)
                .returning(SessionRow.last_seq)
            )
            if seq is None:
                raise NotFound(f"session {session_id} not found")
            row = EventRow(session_id=session_id, seq=int(seq), type=type_, data=data, image_ref=image_ref)
            db.add(row)
        return row

    async def events_after(self, session_id: str, after: int, limit: int = 1000) -> Sequence[EventRow]:
        async with self.sessionmaker() as db:
            return (await db.scalars(
                select(EventRow)
                .where(EventRow.session_id == session_id, EventRow.seq > after)
                .order_by(EventRow.seq)
                .limit(limit)
            )).all()

    async def last_image(self, session_id: str) -> str | None:
        async with self.sessionmaker() as db:
            return await db.scalar(
                select(EventRow.image_ref)
                .where(EventRow.session_id == session_id, EventRow.image_ref.is_not(None))
                .order_by(EventRow.seq.desc())
                .limit(1)
            )

    async def session_has_image(self, session_id: str, ref: str) -> bool:
        async with self.sessionmaker() as db:
            hit = await db.scalar(
                select(EventRow.id).where(EventRow.session_id == session_id, EventRow.image_ref == ref).limit(1)
            )
            if hit is None:
                hit = await db.scalar(
                    select(ApprovalRow.id)
                    .where(ApprovalRow.session_id == session_id, ApprovalRow.image_ref == ref)
                    .limit(1)
                )
        return hit is not None

    # --- approvals ---
    async def add_approval(self, row: ApprovalRow) -> None:
        async with self.sessionmaker.begin() as db:
            db.add(row)

    async def get_approval(self, session_id: str, approval_id: str) -> ApprovalRow:
        async with self.sessionmaker() as db:
            row = await db.get(ApprovalRow, (approval_id, session_id))
        if row is None:
            raise NotFound(f"approval {approval_id} not found")
        return row

    async def pending_approval(self, session_id: str) -> ApprovalRow | None:
        async with self.sessionmaker() as db:
            return await db.scalar(
                select(ApprovalRow)
                .where(ApprovalRow.session_id == session_id, ApprovalRow.status == "pending")
                .order_by(ApprovalRow.created_at)
                .limit(1)
            )

    async def approval_for_tool_use(self, session_id: str, tool_use_id: str) -> ApprovalRow | None:
        async with self.sessionmaker() as db:
            return await db.scalar(
                select(ApprovalRow)
                .where(ApprovalRow.session_id == session_id, ApprovalRow.tool_use_id == tool_use_id)
                .order_by(ApprovalRow.created_at.desc())
                .limit(1)
            )

    async def decide_approval(
        self, session_id: str, approval_id: str, decision: str, note: str | None,
        edited_input: dict[str, Any] | None,
    ) -> ApprovalRow:
        """Record a decision exactly once: a conditional UPDATE, so of two racing deciders one gets Conflict."""
        await self.get_approval(session_id, approval_id)
        async with self.sessionmaker.begin() as db:
            res = await db.execute(
                update(ApprovalRow)
                .where(ApprovalRow.id == approval_id, ApprovalRow.session_id == session_id)
                .where(ApprovalRow.status == "pending")
                .values(status=decision, note=note, edited_input=edited_input, decided_at=utcnow())
            )
        if int(getattr(res, "rowcount", 0) or 0) != 1:
            if (await self.get_approval(session_id, approval_id)).status == "expired":
                raise Conflict(f"approval {approval_id} expired: the session ended before it was decided")
            raise Conflict(f"approval {approval_id} was already decided")
        return await self.get_approval(session_id, approval_id)

    # --- usage ---
    async def add_usage(self, session_id: str, **fields: Any) -> None:
        async with self.sessionmaker.begin() as db:
            db.add(UsageRow(session_id=session_id, **fields))
            await db.execute(
                update(SessionRow).where(SessionRow.id == session_id).values(
                    input_tokens=SessionRow.input_tokens + int(fields.get("input_tokens", 0)),
                    output_tokens=SessionRow.output_tokens + int(fields.get("output_tokens", 0)),
                    cost_usd=SessionRow.cost_usd + float(fields.get("cost_usd", 0.0)),
                )
            )

    # --- screenshots ---
    def save_image(self, data: bytes, media_type: str = "image/png") -> str:
        """Write the image once under its content hash; returns the ref (``<sha256>.<ext>``)."""
        ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(media_type, "bin")
        ref = f"{hashlib.sha256(data).hexdigest()}.{ext}"
        path = self.shots_dir / ref
        if not path.exists():
            tmp = path.with_suffix(f".{os.getpid()}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)  # atomic: a reader never sees half a file
        return ref

    def image_path(self, ref: str) -> Path | None:
        name, _, ext = ref.partition(".")
        if len(name) != 64 or not all(c in "0123456789abcdef" for c in name) or ext not in ("png", "jpg", "webp"):
            return None
        path = self.shots_dir / ref
        return path if path.is_file() else None


def _exclusive_lock(path: Path) -> IO[bytes]:
    """Open ``path`` and hold an exclusive ``flock`` on it until the returned file is closed (blocks)."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except BaseException:
        handle.close()
        raise
    return handle


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets viewers read while the runner writes; a busy timeout instead of "database is locked" (set
    # first: switching to WAL itself may have to wait for another connection).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
