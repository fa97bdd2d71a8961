"""Which strategy a recovery attempt uses, and why: the one place the precedence lives.

1. An attempt after a failed one escalates: the operator's strategy again if they chose
   one, a restart after a rollback (rolling back again would go one version further back
   each time), else the policy among what has not failed yet for this incident.
2. A playbook: the one an operator ran, or the active one whose trigger answers the failure.
3. The operator's strategy (or Phoenix's own request, such as rolling back a failed deploy).
4. For a failure: the platform's advice when its evidence calls for one strategy (the pods
   of a revision that never ran healthy crash: a rollback, not a restart), else the learned
   policy where outcomes exist, else the default table.
5. For maintenance (nothing failing, no strategy named): the default table.

:func:`decide` is pure: everything that depends on the moment (which playbook matches the
signals now, the learned policy's draw) is looked up by the caller and passed in, so the
order can be tested without a clock, a process or a database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.playbooks import Playbook
from phoenix_server.domain.recoveries import (
    Candidate,
    Decision,
    DecisionSource,
    Recovery,
    Strategy,
)
from phoenix_server.recovery.learning import CANDIDATES
from phoenix_server.recovery.playbook_runs import main_strategy, uses_strategies
from phoenix_server.recovery.selecting import escalated, table_decision

LearnedAdvice = Callable[[str, FailureType, frozenset[Strategy]], Decision | None]
"""The learned policy's choice among the strategies allowed, or None (nothing learned)."""


@dataclass(frozen=True)
class DecisionInput:
    service: str
    failure_type: FailureType
    supported: frozenset[Strategy]
    """What the service's platform can do for it now."""
    failing: bool = True
    """There is a failure (an incident); False for maintenance of a working service."""
    requested: Strategy | None = None
    """The strategy the operator (or Phoenix itself, see ``policy_reason``) asked for."""
    policy_reason: str | None = None
    """Phoenix asks for ``requested`` itself (a failed deploy rolls back), and why."""
    playbook: Playbook | None = None
    """The playbook to run: the operator's, or the active one whose trigger matches."""
    playbook_why: str = "its trigger matches this failure"
    learned: LearnedAdvice | None = None
    previous: Recovery | None = None
    """The attempt that just failed for this incident: the next one escalates."""
    failed: tuple[Strategy, ...] = ()
    """The strategies whose attempts failed for this incident so far."""
    current_version: str | None = None
    """The version the service runs (named when a restart follows a failed rollback)."""
    advice: tuple[Strategy, str] | None = None
    """What the service's platform says the failure calls for, and why (already limited to
    what the service can do)."""


def decide(given: DecisionInput) -> Decision:
    """The decision for one attempt (raises ``UnsupportedStrategyError`` when the service
    cannot do what is asked, or anything at all)."""
    if given.previous is not None:
        return _escalate(given, given.previous)
    if given.playbook is not None:
        if not given.supported and uses_strategies(given.playbook):
            # A playbook of endpoint calls only (http_request, a named action, notify,
            # wait, verify_health) runs for any service, an external one too.
            table_decision(
                service=given.service, failure_type=given.failure_type, supported=given.supported
            )  # raises: says the service can only be monitored
        decision = _playbook_decision(given.playbook, given.playbook_why)
    elif given.requested is None and given.policy_reason is None and given.failing:
        if given.advice is not None and given.advice[0] in given.supported:
            strategy, why = given.advice
            decision = Decision(
                strategy=strategy,
                source=DecisionSource.DEFAULT,
                reason=f"the platform's evidence: {why}",
                candidates=(Candidate(strategy, 1.0),),
            )
        else:
            decision = _policy(given, given.supported)
    else:
        decision = table_decision(
            service=given.service,
            failure_type=given.failure_type,
            supported=given.supported,
            requested=given.requested,
        )
    if given.policy_reason is not None:
        decision = replace(decision, source=DecisionSource.DEFAULT, reason=given.policy_reason)
    return decision


def _playbook_decision(playbook: Playbook, why: str) -> Decision:
    return Decision(
        strategy=main_strategy(playbook),
        source=DecisionSource.PLAYBOOK,
        reason=f"playbook '{playbook.name}' (version {playbook.version}): {why}",
        candidates=(),
    )


def _policy(given: DecisionInput, allowed: frozenset[Strategy]) -> Decision:
    """Phoenix's own choice: learned where outcomes exist, else the default table."""
    if given.learned is not None:
        learned = given.learned(given.service, given.failure_type, allowed)
        if learned is not None:
            return learned
    return table_decision(service=given.service, failure_type=given.failure_type, supported=allowed)


def _escalate(given: DecisionInput, last: Recovery) -> Decision:
    """The next attempt of an incident (playbooks run only its first)."""
    supported = given.supported
    requested = last.strategy if last.decision.source is DecisionSource.MANUAL else None
    if last.strategy is Strategy.ROLLBACK:
        requested = Strategy.RESTART if Strategy.RESTART in supported else None
    elif requested is not None and requested not in supported:
        requested = None  # no longer possible (a backup used up): the policy chooses
    if requested is None:
        untried = supported - set(given.failed)
        allowed = (
            untried  # something worth trying is left: not what just failed
            if untried & set(CANDIDATES[given.failure_type])
            else escalated(given.failure_type, supported, list(given.failed))
        )
        return _policy(given, allowed)
    decision = table_decision(
        service=given.service,
        failure_type=given.failure_type,
        supported=supported,
        requested=requested,
    )
    if last.strategy is Strategy.ROLLBACK:
        decision = replace(
            decision,
            source=DecisionSource.DEFAULT,
            reason=f"the rollback to {given.current_version} did not verify: restart it",
        )
    return decision
