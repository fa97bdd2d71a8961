"""What the API may see of the engine: named operations and read-only views, nothing else.

Every route gets an :class:`Engine` (the :class:`~phoenix_server.runtime.Engine`
implements it); mypy refuses a route that reaches past it into the orchestrator, the
health tracker, the platforms or the version keeper. Records are read and written through
the store's query functions (the read side), which are not engine state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry

from phoenix_server.config.settings import Settings
from phoenix_server.detection.health_tracking import ServiceHealthView
from phoenix_server.detection.signals import ServiceSignals
from phoenix_server.domain.auth import TokenRegistry
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.cluster import ClusterState, Lease, Member
from phoenix_server.domain.deployments import Deployment
from phoenix_server.domain.health import HealthTransition, UptimeBaseline
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import Recovery, Strategy
from phoenix_server.domain.services import Instance, ServiceCatalog, ServiceSpec
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.reports import ReportIntake
from phoenix_server.store.audit import AuditTrail
from phoenix_server.store.database import Store


class ClusterView(Protocol):
    """This replica's membership, when several Phoenixes share the database."""

    @property
    def replica(self) -> str: ...

    @property
    def lease(self) -> float:
        """Seconds a lease lasts without renewal."""
        ...

    def owns(self, service: str) -> bool: ...

    def owner_of(self, service: str) -> str | None: ...

    def state(self) -> ClusterState: ...

    async def members(self) -> list[Member]: ...

    async def leases(self) -> list[Lease]: ...

    def owner_address(self, service: str) -> tuple[str, str] | None:
        """Another live replica that owns ``service``, and where it listens, as of the last
        heartbeat (no query: it answers while the database does not)."""
        ...


class Engine(Protocol):
    # -- what it is given -------------------------------------------------------------------

    @property
    def settings(self) -> Settings: ...

    @property
    def catalog(self) -> ServiceCatalog: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def owner(self) -> str:
        """This installation's stable id."""
        ...

    @property
    def tokens(self) -> TokenRegistry: ...

    @property
    def store(self) -> Store:
        """Records, read and written through the store's query functions."""
        ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def reports(self) -> ReportIntake:
        """Failures reported from outside (Alertmanager, events) and their counters."""
        ...

    @property
    def cluster(self) -> ClusterView | None:
        """This replica's membership (None: one Phoenix, which owns every service)."""
        ...

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """The engine's own metrics, for ``/metrics``."""
        ...

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    # -- operations -------------------------------------------------------------------------

    async def trigger(
        self,
        *,
        service: str,
        strategy: Strategy | None,
        reason: str,
        force: bool,
        playbook: Playbook | None = None,
    ) -> Recovery: ...

    async def deploy(self, service: str, version: str) -> tuple[Deployment, bool]: ...

    async def mark_false_positive(self, incident_id: str) -> Incident: ...

    async def refresh_playbooks(self) -> None: ...

    def record_metrics(self, service: str, values: dict[str, float], *, at: float) -> list[str]: ...

    def watch_health(self, listener: Callable[[HealthTransition], None]) -> None: ...

    def unwatch_health(self, listener: Callable[[HealthTransition], None]) -> None: ...

    # -- views ------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What /health warns about."""
        ...

    @property
    def playbooks_active(self) -> int | None: ...

    @property
    def database_problem(self) -> str | None: ...

    @property
    def fleet_pause(self) -> str | None: ...

    @property
    def probe_lateness(self) -> float: ...

    @property
    def learned(self) -> LearnedPolicy: ...

    def health(self, service: str) -> ServiceHealthView: ...

    def waiting_on(self, service: str) -> str | None: ...

    def signals(self, service: str) -> ServiceSignals: ...

    def active_recovery(self, service: str) -> Recovery | None: ...

    def active_recoveries(self) -> int: ...

    def unresolved_incidents(self) -> list[Incident]: ...

    def unsettled_recovery_ids(self) -> set[str]: ...

    def budget_remaining(self, service: str) -> int: ...

    def strategies(self, spec: ServiceSpec) -> frozenset[Strategy]: ...

    def instances(self, spec: ServiceSpec) -> list[Instance]: ...

    def standby(self, spec: ServiceSpec) -> Instance | None: ...

    def known_good(self, spec: ServiceSpec) -> list[str]: ...

    def rollback_target(self, spec: ServiceSpec) -> str | None: ...

    def uptime_baseline(self, service: str) -> UptimeBaseline | None: ...
