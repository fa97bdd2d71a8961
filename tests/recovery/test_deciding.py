"""The precedence of decisions, as pure code: an escalation after a failed attempt, then a
playbook, then the operator's strategy, then learned, then the default table."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from phoenix_server.domain.errors import UnsupportedStrategyError
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.playbooks import BuiltinAction, Playbook, PlaybookStep
from phoenix_server.domain.recoveries import (
    Candidate,
    Decision,
    DecisionSource,
    Recovery,
    RecoveryStatus,
    RecoveryTrigger,
    Strategy,
)
from phoenix_server.recovery.deciding import DecisionInput, LearnedAdvice, decide

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALL = frozenset(Strategy)
DOWN = FailureType.SERVICE_DOWN
SCALE_PLAYBOOK = Playbook(
    id="pb-1",
    name="scale-up",
    triggers=(),
    steps=(PlaybookStep(BuiltinAction.SCALE),),
    created_at=T0,
    updated_at=T0,
)


def advice(strategy: Strategy | None, asked: list[frozenset[Strategy]]) -> LearnedAdvice:
    """A learned policy that answers ``strategy`` when allowed (None: nothing learned);
    ``asked`` collects what it was allowed to choose from, call by call."""

    def learned(
        service: str, failure_type: FailureType, allowed: frozenset[Strategy]
    ) -> Decision | None:
        asked.append(allowed)
        if strategy is None or strategy not in allowed:
            return None
        return Decision(strategy, DecisionSource.LEARNED, "learned", (Candidate(strategy, 0.9),))

    return learned


def attempt(strategy: Strategy, source: DecisionSource, number: int = 1) -> Recovery:
    return Recovery(
        id=f"rec-{number}",
        service="web",
        strategy=strategy,
        status=RecoveryStatus.FAILED,
        trigger=RecoveryTrigger.AUTOMATIC,
        decision=Decision(strategy, source, "earlier"),
        created_at=T0,
        attempt=number,
    )


def test_a_matching_playbook_comes_before_the_learned_policy_and_the_table() -> None:
    asked: list[frozenset[Strategy]] = []
    decision = decide(
        DecisionInput(
            "web", DOWN, ALL, playbook=SCALE_PLAYBOOK, learned=advice(Strategy.RESTART, asked)
        )
    )
    assert decision.source is DecisionSource.PLAYBOOK and decision.strategy is Strategy.SCALE
    assert "playbook 'scale-up' (version 1): its trigger matches this failure" in decision.reason
    assert asked == []  # the learned policy was not even asked


def test_learned_comes_before_the_table_and_falls_back_to_it() -> None:
    asked: list[frozenset[Strategy]] = []
    learned = decide(DecisionInput("web", DOWN, ALL, learned=advice(Strategy.RESTART, asked)))
    assert learned.source is DecisionSource.LEARNED and learned.strategy is Strategy.RESTART
    table = decide(DecisionInput("web", DOWN, ALL, learned=advice(None, asked)))
    assert table.source is DecisionSource.DEFAULT and table.strategy is Strategy.FAILOVER
    assert asked == [ALL, ALL]


def test_the_operators_strategy_comes_before_learned_and_the_table() -> None:
    asked: list[frozenset[Strategy]] = []
    decision = decide(
        DecisionInput(
            "web", DOWN, ALL, requested=Strategy.SCALE, learned=advice(Strategy.RESTART, asked)
        )
    )
    assert decision.source is DecisionSource.MANUAL and decision.strategy is Strategy.SCALE
    assert asked == []


def test_phoenixs_own_request_is_filed_as_a_default_decision_with_its_reason() -> None:
    decision = decide(
        DecisionInput(
            "web",
            DOWN,
            ALL,
            requested=Strategy.ROLLBACK,
            policy_reason="deploy dep-1 failed: back to v1",
        )
    )
    assert decision.strategy is Strategy.ROLLBACK and decision.source is DecisionSource.DEFAULT
    assert decision.reason == "deploy dep-1 failed: back to v1"


def test_maintenance_uses_the_table_not_the_learned_policy() -> None:
    asked: list[frozenset[Strategy]] = []
    decision = decide(
        DecisionInput(
            "web",
            FailureType.UNKNOWN,
            ALL,
            failing=False,
            learned=advice(Strategy.SCALE, asked),
        )
    )
    assert decision.source is DecisionSource.DEFAULT and decision.strategy is Strategy.RESTART
    assert asked == []


def test_a_playbook_for_a_service_that_can_only_be_monitored_is_refused() -> None:
    with pytest.raises(UnsupportedStrategyError, match="only monitored"):
        decide(DecisionInput("web", DOWN, frozenset(), playbook=SCALE_PLAYBOOK))


def test_a_playbook_of_endpoint_calls_runs_for_a_service_that_can_only_be_monitored() -> None:
    """An external service cannot be restarted by Phoenix, but its own endpoints can be
    called: a playbook of only such steps answers its failure."""
    endpoints = replace(
        SCALE_PLAYBOOK,
        name="call-revive",
        steps=(
            PlaybookStep(BuiltinAction.HTTP_REQUEST, params={"url": "http://127.0.0.1:1/revive"}),
            PlaybookStep(BuiltinAction.NOTIFY, params={"message": "revived"}),
        ),
    )
    decision = decide(DecisionInput("edge", DOWN, frozenset(), playbook=endpoints))
    assert decision.source is DecisionSource.PLAYBOOK and "call-revive" in decision.reason


def test_an_unsupported_request_names_what_the_service_supports() -> None:
    with pytest.raises(UnsupportedStrategyError, match="it supports: restart"):
        decide(DecisionInput("web", DOWN, frozenset({Strategy.RESTART}), requested=Strategy.SCALE))


def test_an_escalation_leaves_out_what_failed_and_asks_no_playbook() -> None:
    asked: list[frozenset[Strategy]] = []
    decision = decide(
        DecisionInput(
            "web",
            DOWN,
            ALL,
            playbook=SCALE_PLAYBOOK,  # playbooks run only an incident's first attempt
            learned=advice(None, asked),
            previous=attempt(Strategy.FAILOVER, DecisionSource.DEFAULT),
            failed=(Strategy.FAILOVER,),
        )
    )
    assert decision.strategy is Strategy.RESTART and decision.source is DecisionSource.DEFAULT
    assert asked == [ALL - {Strategy.FAILOVER}]


def test_an_operators_strategy_is_kept_for_the_next_attempt() -> None:
    decision = decide(
        DecisionInput(
            "web",
            DOWN,
            ALL,
            previous=attempt(Strategy.SCALE, DecisionSource.MANUAL),
            failed=(Strategy.SCALE,),
        )
    )
    assert decision.strategy is Strategy.SCALE and decision.source is DecisionSource.MANUAL


def test_a_failed_rollback_is_followed_by_a_restart_of_the_version_it_reached() -> None:
    decision = decide(
        DecisionInput(
            "web",
            FailureType.MEMORY_LEAK,
            ALL,
            previous=attempt(Strategy.ROLLBACK, DecisionSource.MANUAL),
            failed=(Strategy.ROLLBACK,),
            current_version="v1",
        )
    )
    assert decision.strategy is Strategy.RESTART and decision.source is DecisionSource.DEFAULT
    assert decision.reason == "the rollback to v1 did not verify: restart it"


def test_when_everything_the_table_advises_failed_it_starts_over() -> None:
    supported = frozenset({Strategy.RESTART})
    decision = decide(
        DecisionInput(
            "web",
            FailureType.HIGH_ERROR_RATE,
            supported,
            previous=attempt(Strategy.RESTART, DecisionSource.DEFAULT),
            failed=(Strategy.RESTART,),
        )
    )
    assert decision.strategy is Strategy.RESTART  # a retry beats nothing


# --- the platform's advice -------------------------------------------------------------------

BAD_RELEASE = (Strategy.ROLLBACK, "pod web-7c of a revision that never ran healthy crashes")


def test_the_platforms_advice_comes_before_the_learned_policy_and_the_table() -> None:
    asked: list[frozenset[Strategy]] = []
    decision = decide(
        DecisionInput(
            service="web",
            failure_type=DOWN,
            supported=ALL,
            learned=advice(Strategy.RESTART, asked),
            advice=BAD_RELEASE,
        )
    )
    assert decision.strategy is Strategy.ROLLBACK
    assert decision.reason == f"the platform's evidence: {BAD_RELEASE[1]}"
    assert asked == []  # the learned policy was not consulted


def test_advice_the_service_cannot_follow_is_ignored() -> None:
    decision = decide(
        DecisionInput(
            service="web",
            failure_type=DOWN,
            supported=frozenset({Strategy.RESTART}),
            advice=BAD_RELEASE,
        )
    )
    assert decision.strategy is Strategy.RESTART


def test_a_playbook_and_an_operators_request_come_before_the_advice() -> None:
    by_playbook = decide(
        DecisionInput(
            service="web",
            failure_type=DOWN,
            supported=ALL,
            playbook=SCALE_PLAYBOOK,
            advice=BAD_RELEASE,
        )
    )
    assert by_playbook.strategy is Strategy.SCALE
    requested = decide(
        DecisionInput(
            service="web",
            failure_type=DOWN,
            supported=ALL,
            requested=Strategy.RESTART,
            advice=BAD_RELEASE,
        )
    )
    assert requested.strategy is Strategy.RESTART
