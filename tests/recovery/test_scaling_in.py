"""When a sample of a service's load counts towards scaling in (recovery/scaling_in.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.services import ServiceSpec
from phoenix_server.recovery.scaling_in import LoadSample, is_low


def spec(text: str) -> ServiceSpec:
    catalog = parse_service_file(
        f"services:\n  - name: api\n    command: [run]\n{text}",
        source="s.yaml",
        base_dir=Path("/srv"),
        default_interval=1.0,
    )
    return catalog.get("api")


ROUTED = spec(
    "    port: 8080\n    replicas: {min: 2, max: 5, scale_in_below: 10, scale_in_after: 60s}\n"
)


@pytest.mark.parametrize(
    ("sample", "low"),
    [
        (LoadSample(replicas=3, throughput=29.0, healthy=True, busy=False), True),
        (LoadSample(replicas=3, throughput=30.0, healthy=True, busy=False), False),
        (LoadSample(replicas=2, throughput=0.0, healthy=True, busy=False), False),  # at min
        (LoadSample(replicas=1, throughput=0.0, healthy=True, busy=False), False),  # below
        (LoadSample(replicas=3, throughput=None, healthy=True, busy=False), False),  # unmeasured
        (LoadSample(replicas=3, throughput=0.0, healthy=False, busy=False), False),
        (LoadSample(replicas=3, throughput=0.0, healthy=True, busy=True), False),
    ],
)
def test_low_load_needs_spare_replicas_health_quiet_and_a_measurement(
    sample: LoadSample, low: bool
) -> None:
    assert is_low(ROUTED, sample) is low


def test_an_unrouted_service_never_scales_in() -> None:
    plain = spec("    replicas: 1\n")
    assert not is_low(plain, LoadSample(replicas=3, throughput=0.0, healthy=True, busy=False))
