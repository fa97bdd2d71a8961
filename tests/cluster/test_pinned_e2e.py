"""Local services among several replicas: each runs on one machine, so only the replica
declared for it owns it; it is never taken over by another, and its replica adopts it again
after a restart."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.cluster.replicas import LEASE, Replicas
from tests.store.conftest import postgres_schema
from tests.support import free_port, wait_until, web_service_yaml

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_a_local_service_is_owned_only_by_its_replica_and_adopted_after_its_restart(
    tmp_path: Path,
) -> None:
    ports = {"web-1": free_port(), "web-2": free_port()}
    config = tmp_path / "phoenix.yaml"
    config.write_text(
        "services:"
        + "".join(
            web_service_yaml(name, port, extra=f"    replica: replica-{name[-1]}\n")
            for name, port in ports.items()
        )
    )
    with postgres_schema() as (url, _schema):
        group = Replicas(tmp_path, config, url, 2)
        try:
            group.start_all()
            for name in ports:
                wait_until(
                    lambda name=name: group.owner_of(name) == f"replica-{name[-1]}",
                    timeout=10 * LEASE,
                    message=f"{name} owned by its replica",
                )
            first, second = group.servers["replica-1"], group.servers["replica-2"]
            wait_until(lambda: first.status_of("web-1") == "healthy", timeout=30)
            wait_until(lambda: second.status_of("web-2") == "healthy", timeout=30)
            pid = first.live_pid("web-1")
            assert pid is not None
            assert second.live_pid("web-1") is None, "web-1 runs on replica-1's machine only"
            wait_until(
                lambda: "as replica-1 saw it" in second.health_of("web-1")["reason"],
                timeout=10 * LEASE,
                message="replica-1's view of web-1 on replica-2",
            )

            # Its own replica recovers it (a crash, restarted by replica-2 for web-2).
            crashed = second.live_pid("web-2")
            httpx.post(f"http://127.0.0.1:{ports['web-2']}/admin/crash", timeout=5)
            wait_until(
                lambda: (p := second.live_pid("web-2")) is not None and p != crashed,
                timeout=30,
                message="web-2 restarted by replica-2",
            )

            group.kill("replica-1")
            os.kill(pid, 0)  # the service outlives the replica that ran it
            wait_until(
                lambda: (
                    not next(
                        lease["held"]
                        for lease in group.cluster(besides="replica-1")["leases"]
                        if lease["service"] == "web-1"
                    )
                ),
                timeout=4 * LEASE,
                message="web-1's lease run out",
            )
            # Three leases later, still no one else's: replica-2 never takes it.
            killed_at = heartbeat_of(group, "replica-2")
            wait_until(
                lambda: (
                    heartbeat_of(group, "replica-2") >= killed_at + timedelta(seconds=3 * LEASE)
                ),
                timeout=10 * LEASE,
                message="replica-2 beating for three leases",
            )
            assert group.owner_of("web-1", besides="replica-1") is None
            assert second.live_pid("web-1") is None

            again = group.start("replica-1")
            wait_until(lambda: group.owner_of("web-1") == "replica-1", timeout=10 * LEASE)
            wait_until(lambda: again.status_of("web-1") == "healthy", timeout=30)
            assert again.live_pid("web-1") == pid, "adopted, not restarted"
        finally:
            group.close()


def heartbeat_of(group: Replicas, replica: str) -> datetime:
    """When ``replica`` last beat, on the database's clock."""
    members = group.cluster(besides="replica-1")["members"]
    stamp = next(m["heartbeatAt"] for m in members if m["id"] == replica)
    return datetime.fromisoformat(stamp)
