"""cluster: a lease lasts as long as its owner's membership (one row renewed per heartbeat)

Until now every heartbeat renewed each of a replica's service leases one by one: a fleet of
10,000 services cost every replica thousands of row updates and a 10,000-name statement per
heartbeat, whatever its share. From this revision a lease taken by a replica has no expiry
of its own (``expires_at`` NULL): it holds while the owner's ``cluster_members`` row does,
so a heartbeat renews one row. A lease with an ``expires_at`` in the past is free (given
away, or its owner's membership ran out and another replica noted the time it did); a
finite one in the future is a lease of the previous version, renewed service by service.

The fencing trigger now refuses a write unless the epoch is the lease's and both the lease
(if it has an expiry) and its owner's membership are unexpired.

Compatibility with a replica of 0010 during a rolling upgrade: it never renews nor takes a
lease with no expiry (``NULL > now()`` and ``NULL <= now()`` are both unknown), so it never
takes one from a replica of this version; its own leases (finite expiry) are respected here
until they run out. Services it gives away are taken by whichever replica beats first.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 17:30:00.000000
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

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
    -- No lock on the lease nor the member: a writer paused mid-transaction (SIGSTOP between
    -- the messages of a pipeline, where no idle timeout reaches it) must never keep the
    -- lease from being taken over. A change of owner happens only once the lease or its
    -- owner's membership ran out, which this check refuses on the database's clock.
    SELECT l.owner, l.epoch,
           -- LEAST ignores NULL: a lease with no expiry of its own lasts as its owner's
           -- membership does; no member row at all leaves NULL (refused below).
           LEAST(l.expires_at, m.expires_at) AS held_until
        INTO current_lease
        FROM service_leases l LEFT JOIN cluster_members m ON m.id = l.owner
        WHERE l.service = target;
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
    IF current_lease.held_until IS NULL OR current_lease.held_until <= clock_timestamp() THEN
        RAISE EXCEPTION USING ERRCODE = 'PX001', MESSAGE = format(
            'service %s: the lease of epoch %s ran out at %s (owner %s)', target, NEW.epoch,
            coalesce(current_lease.held_until::text, 'its owner''s departure'),
            current_lease.owner);
    END IF;
    RETURN NEW;
END
$$
"""


def upgrade() -> None:
    with op.batch_alter_table("service_leases") as batch_op:
        batch_op.alter_column("expires_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    op.create_index("ix_service_leases_owner", "service_leases", ["owner"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FENCE_FUNCTION)


def downgrade() -> None:
    # A lease held by its owner's membership gets the membership's expiry (0010 renews it).
    op.execute(
        "UPDATE service_leases SET expires_at = coalesce("
        "(SELECT m.expires_at FROM cluster_members m WHERE m.id = service_leases.owner), "
        "acquired_at) WHERE expires_at IS NULL"
    )
    op.drop_index("ix_service_leases_owner", "service_leases")
    with op.batch_alter_table("service_leases") as batch_op:
        batch_op.alter_column(
            "expires_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_previous_fence_function())


def _previous_fence_function() -> str:
    """0010's trigger function (migration files are loaded by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(
        "phoenix_migration_0010", Path(__file__).with_name("0010_cluster_leases.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FENCE_FUNCTION)
