"""cluster: members, per-service leases, and the fencing epoch on every acting write

Replicas sharing one PostgreSQL database own services through leases whose epoch grows with
every change of owner. On PostgreSQL a trigger on the tables that record what Phoenix does
for a service refuses a row whose epoch is not the service's current, unexpired lease: the
database, not the code, keeps a replica that lost its lease from recording anything.

Compatibility: every new column is nullable with no default, so a replica of the previous
version keeps writing rows (with no epoch) while a rolling upgrade runs; rows without an
epoch are refused only from a session that says it is fenced (``phoenix.fenced``), which
only replicas of this version in cluster mode do.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

FENCED = {
    "recoveries": "INSERT OR UPDATE",
    # An incident may also be written without an epoch: an operator marks it a false
    # positive from any replica. With one, it must be current (a stale owner's give-up).
    "incidents": "INSERT OR UPDATE",
    "recovery_steps": "INSERT OR UPDATE",
    "deployments": "INSERT OR UPDATE",
    "instances": "INSERT OR UPDATE",
    # An alert's later updates (delivered, retried) are the outbox's, by whichever replica
    # delivers it; only raising one acts for the service.
    "alerts": "INSERT",
}

FENCE_FUNCTION = """
CREATE OR REPLACE FUNCTION phoenix_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text;
    current_lease record;
BEGIN
    IF TG_TABLE_NAME = 'recovery_steps' THEN
        SELECT service INTO target FROM recoveries WHERE id = NEW.recovery_id;
    ELSE
        target := NEW.service;
    END IF;
    -- No lock on the lease: a writer paused mid-transaction (SIGSTOP between the messages
    -- of a pipeline, where no idle timeout reaches it) must never keep the lease from being
    -- taken over. A change of owner happens only once the lease ran out, which this check
    -- refuses on the database's clock.
    SELECT owner, epoch, expires_at INTO current_lease
        FROM service_leases WHERE service = target;
    IF NOT FOUND THEN
        IF NEW.epoch IS NOT NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = format(
                'service %s has no lease: a write under epoch %s is refused', target, NEW.epoch);
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.epoch IS NULL THEN
        IF coalesce(current_setting('phoenix.fenced', true), '') = 'on'
                AND TG_TABLE_NAME <> 'incidents' THEN
            RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = format(
                'service %s is leased (epoch %s): a write with no epoch is refused',
                target, current_lease.epoch);
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.epoch <> current_lease.epoch THEN
        RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = format(
            'service %s: epoch %s is stale, the lease is at epoch %s (owner %s)',
            target, NEW.epoch, current_lease.epoch, current_lease.owner);
    END IF;
    IF current_lease.expires_at <= clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = format(
            'service %s: the lease of epoch %s ran out at %s', target, NEW.epoch,
            current_lease.expires_at);
    END IF;
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "cluster_members",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=256), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("incarnation", sa.String(length=32), server_default="", nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cluster_members_expires_at", "cluster_members", ["expires_at"])
    op.create_table(
        "service_leases",
        sa.Column("service", sa.String(length=128), nullable=False),
        sa.Column("owner", sa.String(length=32), server_default="", nullable=False),
        sa.Column("epoch", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("service"),
    )
    op.create_index("ix_service_leases_expires_at", "service_leases", ["expires_at"])
    for table in FENCED:
        op.add_column(table, sa.Column("epoch", sa.BigInteger(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FENCE_FUNCTION)
        for table, events in FENCED.items():
            op.execute(
                f"CREATE TRIGGER phoenix_fence BEFORE {events} ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION phoenix_fence()"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in FENCED:
            op.execute(f"DROP TRIGGER IF EXISTS phoenix_fence ON {table}")
        op.execute("DROP FUNCTION IF EXISTS phoenix_fence()")
    for table in FENCED:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("epoch")
    op.drop_index("ix_service_leases_expires_at", "service_leases")
    op.drop_table("service_leases")
    op.drop_index("ix_cluster_members_expires_at", "cluster_members")
    op.drop_table("cluster_members")
