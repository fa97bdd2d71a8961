"""The learned policy on deterministic seeds: it starts as the default table, learns which
strategy works per service and failure type, borrows from other services while a service
has little history, prefers the faster of equally reliable strategies, and never picks a
strategy the service cannot use."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta

from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.learning import AttemptOutcome, outcome_of
from phoenix_server.domain.recoveries import (
    Decision,
    DecisionSource,
    Outcome,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.recovery.learning import CANDIDATES, WINDOW, LearnedPolicy, prior

DOWN = FailureType.SERVICE_DOWN
ALL = frozenset(Strategy)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def outcomes(
    service: str,
    failure_type: FailureType,
    strategy: Strategy,
    *,
    succeeded: int = 0,
    failed: int = 0,
    seconds: float = 1.0,
    incident: str = "inc-x",
) -> list[AttemptOutcome]:
    made = [
        AttemptOutcome(
            service, failure_type, strategy, 1.0, T0, incident_id=incident, time_to_recover=seconds
        )
        for _ in range(succeeded)
    ]
    made += [
        AttemptOutcome(service, failure_type, strategy, 0.0, T0, incident_id=incident)
        for _ in range(failed)
    ]
    return made


def choices(
    policy: LearnedPolicy,
    service: str,
    failure_type: FailureType,
    allowed: frozenset[Strategy],
    times: int = 400,
) -> Counter[Strategy | None]:
    picked: Counter[Strategy | None] = Counter()
    for _ in range(times):
        decision = policy.decide(service, failure_type, allowed)
        picked[decision.strategy if decision else None] += 1
    return picked


def taught(*groups: list[AttemptOutcome], seed: int = 7) -> LearnedPolicy:
    policy = LearnedPolicy(random.Random(seed))
    for group in groups:
        for outcome in group:
            policy.record(outcome)
    return policy


def test_with_no_evidence_the_default_table_decides() -> None:
    policy = LearnedPolicy(random.Random(1))
    assert policy.decide("web", DOWN, ALL) is None
    # The prior is the table's order: its first choice, then its second, then the rest.
    means = [a / (a + b) for a, b in (prior(DOWN, s) for s in CANDIDATES[DOWN])]
    assert CANDIDATES[DOWN][:2] == (Strategy.FAILOVER, Strategy.RESTART)
    assert means == sorted(means, reverse=True) and means[0] > means[-1]


def test_it_learns_that_the_tables_choice_fails_for_this_service() -> None:
    policy = taught(
        outcomes("web", DOWN, Strategy.FAILOVER, failed=8),
        outcomes("web", DOWN, Strategy.RESTART, succeeded=8, seconds=0.3),
    )
    picked = choices(policy, "web", DOWN, ALL)
    assert picked[Strategy.RESTART] >= 380, picked
    decision = policy.decide("web", DOWN, ALL)
    assert isinstance(decision, Decision)
    assert decision.source is DecisionSource.LEARNED
    assert {c.strategy for c in decision.candidates} == set(CANDIDATES[DOWN])
    by_strategy = {c.strategy: c for c in decision.candidates}
    assert by_strategy[Strategy.RESTART].estimate == round((1.5 + 8) / (1.5 + 1 + 8), 3)
    assert by_strategy[Strategy.RESTART].observations == 8
    assert by_strategy[Strategy.FAILOVER].estimate == round(2 / (2 + 1 + 8), 3)
    assert "Thompson sampling" in decision.reason and "8/8 here" in decision.reason
    assert by_strategy[Strategy.RESTART].score > by_strategy[Strategy.ROLLBACK].score


def test_it_never_chooses_what_the_service_cannot_do() -> None:
    policy = taught(outcomes("web", DOWN, Strategy.FAILOVER, succeeded=30))
    allowed = frozenset({Strategy.RESTART, Strategy.ROLLBACK, Strategy.SCALE})
    picked = choices(policy, "web", DOWN, allowed)
    assert Strategy.FAILOVER not in picked and Strategy.SCALE not in picked, picked
    # One candidate left is no choice: the default table decides.
    assert policy.decide("web", DOWN, frozenset({Strategy.RESTART})) is None


def test_a_new_service_borrows_from_others_until_it_has_its_own_history() -> None:
    others = [
        outcomes(name, DOWN, Strategy.FAILOVER, failed=10)
        + outcomes(name, DOWN, Strategy.RESTART, succeeded=10)
        for name in ("a", "b", "c")
    ]
    policy = taught(*others)
    allowed = frozenset({Strategy.FAILOVER, Strategy.RESTART})
    newcomer = policy.estimate("new", DOWN, Strategy.RESTART)
    assert newcomer.observations == 0 and newcomer.pooled_observations == 30
    # 30 outcomes elsewhere count as five: enough to guide, not enough to overrule.
    assert newcomer.alpha == 1.5 + 5 and newcomer.beta == 1
    assert choices(policy, "new", DOWN, allowed)[Strategy.RESTART] >= 300
    for outcome in outcomes("new", DOWN, Strategy.FAILOVER, succeeded=25) + outcomes(
        "new", DOWN, Strategy.RESTART, failed=10
    ):
        policy.record(outcome)
    assert choices(policy, "new", DOWN, allowed)[Strategy.FAILOVER] >= 380


def test_among_equally_reliable_strategies_the_faster_wins() -> None:
    leak = FailureType.MEMORY_LEAK
    policy = taught(
        outcomes("web", leak, Strategy.ROLLBACK, succeeded=40, seconds=60),
        outcomes("web", leak, Strategy.RESTART, succeeded=40, seconds=1),
    )
    allowed = frozenset({Strategy.ROLLBACK, Strategy.RESTART})
    picked = choices(policy, "web", leak, allowed)
    assert picked[Strategy.RESTART] >= 340, picked
    assert policy.estimate("web", leak, Strategy.ROLLBACK).time_to_recover == 60


def test_the_window_keeps_the_latest_outcomes_so_a_changed_service_is_relearned() -> None:
    policy = taught(outcomes("web", DOWN, Strategy.FAILOVER, succeeded=WINDOW))
    for outcome in outcomes("web", DOWN, Strategy.FAILOVER, failed=WINDOW):
        policy.record(outcome)
    estimate = policy.estimate("web", DOWN, Strategy.FAILOVER)
    assert estimate.observations == WINDOW and estimate.successes == 0


def test_a_false_positive_teaches_nothing() -> None:
    policy = taught(
        outcomes("web", DOWN, Strategy.RESTART, succeeded=3, incident="inc-real"),
        outcomes("web", DOWN, Strategy.RESTART, failed=5, incident="inc-false"),
    )
    policy.forget_incident("inc-false")
    estimate = policy.estimate("web", DOWN, Strategy.RESTART)
    assert estimate.observations == 3 and estimate.successes == 3


def test_stats_per_service_and_per_failure_type() -> None:
    policy = taught(
        outcomes("a", DOWN, Strategy.RESTART, succeeded=2, failed=2),
        outcomes("b", DOWN, Strategy.RESTART, succeeded=4),
    )
    assert [(e.service, e.observations) for e in policy.estimates("a")] == [("a", 4)]
    [pooled] = policy.by_failure_type()
    assert pooled.service is None and pooled.observations == 8 and pooled.successes == 6
    assert pooled.success_rate == (1.5 + 6) / (1.5 + 1 + 8)


def test_same_seed_same_decisions() -> None:
    def run(seed: int) -> list[Strategy | None]:
        policy = taught(outcomes("web", DOWN, Strategy.RESTART, succeeded=3, failed=2), seed=seed)
        return [d.strategy if (d := policy.decide("web", DOWN, ALL)) else None for _ in range(50)]

    assert run(3) == run(3)
    assert len(set(run(3))) > 1, "it explores"


def _recovery(status: RecoveryStatus, outcome: Outcome | None, **extra: object) -> Recovery:
    return Recovery(
        id="rec-1",
        service="web",
        strategy=Strategy.CIRCUIT_BREAK,
        status=status,
        trigger=RecoveryTrigger.AUTOMATIC,
        decision=Decision(Strategy.CIRCUIT_BREAK, DecisionSource.DEFAULT, "x"),
        created_at=T0,
        started_at=T0,
        ended_at=T0 + timedelta(seconds=2),
        outcome=outcome,
        incident_id="inc-1",
        **extra,  # type: ignore[arg-type]
    )


def test_what_counts_as_an_outcome() -> None:
    partial = outcome_of(_recovery(RecoveryStatus.COMPLETED, Outcome.PARTIAL), DOWN)
    assert partial is not None and partial.reward == 0.5 and partial.time_to_recover == 2.0
    failed = outcome_of(_recovery(RecoveryStatus.FAILED, Outcome.FAILURE), DOWN)
    assert failed is not None and failed.reward == 0 and failed.time_to_recover is None
    assert outcome_of(_recovery(RecoveryStatus.CANCELLED, None), DOWN) is None
    assert outcome_of(_recovery(RecoveryStatus.INTERRUPTED, None), DOWN) is None
    assert outcome_of(_recovery(RecoveryStatus.COMPLETED, Outcome.SUCCESS), None) is None
    playbook = _recovery(RecoveryStatus.COMPLETED, Outcome.SUCCESS, playbook_id="pb-1")
    assert outcome_of(playbook, DOWN) is None


def test_a_relapse_takes_back_the_last_success() -> None:
    policy = taught(outcomes("web", DOWN, Strategy.RESTART, succeeded=2, seconds=0.2))
    policy.relapsed("web")
    estimate = policy.estimate("web", DOWN, Strategy.RESTART)
    assert estimate.observations == 2 and estimate.successes == 1
    policy.relapsed("web")  # once per recovery: the earlier success stands
    assert policy.estimate("web", DOWN, Strategy.RESTART).successes == 1


def test_attempts_ending_after_a_false_positive_mark_teach_nothing() -> None:
    policy = taught()
    policy.forget_incident("inc-false")
    for outcome in outcomes("web", DOWN, Strategy.RESTART, succeeded=2, incident="inc-false"):
        policy.record(outcome)
    assert policy.estimate("web", DOWN, Strategy.RESTART).observations == 0


def test_stats_stay_linear_in_the_evidence() -> None:
    many = [
        outcomes(f"svc{n}", DOWN, Strategy.RESTART, succeeded=WINDOW, seconds=0.5)
        for n in range(200)
    ]
    policy = taught(*many)
    [pooled] = policy.by_failure_type()
    assert pooled.observations == 200 * WINDOW
    found = policy.estimates()
    assert len(found) == 200
    assert all(e.pooled_observations == 199 * WINDOW for e in found)
    assert found[0].alpha == 1.5 + WINDOW + 5  # others' 9,950 outcomes count as five
