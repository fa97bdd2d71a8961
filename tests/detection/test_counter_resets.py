"""A counter that starts again from zero (its process restarted) must not show as an anomaly
of the rate computed from it. Counters become rates in two places: the router's counters in
detection/signals.py, and Prometheus counters in monitoring/scraping.py; both are tested here
(a reset there is the scraper's rule, exercised over real HTTP with real exposition text)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from types import SimpleNamespace

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from phoenix_server.detection.signals import THROUGHPUT, ServiceSignals
from phoenix_server.domain.health import TrafficCounters
from phoenix_server.domain.services import InstanceState, MetricsSource
from phoenix_server.monitoring.scraping import PrometheusScraper
from tests.support import LoopbackHTTPServer

# -- the router's counters ---------------------------------------------------------------


def router_rates(readings: list[tuple[float, TrafficCounters]]) -> list[float]:
    signals = ServiceSignals(min_requests=1)
    for at, counters in readings:
        signals.record_traffic(at, counters)
    return [sample.value for sample in signals.series[THROUGHPUT]]


def steady(epoch: float, start: int, seconds: range) -> list[tuple[float, TrafficCounters]]:
    """10 requests a second, counted from ``start`` since ``epoch``."""
    return [(float(t), TrafficCounters(epoch, start + 10 * i, 0, 0)) for i, t in enumerate(seconds)]


def test_a_router_restart_is_a_gap_in_the_rate_not_a_plunge() -> None:
    readings = steady(1.0, 5000, range(0, 30)) + steady(2.0, 0, range(30, 60))
    rates = router_rates(readings)
    assert min(rates) == pytest.approx(10.0) and max(rates) == pytest.approx(10.0)


def test_counters_that_go_down_within_an_epoch_are_a_restart_too() -> None:
    readings = steady(1.0, 5000, range(0, 30)) + steady(1.0, 0, range(30, 60))
    rates = router_rates(readings)
    assert min(rates) == pytest.approx(10.0), "never a negative rate"


# -- Prometheus counters, scraped --------------------------------------------------------


class Exporters:
    """Each instance's ``jobs_total`` counter, served as real exposition text at /<port>."""

    def __init__(self, names: list[str]) -> None:
        self.registries = {name: CollectorRegistry() for name in names}
        self.jobs = {n: Counter("jobs", "done", registry=r) for n, r in self.registries.items()}
        self.lock = threading.Lock()

    def restart(self, name: str) -> None:
        with self.lock:
            self.registries[name] = CollectorRegistry()
            self.jobs[name] = Counter("jobs", "done", registry=self.registries[name])

    def handler(self) -> type[BaseHTTPRequestHandler]:
        exporters = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = sorted(exporters.registries)[int(self.path.strip("/"))]
                with exporters.lock:
                    body = generate_latest(exporters.registries[name])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Tracker:
    """Stands for the health tracker: what it is given goes into a real ServiceSignals."""

    def __init__(self) -> None:
        self.signals = ServiceSignals()
        self.totals: list[float] = []

    def record_metrics(self, service: str, values: Mapping[str, float]) -> list[str]:
        self.totals.append(values["jobs_total"])
        return self.signals.record(len(self.totals), values)


def scraped_rates(instances: int, restart_at: int, rounds: int) -> Tracker:
    """``instances`` instances doing 10 jobs a second each, scraped every 5 s; the first
    instance restarts (its counter back to zero) just before round ``restart_at``."""
    names = [f"i{index}" for index in range(instances)]
    exporters = Exporters(names)
    clock, tracker = Clock(), Tracker()
    running = [
        SimpleNamespace(id=name, state=InstanceState.RUNNING, port=index, address=None)
        for index, name in enumerate(names)
    ]
    platform = SimpleNamespace(instances=lambda _service: running)
    with LoopbackHTTPServer(exporters.handler()) as server:
        spec = SimpleNamespace(
            name="worker",
            metrics=MetricsSource(prometheus=server.url + "/{port}", names=("jobs_total",)),
        )
        registry = SimpleNamespace(for_service=lambda _spec: platform)
        scraper = PrometheusScraper(None, registry, tracker, clock)  # type: ignore[arg-type]

        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                for round_ in range(rounds):
                    if round_ == restart_at:
                        exporters.restart(names[0])
                    for jobs in exporters.jobs.values():
                        jobs.inc(50)
                    clock.now = 5.0 * round_
                    await scraper.scrape(session, spec)  # type: ignore[arg-type]

        asyncio.run(run())
    return tracker


def test_a_single_instances_restart_keeps_its_rate_and_raises_no_alarm() -> None:
    tracker = scraped_rates(instances=1, restart_at=250, rounds=300)
    # The first reading gives none; at the reset, what the counter shows was counted since
    # the restart (as Prometheus' rate() reads it): the rate goes on at 10/s.
    assert tracker.totals == [10.0] * (300 - 1)
    assert tracker.signals.anomaly["jobs_total"][1] == 0.0


def test_one_of_three_instances_restarting_does_not_dip_the_services_rate() -> None:
    tracker = scraped_rates(instances=3, restart_at=20, rounds=30)
    assert min(tracker.totals) == pytest.approx(30.0)
    assert len(tracker.totals) == 30 - 1, "only the very first round, with no rate yet, left out"
