"""A docker service any replica may own (not pinned, not routed): its containers carry the
cluster's owner label, not a replica's. Its owner runs it; when that owner is killed, the
replica that takes the service over adopts the container as it runs (no restart) and
recovers it from then on; the containers serve on while replicas come and go (the real
Docker engine on this machine, reached alike by every replica)."""

from __future__ import annotations

import subprocess
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from phoenix_server.platforms.docker.containers import CLUSTER_OWNER, OWNER_LABEL
from phoenix_server.runtime.abandoned import ABANDONED_AFTER_LEASES
from tests.cluster.replicas import LEASE, Replicas
from tests.cluster.test_pinned_docker_e2e import containers, running, service_file
from tests.cluster.test_pinned_e2e import heartbeat_of
from tests.store.conftest import postgres_schema
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def every_container_of_web() -> list[str]:
    """Containers of ``web`` (running or not) carrying the cluster's label."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=phoenix.service=web", "--filter",
         f"label={OWNER_LABEL}={CLUSTER_OWNER}", "--format", "{{.Names}}"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return sorted(listed.stdout.split())


def floating_web(tmp_path: Path, image: str, port: int) -> Path:
    """``web`` on the engine, owned by any replica (no router, no ``replica:``)."""
    return service_file(tmp_path / "phoenix.yaml", image, port, placement="router: false")


def start_with_web_healthy(group: Replicas) -> str:
    """Start every replica; return the one that owns ``web`` once it is healthy there."""
    group.start_all()
    owner: str = wait_until(lambda: group.owner_of("web"), timeout=10 * LEASE)
    wait_until(lambda: group.servers[owner].status_of("web") == "healthy", timeout=30)
    return owner


def test_a_docker_service_any_replica_may_own_is_adopted_by_the_next_owner(
    tmp_path: Path, docker_image: str
) -> None:
    port = free_port()
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, floating_web(tmp_path, docker_image, port), url, 2)
        try:
            owner = start_with_web_healthy(group)
            first = group.servers[owner]
            (serving,) = running(first)
            assert containers(CLUSTER_OWNER) == [serving], "the cluster's, not the replica's"
            assert containers(owner) == []
            other = next(name for name in group.names if name != owner)

            group.kill(owner)
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
            wait_until(
                lambda: group.owner_of("web", besides=owner) == other,
                timeout=10 * LEASE,
                message=f"{other} owning web",
            )
            second = group.servers[other]
            wait_until(lambda: running(second) == [serving], timeout=30, message="adopted")
            wait_until(lambda: second.status_of("web") == "healthy", timeout=30)
            assert every_container_of_web() == [serving], "adopted, not restarted or doubled"

            # Its new owner recovers it: the container is killed behind Phoenix's back.
            subprocess.run(["docker", "kill", serving], check=True, capture_output=True)
            wait_until(
                lambda: (now := running(second)) != [] and now != [serving],
                timeout=30,
                message=f"web replaced by {other}",
            )
            wait_until(lambda: second.status_of("web") == "healthy", timeout=30)
            (replaced,) = running(second)
            assert containers(CLUSTER_OWNER) == [replaced]

            # The killed replica comes back and beats for two leases: one container still.
            group.start(owner)
            back = heartbeat_of(group, owner)
            wait_until(
                lambda: heartbeat_of(group, owner) >= back + timedelta(seconds=2 * LEASE),
                timeout=10 * LEASE,
                message=f"{owner} beating for two leases",
            )
            assert group.owner_of("web") == other, "a service at its fair share stays put"
            assert every_container_of_web() == [replaced]
        finally:
            group.close()
            left = every_container_of_web()
            if left:
                subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    assert left == [replaced], "replicas that stop hand the service over: it serves on"


def test_the_containers_of_a_service_no_replica_declares_any_more_are_removed(
    tmp_path: Path, docker_image: str
) -> None:
    """``web`` leaves the service file: the replicas are restarted one by one with the new
    file, and nothing would ever adopt or stop its container. Once its lease has been left
    free for 30 leases (every replica that still declared it would have taken it), the
    replicas remove it."""
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, floating_web(tmp_path, docker_image, free_port()), url, 2)
        try:
            start_with_web_healthy(group)
            (serving,) = containers(CLUSTER_OWNER)
        finally:
            left = time.monotonic()  # the leases are let go after this moment
            group.close()
        assert every_container_of_web() == [serving], "stopping hands it over: it serves on"

        without_web = tmp_path / "without-web.yaml"
        without_web.write_text("services: []\n")
        after = Replicas(tmp_path / "restarted", without_web, url, 2)
        try:
            after.start_all()
            wait_until(
                lambda: every_container_of_web() == [],
                timeout=ABANDONED_AFTER_LEASES * LEASE + 10 * LEASE,
                message="web's container removed",
            )
            # Not before its lease had been left free for 30 leases.
            assert time.monotonic() - left >= ABANDONED_AFTER_LEASES * LEASE
            logs = "".join(server.log() for server in after.servers.values())
            assert f"removed container(s) {serving} of service 'web'" in logs
        finally:
            after.close()
            rest = every_container_of_web()
            if rest:
                subprocess.run(["docker", "rm", "-f", *rest], capture_output=True)
