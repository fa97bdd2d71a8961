"""uptime baselines: each service's uptime over Phoenix's first day managing it

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 02:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "uptime_baselines",
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("managed_since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_day_uptime", sa.Float(), nullable=True),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("service"),
    )


def downgrade() -> None:
    op.drop_table("uptime_baselines")
