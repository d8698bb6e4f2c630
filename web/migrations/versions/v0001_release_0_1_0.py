"""The schema of deskpilot 0.1.0, which created it with ``create_all`` before there were migrations.

Frozen: plain SQLAlchemy types, not the application's (String and TEXT are what ``Str`` becomes, DateTime with
time zone what ``UTCDateTime`` becomes), so later changes to web/tables.py cannot change this revision.
A database that has these tables and no ``alembic_version`` is stamped as this revision (web/migrations).

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

# What web.tables.Str() (unbounded text) is: TEXT on SQLite, VARCHAR without a length on PostgreSQL
# (asyncpg's dialect maps Text to its string type there). The same on both for storage; spelled exactly.
TEXT = sa.Text().with_variant(sa.String(), "postgresql")


def _at(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        _at("created_at"),
        _at("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hash"),
    )
    op.create_index("ix_tokens_name", "tokens", ["name"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("task", TEXT, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("max_steps", sa.Integer(), nullable=False),
        sa.Column("max_cost_usd", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("control", sa.String(16), nullable=False),
        sa.Column("result", TEXT, nullable=True),
        sa.Column("error", TEXT, nullable=True),
        sa.Column("last_seq", sa.Integer(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("usage_totals", sa.JSON(), nullable=False),
        sa.Column("inbox", sa.JSON(), nullable=False),
        _at("taken_over_at", nullable=True),
        _at("created_at"),
        _at("updated_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sessions_owner", "sessions", ["owner"])
    op.create_index("ix_sessions_status", "sessions", ["status"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("image_ref", sa.String(80), nullable=True),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "seq"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_index("ix_events_session_id", "events", ["session_id"])
    op.create_index("ix_events_image_ref", "events", ["image_ref"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tool_use_id", sa.String(128), nullable=False),
        sa.Column("tool", sa.String(64), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("reason", TEXT, nullable=False),
        sa.Column("image_ref", sa.String(80), nullable=True),
        sa.Column("note", TEXT, nullable=True),
        sa.Column("edited_input", sa.JSON(), nullable=True),
        _at("created_at"),
        _at("decided_at", nullable=True),
        sa.PrimaryKeyConstraint("id", "session_id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_table(
        "usage",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_read_tokens", sa.Integer(), nullable=False),
        sa.Column("cache_creation_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        _at("created_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )
    op.create_index("ix_usage_session_id", "usage", ["session_id"])


def downgrade() -> None:
    for table in ("usage", "approvals", "events", "sessions", "tokens"):
        op.drop_table(table)
