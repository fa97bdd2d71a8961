"""``GET /metrics``: Phoenix in the Prometheus text format (prometheus-client).

Totals over the whole history (ended recoveries of this installation by service, strategy
and outcome; incidents by failure type; false positives) are read from the store at scrape
time; the state now (services' health and uptime, recoveries running, incidents open or
given up on, the alert outbox) from the engine and the store; reports received since start
from the intake; histograms of time to recovery and detection-to-action latency from the
engine's observer since it started; and the standard process metrics. docs/operations.md
lists them all and says which are safe to alert on.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from phoenix_server import __version__
from phoenix_server.api.common import RuntimeDep
from phoenix_server.api.engine import Engine
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.incidents import IncidentStatus
from phoenix_server.store import alerts, incidents, recoveries

router = APIRouter(tags=["metrics"])

# ``*_created`` series double every counter and histogram for a value nobody alerts on.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus exposition of recoveries, incidents, services and Phoenix itself."""
    families: list[Metric] = []
    recovered = CounterMetricFamily(
        "phoenix_recoveries",
        "Recoveries this Phoenix ran that ended (each attempt once, once its verdict is "
        "final), by service, strategy, status and outcome; running: phoenix_active_recoveries",
        labels=["service", "strategy", "status", "outcome"],
    )
    for service, strategy, status, outcome, count in await runtime.store.read(
        recoveries.recovery_totals,
        owner=runtime.owner,
        excluding=runtime.unsettled_recovery_ids(),
    ):
        recovered.add_metric([service, strategy, status, outcome or "none"], count)
    families.append(recovered)
    found = CounterMetricFamily(
        "phoenix_incidents",
        "Incidents recorded, by failure type",
        labels=["service", "failure_type"],
    )
    false = CounterMetricFamily(
        "phoenix_false_positives",
        "Incidents an operator marked as no real failure",
        labels=["service"],
    )
    flagged: dict[str, int] = {}
    by_type: dict[tuple[str, str], int] = {}
    for service, kind, false_positive, count in await runtime.store.read(incidents.incident_totals):
        by_type[(service, kind)] = by_type.get((service, kind), 0) + count
        if false_positive:
            flagged[service] = flagged.get(service, 0) + count
    for (service, kind), count in sorted(by_type.items()):
        found.add_metric([service, kind], count)
    for service, count in sorted(flagged.items()):
        false.add_metric([service], count)
    families += [found, false]
    active = GaugeMetricFamily("phoenix_active_recoveries", "Recoveries running now")
    active.add_metric([], runtime.active_recoveries())
    up = GaugeMetricFamily(
        "phoenix_service_up",
        "1 while the service serves (healthy or degraded), else 0; not exported while "
        "Phoenix is recovering it (see phoenix_service_recovering)",
        labels=["service"],
    )
    recovering = GaugeMetricFamily(
        "phoenix_service_recovering",
        "1 while Phoenix is recovering the service (its own stops and starts), else 0",
        labels=["service"],
    )
    states = GaugeMetricFamily(
        "phoenix_service_status", "1 for the service's current status", labels=["service", "status"]
    )
    uptime = GaugeMetricFamily(
        "phoenix_service_uptime_ratio",
        "Share of the last 24 h (or since monitoring began) the service was serving",
        labels=["service"],
    )
    dropped = CounterMetricFamily(
        "phoenix_signal_samples_dropped",
        "Metric samples refused before anomaly detection since Phoenix started, by service, "
        "metric and reason (not_finite: NaN or infinite; late: older than the series' latest; "
        "repeated: the latest again)",
        labels=["service", "metric", "reason"],
    )
    for spec in runtime.catalog:
        view = runtime.health(spec.name)
        for metric, reasons in view.samples_dropped.items():
            for reason, count in sorted(reasons.items()):
                dropped.add_metric([spec.name, metric, reason], count)
        acting = runtime.active_recovery(spec.name) is not None
        recovering.add_metric([spec.name], float(acting))
        # A stop Phoenix makes itself is not the service being down: an alert rule on
        # up == 0 must not fire (and come back to Phoenix as a second incident) mid-restart.
        if view.status is not ServiceStatus.UNKNOWN and not acting:
            up.add_metric([spec.name], 1.0 if view.status.serving else 0.0)
        for candidate in ServiceStatus:
            states.add_metric([spec.name, candidate.value], float(candidate is view.status))
        if view.uptime is not None:
            uptime.add_metric([spec.name], view.uptime / 100.0)
    families += [active, up, recovering, states, uptime, dropped]
    families += await _what_operators_alert_on(runtime)
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(_Snapshot(families))
    body = generate_latest(snapshot) + generate_latest(runtime.metrics_registry)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)


async def _what_operators_alert_on(runtime: Engine) -> list[Metric]:
    unresolved = GaugeMetricFamily(
        "phoenix_unresolved_incidents",
        "Incidents not resolved now, by service, failure type and state: open (Phoenix is "
        "on it) or gave_up (Phoenix stopped trying: a person must act)",
        labels=["service", "failure_type", "state"],
    )
    counts: dict[tuple[str, str, str], int] = {}
    for incident in runtime.unresolved_incidents():
        state = "gave_up" if incident.status is IncidentStatus.UNRESOLVED else "open"
        key = (incident.service, incident.failure_type.value, state)
        counts[key] = counts.get(key, 0) + 1
    for labels, count in sorted(counts.items()):
        unresolved.add_metric(list(labels), count)
    waiting, oldest = await runtime.store.read(alerts.backlog)
    outbox = GaugeMetricFamily(
        "phoenix_alert_outbox_pending", "Alerts not yet delivered to ALERT_WEBHOOK"
    )
    outbox.add_metric([], waiting)
    age = GaugeMetricFamily(
        "phoenix_alert_outbox_oldest_age_seconds",
        "Age of the oldest alert not yet delivered to ALERT_WEBHOOK (0: none waiting)",
    )
    age.add_metric(
        [], (runtime.clock.now() - oldest).total_seconds() if oldest is not None else 0.0
    )
    reports = CounterMetricFamily(
        "phoenix_reports",
        "Failure reports received since Phoenix started (Alertmanager alerts, events), by "
        "origin and what became of them (recovering, recorded, joined, duplicate, resolved, "
        "stale, ignored)",
        labels=["origin", "action"],
    )
    for (origin, action), count in sorted(runtime.reports.received.items()):
        reports.add_metric([origin, action], count)
    truncated = CounterMetricFamily(
        "phoenix_alerts_truncated",
        "Alerts left out of Alertmanager payloads since Phoenix started, by who left them "
        "out (alertmanager: its max_alerts; phoenix: over 1000 in one payload)",
        labels=["by"],
    )
    for by in ("alertmanager", "phoenix"):
        truncated.add_metric([by], runtime.reports.truncated[by])
    budget = GaugeMetricFamily(
        "phoenix_recovery_budget_remaining",
        "Automatic recovery attempts the service's budget still allows in its window (0: "
        "Phoenix waits for a person or for the service to stay healthy)",
        labels=["service"],
    )
    for spec in runtime.catalog:
        budget.add_metric([spec.name], runtime.budget_remaining(spec.name))
    paused = GaugeMetricFamily(
        "phoenix_fleet_paused",
        "1 while the fleet floor pauses automatic recovery (too many services down at once)",
    )
    paused.add_metric([], float(runtime.fleet_pause is not None))
    late = GaugeMetricFamily(
        "phoenix_probe_lateness_seconds",
        "How late health probes start, smoothed (over 1 s: more targets than Phoenix's CPU "
        "can probe on time)",
    )
    late.add_metric([], runtime.probe_lateness)
    build = GaugeMetricFamily(
        "phoenix_build_info", "Always 1: the version of Phoenix running", labels=["version"]
    )
    build.add_metric([__version__], 1.0)
    return [unresolved, outbox, age, reports, truncated, budget, paused, late, build]
