"""Which playbook answers a failure (recovery/playbook_choice.py) and how a playbook becomes
a plan and a preview (recovery/playbook_runs.py)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.detection.signals import ServiceSignals
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.domain.playbooks import (
    Playbook,
    PlaybookStatus,
    PlaybookStep,
    PlaybookTrigger,
    TriggerType,
)
from phoenix_server.domain.recoveries import StepCondition, Strategy
from phoenix_server.recovery.playbook_choice import choose, trigger_matches
from phoenix_server.recovery.playbook_runs import main_strategy, plan_playbook, preview

T0 = datetime(2025, 11, 25, tzinfo=UTC)


def playbook(
    name: str,
    *triggers: PlaybookTrigger,
    service: str | None = "api",
    priority: int = 0,
    age: int = 0,
    steps: tuple[PlaybookStep, ...] = (PlaybookStep("restart_service"),),
    status: PlaybookStatus = PlaybookStatus.ACTIVE,
) -> Playbook:
    created = T0 - timedelta(minutes=age)
    return Playbook(
        id=f"pb-{name}",
        name=name,
        triggers=triggers,
        steps=steps,
        created_at=created,
        updated_at=created,
        service=service,
        priority=priority,
        status=status,
    )


def incident(kind: FailureType) -> Incident:
    return Incident("inc-1", "api", kind, IncidentStatus.OPEN, T0)


DOWN = PlaybookTrigger(TriggerType.SERVICE_DOWN)
ERRORS = PlaybookTrigger(TriggerType.ERROR_RATE, threshold=0.1, duration=5)


def signals_with(metric: str, values: list[float]) -> ServiceSignals:
    signals = ServiceSignals()
    for t, value in enumerate(values):
        signals.record(float(t), {metric: value})
    return signals


def test_a_threshold_trigger_needs_every_sample_over_its_duration() -> None:
    held = signals_with("error_rate", [0.0] + [0.3] * 7)
    assert trigger_matches(ERRORS, None, held, now=7.0)
    dipped = signals_with("error_rate", [0.0] + [0.3] * 3 + [0.05] + [0.3] * 3)
    assert not trigger_matches(ERRORS, None, dipped, now=7.0)
    young = signals_with("error_rate", [0.3] * 3)
    assert not trigger_matches(ERRORS, None, young, now=2.0), "not watched 5 s yet"


def test_failure_type_triggers_match_the_incident() -> None:
    leak = PlaybookTrigger(TriggerType.FAILURE_TYPE, params={"failureType": "memory_leak"})
    empty = ServiceSignals()
    assert trigger_matches(leak, incident(FailureType.MEMORY_LEAK), empty, 0.0)
    assert not trigger_matches(leak, incident(FailureType.HIGH_LOAD), empty, 0.0)
    assert trigger_matches(DOWN, incident(FailureType.SERVICE_DOWN), empty, 0.0)
    manual = PlaybookTrigger(TriggerType.MANUAL)
    assert not trigger_matches(manual, incident(FailureType.SERVICE_DOWN), empty, 0.0)


def test_service_bound_beats_global_then_priority_then_age_and_never_two() -> None:
    down = incident(FailureType.SERVICE_DOWN)
    empty = ServiceSignals()
    candidates = [
        playbook("global-high", DOWN, service=None, priority=100),
        playbook("bound-low", DOWN, priority=-5, age=10),
        playbook("bound-high-new", DOWN, priority=5, age=1),
        playbook("bound-high-old", DOWN, priority=5, age=2),
        playbook("other-service", DOWN, service="web", priority=999),
        playbook("disabled", DOWN, priority=1000, status=PlaybookStatus.DISABLED),
    ]
    chosen = choose(candidates, "api", down, empty, 0.0)
    assert chosen is not None and chosen.name == "bound-high-old"
    only_global = choose(candidates[:1], "api", down, empty, 0.0)
    assert only_global is not None and only_global.name == "global-high"
    assert choose(candidates[:1], "api", incident(FailureType.HIGH_LOAD), empty, 0.0) is None


SPEC = parse_service_file(
    "services:\n  - name: api\n    command: [run]\n    port: 8080\n",
    source="s",
    base_dir=Path("/srv"),
    default_interval=1.0,
).get("api")


def test_a_playbook_plan_keeps_its_steps_and_conditions_and_ends_with_a_verdict() -> None:
    book = playbook(
        "seed",
        DOWN,
        steps=(
            PlaybookStep("restart_connection_pool", timeout=30),
            PlaybookStep(
                "scale", condition=StepCondition.IF_PREVIOUS_FAILED, params={"replicas": 2}
            ),
            PlaybookStep("wait", params={"seconds": 3}),
        ),
    )
    plan = plan_playbook(book, SPEC)
    assert [(s.name, s.action, s.condition) for s in plan.steps] == [
        ("Restart connection pool", "http_request", StepCondition.ALWAYS),
        ("Scale", "run_strategy", StepCondition.IF_PREVIOUS_FAILED),
        ("Wait", "wait", StepCondition.ALWAYS),
        ("Outcome: health verification", "verify_health", StepCondition.ALWAYS),
    ]
    assert plan.steps[0].params["named"] == "restart_connection_pool"
    assert plan.steps[1].params["strategy"] == "scale"
    assert not any(s.abort_on_failure for s in plan.steps), "conditions decide, not a failure"
    assert main_strategy(book) is Strategy.SCALE


@pytest.mark.parametrize(
    ("condition", "serving", "would"),
    [
        (StepCondition.ALWAYS, True, "run"),
        (StepCondition.IF_HEALTHY, False, "skip"),
        (StepCondition.IF_UNHEALTHY, False, "run"),
        (StepCondition.IF_PREVIOUS_FAILED, True, "skip"),
        (StepCondition.IF_PREVIOUS_SUCCEEDED, True, "run"),
    ],
)
def test_a_preview_of_the_first_step(condition: StepCondition, serving: bool, would: str) -> None:
    book = playbook("p", DOWN, steps=(PlaybookStep("notify", condition=condition),))
    first = preview(book, SPEC, (), serving=serving, rollback_to=None)[0]
    assert first.would == would


def test_a_preview_says_a_rollback_without_a_target_would_fail() -> None:
    book = playbook("p", DOWN, steps=(PlaybookStep("rollback"),))
    [step, _] = preview(book, SPEC, (), serving=True, rollback_to=None)
    assert "no known-good version" in step.why and step.plan == ()


def test_a_preview_says_a_strategy_step_would_fail_where_the_platform_has_no_plan() -> None:
    external = parse_service_file(
        "services:\n  - name: api\n    platform: external\n    health: {tcp: 'h:1'}\n",
        source="s",
        base_dir=Path("/srv"),
        default_interval=1.0,
    ).get("api")
    book = playbook("p", DOWN, steps=(PlaybookStep("restart_service"),))
    [step, _] = preview(book, external, (), serving=False, rollback_to=None)
    assert "this step would fail: Phoenix has no restart plan for services on the" in step.why
    assert step.plan == ()


@pytest.mark.parametrize(
    ("trigger", "metric", "value", "matches"),
    [
        (PlaybookTrigger(TriggerType.MEMORY, threshold=100), "memory_rss", 150 * 1024 * 1024, True),
        (PlaybookTrigger(TriggerType.MEMORY, threshold=100), "memory_rss", 50 * 1024 * 1024, False),
        (PlaybookTrigger(TriggerType.CPU, threshold=80), "cpu", 95.0, True),
        (
            PlaybookTrigger(TriggerType.LATENCY, threshold=500, params={"percentile": 95}),
            "latency_p95",
            800.0,
            True,
        ),
        (
            PlaybookTrigger(TriggerType.LATENCY, threshold=500, params={"percentile": 95}),
            "latency_p99",
            800.0,
            False,
        ),
    ],
)
def test_metric_triggers_read_their_series_in_their_units(
    trigger: PlaybookTrigger, metric: str, value: float, matches: bool
) -> None:
    assert trigger_matches(trigger, None, signals_with(metric, [value]), now=0.0) is matches


def steady_queue(until: int) -> ServiceSignals:
    """``queue_depth`` about 10 every second up to ``until``, scored by the real detector."""
    signals = ServiceSignals()
    noise = random.Random(1)
    for at in range(until):
        signals.record(float(at), {"queue_depth": 10 + noise.random()})
    return signals


def test_an_anomaly_score_trigger_matches_a_recent_anomaly() -> None:
    trigger = PlaybookTrigger(TriggerType.ANOMALY_SCORE, threshold=0.5, duration=10)
    signals = steady_queue(600)
    assert not trigger_matches(trigger, None, signals, now=600.0), "nothing news yet"
    signals.record(600.0, {"queue_depth": 500.0})
    # A calm sample after it (the same push, say): the series' latest score is 0 again,
    # but the threshold was reached within the duration.
    signals.record(601.0, {"queue_depth": 10.4})
    assert signals.anomaly["queue_depth"] == (601.0, 0.0)
    assert trigger_matches(trigger, None, signals, now=605.0)
    assert not trigger_matches(trigger, None, signals, now=615.0), "too long ago"
    higher = PlaybookTrigger(TriggerType.ANOMALY_SCORE, threshold=1.01, duration=10)
    assert not trigger_matches(higher, None, signals, now=605.0), "not anomalous enough"
