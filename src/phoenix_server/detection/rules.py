"""Threshold rules with a duration and hysteresis: "error rate > 0.1 for 10 s".

A rule fires once its metric has stayed above the threshold for the rule's duration, and
clears once it has stayed at or under the lower clear level (threshold minus the
hysteresis) for the duration again. A metric between the two levels changes nothing, so a
value hovering at the threshold does not flap. A short gap in the samples keeps the rule
where it is; a firing rule with no sample for its whole duration (the traffic stopped, the
process is gone) clears, since nothing shows the failure any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from phoenix_server.domain.services import ThresholdRule


@dataclass
class RuleState:
    rule: ThresholdRule
    firing: bool = False
    since: float | None = None
    """When the metric last crossed to the side that would change ``firing``."""
    last_value: float | None = None
    last_sample: float | None = None

    @property
    def clear_level(self) -> float:
        return self.rule.above * (1.0 - self.rule.hysteresis)

    def update(self, at: float, value: float | None) -> bool:
        """Feed the metric's value at monotonic ``at`` (None: no sample); return firing."""
        if value is None:
            if (
                self.firing
                and self.last_sample is not None
                and at - self.last_sample >= max(self.rule.duration, 1.0)
            ):
                self.firing, self.since = False, None
            return self.firing
        self.last_value = value
        self.last_sample = at
        crossing = value <= self.clear_level if self.firing else value > self.rule.above
        if not crossing:
            self.since = None
            return self.firing
        if self.since is None:
            self.since = at
        if at - self.since >= self.rule.duration:
            self.firing = not self.firing
            self.since = None
        return self.firing

    def describe(self) -> str:
        shown = "?" if self.last_value is None else f"{self.last_value:.4g}"
        return f"{self.rule.metric} {shown} above {self.rule.above:g} for {self.rule.duration:g}s"
