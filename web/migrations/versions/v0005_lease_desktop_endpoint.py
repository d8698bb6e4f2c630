"""The lease holder's desktop endpoint (address and token), so that every replica reaches its frames and VNC.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.add_column("session_leases", sa.Column("desktop", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("session_leases") as batch:
        batch.drop_column("desktop")
