"""Phoenix's engine, wired: store, platforms, probes, health tracking, recovery.

This is the one place that knows every part. Signals flow one way: platform events and
probe results become observations for the tracker; its transitions go to the
orchestrator (which recovers) and to the store (which keeps uptime across restarts).
:meth:`Runtime.start` and :meth:`Runtime.stop` bring it all up and down in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from phoenix_server import __version__
from phoenix_server.config import servicefile
from phoenix_server.config.installation import installation_id
from phoenix_server.config.settings import Settings, service_environment
from phoenix_server.config.tokens import configured_tokens
from phoenix_server.detection.health_tracking import HealthTracker, ServiceHealthView
from phoenix_server.detection.signals import ServiceSignals
from phoenix_server.domain.alerts import AlertKind
from phoenix_server.domain.auth import TokenRegistry
from phoenix_server.domain.clock import Clock, SystemClock
from phoenix_server.domain.deployments import Deployment
from phoenix_server.domain.errors import PlatformError, StaleOwnerError, UnavailableError
from phoenix_server.domain.health import (
    HealthTransition,
    Observation,
    ObservationKind,
    ServiceStatus,
    UptimeBaseline,
)
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import Recovery, Strategy
from phoenix_server.domain.services import (
    Instance,
    InstanceRole,
    InstanceState,
    KubernetesWorkload,
    PlatformKind,
    ServiceCatalog,
    ServiceSpec,
)
from phoenix_server.monitoring.probing import Prober, target_for
from phoenix_server.monitoring.registry import RegistrySync
from phoenix_server.monitoring.resources import ResourceSampler
from phoenix_server.monitoring.scheduling import ProbeScheduler
from phoenix_server.monitoring.scraping import PrometheusScraper
from phoenix_server.monitoring.traffic import TrafficWatcher
from phoenix_server.monitoring.verifying import ProbeVerifier
from phoenix_server.platforms.base import (
    LIFECYCLE,
    STANDBYS,
    InstanceEvent,
    InstanceEventKind,
    Platform,
    PlatformRegistry,
    describe_end,
)
from phoenix_server.platforms.docker import DockerPlatform
from phoenix_server.platforms.docker.containers import CLUSTER_OWNER
from phoenix_server.platforms.external import ExternalPlatform
from phoenix_server.platforms.kubernetes import KubernetesPlatform
from phoenix_server.platforms.local.supervisor import LocalPlatform
from phoenix_server.platforms.ports import PortAllocator
from phoenix_server.recovery.alerting import Alerter
from phoenix_server.recovery.claims import LocalClaims
from phoenix_server.recovery.deploying import Deployer
from phoenix_server.recovery.estimating import KEPT as DURATIONS_KEPT
from phoenix_server.recovery.executing import ExecutionLimits, Executor
from phoenix_server.recovery.learning import LearnedPolicy
from phoenix_server.recovery.observing import PrometheusObserver
from phoenix_server.recovery.orchestrating import Orchestrator, OrchestratorLimits
from phoenix_server.recovery.playbook_runs import PLAYBOOK_HANDLERS
from phoenix_server.recovery.reports import KEPT_FOR as REPORT_KEYS_KEPT_FOR
from phoenix_server.recovery.reports import REMEMBERED as REPORT_KEYS_KEPT
from phoenix_server.recovery.reports import ReportIntake
from phoenix_server.recovery.scaling_in import ScaleInWatcher
from phoenix_server.recovery.versions import VersionKeeper
from phoenix_server.runtime.abandoned import AbandonedContainers
from phoenix_server.runtime.cluster import ClusterMember
from phoenix_server.runtime.elsewhere import RecordedStatuses
from phoenix_server.runtime.playbook_folder import PlaybookFolder
from phoenix_server.runtime.uptime_baselines import UptimeBaselines
from phoenix_server.store import (
    deployments,
    health_events,
    incidents,
    learning,
    playbooks,
    recoveries,
    report_keys,
)
from phoenix_server.store.audit import AuditTrail
from phoenix_server.store.database import Store
from phoenix_server.store.recording import (
    StoreAlertQueue,
    StoreJournal,
    StoreRecorder,
    StoreReportKeys,
    no_epochs,
)
from phoenix_server.support.tasks import SupervisedTasks, TaskDeath
from phoenix_server.support.timefmt import iso_ms, utcnow

log = logging.getLogger("phoenix")


def _awake_or_asleep() -> float:
    """Seconds that also count while the machine was suspended (the monotonic clock stops
    then): a replica that wakes from a suspend past its lease knows it."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


UPTIME_HORIZON = timedelta(hours=24)
DEATHS_SHOWN_FOR = timedelta(hours=1)
"""How long /health mentions a background loop that died and was restarted."""
DATABASE_WATCH_INTERVAL = 5.0
OBSERVED_AS = {
    InstanceEventKind.STARTED: ObservationKind.STARTED,
    InstanceEventKind.ADOPTED: ObservationKind.ADOPTED,
    InstanceEventKind.EXITED: ObservationKind.EXIT,
    InstanceEventKind.STOPPED: ObservationKind.REMOVED,
    InstanceEventKind.PROMOTED: ObservationKind.PROMOTED,
    InstanceEventKind.UNHEALTHY: ObservationKind.VERDICT,
    InstanceEventKind.HEALTHY: ObservationKind.VERDICT,
    InstanceEventKind.CRASH_LOOP: ObservationKind.VERDICT,
}
STATUS_BATCH_DELAY = 0.2
LATE_PROBES_WARNING = 1.0
"""Seconds of smoothed probe lateness before /health warns about overload."""
REBUILT_SHOWN = 3600.0
"""Seconds /health keeps saying that the database file had to be written again."""
ALERTS_TAKEN_FOR = timedelta(minutes=1)
"""With several replicas, how long one takes the alerts it sends (no other sends them
meanwhile; if it dies, another sends them after that)."""
TRUNCATION_SHOWN = 3600.0
"""Seconds /health keeps saying that alerts were left out of a payload."""
LEFT_OPEN_LOOKED_AT = 20.0
"""Seconds beyond two leases after taking a service during which what its previous owner
left open is looked for again: a paused writer's transaction holds its rows no longer
than the database's statement timeout (15 s) or idle-in-transaction one (under a lease)."""


class Runtime:
    registry: RegistrySync | None = None
    """The service registry sync, once started (``PHOENIX_REGISTRY_URL``)."""

    def __init__(
        self,
        settings: Settings,
        catalog: ServiceCatalog,
        store: Store,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.owner = installation_id(settings)
        """This installation, as its records and processes in a shared database name it."""
        self.clock: Clock = clock or SystemClock()
        self.cluster: ClusterMember | None = None
        """This replica's membership, when several share the database (``PHOENIX_CLUSTER``)."""
        if settings.cluster:
            self.cluster = ClusterMember(
                store,
                replica=self.owner,
                address=settings.advertised_url,
                version=__version__,
                lease=settings.lease_seconds,
                placement=self._placement,
                busy=lambda: self.orchestrator.engaged_services(),
                monotonic=_awake_or_asleep if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic,
                gained=self._gained,
                acting=self._acting,
                lost=self._lost,
            )
        epochs = self.cluster.epoch_of if self.cluster is not None else no_epochs
        self._carried: dict[str, Incident] = {}
        """Incidents a previous owner left open, read while taking a service over."""
        self._placed: tuple[int, list[tuple[str, str | None]]] | None = None
        self._elsewhere = RecordedStatuses(self.store, monotonic=time.monotonic)
        """With several replicas, the latest status the owners of the services this one
        does not own recorded (what this replica's API shows for them)."""
        self.tracker = HealthTracker(catalog, self.clock)
        self.prober = Prober()
        self.scheduler = ProbeScheduler(self.prober, self.tracker, self.clock)
        self.verifier = ProbeVerifier(self.prober, self.tracker, self.clock, python=sys.executable)
        journal = StoreJournal(store, self.owner, epochs)
        ports = PortAllocator()  # one for both platforms: never one port given twice
        self.local = LocalPlatform(
            log_dir=settings.log_dir,
            run_dir=settings.run_dir,
            journal=journal,
            clock=self.clock,
            owner=self.owner,
            base_env=service_environment(os.environ),
            ports=ports,
        )
        # A service whose public port another process holds is unhealthy for that reason,
        # whatever its instances' checks say (clients reach the other process).
        self.local.watch_ports(self._port_served)
        platforms: dict[PlatformKind, Platform] = {
            PlatformKind.LOCAL: self.local,
            PlatformKind.EXTERNAL: ExternalPlatform(),
        }
        # One Docker platform per engine the services use: the default one (DOCKER_HOST) and
        # each named engine of the service file.
        self.dockers: list[DockerPlatform] = []
        self.docker: DockerPlatform | None = None
        """The default engine's platform (there even with no docker service: it stops the
        routers an earlier Phoenix left for docker services since removed)."""
        endpoints: dict[tuple[PlatformKind, str], Platform] = {}
        docker_specs = [spec for spec in catalog if spec.platform is PlatformKind.DOCKER]
        for engine in dict.fromkeys([None, *(spec.engine for spec in docker_specs)]):
            docker = DockerPlatform(
                owner=self.owner,
                clock=self.clock,
                run_dir=settings.run_dir,
                log_dir=settings.log_dir,
                journal=journal,
                env=service_environment(os.environ),
                ports=ports,
                engine=engine,
                floating_owner=CLUSTER_OWNER if settings.cluster else None,
            )
            docker.watch_ports(self._port_served)
            self.dockers.append(docker)
            if engine is None:
                self.docker = platforms[PlatformKind.DOCKER] = docker
            else:
                endpoints[(PlatformKind.DOCKER, engine.name)] = docker
        # The cluster's workloads: one platform for the file's cluster, only when a service
        # runs there (no client, no watch, no credentials needed otherwise).
        self.kubernetes: KubernetesPlatform | None = None
        kubernetes_specs = [s for s in catalog if isinstance(s.run, KubernetesWorkload)]
        if kubernetes_specs:
            first = kubernetes_specs[0].run
            assert isinstance(first, KubernetesWorkload)
            self.kubernetes = KubernetesPlatform(
                first.cluster, passes=self._pass_checks, acts_on=self._acts_on
            )
            platforms[PlatformKind.KUBERNETES] = self.kubernetes
        self.platforms = PlatformRegistry(platforms, endpoints)
        self.recorder = recorder = StoreRecorder(store, self.owner, epochs)
        self.executor = Executor(
            platforms=self.platforms,
            verifier=self.verifier,
            recorder=recorder,
            clock=self.clock,
            status_of=self.tracker.status,
            limits=ExecutionLimits(recovery_timeout=settings.recovery_timeout),
            handlers=PLAYBOOK_HANDLERS,
        )
        self.versions = VersionKeeper(
            catalog=catalog,
            recorder=recorder,
            clock=self.clock,
            health_of=self.tracker.view,
            artifact_of=self._artifact_of,
        )
        secret = settings.alert_webhook_secret
        self.alerter = Alerter(
            StoreAlertQueue(
                store, epochs, shared=ALERTS_TAKEN_FOR if self.cluster is not None else None
            ),
            self.clock,
            webhook=settings.alert_webhook,
            secret=secret.get_secret_value() if secret is not None else None,
            on_success=settings.alert_on_success,
        )
        self.metrics_registry = CollectorRegistry(auto_describe=True)
        """The engine's own metrics (histograms) and the process's for ``/metrics``."""
        ProcessCollector(registry=self.metrics_registry)
        PlatformCollector(registry=self.metrics_registry)
        GCCollector(registry=self.metrics_registry)
        self.orchestrator = Orchestrator(
            catalog=catalog,
            platforms=self.platforms,
            tracker=self.tracker,
            executor=self.executor,
            recorder=recorder,
            clock=self.clock,
            limits=OrchestratorLimits(
                auto_recovery=settings.auto_recovery,
                max_attempts=settings.max_recovery_attempts,
                max_concurrent=settings.max_concurrent_recoveries,
                alert_grace=settings.alert_grace,
                try_again_after=settings.try_again_after,
            ),
            claims=LocalClaims(
                self.clock.monotonic,
                fleet_floor=settings.fleet_floor,
                fleet_floor_min=settings.fleet_floor_min,
                ownership=self.cluster,
            ),
            versions=self.versions,
            observer=PrometheusObserver(self.metrics_registry),
            alerter=self.alerter,
        )
        self.tokens = TokenRegistry(configured_tokens(settings.env_tokens, settings.tokens_file))
        """Who may call the API (empty: loopback only, everyone is anonymous)."""
        self.audit = AuditTrail(store)
        self.reports = ReportIntake(self.orchestrator, StoreReportKeys(store), self.clock.now)
        """Failures reported by Alertmanager and event senders."""
        self.deployer = Deployer(
            catalog=catalog,
            platforms=self.platforms,
            versions=self.versions,
            orchestrator=self.orchestrator,
            executor=self.executor,
        )
        self._status_changes: asyncio.Queue[HealthTransition] = asyncio.Queue()
        self._background = SupervisedTasks("runtime")
        self._watchers = SupervisedTasks("watch")
        """Loops that read the platforms (samplers, scrapers): stopped before them."""
        self._stopping = False
        self.baselines = UptimeBaselines(
            catalog, self.tracker, store, self.clock, watches=self._acts_on
        )
        """Per service, when Phoenix began managing it and its first day's uptime."""
        self.playbooks_active: int | None = None
        """Active playbooks at the last look (None until the database has answered)."""
        self.database_problem: str | None = None
        """Why the database did not answer at the last look, if it did not."""
        self.api_problems: Callable[[], list[str]] = list
        """What the API's front door refused lately (set by the server that serves it)."""
        self.playbook_folder: PlaybookFolder | None = None
        if settings.playbooks_dir is not None:
            self.playbook_folder = PlaybookFolder(
                settings.playbooks_dir,
                catalog=catalog,
                store=store,
                clock=self.clock,
                recovery_timeout=settings.recovery_timeout,
                changed=self.refresh_playbooks,
            )

    async def start(self) -> None:
        now = self.clock.now()
        owner = self.owner
        interrupted: list[str] = []
        if self.cluster is None:
            # With several replicas, what a service's previous owner left open is closed by
            # its next owner when it takes the service (``_gained``).
            interrupted = await self.store.write(
                recoveries.interrupt_unfinished, at=now, owner=owner
            )
            await self.store.write(deployments.interrupt_unfinished, at=now, owner=owner)
        history_of: str | None = owner
        if self.cluster is not None:
            # Leases first: what is recorded below (initial versions) and what the platforms
            # start or adopt later is written under this replica's own services' epochs.
            await self._first_beat(self.cluster)
            history_of = None  # a service's versions follow it from replica to replica
        # Before anything starts an instance: each service runs the version last deployed.
        await self.versions.load(
            await self.store.read(deployments.latest_deployments, owner=history_of),
            await self.store.read(deployments.proven_versions, owner=history_of),
            await self.store.read(deployments.proven_artifacts, owner=history_of),
        )
        if interrupted:
            log.warning(
                "marked %d recovery(ies) interrupted by the previous stop", len(interrupted)
            )
        await self.store.write(health_events.prune, before=now - UPTIME_HORIZON)
        history = await self.store.read(health_events.status_history, since=now - UPTIME_HORIZON)
        for service, events in history.items():
            if service in self.catalog:
                self.tracker.seed_uptime(service, events)
        self.tracker.subscribe(self._on_transition)
        for platform in self.platforms.all():
            platform.subscribe(self._on_instance_event)
        unresolved = (
            await self.store.read(incidents.unresolved_incidents) if self.cluster is None else []
        )
        await self.store.write(
            report_keys.prune_seen, before=now - REPORT_KEYS_KEPT_FOR, keep=REPORT_KEYS_KEPT
        )
        self.reports.restore(
            unresolved,
            await self.store.read(
                report_keys.recent_seen, since=now - REPORT_KEYS_KEPT_FOR, limit=REPORT_KEYS_KEPT
            ),
        )
        self.orchestrator.start(
            unresolved,
            await self.store.read(recoveries.recent_successful_durations, per_key=DURATIONS_KEPT),
            await self.store.read(learning.recent_outcomes),
        )
        self.orchestrator.remember_successes(await self.store.read(recoveries.last_successes))
        await self.baselines.load()
        self._background.keep_running(self._persist_status_changes, name="status-writer")
        self._background.keep_running(self.baselines.track, name="uptime-baselines")
        self._background.keep_running(self._watch_database, name="database-watch")
        self.alerter.start()
        if self.playbook_folder is not None:
            await self.playbook_folder.load_safely()
            self._background.keep_running(self.playbook_folder.watch, name="playbook-files")
        self._background.keep_running(self.versions.watch, name="known-good-watch")
        self._watchers.keep_running(
            ResourceSampler(self.catalog, self.platforms, self.tracker, self.clock).run,
            name="process-sampler",
        )
        self._watchers.keep_running(
            PrometheusScraper(self.catalog, self.platforms, self.tracker, self.clock).run,
            name="prometheus-scraper",
        )
        self._watchers.keep_running(
            ScaleInWatcher(
                catalog=self.catalog,
                platforms=self.platforms,
                tracker=self.tracker,
                orchestrator=self.orchestrator,
                clock=self.clock,
            ).run,
            name="scale-in-watch",
        )
        self._watchers.keep_running(
            TrafficWatcher(self.catalog, self.platforms, self.tracker, self.clock).run,
            name="traffic-watch",
        )
        for spec in self.catalog:
            if spec.platform is PlatformKind.EXTERNAL and self.cluster is None:
                self.scheduler.add(target_for(spec, None, python=sys.executable))
        if self.cluster is not None:
            self._background.keep_running(self.cluster.run, name="cluster-heartbeat")
            self._background.keep_running(self._follow_other_replicas, name="cluster-health")
            self._background.keep_running(self._close_left_open, name="cluster-leftovers")
            abandoned = AbandonedContainers(
                self.store,
                member=self.cluster.replica,
                dockers=self.dockers,
                declared=lambda: [spec.name for spec in self.catalog],
                lease=self.cluster.lease,
                sleep=self.clock.sleep,
            )
            self._background.keep_running(abandoned.run, name="cluster-abandoned")
        for platform in self.platforms.all():
            specs = [
                spec
                for spec in self.catalog
                if spec.platform is platform.kind
                and (self.cluster is None or spec.replica in (None, self.owner))
                and not self._floating_docker(spec)  # taken over with its lease instead
            ]
            for name, reason in (await platform.reconcile(specs)).items():
                self.tracker.start_failed(name, self.clock.now(), f"could not start: {reason}")
            if LIFECYCLE.of(platform) is None:
                continue  # a cluster puts its own pods in rotation (readiness)
            for spec in specs:
                fresh = [
                    i for i in platform.instances(spec.name) if i.state is InstanceState.STARTING
                ]
                if fresh:
                    self._background.spawn(self._admit(spec, fresh), name=f"admit-{spec.name}")
        self._start_registry_sync()
        log.info(
            "watching %d service(s); automatic recovery %s",
            len(self.catalog),
            "on" if self.settings.auto_recovery else "OFF",
        )

    def _start_registry_sync(self) -> None:
        """Watch the registry's services too, if there is one; the file's services are in
        place by now, so a registry entry of the same name is seen to be the file's."""
        url = self.settings.registry_url
        if url is None:
            return
        base_dir = (
            self.settings.config_file.parent.resolve()
            if self.settings.config_file is not None
            else Path.cwd()
        )
        file_names = [s.name for s in self.catalog]
        self.registry = RegistrySync(
            url=url,
            interval=self.settings.registry_interval,
            catalog=self.catalog,
            tracker=self.tracker,
            scheduler=self.scheduler,
            validate=lambda item, index: servicefile.parse_registry_entry(
                item,
                index=index,
                dependencies=file_names,
                base_dir=base_dir,
                default_interval=self.settings.health_check_interval,
            ),
            busy=self.orchestrator.busy,
            clock=self.clock,
            python=sys.executable,
        )
        self._background.keep_running(self.registry.run, name="registry-sync")

    def dead_tasks(self) -> list[str]:
        """Background tasks that died: each one is something Phoenix stopped doing (for a
        while, for the loops it keeps running)."""
        return [death.name for death in self._deaths()]

    def _artifact_of(self, service: str, version: str) -> str | None:
        """What the service's live instances of ``version`` run, in immutable terms."""
        if service not in self.catalog:
            return None
        platform = self.platforms.for_service(self.catalog.get(service))
        return next(
            (
                i.artifact
                for i in platform.instances(service)
                if i.alive and i.version == version and i.artifact
            ),
            None,
        )

    async def _pass_checks(self, spec: ServiceSpec, instances: Sequence[Instance]) -> bool:
        """Every instance passes the service's own check now: one probe each, recorded
        nowhere (they may not be the instances the service is tracked by)."""
        results = await asyncio.gather(
            *(self.prober.probe(target_for(spec, i, python=sys.executable)) for i in instances)
        )
        return all(result.ok for result in results)

    def _port_served(self, service: str, problem: str | None) -> None:
        """The platform's word that ``service``'s public port stopped (``problem``) or
        started again (None) being served."""
        self.tracker.set_port_problem(service, problem)

    def task_deaths(self) -> list[str]:
        """/health's account of them: tasks that stayed dead, and loops restarted within
        the last hour (which, when, why)."""
        now = self.clock.now()
        return [
            death.describe()
            for death in self._deaths()
            if death.restarts is None or now - death.at < DEATHS_SHOWN_FOR
        ]

    def _deaths(self) -> list[TaskDeath]:
        groups = (
            self._background,
            self._watchers,
            self.scheduler.tasks,
            self.orchestrator.tasks,
            self.deployer.tasks,
            self.alerter.tasks,
            *(docker.tasks for docker in self.dockers),
            *([self.kubernetes.tasks] if self.kubernetes is not None else []),
        )
        return sorted(
            (death for group in groups for death in group.deaths.values()), key=lambda d: d.at
        )

    def problems(self) -> list[str]:
        """What limits Phoenix now, one sentence each (``/health``'s warnings), from memory
        only: no database, no await, so that it answers at once whatever else is going on."""
        warnings = [*self.api_problems()]
        if self.database_problem:
            warnings.append(self.database_problem)
        if refused := self.store.write_problem:
            since, why = refused
            warnings.append(
                f"the database has refused writes since {iso_ms(since)} ({why}): recovery "
                "goes on, its records wait in memory"
            )
        rebuilt = self.store.rebuilt_at
        if rebuilt is not None and (utcnow() - rebuilt).total_seconds() < REBUILT_SHOWN:
            warnings.append(
                f"the database file was deleted while Phoenix ran and written again at "
                f"{iso_ms(rebuilt)} from the open database: find out who removed it"
            )
        if dropped := self.orchestrator.dropped:
            warnings.append(f"{dropped} record(s) dropped: the database refused them too long")
        port_problems = self.local.port_problems()
        for docker in self.dockers:
            port_problems |= docker.port_problems()
        for service, problem in sorted(port_problems.items()):
            warnings.append(f"service {service} is not served on its port: {problem}")
        for death in self.task_deaths():
            warnings.append(death)
        if self.kubernetes is not None:
            warnings.extend(self.kubernetes.watch_problems())
        if self.cluster is not None:
            warnings.extend(self._cluster_problems())
        if self.orchestrator.unwritten:
            warnings.append(f"{self.orchestrator.unwritten} record(s) waiting for the database")
        if self.orchestrator.fleet_pause:
            warnings.append(self.orchestrator.fleet_pause)
        if not self.settings.auto_recovery:
            warnings.append(
                "automatic recovery is off (AUTO_RECOVERY=false): failures are only recorded"
            )
        lateness = self.scheduler.lateness
        if lateness > LATE_PROBES_WARNING:
            warnings.append(
                f"probes are running {lateness:.1f}s late: more targets "
                f"({len(self.scheduler.targets())}) than this Phoenix can probe on time"
            )
        folder_problems = self.playbook_folder.problems if self.playbook_folder else {}
        for name, problem in sorted(folder_problems.items()):
            warnings.append(
                f"playbook file {name} is invalid (its previous version stays): {problem}"
            )
        if self.registry is not None:
            if self.registry.problem:
                warnings.append(f"{self.registry.problem}; the services it added stay as they were")
            for entry, reason in self.registry.rejected.items():
                warnings.append(f"service registry entry {entry} refused: {reason}")
        if undelivered := self.alerter.problem:
            warnings.append(undelivered)
        if self.settings.insecure and not self.tokens:
            warnings.append("insecure mode (PHOENIX_INSECURE=1): the API has no authentication")
        if self.audit.dropped:
            warnings.append(
                f"{self.audit.dropped} audit entr(ies) dropped: the database refused them "
                "(see the log for the first)"
            )
        if self.audit.pending:
            warnings.append(f"{self.audit.pending} audit entr(ies) waiting for the database")
        if (truncation := self.reports.last_truncation) is not None:
            at, what = truncation
            if (self.clock.now() - at).total_seconds() < TRUNCATION_SHOWN:
                warnings.append(
                    f"alerts left out of an Alertmanager payload at {iso_ms(at)}: {what}; "
                    "set max_alerts in the receiver to at most 1000"
                )
        if self.reports.unsaved:
            warnings.append(
                f"{self.reports.unsaved} report key(s) waiting for the database: after a "
                "restart now, copies of those alerts would be taken as new"
            )
        return warnings

    def _cluster_problems(self) -> list[str]:
        assert self.cluster is not None
        state = self.cluster.state()
        if state.last_beat is not None and state.acting_for <= 0:
            why = state.problem or "the database has not answered in time"
            return [
                f"cluster heartbeat late: this replica could not renew its leases ({why}); "
                "it acts on no service until a heartbeat goes through, the others take "
                "its services over"
            ]
        problems = []
        if state.problem:
            problems.append(
                f"{state.problem}: this replica acts on its services for "
                f"{state.acting_for:.1f}s more, then leaves them to the others"
            )
        unowned = [s.name for s in self.catalog if self.cluster.owner_of(s.name) is None]
        if unowned and state.last_beat is not None:
            shown = ", ".join(unowned[:10]) + (", …" if len(unowned) > 10 else "")
            problems.append(
                f"{len(unowned)} service(s) owned by no live replica, watched by none: {shown}"
            )
        for clash in self.cluster.shared_addresses():
            problems.append(
                f"replicas {clash}: requests passed on may reach the wrong one; set "
                "PHOENIX_ADVERTISE_URL to an address of each replica's own"
            )
        return problems

    async def mark_false_positive(self, incident_id: str) -> Incident:
        """An operator says ``incident_id`` was no real failure: recorded (it counts in the
        false-positive rate), and its recoveries stop counting as evidence for the learned
        policy."""
        incident = await self.store.write(incidents.mark_false_positive, incident_id)
        self.orchestrator.learning.forget_incident(incident.id)
        return incident

    # -- what the API reads and does: the named operations and views of the engine --------
    # (api/engine.py lists exactly these; the API reaches nothing else of the engine.)

    async def trigger(
        self,
        *,
        service: str,
        strategy: Strategy | None,
        reason: str,
        force: bool,
        playbook: Playbook | None = None,
    ) -> Recovery:
        """An operator's recovery (see :meth:`Orchestrator.trigger`)."""
        return await self.orchestrator.trigger(
            service=service, strategy=strategy, reason=reason, force=force, playbook=playbook
        )

    async def deploy(self, service: str, version: str) -> tuple[Deployment, bool]:
        """Roll ``service`` to ``version`` (see :meth:`Deployer.deploy`)."""
        return await self.deployer.deploy(service, version)

    def record_metrics(self, service: str, values: dict[str, float], *, at: float) -> list[str]:
        """Pushed samples into the service's signals; returns the series refused (too many)."""
        return self.tracker.record_metrics(service, values, at=at)

    def health(self, service: str) -> ServiceHealthView:
        view = self.tracker.view(service)
        if self.cluster is None or self.cluster.owns(service):
            return view
        owner = self.cluster.owner_of(service)
        if owner is None:
            return replace(
                view,
                status=ServiceStatus.UNKNOWN,
                reason="no live replica owns it right now: nothing watches it (its replica "
                "stopped or died; a service pinned to that replica waits for it)",
            )
        recorded = self._elsewhere.get(service)
        if recorded is None:
            return replace(view, reason=f"owned by {owner}; nothing recorded yet")
        since, status, reason = recorded
        return replace(
            view, status=status, status_since=since, reason=f"{reason} (as {owner} saw it)"
        )

    def waiting_on(self, service: str) -> str | None:
        """The failing dependency that explains ``service``'s failure, if one does."""
        return self.tracker.waiting_on(service)

    def signals(self, service: str) -> ServiceSignals:
        return self.tracker.signals(service)

    def watch_health(self, listener: Callable[[HealthTransition], None]) -> None:
        self.tracker.subscribe(listener)

    def unwatch_health(self, listener: Callable[[HealthTransition], None]) -> None:
        self.tracker.unsubscribe(listener)

    def active_recovery(self, service: str) -> Recovery | None:
        return self.orchestrator.active_recovery(service)

    def active_recoveries(self) -> int:
        return self.orchestrator.active_count()

    def unresolved_incidents(self) -> list[Incident]:
        return self.orchestrator.unresolved_incidents()

    def unsettled_recovery_ids(self) -> set[str]:
        """Recoveries whose recorded verdict may still change (see the orchestrator)."""
        return self.orchestrator.unsettled_ids()

    def budget_remaining(self, service: str) -> int:
        return self.orchestrator.budget_remaining(service)

    @property
    def fleet_pause(self) -> str | None:
        return self.orchestrator.fleet_pause

    @property
    def probe_lateness(self) -> float:
        """Seconds probes start late on average (the prober is overloaded)."""
        return self.scheduler.lateness

    def strategies(self, spec: ServiceSpec) -> frozenset[Strategy]:
        """What can be done for ``spec`` now."""
        return self.orchestrator.supported(spec)

    def instances(self, spec: ServiceSpec) -> list[Instance]:
        return self.platforms.for_service(spec).instances(spec.name)

    def standby(self, spec: ServiceSpec) -> Instance | None:
        standbys = STANDBYS.of(self.platforms.for_service(spec))
        return standbys.standby(spec.name) if standbys is not None else None

    def known_good(self, spec: ServiceSpec) -> list[str]:
        return self.versions.known_good(spec)

    def rollback_target(self, spec: ServiceSpec) -> str | None:
        return self.versions.rollback_target(spec)

    def uptime_baseline(self, service: str) -> UptimeBaseline | None:
        return self.baselines.get(service)

    @property
    def learned(self) -> LearnedPolicy:
        """What recorded outcomes say about each strategy (read-only for the API)."""
        return self.orchestrator.learning

    async def refresh_playbooks(self) -> None:
        """Load the active playbooks now (after a playbook changes; the watch does it too):
        the engine answers failures with them, /health counts them."""
        try:
            active = await self.store.read(playbooks.active_playbooks)
            self.playbooks_active = await self.store.read(playbooks.count_active)
            self.database_problem = None
        except UnavailableError as exc:
            self.database_problem = exc.message
            return
        self.orchestrator.set_playbooks(active)

    async def _watch_database(self) -> None:
        """Keep what /health reports about the database fresh, so that liveness never
        waits on the database itself."""
        while True:
            with contextlib.suppress(UnavailableError):  # said in /health by the store
                await self.store.rebuild_if_deleted()
            await self.refresh_playbooks()
            await self.clock.sleep(DATABASE_WATCH_INTERVAL)

    async def _admit(self, spec: ServiceSpec, instances: list[Instance]) -> None:
        """Put instances started at boot in rotation once they pass their health check
        (if they never do, their probes make the service unhealthy and recovery follows)."""
        verification = await self.verifier.verify(
            spec, instances, timeout=spec.health.startup_timeout
        )
        if verification.ok:
            lifecycle = LIFECYCLE.require(self.platforms.for_service(spec), spec)
            await lifecycle.mark_serving(spec, [i.id for i in instances])

    async def stop(self) -> None:
        # Recoveries and deploys end (recorded under the leases still held) before anything
        # is handed over: another replica must never act beside one still running here.
        await self.deployer.close()
        await self.orchestrator.close()
        await self.alerter.close()
        await self.scheduler.close()
        await self._watchers.close()
        self._stopping = True
        watched = {spec.name for spec in self.catalog}
        if self.cluster is not None:
            # Only what this replica owned stops being watched, said before it is handed
            # over (its next owner's view comes after); then the others take it at once.
            watched = set(self.cluster.owned())
            await self._record_stopped(watched)
            await self.cluster.leave()
        for platform in self.platforms.all():
            await platform.shutdown(keep_running=self.settings.keep_services)
        await self.baselines.save_at_stop()
        if self.cluster is None:
            await self._record_stopped(watched)
        await self._background.close()
        await self.prober.close()

    async def _record_stopped(self, services: set[str]) -> None:
        now = self.clock.now()
        self.tracker.mark_unobserved(now)
        for name in sorted(services):
            self._status_changes.put_nowait(
                HealthTransition(
                    name, ServiceStatus.UNKNOWN, ServiceStatus.UNKNOWN, now, "Phoenix stopped"
                )
            )
        async with asyncio.timeout(10):
            await self._status_changes.join()

    # -- ownership (several replicas) -------------------------------------------------------

    async def _gained(self, taken: dict[str, int]) -> None:
        """This replica owns ``taken`` from now (service → lease epoch): what their previous
        owners left in progress is closed as interrupted (one transaction for them all), and
        their open incidents are read to be carried on."""
        taken = {name: epoch for name, epoch in taken.items() if name in self.catalog}
        now = self.clock.now()
        closed: list[str] = []
        try:
            closed = await self.store.write(
                recoveries.interrupt_services, services=taken, at=now, taking=True
            )
            await self.store.write(
                deployments.interrupt_services, services=taken, at=now, taking=True
            )
            unresolved = await self.store.read(incidents.unresolved_incidents)
        except StaleOwnerError:
            # One of them was lost again already: close the others one by one.
            unresolved = []
            for name, epoch in taken.items():
                with contextlib.suppress(StaleOwnerError, UnavailableError):
                    closed += await self.store.write(
                        recoveries.interrupt_services, services={name: epoch}, at=now, taking=True
                    )
        except UnavailableError as exc:
            log.warning("taking over without the store's records (%s)", exc.message)
            unresolved = []
        with contextlib.suppress(UnavailableError):  # kept as known here until saved again
            await self.baselines.taken_over(taken)
        if closed:
            log.warning(
                "%d recovery(ies) their previous owners left in progress closed as interrupted: %s",
                len(closed),
                ", ".join(closed),
            )
        for incident in unresolved:
            if incident.service in taken:
                self._carried[incident.service] = incident

    def _acting(self, services: list[str]) -> None:
        """This replica acts on ``services`` from now: its open incidents are carried on and
        what runs is adopted as it is (nothing restarted), watched from here on."""
        for name in services:
            if name not in self.catalog:
                continue
            spec = self.catalog.get(name)
            carried = self._carried.pop(name, None)
            if carried is not None:
                self.recorder.carry_on(carried.id)
            self.orchestrator.take_over(name, [carried] if carried else [])
            if spec.platform is PlatformKind.EXTERNAL:
                self.scheduler.add(target_for(spec, None, python=sys.executable))
            for instance in self.platforms.for_service(spec).instances(name):
                if instance.alive:
                    self._on_instance_event(InstanceEvent(InstanceEventKind.ADOPTED, instance))
            if self.kubernetes is not None and spec.platform is PlatformKind.KUBERNETES:
                self.kubernetes.taken_over(spec)
            if self._floating_docker(spec):
                self._background.spawn(self._take_over_containers(spec), name=f"adopt-{name}")

    def _floating_docker(self, spec: ServiceSpec) -> bool:
        """A docker service any replica may own (not pinned): its containers are the
        cluster's, adopted by whichever replica owns it."""
        return (
            self.cluster is not None and spec.platform is PlatformKind.DOCKER and not spec.replica
        )

    async def _take_over_containers(self, spec: ServiceSpec) -> None:
        """Adopt the containers a docker service's previous owner left (or start them), then
        watch them from here: adopted ones are probed at once, new ones once admitted."""
        platform = self.platforms.for_service(spec)
        assert isinstance(platform, DockerPlatform)
        delay = 1.0
        while True:
            try:
                problem = await platform.take_over(spec)
                break
            except PlatformError as exc:
                # Nothing adopted yet: tried again (the service stays unknown meanwhile, so
                # no recovery starts a container beside the ones not yet adopted).
                log.warning("%s: cannot take its containers over yet: %s", spec.name, exc.message)
                await self.clock.sleep(delay)
                delay = min(2 * delay, 30.0)
                if not self._acts_on(spec.name):
                    return  # another replica's now: it adopts them
        if not self._acts_on(spec.name):
            # Lost while taking it over: what it adopted or started is the next owner's
            # (one more than the service may run is removed there).
            platform.let_go(spec.name)
            return
        if problem is not None:
            self.tracker.start_failed(spec.name, self.clock.now(), f"could not start: {problem}")
            return
        fresh = [i for i in platform.instances(spec.name) if i.state is InstanceState.STARTING]
        if fresh:
            await self._admit(spec, fresh)

    def _placement(self) -> Sequence[tuple[str, str | None]]:
        """Each service and the replica it is pinned to (None: any), for the heartbeat:
        the same list object until the catalog changes."""
        generation = self.catalog.generation
        if self._placed is None or self._placed[0] != generation:
            self._placed = (generation, [(spec.name, spec.replica) for spec in self.catalog])
        return self._placed[1]

    async def _first_beat(self, cluster: ClusterMember) -> None:
        """Join before anything else starts. A replica restarted moments after it was killed
        finds its earlier self still counted live for up to a lease (the same id, another
        process): it waits that out rather than start without its leases."""
        give_up = time.monotonic() + 2 * cluster.lease
        while True:
            await cluster.beat_once()
            if cluster.problem is None or time.monotonic() >= give_up:
                return
            log.warning("%s; trying again before starting", cluster.problem)
            await asyncio.sleep(cluster.lease / 5)

    async def _close_left_open(self) -> None:
        """What an earlier owner of this replica's services left open and still held locked
        when they were taken over (it was paused mid-write) is closed once it lets go: the
        database ends such a writer within its statement or idle timeout, so only services
        taken in the last two leases and 20 s are looked at again."""
        assert self.cluster is not None
        within = LEFT_OPEN_LOOKED_AT + 2 * self.cluster.lease
        while True:
            await self.clock.sleep(self.cluster.lease)
            taken = self.cluster.taken_within(within)
            if taken:
                with contextlib.suppress(UnavailableError, StaleOwnerError):
                    now = self.clock.now()
                    await self.store.write(recoveries.interrupt_services, services=taken, at=now)
                    await self.store.write(deployments.interrupt_services, services=taken, at=now)

    async def _follow_other_replicas(self) -> None:
        """Keep the statuses of the services other replicas own, as they recorded them."""
        assert self.cluster is not None
        while True:
            with contextlib.suppress(UnavailableError):  # /health says the database is away
                await self._elsewhere.refresh()
            await self.clock.sleep(self.cluster.lease / 5)

    async def _lost(self, service: str) -> None:
        """Another replica owns ``service`` now (or this one could not renew in time): its
        probes stop here and its health here is no longer known."""
        if service not in self.catalog:
            return
        spec = self.catalog.get(service)
        if spec.platform is PlatformKind.EXTERNAL:
            self.scheduler.remove(service)
        platform = self.platforms.for_service(spec)
        for instance in platform.instances(service):
            self.scheduler.remove(instance.id)
        self.orchestrator.let_go(service)
        if self._floating_docker(spec):
            assert isinstance(platform, DockerPlatform)
            platform.let_go(service)  # left running, for the next owner to adopt
        self.tracker.forget(service)
        self.tracker.track(spec)

    # -- signal routing ---------------------------------------------------------------------

    def _acts_on(self, service: str) -> bool:
        return self.cluster is None or self.cluster.owns(service)

    def _on_instance_event(self, event: InstanceEvent) -> None:
        instance = event.instance
        if self._stopping:
            return  # Phoenix is stopping its own services: not a signal about them
        if not self._acts_on(instance.service):
            return  # another replica's to watch (it is replayed here if this one takes it)
        if event.kind in (InstanceEventKind.STARTED, InstanceEventKind.ADOPTED):
            spec = self.catalog.get(instance.service)
            self.scheduler.add(target_for(spec, instance, python=sys.executable))
            detail = f"{instance.id} {event.kind.value} (pid {instance.pid})"
        elif event.kind is InstanceEventKind.EXITED:
            self.scheduler.remove(instance.id)
            detail = f"{instance.id} {describe_end(instance)}"
        elif event.kind is InstanceEventKind.PROMOTED:
            detail = f"{instance.id} promoted from standby"
        elif event.kind in (InstanceEventKind.UNHEALTHY, InstanceEventKind.HEALTHY):
            detail = f"{instance.id}: {event.detail}"
        elif event.kind is InstanceEventKind.CRASH_LOOP:
            detail = f"{instance.id}: {event.detail}"
            self.alerter.raise_alert(
                AlertKind.CANNOT_RECOVER,
                service=instance.service,
                text=f"{detail}; Phoenix leaves its restarts to the platform: a person must act",
                event=f"{instance.id}@{instance.started_at.isoformat()}",
            )
        else:
            self.scheduler.remove(instance.id)
            if instance.state is InstanceState.EXITED:
                detail = f"{instance.id} removed after it {describe_end(instance)}"
            else:
                detail = f"{instance.id} stopped by Phoenix"
        self.tracker.observe(
            Observation(
                service=instance.service,
                target=instance.id,
                kind=OBSERVED_AS[event.kind],
                at=self.clock.now(),
                ok=event.kind
                not in (
                    InstanceEventKind.EXITED,
                    InstanceEventKind.UNHEALTHY,
                    InstanceEventKind.CRASH_LOOP,
                ),
                detail=detail,
                standby=instance.role is InstanceRole.STANDBY,
            )
        )

    def _on_transition(self, transition: HealthTransition) -> None:
        if self.cluster is not None and not self.cluster.owns(transition.service):
            return  # a probe that ended after the lease was lost: its owner records it
        level = logging.INFO if transition.current.serving else logging.WARNING
        log.log(
            level,
            "%s: %s -> %s (%s)",
            transition.service,
            transition.previous.value,
            transition.current.value,
            transition.reason,
        )
        self._status_changes.put_nowait(transition)
        self.orchestrator.on_transition(transition)

    async def _persist_status_changes(self) -> None:
        """Write status changes in batches, a moment after they happen: uptime can wait a
        fraction of a second, a recovery's own writes (same writer) should not."""
        while True:
            batch = [await self._status_changes.get()]
            await asyncio.sleep(STATUS_BATCH_DELAY)
            while not self._status_changes.empty():
                batch.append(self._status_changes.get_nowait())
            try:
                await self.store.write(
                    health_events.record_statuses,
                    [(t.service, t.at, t.current, t.reason) for t in batch],
                )
            except Exception:
                log.exception("could not record %d status change(s)", len(batch))
            finally:
                for _ in batch:
                    self._status_changes.task_done()
