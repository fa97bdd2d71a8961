"""Strategies as plain functions that *plan*: what is known about a service in, a
:class:`Plan` (steps as data) out.

Planning does no I/O and needs no event loop, so every plan can be tested on its own; the
executor carries the steps out. A planner takes one :class:`PlanInput`, so what planners
are told can grow (history for rollback, callers for circuit breaking) without changing
their signature. Register a planner in :data:`PLANNERS` under its platform and strategy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from phoenix_server.domain.errors import UnsupportedStrategyError
from phoenix_server.domain.recoveries import PlannedStep, Strategy
from phoenix_server.domain.services import Instance, PlatformKind, ServiceSpec

STOP_MARGIN = 15.0
"""Seconds beyond the stop grace period for SIGKILL and reaping."""
START_TIMEOUT = 30.0
TRAFFIC_TIMEOUT = 10.0
HOOK_TIMEOUT = 60.0


@dataclass(frozen=True)
class PlanInput:
    service: ServiceSpec
    instances: tuple[Instance, ...] = ()
    """What the platform runs for the service now (live or exited, not yet replaced)."""
    only: frozenset[str] | None = None
    """Replace just these instances (the failing replicas of a degraded service)."""
    version: str | None = None
    """The version a rollback or deploy moves to (``service`` already names it deployed)."""


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlannedStep, ...]
    requires_verification: bool = True
    """Success needs the service verified healthy by a step; a plan that ends in a declared
    partial state (an open circuit awaiting restoration) says False."""


Planner = Callable[[PlanInput], Plan]


def plan_restart(given: PlanInput) -> Plan:
    """Graceful shutdown → clean start → health verification → traffic restored.

    A routed service with instances is restarted one instance at a time, each drained
    before it stops and replaced before the next: with two replicas or more, clients lose
    nothing. Declared ``zero_downtime``, each replacement is started, verified and put in
    rotation first, and only then is the old one drained and stopped (capacity never
    drops; a hung instance stops taking traffic as soon as its replacement takes it).
    Without a router (or with nothing running) the service restarts as a whole.
    """
    return _restart(given, start_first=given.service.zero_downtime)


def plan_container_restart(given: PlanInput) -> Plan:
    """As :func:`plan_restart`, and with replicas the replacement always starts first:
    containers are cheap to start beside the old one, and a replica is never missing."""
    replicas = max(given.service.replicas.min, len(given.instances))
    return _restart(given, start_first=given.service.zero_downtime or replicas > 1)


def _restart(given: PlanInput, *, start_first: bool) -> Plan:
    service = given.service
    targets = [i for i in given.instances if given.only is None or i.id in given.only]
    if service.routed and targets:
        steps: list[PlannedStep] = []
        for index, instance in enumerate(targets, start=1):
            suffix = f" ({index}/{len(targets)}: {instance.id})" if len(targets) > 1 else ""
            if start_first:
                steps += _replace_first_steps(service, suffix, instance.id)
            else:
                steps += _restart_steps(service, suffix, instances=[instance.id], count=1)
        return Plan(tuple(steps))
    count = max(1, service.replicas.min, sum(1 for i in given.instances if i.alive))
    return Plan(tuple(_restart_steps(service, "", instances=None, count=count)))


def _replace_first_steps(service: ServiceSpec, suffix: str, old: str) -> list[PlannedStep]:
    return [
        PlannedStep(
            f"Replacement start{suffix}", "start_instances", START_TIMEOUT, params={"count": 1}
        ),
        PlannedStep(
            f"Health verification{suffix}", "verify_health", service.health.startup_timeout
        ),
        PlannedStep(f"Traffic switch{suffix}", "restore_traffic", TRAFFIC_TIMEOUT),
        PlannedStep(
            f"Graceful shutdown of the old{suffix}",
            "stop_instances",
            service.stop.drain + service.stop.grace + STOP_MARGIN,
            params={"instances": [old]},
        ),
    ]


def _restart_steps(
    service: ServiceSpec,
    suffix: str,
    *,
    instances: list[str] | None,
    count: int,
    start_name: str = "Service restart",
) -> list[PlannedStep]:
    stop_params: dict[str, object] = {} if instances is None else {"instances": instances}
    return [
        PlannedStep(
            f"Graceful shutdown{suffix}",
            "stop_instances",
            service.stop.drain + service.stop.grace + STOP_MARGIN,
            params=stop_params,
        ),
        PlannedStep(
            f"{start_name}{suffix}", "start_instances", START_TIMEOUT, params={"count": count}
        ),
        PlannedStep(
            f"Health verification{suffix}", "verify_health", service.health.startup_timeout
        ),
        PlannedStep(f"Traffic restoration{suffix}", "restore_traffic", TRAFFIC_TIMEOUT),
    ]


def _version_change_steps(given: PlanInput, verb: str) -> list[PlannedStep]:
    """Replace the instances with ones of ``given.version``: one at a time behind the router
    (each drained first, so clients lose nothing), else all at once. Behind the router,
    live instances already on the version are kept (after a failed deploy, the ones still
    on the old version are what serves) unless every instance is; dead ones are replaced
    whatever they ran; and the others go in the order given, so one that serves is never
    the first to stop while one that cannot is left."""
    service = given.service
    start_name = f"{verb} {given.version}"
    live = [i for i in given.instances if i.alive]
    if service.routed and live:
        targets = [i for i in given.instances if not i.alive or i.version != given.version] or live
        steps: list[PlannedStep] = []
        for index, instance in enumerate(targets, start=1):
            suffix = f" ({index}/{len(targets)}: {instance.id})" if len(targets) > 1 else ""
            steps += _restart_steps(
                service, suffix, instances=[instance.id], count=1, start_name=start_name
            )
        return steps
    count = max(1, service.replicas.min, len(live))
    return _restart_steps(service, "", instances=None, count=count, start_name=start_name)


def _validation_steps(service: ServiceSpec) -> list[PlannedStep]:
    steps = [PlannedStep("Validation: health", "verify_health", service.health.startup_timeout)]
    if "smoke" in service.hooks:
        steps.append(
            PlannedStep(
                "Validation: smoke test", "run_hook", HOOK_TIMEOUT, params={"hook": "smoke"}
            )
        )
    if service.backup is not None and service.backup.mode == "hot":
        # The backup must run the same version, or a failover would undo the change.
        steps.append(PlannedStep("Standby replacement", "replace_standby", START_TIMEOUT))
    return steps


def plan_rollback(given: PlanInput) -> Plan:
    """Deploy the last known-good version (found by the caller, ``given.version``) → the
    data-migration hook if declared → validation (health, then the smoke hook if declared)."""
    if given.version is None:
        raise UnsupportedStrategyError("rollback needs a known-good version to deploy")
    steps = _version_change_steps(given, "Deploy")
    if "data_migration" in given.service.hooks:
        steps.append(
            PlannedStep(
                "Data migration", "run_hook", HOOK_TIMEOUT, params={"hook": "data_migration"}
            )
        )
    return Plan((*steps, *_validation_steps(given.service)))


def plan_deploy(given: PlanInput) -> Plan:
    """An operator's roll forward (or back) to ``given.version``: replace the instances,
    then validate as a rollback does. Not a recovery strategy: the deployer runs it."""
    if given.version is None:
        raise UnsupportedStrategyError("deploy needs a version")
    return Plan((*_version_change_steps(given, "Deploy"), *_validation_steps(given.service)))


def plan_circuit_break(given: PlanInput) -> Plan:
    """Isolate (open) → wait → half-open, raising the share of traffic step by step while
    health holds → close → verify. Any failure while half-open reopens the circuit (the
    router does it at once) and fails the attempt: callers keep failing fast meanwhile."""
    service = given.service
    policy = service.circuit
    hold_timeout = policy.hold + TRAFFIC_TIMEOUT
    steps = [
        PlannedStep(
            "Isolate (open circuit)", "set_circuit", TRAFFIC_TIMEOUT, params={"mode": "open"}
        ),
        PlannedStep(
            "Wait before trying again", "wait", policy.open_for + TRAFFIC_TIMEOUT,
            params={"seconds": policy.open_for},
        ),
    ]  # fmt: skip
    for share in policy.steps:
        if share >= 1.0:
            break
        percent = f"{share * 100:g}%"
        steps.append(
            PlannedStep(
                f"Half-open: {percent} of traffic", "set_circuit", TRAFFIC_TIMEOUT,
                params={"mode": "half_open", "admit": share},
            )
        )  # fmt: skip
        steps.append(
            PlannedStep(f"Hold at {percent}", "hold", hold_timeout, params={"seconds": policy.hold})
        )
    steps.append(
        PlannedStep("Close circuit", "set_circuit", TRAFFIC_TIMEOUT, params={"mode": "closed"})
    )
    steps.append(
        PlannedStep("Health verification", "verify_health", service.health.startup_timeout)
    )
    return Plan(tuple(steps))


def plan_scale(given: PlanInput) -> Plan:
    """Add replicas → resources → verify them → reconfigure the router → verify capacity."""
    service = given.service
    live = sum(1 for i in given.instances if i.alive)
    target = min(service.replicas.max, live + service.replicas.step)
    added = max(1, target - live)
    resources = (
        [PlannedStep("Resource allocation", "apply_resources", TRAFFIC_TIMEOUT)]
        if service.resources.declared
        else []
    )
    return Plan(
        (
            PlannedStep(
                "Add replicas", "start_instances", START_TIMEOUT, params={"count": added}
            ),
            *resources,
            PlannedStep("Health verification", "verify_health", service.health.startup_timeout),
            PlannedStep("Load balancer reconfiguration", "restore_traffic", TRAFFIC_TIMEOUT),
            PlannedStep(
                "Capacity verification", "verify_capacity", TRAFFIC_TIMEOUT,
                params={"replicas": live + added},
            ),
        )
    )  # fmt: skip


def plan_failover(given: PlanInput) -> Plan:
    """Primary to backup switch → data sync (if declared) → routing update (the old primary
    drained and stopped) → consistency check → a new standby in the background."""
    service = given.service
    primaries = [i.id for i in given.instances]
    steps = [
        PlannedStep("Primary to backup switch", "promote_backup", service.health.startup_timeout)
    ]
    if "data_sync" in service.hooks:
        steps.append(
            PlannedStep(
                "Data synchronization", "run_hook", HOOK_TIMEOUT, params={"hook": "data_sync"}
            )
        )
    steps.append(
        PlannedStep(
            "Routing update", "stop_instances",
            service.stop.drain + service.stop.grace + STOP_MARGIN,
            params={"instances": primaries},
        )
    )  # fmt: skip
    if "consistency_check" in service.hooks:
        check = PlannedStep(
            "Consistency check", "run_hook", HOOK_TIMEOUT, params={"hook": "consistency_check"}
        )
    else:
        check = PlannedStep("Consistency check", "verify_health", service.health.startup_timeout)
    steps.append(check)
    steps.append(PlannedStep("Standby replacement", "start_standby", START_TIMEOUT))
    return Plan(tuple(steps))


# -- workloads a cluster runs (Kubernetes): an API call, then the rollout it causes ----------

ROLLOUT_TIMEOUT = 300.0
"""Seconds a rollout may take before the step gives up (a Deployment's own progress
deadline, 600 s by default, usually says it is stuck sooner through its pods' problems)."""


def _rollout_steps(
    service: ServiceSpec, name: str = "Health verification", **expect: object
) -> list[PlannedStep]:
    """Wait for the rollout (``expect``: the pods ``replaced`` gone, ``replicas`` asked for),
    then verify its pods."""
    return [
        PlannedStep("Rollout", "await_rollout", ROLLOUT_TIMEOUT, params=dict(expect)),
        PlannedStep(name, "verify_health", service.health.startup_timeout),
    ]


def plan_workload_restart(given: PlanInput) -> Plan:
    """Only the failing pods deleted (their controller replaces them) when some still
    serve; a rollout restart (as ``kubectl rollout restart`` does it) when all are bad."""
    service = given.service
    live = [i for i in given.instances if i.alive]
    failing = [i for i in live if given.only is not None and i.id in given.only]
    if failing and len(failing) < len(live):
        # A replacement may take the same name (a StatefulSet's pod): it is told from the
        # pod it replaces by when it was created.
        replaced = [[i.id, i.started_at.isoformat()] for i in failing]
        return Plan(
            (
                PlannedStep(
                    "Failing pods replaced", "replace_instances", TRAFFIC_TIMEOUT,
                    params={"instances": [i.id for i in failing]},
                ),
                *_rollout_steps(service, replaced=replaced),
            )
        )  # fmt: skip
    first = PlannedStep("Rollout restart", "restart_workload", TRAFFIC_TIMEOUT)
    return Plan((first, *_rollout_steps(service)))


def _workload_version_steps(given: PlanInput) -> list[PlannedStep]:
    return [
        PlannedStep(
            f"Deploy {given.version}",
            "roll_to",
            TRAFFIC_TIMEOUT,
            params={"version": given.version},
        ),
        *_rollout_steps(given.service, "Validation: health"),
    ]


def plan_workload_rollback(given: PlanInput) -> Plan:
    """The workload back to the known-good version: the template of the revision it proved
    good with while the cluster keeps it (``kubectl rollout undo --to-revision``), else its
    image → the rollout → validation."""
    if given.version is None:
        raise UnsupportedStrategyError("rollback needs a known-good version to deploy")
    return Plan(tuple(_workload_version_steps(given)))


def plan_workload_deploy(given: PlanInput) -> Plan:
    """An operator's deploy: the version's image through the workload → rollout → validation."""
    if given.version is None:
        raise UnsupportedStrategyError("deploy needs a version")
    return Plan(tuple(_workload_version_steps(given)))


def plan_workload_scale(given: PlanInput) -> Plan:
    """More replicas (through the autoscaler's floor when one owns the workload) → the
    rollout → every replica verified."""
    service = given.service
    live = sum(1 for i in given.instances if i.alive)
    target = min(service.replicas.max, max(live, service.replicas.min) + service.replicas.step)
    return Plan(
        (
            PlannedStep(
                "Add replicas", "scale_workload", TRAFFIC_TIMEOUT, params={"replicas": target}
            ),
            *_rollout_steps(service, replicas=target),
            PlannedStep(
                "Capacity verification", "verify_capacity", TRAFFIC_TIMEOUT,
                params={"replicas": target},
            ),
        )
    )  # fmt: skip


def plan_workload_failover(given: PlanInput) -> Plan:
    """The Service switched to the backup workload (once it has a pod available) → its pods
    verified. The platform switches back once the primary has stayed healthy."""
    service = given.service
    return Plan(
        (
            PlannedStep(
                "Primary to backup switch", "switch_traffic", TRAFFIC_TIMEOUT,
                params={"role": "backup"},
            ),
            PlannedStep("Consistency check", "verify_health", service.health.startup_timeout),
        )
    )  # fmt: skip


def plan_workload_circuit_break(given: PlanInput) -> Plan:
    """Failing pods out of the Service's endpoints (or the Service to the fallback) → wait →
    close: pods that recovered readmitted, the others replaced → rollout → verify. No
    half-open steps: a Service cannot admit a share of requests."""
    service = given.service
    failing = sorted(given.only) if given.only is not None else []
    return Plan(
        (
            PlannedStep(
                "Isolate (open circuit)", "open_circuit", TRAFFIC_TIMEOUT,
                params={"instances": failing},
            ),
            PlannedStep(
                "Wait before trying again", "wait", service.circuit.open_for + TRAFFIC_TIMEOUT,
                params={"seconds": service.circuit.open_for},
            ),
            PlannedStep("Close circuit", "close_circuit", TRAFFIC_TIMEOUT),
            *_rollout_steps(service),
        )
    )  # fmt: skip


PLANNERS: dict[tuple[PlatformKind, Strategy], Planner] = {
    (PlatformKind.LOCAL, Strategy.FAILOVER): plan_failover,
    (PlatformKind.LOCAL, Strategy.RESTART): plan_restart,
    (PlatformKind.LOCAL, Strategy.CIRCUIT_BREAK): plan_circuit_break,
    (PlatformKind.LOCAL, Strategy.SCALE): plan_scale,
    (PlatformKind.LOCAL, Strategy.ROLLBACK): plan_rollback,
    # Containers on the host's network behind the same router: the same plans, carried out
    # through the Docker platform's lifecycle and routing.
    (PlatformKind.DOCKER, Strategy.RESTART): plan_container_restart,
    (PlatformKind.DOCKER, Strategy.SCALE): plan_scale,
    (PlatformKind.DOCKER, Strategy.CIRCUIT_BREAK): plan_circuit_break,
    (PlatformKind.DOCKER, Strategy.ROLLBACK): plan_rollback,
    (PlatformKind.DOCKER, Strategy.FAILOVER): plan_failover,
    # A cluster's workloads: API calls, each followed by the rollout it causes.
    (PlatformKind.KUBERNETES, Strategy.RESTART): plan_workload_restart,
    (PlatformKind.KUBERNETES, Strategy.ROLLBACK): plan_workload_rollback,
    (PlatformKind.KUBERNETES, Strategy.SCALE): plan_workload_scale,
    (PlatformKind.KUBERNETES, Strategy.FAILOVER): plan_workload_failover,
    (PlatformKind.KUBERNETES, Strategy.CIRCUIT_BREAK): plan_workload_circuit_break,
}
"""The planner of each strategy on each platform: a platform that does a strategy its own
way (an API call and a watched rollout rather than processes and a router) registers its
own planner under its kind; the step handlers it names live beside it."""


DEPLOY_PLANNERS: dict[PlatformKind, Planner] = {PlatformKind.KUBERNETES: plan_workload_deploy}
"""An operator's deploy on a platform that does it its own way (default: :func:`plan_deploy`)."""


def plan_deploy_for(given: PlanInput) -> Plan:
    """The plan of a deploy of ``given.version`` on the service's platform."""
    return DEPLOY_PLANNERS.get(given.service.platform, plan_deploy)(given)


def plan_for(strategy: Strategy, given: PlanInput) -> Plan:
    """The plan of ``strategy`` for ``given.service`` on its platform."""
    kind = given.service.platform
    planner = PLANNERS.get((kind, strategy))
    if planner is None:
        message = f"Phoenix has no {strategy.value} plan for services on the {kind.value} platform"
        raise UnsupportedStrategyError(message)
    return planner(given)


DEFAULT_ESTIMATES: dict[Strategy, float] = {
    Strategy.RESTART: 10.0,
    Strategy.ROLLBACK: 60.0,
    Strategy.SCALE: 30.0,
    Strategy.FAILOVER: 15.0,
    Strategy.CIRCUIT_BREAK: 60.0,
}
"""Seconds quoted as ``estimatedDuration`` until a service has its own history."""
