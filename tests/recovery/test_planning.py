"""Planning without I/O: plan_restart (strategies.py), decide (selecting.py) and should_run
(executing.py)."""

from __future__ import annotations

import signal
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from phoenix_server.domain.errors import InvalidRequestError, UnsupportedStrategyError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.recoveries import (
    Candidate,
    DecisionSource,
    PlannedStep,
    StepCondition,
    Strategy,
)
from phoenix_server.domain.services import (
    Backup,
    HealthPolicy,
    Instance,
    InstanceState,
    PlatformKind,
    ProcessCheck,
    ProcessRun,
    Replicas,
    Resources,
    ServiceSpec,
    StopPolicy,
)
from phoenix_server.recovery.executing import should_run
from phoenix_server.recovery.selecting import DEFAULT_TABLE, escalated, table_decision
from phoenix_server.recovery.strategies import (
    PLANNERS,
    PlanInput,
    plan_container_restart,
    plan_deploy,
    plan_for,
    plan_restart,
)

ALL = frozenset(Strategy)
RESTART_ONLY = frozenset({Strategy.RESTART})


def service(
    *, grace: float = 10.0, startup_timeout: float = 30.0, replicas: Replicas | None = None
) -> ServiceSpec:
    return ServiceSpec(
        name="azora-auth",
        platform=PlatformKind.LOCAL,
        health=HealthPolicy(
            check=ProcessCheck(),
            interval=2.0,
            timeout=1.0,
            failure_threshold=2,
            startup_timeout=startup_timeout,
        ),
        run=ProcessRun(("run",)),
        stop=StopPolicy(signal=signal.SIGTERM, grace=grace),
        replicas=replicas or Replicas(),
    )


# --- plan_restart ------------------------------------------------------------------------------


def restart_steps(spec: ServiceSpec, *instances: Instance) -> tuple[PlannedStep, ...]:
    plan = plan_restart(PlanInput(spec, instances))
    assert plan.requires_verification, "a restart succeeds only once verified healthy"
    return plan.steps


def test_restart_plan_steps_in_order() -> None:
    plan = restart_steps(service())
    assert [(s.name, s.action) for s in plan] == [
        ("Graceful shutdown", "stop_instances"),
        ("Service restart", "start_instances"),
        ("Health verification", "verify_health"),
        ("Traffic restoration", "restore_traffic"),
    ]
    assert all(s.condition is StepCondition.ALWAYS and s.abort_on_failure for s in plan)


def test_restart_plan_timeouts_derive_from_the_service() -> None:
    plan = restart_steps(service(grace=4.0, startup_timeout=12.0))
    assert [s.timeout for s in plan] == [10.0 + 4.0 + 15.0, 30.0, 12.0, 10.0]


def test_restart_plan_with_default_policies() -> None:
    plan = restart_steps(service())
    assert plan[0] == PlannedStep("Graceful shutdown", "stop_instances", 35.0)
    assert plan[2].timeout == 30.0


@pytest.mark.parametrize(
    ("replicas", "count"), [(Replicas(1, 1), 1), (Replicas(0, 1), 1), (Replicas(3, 4), 3)]
)
def test_restart_starts_replicas_min_but_at_least_one(replicas: Replicas, count: int) -> None:
    plan = restart_steps(service(replicas=replicas))
    assert plan[1].params == {"count": count}
    assert all(not s.params for i, s in enumerate(plan) if i != 1)


def test_restart_starts_as_many_as_were_running() -> None:
    spec = service(replicas=Replicas(1, 4))
    running = [
        Instance(f"api-{n}", "api", PlatformKind.LOCAL, state, datetime(2025, 1, 1, tzinfo=UTC))
        for n, state in enumerate(
            (InstanceState.RUNNING, InstanceState.RUNNING, InstanceState.EXITED)
        )
    ]
    assert restart_steps(spec, *running)[1].params == {"count": 2}


def test_restart_is_the_registered_planner() -> None:
    assert PLANNERS[PlatformKind.LOCAL, Strategy.RESTART] is plan_restart
    assert PLANNERS[PlatformKind.DOCKER, Strategy.RESTART] is plan_container_restart


def live(*ids: str) -> list[Instance]:
    at = datetime(2025, 1, 1, tzinfo=UTC)
    return [Instance(i, "api", PlatformKind.LOCAL, InstanceState.RUNNING, at) for i in ids]


def test_zero_downtime_starts_each_replacement_before_stopping_the_old() -> None:
    spec = replace(service(), routed=True, port=8080, zero_downtime=True)
    plan = restart_steps(spec, *live("api-1"))
    assert [(s.name, s.action, s.params) for s in plan] == [
        ("Replacement start", "start_instances", {"count": 1}),
        ("Health verification", "verify_health", {}),
        ("Traffic switch", "restore_traffic", {}),
        ("Graceful shutdown of the old", "stop_instances", {"instances": ["api-1"]}),
    ]


def test_routed_restart_without_zero_downtime_stops_first() -> None:
    spec = replace(service(), routed=True, port=8080)
    plan = restart_steps(spec, *live("api-1"))
    assert plan[0].action == "stop_instances" and plan[0].params == {"instances": ["api-1"]}


def test_containers_with_replicas_start_the_replacement_first_one_at_a_time() -> None:
    spec = replace(service(), platform=PlatformKind.DOCKER, routed=True, port=8080)
    two = plan_container_restart(PlanInput(spec, tuple(live("c-1", "c-2")))).steps
    assert [s.name for s in two][::4] == [
        "Replacement start (1/2: c-1)",
        "Replacement start (2/2: c-2)",
    ]
    assert two[3].params == {"instances": ["c-1"]} and two[7].params == {"instances": ["c-2"]}
    one = plan_container_restart(PlanInput(spec, tuple(live("c-1")))).steps
    assert one[0].action == "stop_instances", "one container, not declared zero_downtime"


# --- decide: the default table -----------------------------------------------------------------

FIRST_CHOICE = {
    FailureType.HIGH_ERROR_RATE: Strategy.RESTART,
    FailureType.MEMORY_LEAK: Strategy.ROLLBACK,
    FailureType.HIGH_LOAD: Strategy.SCALE,
    FailureType.SERVICE_DOWN: Strategy.FAILOVER,
    FailureType.CASCADING: Strategy.CIRCUIT_BREAK,
    FailureType.LATENCY_DEGRADATION: Strategy.SCALE,
    FailureType.UNKNOWN: Strategy.RESTART,
}


@pytest.mark.parametrize("failure_type", list(FailureType))
def test_default_table_first_choice_when_everything_is_supported(failure_type: FailureType) -> None:
    decision = table_decision(service="azora-auth", failure_type=failure_type, supported=ALL)
    assert decision.strategy is FIRST_CHOICE[failure_type]
    assert decision.source is DecisionSource.DEFAULT
    assert decision.reason == (
        f"default table: {failure_type.value} → {FIRST_CHOICE[failure_type].value}"
    )
    preferred = DEFAULT_TABLE[failure_type]
    assert [c.strategy for c in decision.candidates] == list(preferred)
    assert [c.score for c in decision.candidates] == [
        round(1 / (rank + 1), 3) for rank in range(len(preferred))
    ]


def test_the_seed_decision_logic_is_the_default_table() -> None:
    assert set(DEFAULT_TABLE) == set(FailureType)
    assert {t: s[0] for t, s in DEFAULT_TABLE.items()} == FIRST_CHOICE


def test_unsupported_preferences_are_skipped_with_a_reason() -> None:
    decision = table_decision(
        service="azora-auth", failure_type=FailureType.SERVICE_DOWN, supported=RESTART_ONLY
    )
    assert decision.strategy is Strategy.RESTART
    assert decision.candidates == (
        Candidate(Strategy.FAILOVER, 0.0),
        Candidate(Strategy.RESTART, 0.5),
    )
    assert decision.reason == (
        "default table: service_down → restart (failover not available for this service)"
    )


def test_memory_leak_without_a_known_good_version_restarts() -> None:
    decision = table_decision(
        service="azora-auth", failure_type=FailureType.MEMORY_LEAK, supported=RESTART_ONLY
    )
    assert decision.strategy is Strategy.RESTART
    assert "rollback not available" in decision.reason


def test_nothing_in_the_table_supported_falls_back_to_a_supported_strategy() -> None:
    decision = table_decision(
        service="azora-auth", failure_type=FailureType.HIGH_LOAD, supported=RESTART_ONLY
    )
    assert decision.strategy is Strategy.RESTART
    assert decision.candidates == (
        Candidate(Strategy.SCALE, 0.0),
        Candidate(Strategy.CIRCUIT_BREAK, 0.0),
        Candidate(Strategy.RESTART, 0.1),
    )
    assert decision.reason == (
        "default table: high_load → restart (scale, circuit_break not available for this service)"
    )


@pytest.mark.parametrize(
    ("failure_type", "failed", "chosen"),
    [
        (FailureType.CASCADING, [], Strategy.CIRCUIT_BREAK),
        (FailureType.CASCADING, [Strategy.CIRCUIT_BREAK], Strategy.RESTART),
        (FailureType.SERVICE_DOWN, [Strategy.RESTART], Strategy.FAILOVER),
        (FailureType.SERVICE_DOWN, [Strategy.RESTART, Strategy.FAILOVER], Strategy.FAILOVER),
        (FailureType.HIGH_LOAD, [Strategy.SCALE], Strategy.CIRCUIT_BREAK),
        (FailureType.MEMORY_LEAK, [Strategy.ROLLBACK], Strategy.RESTART),
    ],
)
def test_a_failed_strategy_escalates_to_the_tables_next_choice(
    failure_type: FailureType, failed: list[Strategy], chosen: Strategy
) -> None:
    supported = escalated(failure_type, ALL, failed)
    decision = table_decision(service="x", failure_type=failure_type, supported=supported)
    assert decision.strategy is chosen


def test_the_chosen_strategy_is_always_supported() -> None:
    for failure_type in FailureType:
        for strategy in Strategy:
            supported = frozenset({strategy})
            decision = table_decision(service="s", failure_type=failure_type, supported=supported)
            assert decision.strategy in supported


# --- decide: an explicit request ---------------------------------------------------------------


def test_requested_strategy_is_a_manual_decision() -> None:
    decision = table_decision(
        service="azora-auth",
        failure_type=FailureType.HIGH_LOAD,
        supported=RESTART_ONLY,
        requested=Strategy.RESTART,
    )
    assert decision.strategy is Strategy.RESTART
    assert decision.source is DecisionSource.MANUAL
    assert decision.reason == "restart requested by the operator"
    assert decision.candidates == (Candidate(Strategy.RESTART, 1.0),)


def test_requested_unsupported_strategy_lists_what_is_supported() -> None:
    with pytest.raises(UnsupportedStrategyError) as caught:
        table_decision(
            service="azora-auth",
            failure_type=FailureType.UNKNOWN,
            supported=frozenset({Strategy.RESTART, Strategy.SCALE}),
            requested=Strategy.ROLLBACK,
        )
    assert caught.value.message == (
        "service 'azora-auth' cannot use strategy 'rollback'; it supports: restart, scale"
    )
    assert caught.value.code == "unsupported_strategy"
    assert isinstance(caught.value, InvalidRequestError)


@pytest.mark.parametrize("requested", [None, Strategy.RESTART])
def test_nothing_supported_says_the_service_is_only_monitored(requested: Strategy | None) -> None:
    with pytest.raises(UnsupportedStrategyError) as caught:
        table_decision(
            service="azora-edge",
            failure_type=FailureType.SERVICE_DOWN,
            supported=frozenset(),
            requested=requested,
        )
    assert "'azora-edge'" in caught.value.message
    assert "supports no recovery strategy" in caught.value.message
    assert "only monitored" in caught.value.message


# --- should_run --------------------------------------------------------------------------------

S = ServiceStatus


@pytest.mark.parametrize(
    ("condition", "previous_ok", "status", "expected"),
    [
        (StepCondition.ALWAYS, None, S.UNHEALTHY, True),
        (StepCondition.ALWAYS, False, S.HEALTHY, True),
        (StepCondition.ALWAYS, True, S.UNKNOWN, True),
        (StepCondition.IF_PREVIOUS_FAILED, False, S.HEALTHY, True),
        (StepCondition.IF_PREVIOUS_FAILED, True, S.UNHEALTHY, False),
        (StepCondition.IF_PREVIOUS_FAILED, None, S.UNHEALTHY, False),
        (StepCondition.IF_PREVIOUS_SUCCEEDED, True, S.UNHEALTHY, True),
        (StepCondition.IF_PREVIOUS_SUCCEEDED, False, S.HEALTHY, False),
        (StepCondition.IF_PREVIOUS_SUCCEEDED, None, S.HEALTHY, True),
        (StepCondition.IF_HEALTHY, True, S.HEALTHY, True),
        (StepCondition.IF_HEALTHY, True, S.DEGRADED, True),
        (StepCondition.IF_HEALTHY, True, S.UNHEALTHY, False),
        (StepCondition.IF_HEALTHY, True, S.UNKNOWN, False),
        (StepCondition.IF_UNHEALTHY, False, S.UNHEALTHY, True),
        (StepCondition.IF_UNHEALTHY, False, S.UNKNOWN, True),
        (StepCondition.IF_UNHEALTHY, False, S.HEALTHY, False),
        (StepCondition.IF_UNHEALTHY, False, S.DEGRADED, False),
    ],
)
def test_should_run(
    condition: StepCondition, previous_ok: bool | None, status: ServiceStatus, expected: bool
) -> None:
    assert should_run(condition, previous_ok, status) is expected


def test_should_run_answers_for_every_condition() -> None:
    for condition in StepCondition:
        for previous_ok in (None, True, False):
            for status in ServiceStatus:
                assert isinstance(should_run(condition, previous_ok, status), bool)


# --- plan_rollback / plan_deploy --------------------------------------------------------------


def running(instance_id: str) -> Instance:
    started = datetime(2025, 1, 1, tzinfo=UTC)
    return Instance(instance_id, "azora-auth", PlatformKind.LOCAL, InstanceState.RUNNING, started)


def routed_with_hooks(*hooks: str) -> ServiceSpec:
    return replace(
        service(replicas=Replicas(2, 2)),
        routed=True,
        port=8080,
        hooks={hook: ("true",) for hook in hooks},
    )


def test_rollback_replaces_replicas_one_at_a_time_then_migrates_and_validates() -> None:
    spec = routed_with_hooks("data_migration", "smoke")
    a, b = running("a"), running("b")
    plan = plan_for(Strategy.ROLLBACK, PlanInput(spec, (a, b), version="v1"))
    assert plan.requires_verification
    names = [(s.name, s.action) for s in plan.steps]
    assert names[:4] == [
        ("Graceful shutdown (1/2: a)", "stop_instances"),
        ("Deploy v1 (1/2: a)", "start_instances"),
        ("Health verification (1/2: a)", "verify_health"),
        ("Traffic restoration (1/2: a)", "restore_traffic"),
    ]
    assert names[4][0] == "Graceful shutdown (2/2: b)"
    assert names[8:] == [
        ("Data migration", "run_hook"),
        ("Validation: health", "verify_health"),
        ("Validation: smoke test", "run_hook"),
    ]
    assert plan.steps[8].params == {"hook": "data_migration"}
    assert plan.steps[10].params == {"hook": "smoke"}


def test_rollback_without_hooks_validates_health_only_and_needs_a_version() -> None:
    plan = plan_for(Strategy.ROLLBACK, PlanInput(service(), (), version="v1"))
    assert [s.name for s in plan.steps][-1] == "Validation: health"
    assert not any(s.action == "run_hook" for s in plan.steps)
    with pytest.raises(UnsupportedStrategyError, match="known-good version"):
        plan_for(Strategy.ROLLBACK, PlanInput(service(), ()))


def test_deploy_is_a_rollback_without_the_data_migration() -> None:
    spec = routed_with_hooks("data_migration", "smoke")
    plan = plan_deploy(PlanInput(spec, (running("a"),), version="v3"))
    assert [s.name for s in plan.steps] == [
        "Graceful shutdown",
        "Deploy v3",
        "Health verification",
        "Traffic restoration",
        "Validation: health",
        "Validation: smoke test",
    ]


def test_a_version_change_keeps_instances_already_on_the_version() -> None:
    spec = routed_with_hooks()
    on_new = replace(running("a"), version="v3")
    on_old = replace(running("b"), version="v2")
    plan = plan_for(Strategy.ROLLBACK, PlanInput(spec, (on_new, on_old), version="v2"))
    assert [s.name for s in plan.steps][:2] == ["Graceful shutdown", "Deploy v2"]
    assert plan.steps[0].params == {"instances": ["a"]}, "the v2 replica keeps serving"


def test_a_version_change_replaces_the_hot_standby_last() -> None:
    spec = replace(routed_with_hooks("smoke"), backup=Backup("hot"))
    plan = plan_deploy(PlanInput(spec, (running("a"),), version="v3"))
    assert [(s.name, s.action) for s in plan.steps][-2:] == [
        ("Validation: smoke test", "run_hook"),
        ("Standby replacement", "replace_standby"),
    ]


def test_scaling_out_a_service_with_declared_resources_allocates_them() -> None:
    spec = replace(routed_with_hooks(), replicas=Replicas(1, 3), resources=Resources(nice=5))
    plan = plan_for(Strategy.SCALE, PlanInput(spec, (running("a"),)))
    assert [s.name for s in plan.steps] == [
        "Add replicas",
        "Resource allocation",
        "Health verification",
        "Load balancer reconfiguration",
        "Capacity verification",
    ]
