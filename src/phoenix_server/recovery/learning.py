"""The learned policy: which strategy recovers a (service, failure type) best, from outcomes.

Each (service, failure type, strategy) has a Beta posterior over its success probability.
The prior is the default table, held lightly: its first choice for the failure type starts
at Beta(2, 1), its second at Beta(1.5, 1), and the other strategies worth trying for that
failure type at Beta(1, 1). With no evidence at all the table decides outright; once there
is evidence, a few outcomes outweigh the prior (a heavier one was measured to keep the
policy on a wrong table choice for longer: BENCHMARKS.md, bench/learning). Evidence is each
attempt's reward (1 success, 0.5 partial, 0 failure), the latest :data:`WINDOW` per key, so a
service that changes is re-learned.

A service with little history borrows from the others: other services' outcomes for the
same failure type and strategy count as at most :data:`POOLED_CAP` observations, so they
guide a newcomer and are outweighed once the service has its own.

The choice is Thompson sampling: draw a success probability ``p`` and a time ``t`` from each
candidate's posteriors and take the candidate whose draws give the shortest expected time to
recovery, ``t + (1 - p) * FAILURE_COST`` — a failed attempt costing :data:`FAILURE_COST`
seconds more (the verification that caught it, the backoff, the next attempt). Times are
log-normal around the strategy's default estimate until its successes say otherwise.
Reliability and speed so enter in one unit: among equally reliable strategies the faster
wins, and a slow one must be reliable enough to pay for its time. Exploration falls as
evidence accumulates, with no tuning knob. Only strategies the service supports are
candidates.
"""

from __future__ import annotations

import math
import random
import statistics
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.learning import AttemptOutcome
from phoenix_server.domain.recoveries import Candidate, Decision, DecisionSource, Strategy
from phoenix_server.recovery.selecting import DEFAULT_TABLE
from phoenix_server.recovery.strategies import DEFAULT_ESTIMATES

WINDOW = 50
"""Latest outcomes kept per (service, failure type, strategy)."""
POOLED_CAP = 5.0
"""Other services' evidence counts as at most this many observations."""
TIME_PRIOR_SD = 1.5
"""Before any success, a strategy's time is believed within a factor e**1.5 (about 4.5) of
its default estimate: wide enough that a strategy believed slow still gets tried."""
TIME_NOISE_SD = 0.5
"""The spread (in log seconds) of one service's recovery times by one strategy."""
FAILURE_COST = 60.0
"""Seconds a failed attempt adds to an incident before something else fixes it."""

_EXTRAS: dict[FailureType, tuple[Strategy, ...]] = {
    FailureType.SERVICE_DOWN: (Strategy.ROLLBACK,),
    FailureType.HIGH_ERROR_RATE: (Strategy.ROLLBACK, Strategy.FAILOVER),
    FailureType.MEMORY_LEAK: (Strategy.FAILOVER,),
    FailureType.HIGH_LOAD: (Strategy.RESTART,),
    FailureType.CASCADING: (Strategy.FAILOVER,),
    FailureType.LATENCY_DEGRADATION: (Strategy.ROLLBACK,),
    FailureType.UNKNOWN: (Strategy.FAILOVER, Strategy.ROLLBACK),
}
"""Strategies outside the table that can plausibly fix the failure type (a bad version
crashing or erroring is fixed by a rollback, a leaking process by a fresh standby, an
overloaded one sometimes by a restart). The others are never explored: scaling a crashed
service, say, cannot bring it back."""

CANDIDATES: dict[FailureType, tuple[Strategy, ...]] = {
    failure_type: (*DEFAULT_TABLE[failure_type], *_EXTRAS[failure_type])
    for failure_type in FailureType
}


def prior(failure_type: FailureType, strategy: Strategy) -> tuple[float, float]:
    """Beta(alpha, beta) before any evidence: the default table's preference."""
    table = DEFAULT_TABLE[failure_type]
    if strategy in table:
        return (2.0, 1.0) if table.index(strategy) == 0 else (1.5, 1.0)
    return (1.0, 1.0)


def expected_seconds(success: float, seconds: float) -> float:
    """Expected time to recovery of an attempt that succeeds with probability ``success``
    in ``seconds``, a failure costing :data:`FAILURE_COST` more."""
    return seconds + (1.0 - success) * FAILURE_COST


def score(success: float, seconds: float) -> float:
    """The same, as a score in (0, 1], higher better (like the default table's): 1 for an
    instant certain recovery, 0.5 for one expected to take FAILURE_COST seconds."""
    return FAILURE_COST / (FAILURE_COST + expected_seconds(success, seconds))


@dataclass(frozen=True)
class Estimate:
    """What Phoenix believes about one strategy for one service's failure type."""

    service: str | None
    """None: the evidence of every service together (``byFailureType`` in the API)."""
    failure_type: FailureType
    strategy: Strategy
    observations: int
    successes: float
    """Sum of rewards (a partial result counts half)."""
    pooled_observations: int
    """Other services' outcomes behind the estimate (weighed as at most POOLED_CAP)."""
    alpha: float
    beta: float
    time_to_recover: float | None
    """Median seconds of the successful attempts behind the estimate (None: none yet)."""
    log_time: tuple[float, float]
    """Posterior (mean, sd) of the log of the time a successful attempt takes."""
    downtime: float | None
    requests_lost: float | None

    @property
    def success_rate(self) -> float:
        """The posterior mean."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def expected_time(self) -> float:
        """Seconds a successful attempt takes: the posterior median."""
        return math.exp(self.log_time[0])

    def draw(self, rng: random.Random) -> float:
        """One Thompson draw: the score of a success probability and a time sampled from
        their posteriors."""
        success = rng.betavariate(self.alpha, self.beta)
        seconds = math.exp(rng.gauss(*self.log_time))
        return score(success, seconds)

    @property
    def evidence(self) -> str:
        here = f"{self.successes:g}/{self.observations} here" if self.observations else ""
        pooled = f"{self.pooled_observations} from other services"
        if self.observations and self.pooled_observations:
            return f"{here} + {pooled}"
        if self.pooled_observations:
            return pooled
        return here or "no evidence yet"


def _log_time_posterior(
    strategy: Strategy, times: list[tuple[float | None, float]]
) -> tuple[float, float]:
    """Normal posterior of log seconds: the default estimate as prior, then each weighed
    success's time."""
    precision = 1.0 / TIME_PRIOR_SD**2
    total = math.log(DEFAULT_ESTIMATES[strategy]) * precision
    for seconds, weight in times:
        if seconds is not None:
            noise = weight / TIME_NOISE_SD**2
            precision += noise
            total += math.log(max(seconds, 0.001)) * noise
    return total / precision, math.sqrt(1.0 / precision)


def _median(values: Iterable[float | int | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


class LearnedPolicy:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._evidence: dict[tuple[FailureType, Strategy], dict[str, deque[AttemptOutcome]]] = {}

    def record(self, outcome: AttemptOutcome) -> None:
        per_service = self._evidence.setdefault((outcome.failure_type, outcome.strategy), {})
        per_service.setdefault(outcome.service, deque(maxlen=WINDOW)).append(outcome)

    def forget_incident(self, incident_id: str) -> None:
        """An operator marked the incident a false positive: its attempts teach nothing."""
        for per_service in self._evidence.values():
            for service, kept in per_service.items():
                per_service[service] = deque(
                    (o for o in kept if o.incident_id != incident_id), maxlen=WINDOW
                )

    def load(self, outcomes: Iterable[AttemptOutcome]) -> None:
        """Start from recorded history (oldest first, so the window keeps the newest)."""
        for outcome in sorted(outcomes, key=lambda o: o.at):
            self.record(outcome)

    def estimate(self, service: str, failure_type: FailureType, strategy: Strategy) -> Estimate:
        per_service = self._evidence.get((failure_type, strategy), {})
        own = list(per_service.get(service, ()))
        others = [o for name, kept in per_service.items() if name != service for o in kept]
        alpha, beta = prior(failure_type, strategy)
        own_reward = sum(o.reward for o in own)
        alpha += own_reward
        beta += len(own) - own_reward
        if others:
            weight = min(1.0, POOLED_CAP / len(others))
            pooled_reward = sum(o.reward for o in others)
            alpha += weight * pooled_reward
            beta += weight * (len(others) - pooled_reward)
        basis = own or others
        weight = min(1.0, POOLED_CAP / len(others)) if others else 0.0
        log_time = _log_time_posterior(
            strategy,
            [(o.time_to_recover, 1.0) for o in own] + [(o.time_to_recover, weight) for o in others],
        )
        return Estimate(
            service=service,
            failure_type=failure_type,
            strategy=strategy,
            observations=len(own),
            successes=own_reward,
            pooled_observations=len(others),
            alpha=alpha,
            beta=beta,
            time_to_recover=_median(o.time_to_recover for o in basis),
            log_time=log_time,
            downtime=_median(o.downtime for o in basis),
            requests_lost=_median(o.requests_lost for o in basis),
        )

    def decide(
        self, service: str, failure_type: FailureType, allowed: frozenset[Strategy]
    ) -> Decision | None:
        """Thompson sampling among the candidates ``allowed`` (what the service supports,
        less what already failed for this incident). None when there is nothing to learn
        from or nothing to choose between: the default table decides then."""
        candidates = [s for s in CANDIDATES[failure_type] if s in allowed]
        if len(candidates) < 2:
            return None
        estimates = [self.estimate(service, failure_type, s) for s in candidates]
        if not any(e.observations or e.pooled_observations for e in estimates):
            return None
        scored = sorted(
            ((e.draw(self._rng), e) for e in estimates),
            key=lambda pair: -pair[0],
        )
        best = scored[0][1]
        described = "; ".join(
            f"{e.strategy.value} {drawn:.2f} (success {e.success_rate:.2f} from "
            f"{e.evidence}, ~{e.expected_time:.3g}s)"
            for drawn, e in scored
        )
        reason = (
            f"learned for {failure_type.value}: {best.strategy.value} had the best draw "
            f"(Thompson sampling on expected time to recovery) — {described}"
        )
        return Decision(
            strategy=best.strategy,
            source=DecisionSource.LEARNED,
            reason=reason,
            candidates=tuple(
                Candidate(
                    e.strategy,
                    round(drawn, 3),
                    estimate=round(e.success_rate, 3),
                    observations=e.observations + e.pooled_observations,
                )
                for drawn, e in scored
            ),
        )

    def estimates(self, service: str | None = None) -> list[Estimate]:
        """Per (service, failure type, strategy) with evidence of its own."""
        found = [
            self.estimate(name, failure_type, strategy)
            for (failure_type, strategy), per_service in self._evidence.items()
            for name, kept in per_service.items()
            if kept and (service is None or name == service)
        ]
        return sorted(found, key=lambda e: (e.service or "", e.failure_type, -e.success_rate))

    def by_failure_type(self) -> list[Estimate]:
        """Every service's evidence together, per failure type and strategy."""
        found = []
        for (failure_type, strategy), per_service in self._evidence.items():
            every = [o for kept in per_service.values() for o in kept]
            if not every:
                continue
            alpha, beta = prior(failure_type, strategy)
            reward = sum(o.reward for o in every)
            found.append(
                Estimate(
                    service=None,
                    failure_type=failure_type,
                    strategy=strategy,
                    observations=len(every),
                    successes=reward,
                    pooled_observations=0,
                    alpha=alpha + reward,
                    beta=beta + len(every) - reward,
                    time_to_recover=_median(o.time_to_recover for o in every),
                    log_time=_log_time_posterior(
                        strategy, [(o.time_to_recover, 1.0) for o in every]
                    ),
                    downtime=_median(o.downtime for o in every),
                    requests_lost=_median(o.requests_lost for o in every),
                )
            )
        return sorted(found, key=lambda e: (e.failure_type, -e.success_rate))
