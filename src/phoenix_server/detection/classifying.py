"""Root-cause classification: which kind of failure a service's symptoms describe.

A process exit or a failing health check means ``service_down``. A service that passes its
checks but shows a symptom (symptoms.py: error rate, load, latency, a memory leak) has the
symptom's type. ``cascading`` needs the dependency graph: the orchestrator decides it
(see :func:`cascading`), since it needs every service's state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from phoenix_server.detection.health_tracking import ServiceHealthView
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


def diagnose(view: ServiceHealthView, transition: HealthTransition | None) -> Diagnosis:
    """Classify a failing service from its state now (and the transition that woke Phoenix,
    if any): a failing check or exit first, else its most telling symptom."""
    checks_fail = view.status is ServiceStatus.UNHEALTHY or any(
        status is ServiceStatus.UNHEALTHY for status in view.targets.values()
    )
    if checks_fail:
        if transition is not None and transition.current is not ServiceStatus.HEALTHY:
            return diagnose_transition(transition)
        return diagnose_status(ServiceStatus.UNHEALTHY, view.reason)
    if view.symptoms:
        first = view.symptoms[0]
        evidence = tuple(e for symptom in view.symptoms for e in symptom.evidence)
        return Diagnosis(first.failure_type, first.summary, evidence)
    return diagnose_status(view.status, view.reason)


def cascading(service: str, own: Diagnosis, callers: Sequence[tuple[str, str]]) -> Diagnosis:
    """``service`` fails and so do ``callers`` (name, why) because of it: the root cause of a
    cascade. Its callers are left alone (they wait on it) and shielded by its circuit."""
    names = ", ".join(name for name, _ in callers)
    return Diagnosis(
        FailureType.CASCADING,
        f"cascading failure: {own.summary}; its callers fail with it: {names}",
        (*own.evidence, *(f"caller {name}: {why}" for name, why in callers)),
    )
