"""The storage layout. Rows are not domain objects: each repository module maps between them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from phoenix_server.support.timefmt import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, whatever the database keeps (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return as_utc(value) if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class RecoveryRow(Base):
    __tablename__ = "recoveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service: Mapped[str] = mapped_column(String(128), index=True)
    incident_id: Mapped[str | None] = mapped_column(String(40), index=True)
    strategy: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    outcome: Mapped[str | None] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    force: Mapped[bool] = mapped_column(Boolean, default=False)
    decision: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    estimated_duration: Mapped[float | None] = mapped_column(Float)
    downtime: Mapped[float | None] = mapped_column(Float)
    requests_lost: Mapped[int | None] = mapped_column(Integer)
    data_integrity: Mapped[str] = mapped_column(String(16), default="unverified")
    playbook_id: Mapped[str | None] = mapped_column(String(40))
    playbook_version: Mapped[int | None] = mapped_column(Integer)
    owner: Mapped[str] = mapped_column(String(32), default="", server_default="", index=True)
    """The Phoenix installation that ran it (host and data directory)."""
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The service's lease epoch it was written under (replicas on PostgreSQL; the database
    refuses a stale one). None with one Phoenix."""

    steps: Mapped[list[StepRow]] = relationship(
        back_populates="recovery",
        order_by="StepRow.position",
        cascade="all, delete-orphan",
        lazy="raise",
    )

    __table_args__ = (Index("ix_recoveries_service_created", "service", "created_at"),)


class StepRow(Base):
    __tablename__ = "recovery_steps"

    recovery_id: Mapped[str] = mapped_column(
        ForeignKey("recoveries.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    timeout: Mapped[float] = mapped_column(Float)
    condition: Mapped[str] = mapped_column(String(32), default="always")
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    detail: Mapped[str | None] = mapped_column(Text)
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The service's lease epoch it was written under (replicas on PostgreSQL; the database
    refuses a stale one). None with one Phoenix."""

    recovery: Mapped[RecoveryRow] = relationship(back_populates="steps")


class IncidentRow(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service: Mapped[str] = mapped_column(String(128), index=True)
    failure_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text, default="")
    evidence: Mapped[list[str]] = mapped_column(JSON)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    false_positive: Mapped[bool] = mapped_column(Boolean, default=False)
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The lease epoch of the replica that wrote it last (None: one Phoenix, or an
    operator's mark); a stale one is refused."""


class PlaybookRow(Base):
    __tablename__ = "playbooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    service: Mapped[str | None] = mapped_column(String(128), index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    source: Mapped[str] = mapped_column(String(16), default="api")
    triggers: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InstanceRow(Base):
    """What the local platform runs, so a restarted Phoenix can adopt it."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(160), primary_key=True)
    service: Mapped[str] = mapped_column(String(128), index=True)
    platform: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    pid: Mapped[int | None] = mapped_column(Integer)
    port: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    log_path: Mapped[str | None] = mapped_column(Text)
    config_hash: Mapped[str] = mapped_column(String(64), default="")
    process_start: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str] = mapped_column(String(32), default="", server_default="", index=True)
    """The Phoenix installation that runs it: only that one may adopt or stop it."""
    role: Mapped[str] = mapped_column(String(16), default="service", server_default="service")
    """``service``, or ``router`` for the router process in front of a routed service."""
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The service's lease epoch it was written under (replicas on PostgreSQL; the database
    refuses a stale one). None with one Phoenix."""


class HealthEventRow(Base):
    """Service status changes, for uptime across Phoenix restarts."""

    __tablename__ = "health_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    service: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_health_events_service_at", "service", "at"),)


class DeploymentRow(Base):
    """Which version of a service ran when, and whether it proved itself (known good)."""

    __tablename__ = "deployments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    service: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    known_good_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    recovery_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    owner: Mapped[str] = mapped_column(String(32), default="", server_default="")
    artifact: Mapped[str | None] = mapped_column(String(160))
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The service's lease epoch it was written under (replicas on PostgreSQL; the database
    refuses a stale one). None with one Phoenix."""

    __table_args__ = (
        Index("ix_deployments_owner_service_started", "owner", "service", "started_at"),
    )


class AlertRow(Base):
    """The alert outbox: written when the event happens, sent (and retried) from here."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(32))
    service: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    epoch: Mapped[int | None] = mapped_column(BigInteger)
    """The service's lease epoch it was written under (replicas on PostgreSQL; the database
    refuses a stale one). None with one Phoenix."""


class UptimeBaselineRow(Base):
    """Per service: when Phoenix began managing it, and its uptime over that first day."""

    __tablename__ = "uptime_baselines"

    service: Mapped[str] = mapped_column(String(128), primary_key=True)
    managed_since: Mapped[datetime] = mapped_column(UTCDateTime())
    first_day_uptime: Mapped[float | None] = mapped_column(Float)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditRow(Base):
    """Every mutating API call: who, what, when, from where, the result."""

    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(2048))
    remote: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)


class ReportKeyRow(Base):
    """Keys of the failure reports received (an alert's fingerprint and start): copies sent
    later, also after a restart, are recognised as such."""

    __tablename__ = "report_keys"

    key: Mapped[str] = mapped_column(String(640), primary_key=True)
    service: Mapped[str] = mapped_column(String(128))
    incident_id: Mapped[str | None] = mapped_column(String(40), index=True)
    holds_open: Mapped[bool] = mapped_column(Boolean)
    resolved: Mapped[bool] = mapped_column(Boolean)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class MemberRow(Base):
    """A Phoenix replica sharing this database, and when it last said it is alive (the
    server's clock, never the replica's)."""

    __tablename__ = "cluster_members"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    address: Mapped[str] = mapped_column(String(256), default="")
    """Where the other replicas reach its API (requests for services it owns go there)."""
    version: Mapped[str] = mapped_column(String(32), default="")
    incarnation: Mapped[str] = mapped_column(String(32), default="", server_default="")
    """Random per process: a second live process with the same id is refused."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    """A member whose heartbeat is older than its lease is gone."""


class LeaseRow(Base):
    """Which replica owns a service, until when, and in which term (the fencing epoch)."""

    __tablename__ = "service_leases"

    service: Mapped[str] = mapped_column(String(128), primary_key=True)
    owner: Mapped[str] = mapped_column(String(32), default="", server_default="", index=True)
    epoch: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    """Grows with every change of owner: writes made under an older one are refused."""
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    """None: held as long as the owner's membership lasts (its ``cluster_members`` row is
    renewed, one row per heartbeat whatever the replica owns); in the past: free since then
    (given away, or its owner's membership ran out); in the future: a lease of a replica of
    migration 0010, renewed service by service."""
