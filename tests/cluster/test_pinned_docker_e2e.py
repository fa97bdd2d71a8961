"""Docker services among several replicas: a service's containers carry the id of the
replica that made them and its router runs on that replica's machine, so only the replica
declared for it owns it. It recovers the service, the others show what it recorded, its
containers serve on while it is down, nobody else takes them, and it adopts them again
after its restart (the real Docker engine on this machine)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from phoenix_server.platforms.docker.containers import OWNER_LABEL
from tests.cluster.replicas import LEASE, Replicas
from tests.cluster.test_pinned_e2e import heartbeat_of
from tests.store.conftest import postgres_schema
from tests.support import PhoenixServer, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def service_file(
    path: Path, image: str, port: int, *, placement: str = "replica: replica-1"
) -> Path:
    """``placement``: the line that says where it runs (pinned to replica-1 by default)."""
    path.write_text(f"""
services:
  - name: web
    platform: docker
    {placement}
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
      startup_timeout: 20s
    stop: {{grace: 1s, drain: 1s}}
""")
    return path


def containers(owner: str) -> list[str]:
    """Running containers of ``web`` made by ``owner``."""
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "--filter",
            "label=phoenix.service=web",
            "--filter",
            f"label={OWNER_LABEL}={owner}",
            "--format",
            "{{.Names}}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(listed.stdout.split())


def running(server: PhoenixServer) -> list[str]:
    instances = server.service("web")["instances"]
    return sorted(i["id"] for i in instances if i["state"] == "running")


def test_a_docker_service_is_looked_after_by_its_replica_only(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    config = service_file(tmp_path / "phoenix.yaml", docker_image, port)
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, config, url, 2)
        try:
            group.start_all()
            wait_until(lambda: group.owner_of("web") == "replica-1", timeout=10 * LEASE)
            first, second = group.servers["replica-1"], group.servers["replica-2"]
            wait_until(lambda: first.status_of("web") == "healthy", timeout=30)
            (serving,) = running(first)
            assert containers("replica-1") == [serving]
            assert containers("replica-2") == [], "replica-2 starts no container of web"
            wait_until(
                lambda: "as replica-1 saw it" in second.health_of("web")["reason"],
                timeout=10 * LEASE,
                message="replica-1's view of web on replica-2",
            )

            # Its replica recovers it: the container is killed behind Phoenix's back.
            subprocess.run(["docker", "kill", serving], check=True, capture_output=True)
            wait_until(
                lambda: (now := running(first)) != [] and now != [serving],
                timeout=30,
                message="web replaced by replica-1",
            )
            wait_until(lambda: first.status_of("web") == "healthy", timeout=30)
            (replaced,) = running(first)

            group.kill("replica-1")
            assert containers("replica-1") == [replaced], "serves on without its replica"
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            killed_at = heartbeat_of(group, "replica-2")
            wait_until(
                lambda: (
                    heartbeat_of(group, "replica-2") >= killed_at + timedelta(seconds=3 * LEASE)
                ),
                timeout=10 * LEASE,
                message="replica-2 beating for three leases",
            )
            assert group.owner_of("web", besides="replica-1") is None
            assert containers("replica-2") == [], "replica-2 never takes it over"

            again = group.start("replica-1")
            wait_until(lambda: group.owner_of("web") == "replica-1", timeout=10 * LEASE)
            wait_until(lambda: again.status_of("web") == "healthy", timeout=30)
            assert running(again) == [replaced], "adopted, not restarted"
        finally:
            group.close()
    assert containers("replica-1") == [], "stopped with its replica"
