"""Leases and commands of replicas sharing one PostgreSQL (docs/scale-out.md): which replica runs a session,
where its desktop is while it is up, and control commands for it sent from other replicas. Every time is the
database's ``now()``, so replicas' clocks never matter."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, null, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from desktop.client import DesktopEndpoint
from web.states import ACTIVE_STATES
from web.store import Store
from web.tables import CommandRow, LeaseRow, SessionRow

COMMANDS_CHANNEL = "deskpilot_commands"  # payload: a session id


class Leases:
    def __init__(self, store: Store, replica: str, ttl_s: float) -> None:
        self.store = store
        self.replica = replica
        self.ttl = timedelta(seconds=ttl_s)

    async def claim(self, session_id: str) -> bool:
        """Take (or renew) the session's lease unless another replica holds a live one. A claim comes before a
        desktop starts (a claimed session is not running here yet): whatever desktop the row named is gone."""
        new = insert(LeaseRow).values(session_id=session_id, replica=self.replica,
                                      expires_at=func.now() + self.ttl)
        stmt = new.on_conflict_do_update(
            index_elements=[LeaseRow.session_id],
            set_={"replica": new.excluded.replica, "expires_at": new.excluded.expires_at, "desktop": null()},
            where=or_(LeaseRow.replica == self.replica, LeaseRow.expires_at < func.now()),
        ).returning(LeaseRow.session_id)
        async with self.store.sessionmaker.begin() as db:
            return await db.scalar(stmt) is not None

    async def renew(self) -> set[str]:
        """Extend every lease this replica holds; returns the sessions it still holds."""
        async with self.store.sessionmaker.begin() as db:
            rows = await db.scalars(update(LeaseRow).where(LeaseRow.replica == self.replica)
                                    .values(expires_at=func.now() + self.ttl).returning(LeaseRow.session_id))
            return set(rows.all())

    async def release(self, session_id: str) -> None:
        async with self.store.sessionmaker.begin() as db:
            await db.execute(delete(LeaseRow).where(LeaseRow.session_id == session_id,
                                                    LeaseRow.replica == self.replica))

    async def holder(self, session_id: str) -> str | None:
        """The replica with a live lease on the session, if any."""
        async with self.store.sessionmaker() as db:
            return await db.scalar(select(LeaseRow.replica).where(LeaseRow.session_id == session_id,
                                                                  LeaseRow.expires_at > func.now()))

    async def set_desktop(self, session_id: str, endpoint: DesktopEndpoint | None) -> None:
        """Record (or, with None, clear) the desktop this replica runs the session on, on its own lease only."""
        async with self.store.sessionmaker.begin() as db:
            await db.execute(update(LeaseRow).where(LeaseRow.session_id == session_id,
                                                    LeaseRow.replica == self.replica)
                             .values(desktop=endpoint.to_json() if endpoint is not None else null()))

    async def desktop(self, session_id: str) -> DesktopEndpoint | None:
        """The session's desktop while a replica holds a live lease on it and its desktop is up."""
        async with self.store.sessionmaker() as db:
            data = await db.scalar(select(LeaseRow.desktop).where(LeaseRow.session_id == session_id,
                                                                  LeaseRow.expires_at > func.now()))
        return DesktopEndpoint.from_json(data) if data else None

    async def orphans(self) -> Sequence[str]:
        """Queued or active sessions nobody holds: their replica died (or stopped) or never took them."""
        lapsed = select(LeaseRow.session_id).where(LeaseRow.expires_at > func.now())
        async with self.store.sessionmaker() as db:
            return (await db.scalars(
                select(SessionRow.id)
                .where(SessionRow.status.in_(("queued", *ACTIVE_STATES)), SessionRow.id.not_in(lapsed))
                .order_by(SessionRow.created_at)
            )).all()

    # --- commands ---
    async def send(self, session_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        """Store the command and NOTIFY in one transaction: the holder hears of it once it is readable."""
        async with self.store.sessionmaker.begin() as db:
            db.add(CommandRow(session_id=session_id, kind=kind, data=data or {}))
            await db.execute(select(func.pg_notify(COMMANDS_CHANNEL, session_id)))

    async def take_commands(self, session_id: str) -> list[CommandRow]:
        async with self.store.sessionmaker.begin() as db:
            rows = (await db.scalars(delete(CommandRow).where(CommandRow.session_id == session_id)
                                     .returning(CommandRow))).all()
        return sorted(rows, key=lambda r: r.id)

    async def sessions_with_commands(self) -> Sequence[str]:
        async with self.store.sessionmaker() as db:
            return (await db.scalars(select(CommandRow.session_id).distinct())).all()
