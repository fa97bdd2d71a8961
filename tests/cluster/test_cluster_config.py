"""What a replica refuses to start with: several Phoenixes on one SQLite file, cluster mode
without PostgreSQL, services only one machine can look after."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.replicas import FakeServices, service_file
from tests.support import REPO, free_port, running_phoenix, wait_until

pytestmark = pytest.mark.e2e


def serve(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phoenix_server", "serve", "--config", str(config)],
        cwd=REPO,
        env={**os.environ, "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_second_phoenix_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    config = service_file(tmp_path, FakeServices(), ["svc-0"])
    with running_phoenix(config, tmp_path / "var") as first:
        refused = serve(config, {"PHOENIX_DATA_DIR": str(tmp_path / "var")})
        assert refused.returncode == 2, refused.stderr
        assert "already uses the SQLite database" in refused.stderr
        assert first.process is not None and f"pid {first.process.pid}" in refused.stderr
        assert "PostgreSQL" in refused.stderr and "Traceback" not in refused.stderr
    # Once the first is gone (however it went), the file is free again.
    with running_phoenix(config, tmp_path / "var") as again:
        wait_until(lambda: again.get("/health").status_code == 200)


def test_cluster_mode_needs_postgresql_and_services_any_replica_can_watch(
    tmp_path: Path,
) -> None:
    config = tmp_path / "phoenix.yaml"
    config.write_text(
        "services:\n"
        "  - name: web\n"
        '    command: ["{python}", "-m", "http.server", "{port}"]\n'
        f"    port: {free_port()}\n"
        "  - name: edge\n"
        "    platform: external\n"
        '    health: {http: "http://127.0.0.1:9/"}\n'
        "  - name: box\n"
        "    platform: docker\n"
        "    image: busybox\n"
        "    command: [httpd, -f]\n"
        f"    port: {free_port()}\n"
        "  - name: crate\n"  # not routed: any replica may own it
        "    platform: docker\n"
        "    image: busybox\n"
        "    command: [httpd, -f]\n"
        f"    port: {free_port()}\n"
        "    router: false\n"
    )
    refused = serve(
        config,
        {
            "PHOENIX_CLUSTER": "1",
            "PHOENIX_DATA_DIR": str(tmp_path / "var"),
            "PHOENIX_REGISTRY_URL": "http://127.0.0.1:9/services",
        },
    )
    assert refused.returncode == 2, refused.stderr
    assert "PHOENIX_CLUSTER=1 cannot run this configuration" in refused.stderr
    assert "set DATABASE_URL=postgresql://" in refused.stderr
    assert "services.web.replica: a local service runs on one machine" in refused.stderr
    assert "services.box.replica: a routed docker service's router runs" in refused.stderr
    assert "services.crate" not in refused.stderr
    assert "services.edge" not in refused.stderr
    assert "PHOENIX_REGISTRY_URL" in refused.stderr
    assert not (tmp_path / "var" / "phoenix.db").exists(), "refused before touching anything"
