"""Reading the Prometheus text format (monitoring/scraping.py), from real exposition made
by prometheus-client."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from phoenix_server.monitoring.scraping import read_exposition


def exposition() -> str:
    registry = CollectorRegistry()
    depth = Gauge("queue_depth", "waiting", ["queue"], registry=registry)
    depth.labels("a").set(3)
    depth.labels("b").set(4)
    Counter("jobs", "done", registry=registry).inc(42)
    Histogram("latency_seconds", "took", registry=registry).observe(0.2)
    return generate_latest(registry).decode()


def test_gauges_are_summed_over_labels_counters_kept_histograms_skipped() -> None:
    found = read_exposition(exposition(), None)
    assert found == {"queue_depth": ("gauge", 7.0), "jobs_total": ("counter", 42.0)}


def test_only_the_names_asked_for() -> None:
    assert read_exposition(exposition(), ["jobs_total"]) == {"jobs_total": ("counter", 42.0)}


def test_text_that_is_not_the_format_is_an_error() -> None:
    with pytest.raises(ValueError):
        read_exposition("this is { not prometheus", None)
