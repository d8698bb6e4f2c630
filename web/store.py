"""Persistence: tokens, sessions, the append-only event log, approvals, usage, browser logins, the audit
log, and screenshot files. The tables are web/tables.py; ``init()`` migrates the database (web/migrations).

SQLAlchemy 2 async; a SQLite file in ``data_dir`` unless ``database_url`` names another database
(PostgreSQL via ``postgresql+asyncpg://``). Screenshots are files named by the SHA-256 of their bytes,
so the same frame is stored once however many events point at it.

Both backends behave the same: timestamps come back as naive UTC (what SQLite returns), and on PostgreSQL
text that it cannot hold (U+0000, longer than the column) is adapted instead of failing the write.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from deskpilot.errors import Conflict, NotFound
from web import migrations
from web.states import ACTIVE_STATES, FINAL_STATES
from web.tables import (
    ApprovalRow,
    AuditRow,
    BrowserSessionRow,
    EventRow,
    LeaseRow,
    SessionEndpointRow,
    SessionRow,
    TokenRow,
    UsageRow,
    utcnow,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "ApprovalRow",
    "AuditRow",
    "BrowserSessionRow",
    "EventRow",
    "SessionRow",
    "Store",
    "TokenRow",
    "UsageRow",
    "database_url",
    "utcnow",
]



def database_url(data_dir: Path, url: str | None) -> str:
    return url or f"sqlite+aiosqlite:///{data_dir / 'deskpilot.db'}"


def image_ref(sha256: str, media_type: str) -> str:
    """A screenshot's name in the store: ``<sha256>.<ext>``."""
    ext = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(media_type, "bin")
    return f"{sha256}.{ext}"


class Store:
    """All database and screenshot-file access of the service."""

    def __init__(self, data_dir: Path, url: str | None = None) -> None:
        self.data_dir = data_dir
        self.shots_dir = data_dir / "screenshots"
        self.url = database_url(data_dir, url)
        self.engine = self._new_engine()
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # One writer per session at a time keeps seq allocation simple on SQLite; on PostgreSQL the
        # UPDATE … RETURNING row lock gives the same guarantee across processes.
        self._append_locks: dict[str, asyncio.Lock] = {}
        # Replicas (PostgreSQL): every appended event NOTIFYs this channel in its own transaction.
        self.notify_channel: str | None = None

    def _new_engine(self) -> AsyncEngine:
        engine = create_async_engine(self.url)
        if engine.dialect.name == "sqlite":
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    async def init(self) -> None:
        """Create the data dirs and bring the schema to this code's newest revision (web/migrations)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.shots_dir.mkdir(parents=True, exist_ok=True)
        engine = self._new_engine()  # its own: migrations switch its SQLite connections to explicit BEGINs
        try:
            await migrations.upgrade(engine, self.data_dir / ".init.lock")
        finally:
            await engine.dispose()

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
    async def create_session(self, base_url: str | None = None, leased_to: tuple[str, float] | None = None,
                             **fields: Any) -> SessionRow:
        """``base_url``: the session's own model endpoint. ``leased_to`` (replica, TTL in seconds): the session is
        leased to that replica in the same transaction, so no other replica ever sees it unowned (web/leases.py)."""
        row = SessionRow(id=str(uuid.uuid4()), **fields)
        async with self.sessionmaker.begin() as db:
            db.add(row)
            if base_url or leased_to is not None:
                await db.flush()  # the session row first: the rows below refer to it
            if base_url:
                db.add(SessionEndpointRow(session_id=row.id, base_url=base_url))
            if leased_to is not None:
                db.add(LeaseRow(session_id=row.id, replica=leased_to[0],
                                expires_at=func.now() + timedelta(seconds=leased_to[1])))
        return row

    async def session_endpoint(self, session_id: str) -> str | None:
        """The session's own model endpoint, if it was created with one."""
        async with self.sessionmaker() as db:
            row = await db.get(SessionEndpointRow, session_id)
        return row.base_url if row is not None else None

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

    async def count_in(self, states: Sequence[str]) -> int:
        async with self.sessionmaker() as db:
            return int(await db.scalar(
                select(func.count()).select_from(SessionRow).where(SessionRow.status.in_(states))) or 0)

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
            if self.notify_channel is not None:  # delivered at commit, so only for stored events
                await db.execute(select(func.pg_notify(self.notify_channel, f"{session_id} {seq}")))
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

    async def approval_checks(self, session_id: str, approval_id: str) -> list[dict[str, Any]]:
        """The vendor safety checks the approval was asked with, as its ``approval_requested`` event logged them."""
        async with self.sessionmaker() as db:
            asks = await db.scalars(
                select(EventRow.data)
                .where(EventRow.session_id == session_id, EventRow.type == "approval_requested")
                .order_by(EventRow.seq.desc())
            )
            for data in asks:
                if data.get("approval_id") == approval_id:
                    return [c for c in data.get("safety_checks") or [] if isinstance(c, dict)]
        return []

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

    # --- browser sessions: the UI's login (web/auth.py makes the cookie secret; only its hash is stored) ---
    async def create_browser_session(
        self, session_hash: str, token: TokenRow, expires_at: datetime, ip: str = "", user_agent: str = ""
    ) -> BrowserSessionRow:
        """Record a browser that logged in with ``token`` (its name becomes the owner) until ``expires_at``.
        ``session_hash`` is the SHA-256 hex of the cookie's random secret; the secret itself is never stored."""
        row = BrowserSessionRow(id=session_hash, token_id=token.id, owner=token.name, expires_at=expires_at,
                                ip=ip, user_agent=user_agent)
        async with self.sessionmaker.begin() as db:
            db.add(row)
        return row

    async def browser_session(self, session_hash: str) -> BrowserSessionRow | None:
        """The live session with this hash; None when unknown, revoked, expired, or its token was revoked."""
        async with self.sessionmaker() as db:
            return await db.scalar(
                select(BrowserSessionRow)
                .join(TokenRow, TokenRow.id == BrowserSessionRow.token_id)
                .where(BrowserSessionRow.id == session_hash, BrowserSessionRow.revoked_at.is_(None))
                .where(BrowserSessionRow.expires_at > utcnow(), TokenRow.revoked_at.is_(None))
            )

    async def touch_browser_session(self, session_hash: str) -> None:
        """Set ``last_seen_at`` to now (a write: callers may do it once a minute rather than per request)."""
        async with self.sessionmaker.begin() as db:
            await db.execute(
                update(BrowserSessionRow).where(BrowserSessionRow.id == session_hash).values(last_seen_at=utcnow())
            )

    async def revoke_browser_session(self, session_hash: str) -> bool:
        """Log the session out; False if it was unknown or already revoked."""
        async with self.sessionmaker.begin() as db:
            res = await db.execute(
                update(BrowserSessionRow)
                .where(BrowserSessionRow.id == session_hash, BrowserSessionRow.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return int(getattr(res, "rowcount", 0) or 0) == 1

    # --- audit log: appended, never changed ---
    async def append_audit(
        self, owner: str, actor: str, action: str, detail: dict[str, Any] | None = None, *,
        session_id: str | None = None, address: str = "",
    ) -> AuditRow:
        """Record that ``actor`` (a token name) did ``action`` (e.g. ``"approval.decide"``) to ``owner``'s
        data, from ``address``; ``session_id`` names the task session concerned, if any."""
        row = AuditRow(owner=owner, actor=actor, action=action, detail=detail or {}, session_id=session_id,
                       address=address)
        async with self.sessionmaker.begin() as db:
            db.add(row)
        return row

    async def list_audit(
        self, owner: str, *, session_id: str | None = None, before_id: int | None = None,
        after_id: int | None = None, limit: int = 100
    ) -> Sequence[AuditRow]:
        """``owner``'s entries, newest first; pass the last id seen as ``before_id`` for the next page. With
        ``after_id``: the entries after it, oldest first (to follow the log)."""
        query = select(AuditRow).where(AuditRow.owner == owner)
        if session_id is not None:
            query = query.where(AuditRow.session_id == session_id)
        if before_id is not None:
            query = query.where(AuditRow.id < before_id)
        if after_id is not None:
            query = query.where(AuditRow.id > after_id)
        order = AuditRow.id.asc() if after_id is not None else AuditRow.id.desc()
        async with self.sessionmaker() as db:
            return (await db.scalars(query.order_by(order).limit(limit))).all()

    # --- screenshots ---
    def save_image(self, data: bytes, media_type: str = "image/png") -> str:
        """Write the image once under its content hash; returns the ref (``<sha256>.<ext>``)."""
        ref = image_ref(hashlib.sha256(data).hexdigest(), media_type)
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


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets viewers read while the runner writes; a busy timeout instead of "database is locked" (set
    # first: switching to WAL itself may have to wait for another connection).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=5000")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
