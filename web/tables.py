"""The store's schema: the column types both backends share and one mapped class per table.

This is the schema of the newest migration (web/migrations/versions); tests/web/test_migrations.py fails
when the two differ, so a change here needs a new revision (docs/migrations.md says how).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

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
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeEngine


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


class SessionEndpointRow(Base):
    """A session's own model endpoint (openai-compatible ``base_url``); most sessions have none."""

    __tablename__ = "session_endpoints"
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    base_url: Mapped[str] = mapped_column(Str(2000))


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


class BrowserSessionRow(Base):
    """A browser logged in with a token: the cookie holds a random secret, the row only its SHA-256."""

    __tablename__ = "browser_sessions"
    id: Mapped[str] = mapped_column(Str(64), primary_key=True)  # SHA-256 hex of the cookie secret
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), index=True)  # the token it logged in with
    owner: Mapped[str] = mapped_column(Str(200), index=True)  # that token's name
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    ip: Mapped[str] = mapped_column(Str(), default="")
    user_agent: Mapped[str] = mapped_column(Str(), default="")


class AuditRow(Base):
    """One thing a person did (logged in, approved, took over, …): appended, never changed."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(Str(200), index=True)  # whose data it concerns
    session_id: Mapped[str | None] = mapped_column(Str(36), default=None, index=True)  # a task session, if any
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(Str(200))  # the token name that acted
    address: Mapped[str] = mapped_column(Str(), default="")  # the client's address
    action: Mapped[str] = mapped_column(Str(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LeaseRow(Base):
    """Which replica runs (or has queued) a session, until when (docs/scale-out.md). Times are the database's."""

    __tablename__ = "session_leases"
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), primary_key=True)
    replica: Mapped[str] = mapped_column(Str(200), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # The holder's desktop while it is up (``DesktopEndpoint.to_json``: address and token), so that any replica
    # can pump its frames and proxy its VNC; cleared when the desktop is released or the lease changes hands.
    desktop: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), default=None)


class CommandRow(Base):
    """A control command for a session that another replica runs: that replica applies it, then deletes it."""

    __tablename__ = "session_commands"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(Str(32))  # pause | resume | cancel | message | decide
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
