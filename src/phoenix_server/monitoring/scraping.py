"""Prometheus ``/metrics`` endpoints of a service's instances, scraped into its signals.

Each instance's endpoint (the ``metrics.prometheus`` URL template, rendered with the
instance's port) is read every ``metrics.every`` seconds in the Prometheus text format
(parsed by prometheus-client). Gauges are kept as they are and counters become rates per
second; a metric is summed over its label sets and over the instances (queue depth of the
whole service, requests per second of all replicas). Histograms and summaries are skipped:
their buckets are not one signal. A scrape that fails is logged once per outage and
retried at the next turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.services import (
    InstanceState,
    RenderContext,
    ServiceCatalog,
    ServiceSpec,
    render,
)
from phoenix_server.platforms.base import PlatformRegistry

log = logging.getLogger("phoenix.monitoring")

TIMEOUT = 2.0
MAX_BYTES = 4 * 1024 * 1024
"""A larger exposition is refused: a scrape must not cost Phoenix its memory."""
KEPT_TYPES = frozenset({"gauge", "counter", "unknown", "untyped"})


def read_exposition(text: str, names: Iterable[str] | None) -> dict[str, tuple[str, float]]:
    """Metric name -> (type, value summed over label sets) from Prometheus text."""
    wanted = set(names) if names is not None else None
    found: dict[str, tuple[str, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.type not in KEPT_TYPES:
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue  # a counter's creation time, not a signal
            if wanted is not None and sample.name not in wanted and family.name not in wanted:
                continue
            kind = "counter" if family.type == "counter" else "gauge"
            _, total = found.get(sample.name, (kind, 0.0))
            found[sample.name] = (kind, total + float(sample.value))
    return found


class PrometheusScraper:
    def __init__(
        self,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        tracker: HealthTracker,
        clock: Clock,
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._tracker = tracker
        self._clock = clock
        self._counters: dict[tuple[str, str, str], tuple[float, float]] = {}
        """(instance, metric, service) -> (when, value) of the last reading, for rates."""
        self._failing: set[str] = set()

    async def run(self) -> None:
        scraped = [spec for spec in self._catalog if spec.metrics is not None]
        if not scraped:
            return
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(*(self._every(session, spec.name) for spec in scraped))

    async def _every(self, session: aiohttp.ClientSession, name: str) -> None:
        while True:
            spec = self._catalog.get(name)
            assert spec.metrics is not None
            try:
                await self.scrape(session, spec)
            except Exception:
                # One service's odd endpoint must not stop the scraping of any other.
                log.exception("%s: scrape failed; trying again next time", name)
            await self._clock.sleep(spec.metrics.every)

    async def scrape(self, session: aiohttp.ClientSession, spec: ServiceSpec) -> None:
        """One round over the service's instances; the sums go to the tracker."""
        assert spec.metrics is not None
        platform = self._platforms.for_service(spec)
        totals: dict[str, float] = {}
        unknown: set[str] = set()
        """Counters whose rate one instance cannot give yet (its first reading): the sum
        would dip by that instance's share, which the detector would take for a fall."""
        for instance in platform.instances(spec.name):
            if instance.state is not InstanceState.RUNNING:
                continue
            context = RenderContext(
                name=spec.name,
                python="",
                port=instance.port,
                address=instance.address or "127.0.0.1",
            )
            url = render(spec.metrics.prometheus, context)
            text = await self._fetch(session, instance.id, url)
            if text is None:
                continue
            try:
                readings = read_exposition(text, spec.metrics.names)
            except Exception as exc:  # the parser raises more than ValueError on odd input
                self._complain(instance.id, f"{url}: not the Prometheus text format: {exc}")
                continue
            now = self._clock.monotonic()
            for metric, (kind, value) in readings.items():
                if kind == "counter":
                    rate = self._rate((instance.id, metric, spec.name), now, value)
                    if rate is None:
                        unknown.add(metric)
                        continue
                    value = rate
                totals[metric] = totals.get(metric, 0.0) + value
        live = {i.id for i in platform.instances(spec.name)}
        for key in [k for k in self._counters if k[0] not in live and k[2] == spec.name]:
            del self._counters[key]  # an instance gone: its counters with it
        for metric in unknown:
            totals.pop(metric, None)
        if totals:
            refused = self._tracker.record_metrics(spec.name, totals)
            if refused:
                self._complain(spec.name, f"too many series; not kept: {', '.join(refused)}")

    def _rate(self, key: tuple[str, str, str], now: float, value: float) -> float | None:
        """Per second since the last reading; None for the first one. A counter lower than
        last time restarted from zero with its process: what it counts now was counted since
        then (Prometheus' rate() reads a reset the same way)."""
        previous = self._counters.get(key)
        self._counters[key] = (now, value)
        if previous is None or now <= previous[0]:
            return None
        counted = value if value < previous[1] else value - previous[1]
        return counted / (now - previous[0])

    async def _fetch(self, session: aiohttp.ClientSession, key: str, url: str) -> str | None:
        try:
            async with session.get(url) as answer:
                if answer.status != 200:
                    self._complain(key, f"{url} answered {answer.status}")
                    return None
                body = await answer.content.read(MAX_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self._complain(key, f"cannot scrape {url}: {exc.__class__.__name__}: {exc}")
            return None
        if len(body) > MAX_BYTES:
            self._complain(key, f"{url}: more than {MAX_BYTES} bytes; not read")
            return None
        self._failing.discard(key)
        return body.decode(errors="replace")

    def _complain(self, key: str, message: str) -> None:
        if key not in self._failing:
            self._failing.add(key)
            log.warning("%s", message)
