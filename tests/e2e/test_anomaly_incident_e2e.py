"""An anomaly alone opens an incident (``anomaly: {incidents: true}``) that says why: the
metric, the sample that broke it, its score and the series' usual range, read back through
the API of a real Phoenix with a real service."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import PhoenixServer, free_port, service_file, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

ANOMALY_INCIDENTS = """    detection:
      anomaly: {threshold: 0.5, incidents: true, hold: 30s}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PhoenixServer]:
    path = service_file(tmp_path, web_service_yaml("web", free_port(), extra=ANOMALY_INCIDENTS))
    phoenix = PhoenixServer(path, tmp_path / "var").start()
    wait_until(lambda: phoenix.status_of("web") == "healthy", timeout=20)
    yield phoenix
    phoenix.close()


def test_an_anomaly_alone_is_an_incident_that_names_the_sample_and_the_usual_range(
    server: PhoenixServer,
) -> None:
    rng = random.Random(11)
    calm = [{"metric": "queue_depth", "value": rng.gauss(120.0, 10.0)} for _ in range(1500)]
    spike = {"metric": "queue_depth", "value": 4321.0}
    after = {"metric": "queue_depth", "value": 121.0}  # the same batch goes on, calm
    answer = server.post("/api/metrics", json={"service": "web", "samples": [*calm, spike, after]})
    assert answer.status_code == 202, answer.text

    def incident() -> dict[str, Any] | None:
        found = server.get("/api/incidents", params={"service": "web"}).json()["incidents"]
        return found[0] if found else None

    opened = wait_until(incident, timeout=15, message="an incident for the anomaly")
    summary = re.fullmatch(
        r"anomalous queue_depth = 4,321 scored 1\.00 \(usually (\S+) to (\S+)\)",
        opened["summary"],
    )
    assert summary is not None, opened["summary"]
    low, high = map(float, summary.groups())
    assert 92.0 < low < 102.0 and 138.0 < high < 148.0, "about 120 +- 2.33 sd: the middle 98 %"
    assert opened["failureType"] == "unknown"
    assert f"anomaly: {opened['summary'].removeprefix('anomalous ')}" in opened["evidence"]
