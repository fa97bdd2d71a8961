"""What the recovery engine reports as it works, for ``/metrics``: an observer protocol the
orchestrator calls, and the Prometheus implementation of it (prometheus-client).

Histograms live in memory (a restart of Phoenix is a reset, which Prometheus handles);
counts of recoveries come from the store at scrape time (``phoenix_recoveries_total``: one
name for one meaning).
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram

from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class RecoveryObserver(Protocol):
    def recovery_ended(self, recovery: Recovery, incident: Incident | None) -> None: ...


class NoObserver:
    def recovery_ended(self, recovery: Recovery, incident: Incident | None) -> None:
        """Nothing watches (tests of the engine alone)."""


class PrometheusObserver:
    """Time to recovery and detection-to-action latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_recovery = Histogram(
            "phoenix_time_to_recovery_seconds",
            "From a failure's detection to its verified recovery",
            ["service", "strategy"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.detection_to_action = Histogram(
            "phoenix_detection_to_action_seconds",
            "From a failure's detection to the first step of its first recovery attempt",
            ["service"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )

    def recovery_ended(self, recovery: Recovery, incident: Incident | None) -> None:
        if incident is None or recovery.started_at is None:
            return
        if recovery.attempt == 1:
            waited = (recovery.started_at - incident.detected_at).total_seconds()
            self.detection_to_action.labels(recovery.service).observe(max(0.0, waited))
        if (
            recovery.outcome is not None
            and recovery.outcome.value == "success"
            and recovery.ended_at
        ):
            took = (recovery.ended_at - incident.detected_at).total_seconds()
            self.time_to_recovery.labels(recovery.service, recovery.strategy.value).observe(
                max(0.0, took)
            )
