"""Trend tests over a window of samples: is memory growing steadily (a leak), not spiking?

A leak is growth that keeps going: the samples must rise nearly monotonically (Kendall's
tau between time and value), by a meaningful share of where they started, over a window
that is mostly covered by samples. A single spike, or a sawtooth a garbage collector
draws, has a low tau. The projection to the limit uses the least-squares slope.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from phoenix_server.detection.signals import Sample

MIN_TAU = 0.7
"""Kendall's tau above which growth counts as steady."""
MIN_COVERAGE = 0.8
"""Share of the window the samples must span."""
MAX_POINTS = 40
"""Samples used (evenly picked): the tau test is quadratic in them."""


@dataclass(frozen=True)
class Growth:
    slope: float
    """Units per second (least squares)."""
    tau: float
    growth: float
    """(last - first) / first over the window."""
    latest: float

    def time_to(self, limit: float) -> float | None:
        """Seconds until ``limit`` at this slope (None if it is not growing)."""
        if self.slope <= 0:
            return None
        return max(0.0, (limit - self.latest) / self.slope)


def _evenly(samples: Sequence[Sample], count: int) -> list[Sample]:
    if len(samples) <= count:
        return list(samples)
    step = (len(samples) - 1) / (count - 1)
    return [samples[round(i * step)] for i in range(count)]


def kendall_tau(values: Sequence[float]) -> float:
    """Kendall's tau-a between position and value: 1 rising throughout, -1 falling."""
    n = len(values)
    if n < 2:
        return 0.0
    score = 0
    for i in range(n - 1):
        vi = values[i]
        for j in range(i + 1, n):
            if values[j] > vi:
                score += 1
            elif values[j] < vi:
                score -= 1
    return score / (n * (n - 1) / 2)


def steady_growth(samples: Sequence[Sample], *, window: float, min_growth: float) -> Growth | None:
    """The growth over the last ``window`` seconds if it is steady and large enough."""
    if not samples:
        return None
    end = samples[-1].at
    recent = [s for s in samples if s.at >= end - window]
    if len(recent) < 5 or recent[-1].at - recent[0].at < MIN_COVERAGE * window:
        return None
    picked = _evenly(recent, MAX_POINTS)
    first, last = picked[0].value, picked[-1].value
    if first <= 0 or (last - first) / first < min_growth:
        return None
    tau = kendall_tau([s.value for s in picked])
    if tau < MIN_TAU:
        return None
    mean_t = sum(s.at for s in picked) / len(picked)
    mean_v = sum(s.value for s in picked) / len(picked)
    spread = sum((s.at - mean_t) ** 2 for s in picked)
    slope = sum((s.at - mean_t) * (s.value - mean_v) for s in picked) / spread if spread else 0.0
    return Growth(slope=slope, tau=tau, growth=(last - first) / first, latest=last)
