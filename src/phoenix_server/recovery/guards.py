"""Limits on automatic recovery when recovering is what makes things worse.

:class:`RecoveryBudgets`: each service may start ``recovery.budget.attempts`` attempts per
``window``; a service that has stayed healthy for ``backoff.reset_after`` gets its whole
budget back (like Docker's restart policy resetting after 10 s up).

:class:`FleetFloor`: while more than a share of the services is unhealthy at once (and at
least a few are), automatic recovery pauses: a mass failure usually means the network or
Phoenix's own view is broken, and restarting everything makes it worse. Callers failing
because a dependency does are one failure, not several.

Both are bookkeeping only; the orchestrator decides what to do with their answers.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec


class RecoveryBudgets:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._started: dict[str, deque[float]] = {}
        """Monotonic start times of each service's recent attempts."""
        self._alerted: set[str] = set()
        """Services whose spent budget was alerted (once, until the budget resets)."""
        self._healthy_from: dict[str, float] = {}
        """When each service was last seen turning healthy."""

    def note_health(self, spec: ServiceSpec, status: ServiceStatus) -> None:
        """A look at the service's status; a failure after ``reset_after`` of health resets."""
        now = self._monotonic()
        if status is ServiceStatus.HEALTHY:
            self._healthy_from.setdefault(spec.name, now)
            return
        healthy_from = self._healthy_from.pop(spec.name, None)
        if healthy_from is not None and now - healthy_from >= spec.recovery.backoff.reset_after:
            self._started.pop(spec.name, None)
            self._alerted.discard(spec.name)

    def healthy_for(self, service: str) -> float | None:
        """Seconds the service has been seen healthy, if it is."""
        since = self._healthy_from.get(service)
        return None if since is None else self._monotonic() - since

    def left(self, spec: ServiceSpec) -> bool:
        return self.remaining(spec) > 0

    def remaining(self, spec: ServiceSpec) -> int:
        """Attempts the service's budget still allows within its window."""
        budget = spec.recovery.budget
        times = self._started.setdefault(spec.name, deque())
        now = self._monotonic()
        while times and now - times[0] >= budget.window:
            times.popleft()
        return max(0, budget.attempts - len(times))

    def spend(self, spec: ServiceSpec) -> None:
        self._started.setdefault(spec.name, deque()).append(self._monotonic())

    def refund(self, spec: ServiceSpec) -> None:
        """Give back the last attempt spent: it never got to try (the machine was out of
        resources), so it must not bring the budget's end nearer."""
        times = self._started.get(spec.name)
        if times:
            times.pop()

    def first_alert(self, spec: ServiceSpec) -> bool:
        """True the first time the spent budget is reported (until it resets)."""
        if spec.name in self._alerted:
            return False
        self._alerted.add(spec.name)
        return True

    @staticmethod
    def reason(spec: ServiceSpec) -> str:
        budget = spec.recovery.budget
        return (
            f"recovery budget spent: {budget.attempts} attempt(s) within {budget.window:g}s; "
            f"Phoenix waits for a person (a forced trigger) or for {spec.name} to stay "
            f"healthy {spec.recovery.backoff.reset_after:g}s"
        )


class FleetFloor:
    def __init__(self, share: float, minimum: int) -> None:
        self.share = share
        self.minimum = minimum
        self.pause: str | None = None
        """Why automatic recovery is paused, while it is."""

    def check(
        self,
        catalog: ServiceCatalog,
        tracker: HealthTracker,
        watched: Callable[[str], bool] | None = None,
    ) -> tuple[bool, list[str]]:
        """Look at the fleet now: (did a pause just begin, the services down on their own).
        A pause ends by itself once few enough are down.

        ``watched``: with several replicas, the services this one owns (None: all). Each
        replica judges its own share: the view that may be broken is its own (its network,
        its probes), and against the whole fleet a replica that sees every one of its own
        services down would still be under the floor and restart them all."""
        names = [s.name for s in catalog if watched is None or watched(s.name)]
        total = len(names)
        down = sorted(
            name
            for name in names
            if tracker.status(name) is ServiceStatus.UNHEALTHY and tracker.waiting_on(name) is None
        )
        if len(down) >= self.minimum and len(down) > self.share * total:
            if self.pause is not None:
                return False, down
            which = "services" if watched is None else "services this replica owns"
            self.pause = (
                f"automatic recovery paused: {len(down)} of {total} {which} are unhealthy "
                f"at once (more than {self.share:.0%}) — a mass failure usually means the "
                "network or Phoenix's own view is broken; manual triggers still work"
            )
            return True, down
        self.pause = None
        return False, down
