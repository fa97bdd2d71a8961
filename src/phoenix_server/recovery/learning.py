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
from dataclasses import dataclass, replace

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
    strategy: Strategy, weight: float, log_seconds: float
) -> tuple[float, float]:
    """Normal posterior of log seconds: the default estimate as prior, then the successes'
    times (``weight`` of them, summing to ``log_seconds``)."""
    precision = 1.0 / TIME_PRIOR_SD**2
    total = math.log(DEFAULT_ESTIMATES[strategy]) * precision
    precision += weight / TIME_NOISE_SD**2
    total += log_seconds / TIME_NOISE_SD**2
    return total / precision, math.sqrt(1.0 / precision)


def _median(values: Iterable[float | int | None]) -> float | None:
    known = [float(v) for v in values if v is not None]
    return statistics.median(known) if known else None


@dataclass
class _Totals:
    """Sums over outcomes: what an estimate needs of them, so other services' evidence is
    the key's totals less the service's own (no rescan per service)."""

    count: int = 0
    reward: float = 0.0
    timed: int = 0
    log_seconds: float = 0.0

    def add(self, outcome: AttemptOutcome) -> None:
        self.count += 1
        self.reward += outcome.reward
        if outcome.time_to_recover is not None:
            self.timed += 1
            self.log_seconds += math.log(max(outcome.time_to_recover, 0.001))

    def minus(self, other: _Totals) -> _Totals:
        return _Totals(
            self.count - other.count,
            self.reward - other.reward,
            self.timed - other.timed,
            self.log_seconds - other.log_seconds,
        )


def _totals(outcomes: Iterable[AttemptOutcome]) -> _Totals:
    found = _Totals()
    for outcome in outcomes:
        found.add(outcome)
    return found


class LearnedPolicy:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()
        self._evidence: dict[tuple[FailureType, Strategy], dict[str, deque[AttemptOutcome]]] = {}
        self._latest: dict[str, tuple[tuple[FailureType, Strategy], AttemptOutcome]] = {}
        """Each service's latest outcome (a relapse takes back its success)."""
        self._forgotten: set[str] = set()
        """Incidents marked false positives: attempts still ending for them teach nothing."""

    def record(self, outcome: AttemptOutcome) -> None:
        if outcome.incident_id is not None and outcome.incident_id in self._forgotten:
            return
        key = (outcome.failure_type, outcome.strategy)
        per_service = self._evidence.setdefault(key, {})
        per_service.setdefault(outcome.service, deque(maxlen=WINDOW)).append(outcome)
        self._latest[outcome.service] = (key, outcome)

    def relapsed(self, service: str) -> None:
        """The service failed again right after its last recovery verified (sooner than
        ``reset_after``): that recovery did not fix it, whatever the verification said."""
        latest = self._latest.pop(service, None)
        if latest is None or latest[1].reward == 0:
            return
        key, outcome = latest
        kept = self._evidence.get(key, {}).get(service)
        if kept is None:
            return
        for index, candidate in enumerate(kept):
            if candidate is outcome:
                kept[index] = replace(outcome, reward=0.0, time_to_recover=None)
                break

    def forget_incident(self, incident_id: str) -> None:
        """An operator marked the incident a false positive: its attempts teach nothing."""
        self._forgotten.add(incident_id)
        for per_service in self._evidence.values():
            for service, kept in per_service.items():
                per_service[service] = deque(
                    (o for o in kept if o.incident_id != incident_id), maxlen=WINDOW
                )

    def load(self, outcomes: Iterable[AttemptOutcome]) -> None:
        """Start from recorded history (oldest first, so the window keeps the newest)."""
        for outcome in sorted(outcomes, key=lambda o: o.at):
            self.record(outcome)

    def estimate(
        self,
        service: str,
        failure_type: FailureType,
        strategy: Strategy,
        everyone: _Totals | None = None,
    ) -> Estimate:
        """``everyone``: the key's totals over every service, if already summed."""
        per_service = self._evidence.get((failure_type, strategy), {})
        own = list(per_service.get(service, ()))
        if everyone is None:
            everyone = _totals(o for kept in per_service.values() for o in kept)
        mine = _totals(own)
        others = everyone.minus(mine)
        alpha, beta = prior(failure_type, strategy)
        alpha += mine.reward
        beta += mine.count - mine.reward
        weight = min(1.0, POOLED_CAP / others.count) if others.count else 0.0
        alpha += weight * others.reward
        beta += weight * (others.count - others.reward)
        basis = own or [o for name, kept in per_service.items() if name != service for o in kept]
        return Estimate(
            service=service,
            failure_type=failure_type,
            strategy=strategy,
            observations=mine.count,
            successes=mine.reward,
            pooled_observations=others.count,
            alpha=alpha,
            beta=beta,
            time_to_recover=_median(o.time_to_recover for o in basis),
            log_time=_log_time_posterior(
                strategy,
                mine.timed + weight * others.timed,
                mine.log_seconds + weight * others.log_seconds,
            ),
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
        found: list[Estimate] = []
        for (failure_type, strategy), per_service in self._evidence.items():
            everyone = _totals(o for kept in per_service.values() for o in kept)
            found.extend(
                self.estimate(name, failure_type, strategy, everyone)
                for name, kept in per_service.items()
                if kept and (service is None or name == service)
            )
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
                        strategy, _totals(every).timed, _totals(every).log_seconds
                    ),
                    downtime=_median(o.downtime for o in every),
                    requests_lost=_median(o.requests_lost for o in every),
                )
            )
        return sorted(found, key=lambda e: (e.failure_type, -e.success_rate))
