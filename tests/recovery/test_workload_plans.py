"""Plans for a cluster's workloads: API calls, each followed by watching the rollout it causes
and verifying the new pods — never a process started or stopped by Phoenix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import UnsupportedStrategyError
from phoenix_server.domain.recoveries import Strategy
from phoenix_server.recovery.strategies import PlanInput, plan_deploy_for, plan_for

SPEC = svc.ServiceSpec(
    name="web",
    platform=svc.PlatformKind.KUBERNETES,
    health=svc.HealthPolicy(
        check=svc.HttpCheck("http://{address}:{port}/"),
        interval=1,
        timeout=1,
        failure_threshold=1,
        startup_timeout=20,
    ),
    run=svc.KubernetesWorkload(namespace="shop", name="web"),
    replicas=svc.Replicas(min=2, max=5, step=2),
    versions=(svc.Version("v1", image="web:1"), svc.Version("v2", image="web:2")),
)


def pods(*names: str) -> tuple[svc.Instance, ...]:
    at = datetime(2026, 12, 4, tzinfo=UTC)
    return tuple(
        svc.Instance(name, "web", svc.PlatformKind.KUBERNETES, svc.InstanceState.RUNNING, at)
        for name in names
    )


def actions(plan_steps: tuple[object, ...]) -> list[tuple[str, dict[str, object]]]:
    return [(step.action, dict(step.params)) for step in plan_steps]  # type: ignore[attr-defined]


def test_a_restart_deletes_only_the_failing_pods_when_others_still_serve() -> None:
    plan = plan_for(Strategy.RESTART, PlanInput(SPEC, pods("a", "b", "c"), only=frozenset({"b"})))
    assert actions(plan.steps) == [
        ("replace_instances", {"instances": ["b"]}),
        ("await_rollout", {"replaced": [["b", "2026-12-04T00:00:00+00:00"]]}),
        ("verify_health", {}),
    ]


def test_a_restart_with_every_pod_failing_is_a_rollout_restart() -> None:
    everyone = frozenset({"a", "b"})
    for only in (everyone, None):
        plan = plan_for(Strategy.RESTART, PlanInput(SPEC, pods("a", "b"), only=only))
        assert [a for a, _ in actions(plan.steps)] == [
            "restart_workload",
            "await_rollout",
            "verify_health",
        ]


def test_a_rollback_rolls_the_workload_to_the_version_and_validates_the_rollout() -> None:
    plan = plan_for(Strategy.ROLLBACK, PlanInput(SPEC, pods("a"), version="v1"))
    assert actions(plan.steps) == [
        ("roll_to", {"version": "v1"}),
        ("await_rollout", {}),
        ("verify_health", {}),
    ]
    assert plan.steps[-1].name == "Validation: health"
    assert plan.steps[-1].timeout == 20


def test_a_rollback_without_a_target_is_refused() -> None:
    with pytest.raises(UnsupportedStrategyError, match="known-good version"):
        plan_for(Strategy.ROLLBACK, PlanInput(SPEC, pods("a")))


def test_a_deploy_on_a_cluster_is_the_same_rollout() -> None:
    plan = plan_deploy_for(PlanInput(SPEC, pods("a"), version="v2"))
    assert [a for a, _ in actions(plan.steps)] == ["roll_to", "await_rollout", "verify_health"]


def test_scaling_adds_the_declared_step_within_the_maximum_and_verifies_capacity() -> None:
    plan = plan_for(Strategy.SCALE, PlanInput(SPEC, pods("a", "b")))
    assert actions(plan.steps) == [
        ("scale_workload", {"replicas": 4}),
        ("await_rollout", {"replicas": 4}),
        ("verify_health", {}),
        ("verify_capacity", {"replicas": 4}),
    ]
    capped = plan_for(Strategy.SCALE, PlanInput(SPEC, pods("a", "b", "c", "d")))
    assert actions(capped.steps)[0] == ("scale_workload", {"replicas": 5})


def test_a_failover_switches_the_service_to_the_backup_and_verifies_it() -> None:
    plan = plan_for(Strategy.FAILOVER, PlanInput(SPEC, pods("a", "b")))
    assert actions(plan.steps) == [("switch_traffic", {"role": "backup"}), ("verify_health", {})]


def test_circuit_breaking_isolates_the_failing_pods_then_closes_without_half_open_steps() -> None:
    plan = plan_for(Strategy.CIRCUIT_BREAK, PlanInput(SPEC, pods("a", "b"), only=frozenset({"b"})))
    assert actions(plan.steps) == [
        ("open_circuit", {"instances": ["b"]}),
        ("wait", {"seconds": SPEC.circuit.open_for}),
        ("close_circuit", {}),
        ("await_rollout", {}),
        ("verify_health", {}),
    ]
