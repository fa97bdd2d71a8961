"""A series' anomaly scores over the last minutes, small enough to send with every service.

The highest score of each :data:`STEP` seconds over the last :data:`STEPS` of them: what a
sparkline beside the series needs, and what a person asks first ("was it news a minute ago
too?"). Most scores are 0 (a score reports news, docs/anomaly-detection.md): only steps with
a score above 0 are kept, so a quiet series costs nothing to keep or to show, and the peak
per step loses nothing a person would look for.
"""

from __future__ import annotations

import math
from collections import deque

STEP = 30.0
"""Seconds one point of the trail spans."""
STEPS = 30
"""Points kept: a quarter of an hour."""


class ScoreTrail:
    """The peak score per :data:`STEP` seconds, over the last :data:`STEPS` steps."""

    def __init__(self) -> None:
        self._peaks: deque[tuple[int, float]] = deque(maxlen=STEPS)

    def add(self, at: float, score: float) -> None:
        """A sample's score at monotonic ``at`` (samples come in time order)."""
        if score <= 0.0:
            return
        step = math.floor(at / STEP)
        peaks = self._peaks
        if peaks and peaks[-1][0] == step:
            if score > peaks[-1][1]:
                peaks[-1] = (step, score)
        elif not peaks or step > peaks[-1][0]:
            peaks.append((step, score))

    def points(self, now: float) -> list[float] | None:
        """The last :data:`STEPS` steps up to ``now``, oldest first: each one's peak score,
        0 where nothing was scored (no sample then, or nothing new). None when nothing in
        them was news: the series was quiet throughout."""
        last = math.floor(now / STEP)
        first = last - STEPS + 1
        if not self._peaks or self._peaks[-1][0] < first:
            return None
        found = [0.0] * STEPS
        for step, peak in self._peaks:
            if first <= step <= last:
                found[step - first] = round(peak, 2)
        return found
