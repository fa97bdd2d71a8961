"""Which active playbook, if any, answers a service's failure — before the default table.

A trigger matches a failure when its condition holds now: a ``failure_type`` (or
``service_down``) trigger by the incident's type; ``error_rate``, ``latency`` (a
percentile, ms), ``memory`` (MB of the largest instance), ``cpu`` (% of a core) when every
sample of the metric over the trigger's ``duration`` is at or above its threshold (and the
samples cover the duration); ``anomaly_score`` when a metric's score reached the threshold
within the duration; ``alert`` when an Alertmanager alert of that name reports the failure.
``manual`` triggers never match a failure (the playbook runs when asked). Of
the playbooks that match, a service-bound one wins over a global one, then the higher
priority, then the older one — never two.
"""

from __future__ import annotations

from collections.abc import Iterable

from phoenix_server.detection.signals import CPU, ERROR_RATE, MEMORY, ServiceSignals
from phoenix_server.domain.incidents import FailureType, Incident
from phoenix_server.domain.playbooks import Playbook, PlaybookStatus, PlaybookTrigger, TriggerType

MB = 1024 * 1024


def _held(
    signals: ServiceSignals, metric: str, threshold: float, duration: float, now: float
) -> bool:
    series = signals.series.get(metric)
    if series is None or not len(series):
        return False
    if duration <= 0:
        latest = series.latest()
        return latest is not None and latest.value >= threshold
    samples = list(series)
    if samples[0].at > now - duration:
        return False  # not watched for long enough yet
    recent = [s for s in samples if s.at >= now - duration]
    return bool(recent) and all(s.value >= threshold for s in recent)


def trigger_matches(
    trigger: PlaybookTrigger,
    incident: Incident | None,
    signals: ServiceSignals,
    now: float,
    alert: str | None = None,
) -> bool:
    duration = trigger.duration or 0.0
    threshold = trigger.threshold if trigger.threshold is not None else 0.0
    match trigger.type:
        case TriggerType.SERVICE_DOWN:
            return incident is not None and incident.failure_type is FailureType.SERVICE_DOWN
        case TriggerType.FAILURE_TYPE:
            wanted = trigger.params.get("failureType")
            return incident is not None and incident.failure_type.value == wanted
        case TriggerType.ERROR_RATE:
            return _held(signals, ERROR_RATE, threshold, duration, now)
        case TriggerType.LATENCY:
            percentile = int(str(trigger.params.get("percentile", 99)))
            metric = (
                "latency_p50"
                if percentile <= 50
                else ("latency_p95" if percentile <= 95 else "latency_p99")
            )
            return _held(signals, metric, threshold, duration, now)
        case TriggerType.MEMORY:
            return _held(signals, MEMORY, threshold * MB, duration, now)
        case TriggerType.CPU:
            return _held(signals, CPU, threshold, duration, now)
        case TriggerType.ALERT:
            return alert is not None and trigger.params.get("alert") == alert
        case TriggerType.ANOMALY_SCORE:
            # Any sample within the duration, not only each series' latest: a push whose
            # last sample is calm after an anomalous one still reached the threshold.
            return signals.scored(threshold, since=now - max(duration, 1.0))
        case _:
            return False


def describe_trigger(trigger: PlaybookTrigger) -> str:
    """``error_rate >= 0.1 for 60s``, for records."""
    text = trigger.type.value
    if trigger.threshold is not None:
        text += f" >= {trigger.threshold:g}"
    if trigger.duration:
        text += f" for {trigger.duration:g}s"
    return text


def choose(
    playbooks: Iterable[Playbook],
    service: str,
    incident: Incident | None,
    signals: ServiceSignals,
    now: float,
    alert: str | None = None,
) -> Playbook | None:
    """The one playbook that answers the service's failure now, or None. ``alert``: the
    name of the Alertmanager alert that reported it."""
    matching = [
        p
        for p in playbooks
        if p.status is PlaybookStatus.ACTIVE
        and p.service in (None, service)
        and any(trigger_matches(t, incident, signals, now, alert) for t in p.triggers)
    ]
    if not matching:
        return None
    return min(matching, key=lambda p: (p.service is None, -p.priority, p.created_at))
