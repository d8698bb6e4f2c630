"""A session's own model endpoint (``base_url``, for openai-compatible models).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A table of its own rather than a column: sessions rows stay exactly what the release wrote.
    op.create_table(
        "session_endpoints",
        sa.Column("session_id", sa.String(36), nullable=False),
        sa.Column("base_url", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"]),
    )


def downgrade() -> None:
    op.drop_table("session_endpoints")
