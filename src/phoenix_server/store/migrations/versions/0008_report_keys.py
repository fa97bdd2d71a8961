"""report keys: which alerts and events were received, kept across restarts for a day

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 03:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "report_keys",
        sa.Column("key", sa.String(length=640), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("incident_id", sa.String(length=40), nullable=True),
        sa.Column("holds_open", sa.Boolean(), nullable=False),
        sa.Column("resolved", sa.Boolean(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_report_keys_seen_at", "report_keys", ["seen_at"], unique=False)
    op.create_index("ix_report_keys_incident_id", "report_keys", ["incident_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_report_keys_incident_id", table_name="report_keys")
    op.drop_index("ix_report_keys_seen_at", table_name="report_keys")
    op.drop_table("report_keys")
