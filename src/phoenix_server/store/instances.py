"""The instance journal: what the local platform runs, for adoption after a restart."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from phoenix_server.domain.services import Instance, InstanceRole, InstanceState, PlatformKind
from phoenix_server.store.tables import InstanceRow


def save_instance(
    session: Session, instance: Instance, owner: str = "", *, epoch: int | None = None
) -> None:
    row = session.get(InstanceRow, instance.id)
    if row is None:
        row = InstanceRow(id=instance.id)
        session.add(row)
    row.service = instance.service
    row.platform = instance.platform.value
    row.state = instance.state.value
    row.pid = instance.pid
    row.port = instance.port
    row.version = instance.version
    row.started_at = instance.started_at
    row.log_path = instance.log_path
    row.config_hash = instance.config_hash
    row.process_start = instance.process_start
    row.owner = owner
    row.epoch = epoch
    row.role = instance.role.value


def remove_instance(session: Session, instance_id: str) -> None:
    session.execute(delete(InstanceRow).where(InstanceRow.id == instance_id))


def load_instances(session: Session, platform: PlatformKind, owner: str = "") -> list[Instance]:
    """What this installation journalled on ``platform`` (never another Phoenix's)."""
    rows = session.scalars(
        select(InstanceRow)
        .where(InstanceRow.platform == platform.value, InstanceRow.owner == owner)
        .order_by(InstanceRow.started_at)
    ).all()
    return [
        Instance(
            id=row.id,
            service=row.service,
            platform=PlatformKind(row.platform),
            state=InstanceState(row.state),
            started_at=row.started_at,
            pid=row.pid,
            port=row.port,
            version=row.version,
            log_path=row.log_path,
            config_hash=row.config_hash,
            process_start=row.process_start,
            role=InstanceRole(row.role),
        )
        for row in rows
    ]
