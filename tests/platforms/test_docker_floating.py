"""A docker service any replica may own, at the platform's seam: its containers are listed
by the cluster's label when a replica takes it over, and an engine that cannot be reached
then is an error (nothing adopted, nothing started: the runtime tries again) rather than a
start beside containers not yet seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.clock import SystemClock
from phoenix_server.domain.errors import PlatformError
from phoenix_server.platforms.docker import DockerPlatform
from phoenix_server.platforms.docker.containers import CLUSTER_OWNER
from tests.platforms.test_capabilities import NoJournal
from tests.support import REPO


async def test_taking_over_without_the_engine_adopts_and_starts_nothing(tmp_path: Path) -> None:
    catalog = parse_service_file(
        """services:
  - name: crate
    platform: docker
    image: phoenix-test/anything:1
    command: [httpd, -f]
    health: {process: true}
""",
        source="test",
        base_dir=REPO,
        default_interval=1.0,
    )
    platform = DockerPlatform(
        owner="replica-1",
        floating_owner=CLUSTER_OWNER,
        clock=SystemClock(),
        run_dir=tmp_path,
        log_dir=tmp_path,
        journal=NoJournal(),
        env={},
        address=f"unix://{tmp_path}/no-engine.sock",
    )
    try:
        with pytest.raises(PlatformError, match="cannot list the containers of 'crate'"):
            await platform.take_over(catalog.get("crate"))
        assert platform.instances("crate") == []
        platform.let_go("crate")  # forgetting what it never had is harmless
    finally:
        await platform.shutdown(keep_running=True)
