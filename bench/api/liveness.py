"""The liveness probe: what a kubelet-like prober sees while the API is under load."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from bench.api.load import percentile

PROBE_EVERY = 0.010
PROBE_TIMEOUT = 1.0


@dataclass
class ProbeRecord:
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    """Requests that got no 200 within the probe's timeout (a liveness failure)."""
    late_sends: int = 0
    """Ticks whose request went out late, the previous answer not yet in."""
    drain: float = 0.0
    """Seconds the server went on working after the load stopped."""

    def summary(self) -> str:
        ordered = sorted(self.latencies)
        if not ordered:
            return f"no answer at all ({self.failures} failures)"
        return (
            f"p50 {percentile(ordered, 50) * 1000:7.2f} ms  "
            f"p99 {percentile(ordered, 99) * 1000:7.2f} ms  "
            f"max {ordered[-1] * 1000:7.2f} ms  n={len(ordered)}  "
            f"failed (>{PROBE_TIMEOUT:g} s or not 200) {self.failures}  "
            f"late sends {self.late_sends}"
            + (f"  (then {self.drain:.1f} s to drain)" if self.drain >= 1 else "")
        )

    @property
    def p99_ms(self) -> float:
        return percentile(sorted(self.latencies), 99) * 1000


class LivenessProbe(threading.Thread):
    """One keep-alive connection sending ``GET /health`` every ``PROBE_EVERY`` s."""

    def __init__(self, port: int) -> None:
        super().__init__(name="liveness-probe", daemon=True)
        self.port = port
        self.record = ProbeRecord()
        self._halt = threading.Event()

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        next_at = time.perf_counter()
        try:
            while not self._halt.is_set():
                now = time.perf_counter()
                if now < next_at:
                    self._halt.wait(next_at - now)
                    continue
                if now - next_at > PROBE_EVERY:
                    self.record.late_sends += 1
                next_at += PROBE_EVERY * (1 + int((now - next_at) / PROBE_EVERY))
                self._probe(connection)
        finally:
            connection.close()

    def _probe(self, connection: http.client.HTTPConnection) -> None:
        began = time.perf_counter()
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            ok = False
            connection.close()  # the next request opens a fresh connection
        elapsed = time.perf_counter() - began
        if ok and elapsed <= PROBE_TIMEOUT:
            self.record.latencies.append(elapsed)
        else:
            self.record.failures += 1

    def stop(self) -> ProbeRecord:
        self._halt.set()
        self.join(PROBE_TIMEOUT + 5)
        return self.record


@contextmanager
def probing(port: int) -> Iterator[LivenessProbe]:
    probe = LivenessProbe(port)
    probe.start()
    try:
        yield probe
    finally:
        probe.stop()
