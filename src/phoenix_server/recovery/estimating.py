"""``estimatedDuration``: the median of a service's recent successful recoveries by the same
strategy, else a default per strategy. Kept in memory (seeded from the store at start) so
quoting an estimate never waits for the database."""

from __future__ import annotations

import statistics

from phoenix_server.domain.recoveries import Recovery, Strategy
from phoenix_server.recovery.strategies import DEFAULT_ESTIMATES

KEPT = 20
"""Successful recoveries per (service, strategy) behind an estimate."""


class DurationEstimates:
    def __init__(self, history: dict[tuple[str, Strategy], list[float]] | None = None) -> None:
        self._durations = {key: list(values[:KEPT]) for key, values in (history or {}).items()}

    def estimate(self, service: str, strategy: Strategy) -> float:
        durations = self._durations.get((service, strategy))
        if durations:
            return round(statistics.median(durations), 3)
        return DEFAULT_ESTIMATES[strategy]

    def record(self, recovery: Recovery) -> None:
        """Learn from a successful recovery (newest first)."""
        if recovery.duration is not None:
            durations = self._durations.setdefault((recovery.service, recovery.strategy), [])
            durations.insert(0, recovery.duration)
            del durations[KEPT:]
