"""From observations to service status: thresholds, start-up grace, and aggregation.

Each *target* (an instance of a local service, or an external service itself) has its
own status driven by consecutive probe results against the service's thresholds. A
process exit is certain and marks its target unhealthy at once. A service's status
aggregates its targets: all serving → healthy, some → degraded, none → unhealthy — unless
its public port is not served (another process holds it, see :meth:`HealthTracker.
set_port_problem`): then it is unhealthy whatever its checks say, since clients do not
reach it.
Whenever a service's status changes, :class:`HealthTracker` reports a
:class:`HealthTransition` to its listener — that is where incidents begin.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psutil

from phoenix_server.detection.signals import CPU, MEMORY, ServiceSignals, Surprise
from phoenix_server.detection.symptoms import Symptom, SymptomDetector
from phoenix_server.detection.traffic import TrafficView, TrafficWindow
from phoenix_server.detection.uptime import UptimeTimeline
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.health import (
    HealthTransition,
    Observation,
    ObservationKind,
    ServiceStatus,
    TrafficCounters,
)
from phoenix_server.domain.services import HealthPolicy, ServiceCatalog, ServiceSpec


@dataclass(frozen=True)
class ShownSurprise:
    """A :class:`~phoenix_server.detection.signals.Surprise`, with its wall-clock time."""

    at: datetime
    sample: Surprise


LATENCY_WINDOW = 120
"""Probe latencies kept per service for the p50 (bounded memory)."""


@dataclass
class _Target:
    policy: HealthPolicy
    added_mono: float
    standby: bool = False
    adopted: bool = False
    """Found running, not started now (Phoenix restarted, a replica took its service over,
    traffic switched to pods that ran already): it may have served all along."""
    status: ServiceStatus = ServiceStatus.UNKNOWN
    failures: int = 0
    successes: int = 0
    detail: str = ""
    exited: bool = False
    """Its process died: a failure of its own, whatever its dependencies do."""
    verdict: str | None = None
    """The platform's own health check says unhealthy, and why: holds until it says
    healthy again, whatever Phoenix's probes see."""

    def in_startup(self, now_mono: float) -> bool:
        """A target never yet healthy gets ``startup_timeout`` before failures count."""
        return (
            self.status is ServiceStatus.UNKNOWN
            and now_mono - self.added_mono < self.policy.startup_timeout
        )


@dataclass
class _Service:
    name: str
    policy: HealthPolicy
    depends_on: tuple[str, ...] = ()
    signals: ServiceSignals = field(default_factory=ServiceSignals)
    detector: SymptomDetector | None = None
    symptoms: tuple[Symptom, ...] = ()
    replicas: int = 0
    """Instances the last resource sample saw."""
    targets: dict[str, _Target] = field(default_factory=dict)
    status: ServiceStatus = ServiceStatus.UNKNOWN
    status_since: datetime | None = None
    reason: str = ""
    last_check: datetime | None = None
    ever_had_targets: bool = False
    port_problem: str | None = None
    """Why clients cannot reach it on its port (None: nothing known against it)."""
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    uptime: UptimeTimeline = field(default_factory=UptimeTimeline)
    traffic: TrafficWindow = field(default_factory=TrafficWindow)


@dataclass(frozen=True)
class ServiceHealthView:
    """A read-only snapshot for the API and the engine."""

    name: str
    status: ServiceStatus
    status_since: datetime | None
    reason: str
    last_check: datetime | None
    uptime: float | None
    latency_p50: float | None
    """Seconds, over the last probes."""
    targets: dict[str, ServiceStatus]
    standby: dict[str, ServiceStatus]
    """Standby instances (hot backups) and their health, apart from the service's."""
    traffic: TrafficView
    """From the router, for a routed service (all None otherwise)."""
    symptoms: tuple[Symptom, ...] = ()
    """Failures its health checks do not show (error rate, load, latency, a leak)."""
    anomaly: dict[str, float] = field(default_factory=dict)
    """Each metric's latest anomaly score."""
    anomaly_history: dict[str, list[float]] = field(default_factory=dict)
    """Each metric's peak score per half minute over the last quarter of an hour, oldest
    first, for metrics with news in it (score_trail.py): the others were 0 throughout."""
    surprises: dict[str, ShownSurprise] = field(default_factory=dict)
    """Each metric's latest sample that scored above 0: the sample, its score, its usual
    range, and when (wall clock)."""
    samples_dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    """Samples refused per metric and reason (signals.py), only for metrics that refused."""


TransitionListener = Callable[[HealthTransition], None]


class HealthTracker:
    """Holds every service's health; not thread-safe (lives on the event loop)."""

    def __init__(
        self, catalog: ServiceCatalog, clock: Clock, *, memory_total: int | None = None
    ) -> None:
        self._clock = clock
        memory = memory_total if memory_total is not None else psutil.virtual_memory().total
        self._memory_total = memory
        self._services = {spec.name: self._state_of(spec) for spec in catalog}
        self._listeners: list[TransitionListener] = []

    def _state_of(self, spec: ServiceSpec) -> _Service:
        return _Service(
            spec.name,
            spec.health,
            spec.depends_on,
            signals=ServiceSignals(spec.detection.min_requests),
            detector=SymptomDetector(spec, self._memory_total),
        )

    def track(self, spec: ServiceSpec) -> None:
        """Start tracking a service added while Phoenix runs (or take its new declaration:
        its status and uptime stay, its checks follow the new policy)."""
        state = self._services.get(spec.name)
        if state is None:
            self._services[spec.name] = self._state_of(spec)
            return
        state.policy = spec.health
        state.depends_on = spec.depends_on
        state.detector = SymptomDetector(spec, self._memory_total)
        for target in state.targets.values():
            target.policy = spec.health

    def forget(self, service: str) -> None:
        """Stop tracking a service no longer watched (its recorded history stays in the store)."""
        self._services.pop(service, None)

    def subscribe(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: TransitionListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def seed_uptime(self, service: str, events: list[tuple[datetime, ServiceStatus]]) -> None:
        """Replay persisted status changes so uptime spans Phoenix restarts."""
        timeline = self._services[service].uptime
        for at, status in events:
            timeline.record(at, None if status is ServiceStatus.UNKNOWN else status.serving)

    def observe(self, observation: Observation) -> HealthTransition | None:
        """Apply one observation; return (and announce) the service's transition, if any."""
        service = self._services.get(observation.service)
        if service is None:
            return None
        kind = observation.kind
        if kind in (ObservationKind.STARTED, ObservationKind.ADOPTED):
            grace_from = self._clock.monotonic()
            if kind is ObservationKind.ADOPTED:
                grace_from -= service.policy.startup_timeout
            service.targets[observation.target] = _Target(
                service.policy,
                grace_from,
                standby=observation.standby,
                adopted=kind is ObservationKind.ADOPTED,
            )
            service.ever_had_targets = service.ever_had_targets or not observation.standby
        elif kind is ObservationKind.PROMOTED:
            target = service.targets.get(observation.target)
            if target is not None:
                target.standby = False
        elif kind is ObservationKind.REMOVED:
            service.targets.pop(observation.target, None)
        else:
            target = service.targets.get(observation.target)
            if target is None:
                # Probes of an external service, or a result racing a removal: only the
                # external case registers a target implicitly.
                if kind is not ObservationKind.PROBE or observation.target != service.name:
                    return None
                # Phoenix did not start it, so no start-up grace: failures count at once.
                target = _Target(
                    service.policy, self._clock.monotonic() - service.policy.startup_timeout
                )
                service.targets[observation.target] = target
                service.ever_had_targets = True
            service.last_check = observation.at
            if observation.latency is not None and observation.ok:
                service.latencies.append(observation.latency)
            self._apply(target, observation)
        verdict = kind is ObservationKind.VERDICT and not observation.ok
        transition = self._reaggregate(
            service,
            observation.at,
            observation.detail or observation.kind.value,
            certain=kind is ObservationKind.EXIT or verdict,
        )
        if verdict and transition is None and service.status is ServiceStatus.UNHEALTHY:
            # Already unhealthy (its instance had just died, say): the platform's verdict
            # is the better explanation of why it still is.
            service.reason = observation.detail
        return transition

    def _apply(self, target: _Target, observation: Observation) -> None:
        if observation.kind is ObservationKind.VERDICT:
            target.verdict = None if observation.ok else observation.detail
            if not observation.ok:
                target.detail = observation.detail
                target.status = ServiceStatus.UNHEALTHY
                target.failures = max(target.failures + 1, target.policy.failure_threshold)
                target.successes = 0
            return
        if target.verdict is not None and observation.ok:
            return  # the platform's verdict stands until it changes its mind
        target.detail = observation.detail
        target.exited = observation.kind is ObservationKind.EXIT
        if observation.kind is ObservationKind.EXIT:
            target.status = ServiceStatus.UNHEALTHY
            target.failures = max(target.failures + 1, target.policy.failure_threshold)
            target.successes = 0
            return
        if observation.ok:
            target.successes += 1
            target.failures = 0
            threshold = (
                1 if target.status is ServiceStatus.UNKNOWN else target.policy.success_threshold
            )
            if target.status is not ServiceStatus.HEALTHY and target.successes >= threshold:
                target.status = ServiceStatus.HEALTHY
            return
        target.failures += 1
        target.successes = 0
        if target.in_startup(self._clock.monotonic()):
            return
        if target.failures >= target.policy.failure_threshold:
            target.status = ServiceStatus.UNHEALTHY

    def set_port_problem(self, service: str, problem: str | None) -> HealthTransition | None:
        """The service's public port is not served (``problem`` says why), or is again
        (None). Its instances may pass their checks meanwhile, reached directly, but clients
        reach whatever holds the port: unhealthy, for that reason."""
        state = self._services.get(service)
        if state is None or state.port_problem == problem:
            return None
        state.port_problem = problem
        reason = problem if problem is not None else "its port is served again"
        return self._reaggregate(state, self._clock.now(), reason)

    def port_problem(self, service: str) -> str | None:
        """Why ``service``'s port is not served now, if it is not (recovering its instances
        would not help: what holds the port must go)."""
        state = self._services.get(service)
        return state.port_problem if state is not None else None

    def _aggregate(self, service: _Service) -> ServiceStatus:
        if service.port_problem is not None:
            return ServiceStatus.UNHEALTHY
        statuses = [t.status for t in service.targets.values() if not t.standby]
        healthy = statuses.count(ServiceStatus.HEALTHY)
        unhealthy = statuses.count(ServiceStatus.UNHEALTHY)
        if not statuses:
            return ServiceStatus.UNHEALTHY if service.ever_had_targets else ServiceStatus.UNKNOWN
        if healthy and unhealthy:
            return ServiceStatus.DEGRADED
        if healthy:
            # Answering its checks, but showing a failure they do not: degraded.
            return ServiceStatus.DEGRADED if service.symptoms else ServiceStatus.HEALTHY
        if unhealthy:
            return ServiceStatus.UNHEALTHY
        # Every target still starting: unknown at first sight, but a service that was being
        # served and now only has fresh instances is not serving yet. Instances found
        # running (traffic switched to pods that served already, say) are not fresh: the
        # service keeps its status until their first probe says (no incident opened on a
        # failback for the moment between the old pods' removal and that probe).
        if service.status is ServiceStatus.UNKNOWN or all(
            t.adopted for t in service.targets.values() if not t.standby
        ):
            return service.status
        return ServiceStatus.UNHEALTHY

    def _reaggregate(
        self, service: _Service, at: datetime, reason: str, *, certain: bool = False
    ) -> HealthTransition | None:
        new = self._aggregate(service)
        if new is service.status:
            return None
        previous = service.status
        service.status = new
        service.status_since = at
        service.reason = reason
        service.uptime.record(at, None if new is ServiceStatus.UNKNOWN else new.serving)
        transition = HealthTransition(
            service=service.name,
            previous=previous,
            current=new,
            at=at,
            reason=service.reason,
            evidence=tuple(
                f"{name}: {target.status.value}" + (f" ({target.detail})" if target.detail else "")
                for name, target in service.targets.items()
            ),
            certain=certain,
        )
        for listener in self._listeners:
            listener(transition)
        return transition

    def start_failed(self, service: str, at: datetime, detail: str) -> HealthTransition | None:
        """The service could not even be started: unhealthy, with no instance to probe."""
        state = self._services[service]
        state.ever_had_targets = True
        return self._reaggregate(state, at, detail, certain=True)

    def status(self, service: str) -> ServiceStatus:
        return self._services[service].status

    def failing_checks(self, service: str) -> bool:
        """Failing, with its instances alive: only their checks fail (no exit)."""
        state = self._services.get(service)
        if state is None or state.status not in (ServiceStatus.UNHEALTHY, ServiceStatus.DEGRADED):
            return False
        if state.port_problem is not None:
            return False  # its checks may well pass: what fails is its port
        targets = [t for t in state.targets.values() if not t.standby]
        return bool(targets) and not any(t.exited for t in targets)

    def detection_time(self, service: str) -> float:
        """Seconds this service's checks take to declare a failure (threshold times interval,
        plus the last probe's timeout)."""
        policy = self._services[service].policy
        return policy.interval * policy.failure_threshold + policy.timeout

    def waiting_on(self, service: str) -> str | None:
        """The dependency (by ``depends_on``, followed down to the root) whose failure
        explains this service's: its own instances are alive but failing their checks while
        a dependency is unhealthy, isolated by its circuit, or back for less than this
        service's grace to notice. None when the failure is its own (or there is none)."""
        state = self._services.get(service)
        if state is None or not self.failing_checks(service):
            return None  # a crash, or nothing left running: that is this service's own
        policy = state.policy
        grace = policy.interval * (policy.success_threshold + 1) + policy.timeout
        now = self._clock.now()
        for name in state.depends_on:
            dependency = self._services.get(name)
            if dependency is None:
                continue
            deeper = self.waiting_on(name)  # the graph is acyclic (the service file says so)
            if deeper is not None:
                return deeper
            if dependency.status is ServiceStatus.UNHEALTHY or dependency.symptoms:
                return name
            if dependency.traffic.view().circuit == "open":
                return name
            since = dependency.status_since
            if (
                dependency.status is ServiceStatus.HEALTHY
                and since is not None
                and (now - since).total_seconds() < grace
            ):
                return name  # just back: give this one a moment to notice
        return None

    def view(self, service: str) -> ServiceHealthView:
        state = self._services[service]
        now, monotonic = self._clock.now(), self._clock.monotonic()
        latencies = list(state.latencies)
        return ServiceHealthView(
            name=state.name,
            status=state.status,
            status_since=state.status_since,
            # While its port is taken that is the reason, whatever else changed meanwhile.
            reason=state.port_problem or state.reason,
            last_check=state.last_check,
            uptime=state.uptime.percent(now),
            latency_p50=statistics.median(latencies) if latencies else None,
            targets={name: t.status for name, t in state.targets.items() if not t.standby},
            standby={name: t.status for name, t in state.targets.items() if t.standby},
            traffic=state.traffic.view(),
            symptoms=state.symptoms,
            anomaly={name: round(score, 4) for name, (_, score) in state.signals.anomaly.items()},
            anomaly_history={
                name: points
                for name, trail in state.signals.trails.items()
                if (points := trail.points(monotonic)) is not None
            },
            surprises={
                name: ShownSurprise(now - timedelta(seconds=monotonic - found.at), found)
                for name, found in state.signals.surprises.items()
            },
            samples_dropped=state.signals.dropped(),
        )

    def record_metrics(
        self, service: str, values: Mapping[str, float], *, at: float | None = None
    ) -> list[str]:
        """Samples of the service's metrics (pushed ones), at monotonic ``at`` (default now).
        Returns the names refused because the service has too many series."""
        state = self._services.get(service)
        if state is None:
            return []
        refused = state.signals.record(self._clock.monotonic() if at is None else at, values)
        self._look_for_symptoms(state)
        return refused

    def record_resources(self, service: str, memory: float, cpu: float, replicas: int) -> None:
        """The largest instance's memory (bytes) and CPU (% of a core), across ``replicas``."""
        state = self._services.get(service)
        if state is not None:
            state.replicas = replicas
            state.signals.record(self._clock.monotonic(), {MEMORY: memory, CPU: cpu})
            self._look_for_symptoms(state)

    def symptoms(self, service: str) -> tuple[Symptom, ...]:
        return self._services[service].symptoms

    def signals(self, service: str) -> ServiceSignals:
        """The service's metric series; none for a service just forgotten (a loop that took
        its list of services before the registry dropped one may still ask)."""
        state = self._services.get(service)
        return state.signals if state is not None else ServiceSignals()

    def reset_symptoms(self, service: str, spec: ServiceSpec) -> None:
        """Forget the signals and rule states (a recovery replaced the processes): what
        follows is judged on what the new ones do, not on the failure just recovered."""
        state = self._services[service]
        state.signals = ServiceSignals(spec.detection.min_requests)
        state.detector = SymptomDetector(spec, self._memory_total)
        if state.symptoms:
            state.symptoms = ()
            self._reaggregate(state, self._clock.now(), "symptoms cleared by the recovery")

    def _look_for_symptoms(self, state: _Service) -> None:
        if state.detector is None:
            return
        found = state.detector.evaluate(self._clock.monotonic(), state.signals, state.replicas)
        if [s.failure_type for s in found] == [s.failure_type for s in state.symptoms]:
            state.symptoms = found  # same kinds, fresher evidence
            return
        state.symptoms = found
        reason = found[0].summary if found else "symptoms cleared"
        self._reaggregate(state, self._clock.now(), reason)

    def record_traffic(self, service: str, counters: TrafficCounters) -> None:
        """A sample of the service's router counters."""
        state = self._services.get(service)
        if state is not None:
            state.signals.record_traffic(self._clock.monotonic(), counters)
            self._look_for_symptoms(state)
            state.traffic.record(self._clock.monotonic(), counters)

    def mark_unobserved(self, at: datetime) -> None:
        """Phoenix stops watching (shutdown): close every uptime interval honestly."""
        for state in self._services.values():
            state.uptime.record(at, None)
