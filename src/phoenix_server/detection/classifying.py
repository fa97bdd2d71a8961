"""Root-cause classification: which kind of failure a service's symptoms describe.

This first version knows the signals the foundation collects (process exits and
failing probes), which both mean ``service_down``. The detection issue adds error
rates, latency, memory trends and the dependency graph (``cascading``).
"""

from __future__ import annotations

from dataclasses import dataclass

from phoenix_server.domain.health import HealthTransition, ServiceStatus
from phoenix_server.domain.incidents import FailureType


@dataclass(frozen=True)
class Diagnosis:
    failure_type: FailureType
    summary: str
    evidence: tuple[str, ...]


def diagnose_transition(transition: HealthTransition) -> Diagnosis:
    """Classify a service that just became unhealthy."""
    if transition.reason.startswith("could not start"):
        summary = transition.reason
    elif transition.certain:
        summary = f"process ended: {transition.reason}"
    else:
        summary = f"health check failing: {transition.reason}"
    return Diagnosis(FailureType.SERVICE_DOWN, summary, (transition.reason, *transition.evidence))


def diagnose_status(status: ServiceStatus, reason: str) -> Diagnosis:
    """Classify from the current status alone (a manual trigger, with no transition at hand)."""
    if status is ServiceStatus.UNHEALTHY:
        return Diagnosis(FailureType.SERVICE_DOWN, f"service unhealthy: {reason}", (reason,))
    return Diagnosis(FailureType.UNKNOWN, f"service {status.value} when recovery was requested", ())
