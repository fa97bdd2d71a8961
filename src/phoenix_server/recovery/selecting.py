"""The default table: an explicit request, else the table's choice for the failure type,
limited to what the service's platform can actually do. ``deciding`` puts playbooks and
the learned policy before it; their decisions use the same :class:`Decision` record.
"""

from __future__ import annotations

from phoenix_server.domain.errors import Problem, UnsupportedStrategyError
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.recoveries import Candidate, Decision, DecisionSource, Strategy

DEFAULT_TABLE: dict[FailureType, tuple[Strategy, ...]] = {
    FailureType.HIGH_ERROR_RATE: (Strategy.RESTART,),
    FailureType.MEMORY_LEAK: (Strategy.ROLLBACK, Strategy.RESTART),
    FailureType.HIGH_LOAD: (Strategy.SCALE, Strategy.CIRCUIT_BREAK),
    FailureType.SERVICE_DOWN: (Strategy.FAILOVER, Strategy.RESTART),
    FailureType.CASCADING: (Strategy.CIRCUIT_BREAK, Strategy.RESTART),
    FailureType.LATENCY_DEGRADATION: (Strategy.SCALE, Strategy.RESTART),
    FailureType.UNKNOWN: (Strategy.RESTART,),
}
"""The seed's decision table, most preferred first. Failover needs a declared backup and
rollback a known-good version: the platform's supported set filters them out otherwise."""


FALLBACK_ORDER = (
    Strategy.RESTART,
    Strategy.FAILOVER,
    Strategy.SCALE,
    Strategy.CIRCUIT_BREAK,
    Strategy.ROLLBACK,
)
"""When none of the table's choices is available: the least disruptive that is."""


def _unsupported_message(
    service: str, strategy: Strategy | None, supported: frozenset[Strategy]
) -> str:
    can = ", ".join(sorted(s.value for s in supported))
    if not supported:
        return (
            f"Phoenix cannot act on service '{service}': its platform supports no recovery "
            "strategy (an external service is only monitored)"
        )
    assert strategy is not None
    return f"service '{service}' cannot use strategy '{strategy.value}'; it supports: {can}"


def escalated(
    failure_type: FailureType, supported: frozenset[Strategy], failed: list[Strategy]
) -> frozenset[Strategy]:
    """What the next attempt may choose from: the table's next choice for the failure type
    once an earlier one has failed for this incident; when every choice the service can use
    has failed, the first again (a retry beats a strategy the table does not advise)."""
    preferred = [s for s in DEFAULT_TABLE.get(failure_type, ()) if s in supported]
    if any(s not in failed for s in preferred):
        return supported - set(failed)
    return supported


def table_decision(
    *,
    service: str,
    failure_type: FailureType,
    supported: frozenset[Strategy],
    requested: Strategy | None = None,
) -> Decision:
    """The strategy to use, with its reason and the scored candidates."""
    if requested is not None:
        if requested not in supported:
            message = _unsupported_message(service, requested, supported)
            raise UnsupportedStrategyError(message, [Problem("strategy", message)])
        return Decision(
            strategy=requested,
            source=DecisionSource.MANUAL,
            reason=f"{requested.value} requested by the operator",
            candidates=(Candidate(requested, 1.0),),
        )
    preferred = DEFAULT_TABLE.get(failure_type, (Strategy.RESTART,))
    candidates = tuple(
        Candidate(strategy, round(1.0 / (rank + 1), 3) if strategy in supported else 0.0)
        for rank, strategy in enumerate(preferred)
    )
    chosen = next((c.strategy for c in candidates if c.score > 0), None)
    if chosen is None:
        chosen = next((s for s in FALLBACK_ORDER if s in supported), None)
        if chosen is None:
            message = _unsupported_message(service, None, supported)
            raise UnsupportedStrategyError(message, [Problem("service", message)])
        candidates = (*candidates, Candidate(chosen, 0.1))
    skipped = [c.strategy.value for c in candidates if c.score == 0]
    reason = f"default table: {failure_type.value} → {chosen.value}"
    if skipped:
        reason += f" ({', '.join(skipped)} not available for this service)"
    return Decision(
        strategy=chosen, source=DecisionSource.DEFAULT, reason=reason, candidates=candidates
    )
