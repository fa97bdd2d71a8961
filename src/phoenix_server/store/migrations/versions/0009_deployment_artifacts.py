"""deployment artifacts: what a version ran as, in its platform's immutable terms

A docker version names an image by tag, and tags move; the image ID its containers ran is
recorded with each deployment, so that a rollback runs exactly what proved good.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: older replicas that do not know the column keep writing rows.
    op.add_column("deployments", sa.Column("artifact", sa.String(length=160), nullable=True))


def downgrade() -> None:
    op.drop_column("deployments", "artifact")
