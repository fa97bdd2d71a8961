"""deployments: versions run per service, for deploys, rollbacks and known-good tracking

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 00:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("previous_version", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("known_good_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recovery_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=32), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_deployments_owner_service_started",
        "deployments",
        ["owner", "service", "started_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_deployments_owner_service_started", table_name="deployments")
    op.drop_table("deployments")
