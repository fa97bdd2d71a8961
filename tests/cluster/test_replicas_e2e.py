"""Several real Phoenix processes on the real PostgreSQL server: each service owned by
exactly one live replica, taken over when its owner dies, is paused or loses the database,
and never recovered twice."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.cluster.replicas import LEASE, DatabaseProxy, FakeServices, Replicas, replicas
from tests.support import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SERVICES = [f"svc-{n}" for n in range(6)]


def recoveries_of(group: Replicas, service: str) -> list[dict[str, Any]]:
    """From the store (any replica reads it): every recovery of ``service``, oldest first,
    with its owner and times."""
    with psycopg.connect(_plain(group.database_url)) as connection:
        rows = connection.execute(
            "SELECT id, owner, status, outcome, created_at, ended_at, epoch FROM recoveries "
            "WHERE service = %s ORDER BY created_at",
            (service,),
        ).fetchall()
    keys = ("id", "owner", "status", "outcome", "created_at", "ended_at", "epoch")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _plain(url: str) -> str:
    return url.replace("+psycopg", "")


def overlapping(recoveries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of recoveries of one service that ran at the same time (a double recovery)."""
    pairs = []
    for i, first in enumerate(recoveries):
        for second in recoveries[i + 1 :]:
            first_end = first["ended_at"]
            if first_end is None or second["created_at"] < first_end:
                pairs.append((first["id"], second["id"]))
    return pairs


def test_a_killed_owners_failing_service_is_taken_over_and_recovered_once(
    tmp_path: Path,
) -> None:
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 3) as group:
        service = SERVICES[0]
        owner = group.owner_of(service)
        assert owner is not None
        fake.fail(service, stuck=True)
        wait_until(lambda: fake.revivals(service), timeout=20, message="the owner acting")
        killed_at = time.monotonic()
        group.kill(owner)
        fake.unstick(service)

        new_owner = wait_until(
            lambda: (o := group.owner_of(service, besides=owner)) not in (None, owner) and o,
            timeout=4 * LEASE,
            message="another replica owning the service",
        )
        wait_until(
            lambda: fake.revivals(service, after=killed_at), timeout=20, message="its first act"
        )
        survivor = group.servers[new_owner]
        wait_until(lambda: survivor.status_of(service) == "healthy", timeout=20)

        history = wait_until(
            lambda: (r := recoveries_of(group, service)) and r[-1]["outcome"] == "success" and r,
            timeout=20,
            message="the new owner's recovery to succeed",
        )
        assert overlapping(history) == []
        dead = [r for r in history if r["owner"] == owner]
        assert dead and all(r["status"] == "interrupted" for r in dead[-1:]), history
        assert history[-1]["owner"] == new_owner
        # The new owner closed it, under its own lease (the row carries that epoch).
        assert dead[-1]["epoch"] == history[-1]["epoch"] >= 2
        # Nothing else moved: the other services are owned, healthy, and were never recovered.
        assert wait_until(lambda: group.all_owned(SERVICES), timeout=4 * LEASE)
        for other in SERVICES[1:]:
            assert recoveries_of(group, other) == []


def test_a_paused_owner_wakes_to_find_its_service_taken_and_its_writes_refused(
    tmp_path: Path,
) -> None:
    """SIGSTOP past the lease (a GC pause, a frozen VM), then SIGCONT: the others took the
    service over meanwhile; what the sleeper's recovery still tries to record the database
    refuses, and the store shows one recovery at a time."""
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 3) as group:
        service = SERVICES[1]
        owner = group.owner_of(service)
        assert owner is not None
        sleeper = group.servers[owner]
        fake.fail(service, stuck=True)
        wait_until(lambda: fake.revivals(service), timeout=20, message="the owner acting")
        group.kill(owner, signal.SIGSTOP)  # mid-recovery: verifying a service still down
        paused_at = time.monotonic()
        new_owner = wait_until(
            lambda: (o := group.owner_of(service, besides=owner)) not in (None, owner) and o,
            timeout=10 * LEASE,
            message="another replica owning the service",
        )
        fake.unstick(service)
        wait_until(lambda: fake.revivals(service, after=paused_at), timeout=20)
        wait_until(lambda: group.servers[new_owner].status_of(service) == "healthy", timeout=20)

        group.kill(owner, signal.SIGCONT)
        wait_until(
            lambda: "refused by the database" in sleeper.log(),
            timeout=20,
            message="the woken replica's late write refused",
        )
        woke = wait_until(
            lambda: (h := sleeper.get("/health").json()["cluster"])["leaseState"] == "held" and h,
            timeout=10 * LEASE,
        )
        assert service not in woke["ownedServices"]
        # The sleeper's recovery is closed by the new owner: at takeover, or (if the sleeper
        # still held its row locked) once the sleeper let go of it.
        history = wait_until(
            lambda: (
                (h := recoveries_of(group, service))
                and [r["status"] for r in h if r["owner"] == owner] == ["interrupted"]
                and h
            ),
            timeout=10 * LEASE,
            message="the paused replica's recovery closed as interrupted",
        )
        assert overlapping(history) == [], history
        assert history[-1]["owner"] == new_owner and history[-1]["outcome"] == "success"
        # It rejoins: the services are spread over the three again, gradually.
        wait_until(
            lambda: (
                group.all_owned(SERVICES)
                and any(m["id"] == owner and m["owns"] > 0 for m in group.cluster()["members"])
            ),
            timeout=20 * LEASE,
            message="the woken replica owning its share again",
        )


def test_a_replica_cut_off_from_the_database_stops_acting_and_the_others_take_over(
    tmp_path: Path,
) -> None:
    fake = FakeServices()
    proxy = DatabaseProxy()
    try:
        with fake.serving(), replicas(tmp_path, fake, SERVICES, 2) as group:
            isolated = group.start("replica-3", database_url=proxy.url(group.database_url))
            wait_until(
                lambda: isolated.get("/health").json()["cluster"]["owned"] >= 1,
                timeout=20 * LEASE,
                message="the third replica owning its share",
            )
            mine = isolated.get("/health").json()["cluster"]["ownedServices"]
            proxy.cut()
            lost = wait_until(
                lambda: (
                    (h := isolated.get("/health").json())["cluster"]["leaseState"] == "lost" and h
                ),
                timeout=10 * LEASE,
                message="the cut-off replica to stop acting",
            )
            assert lost["cluster"]["owned"] == 0
            assert any("cluster heartbeat" in w for w in lost["warnings"]), lost
            wait_until(
                lambda: group.all_owned(SERVICES, by={"replica-1", "replica-2"}),
                timeout=10 * LEASE,
                message="the others owning everything",
            )
            # Its services are watched by the others now: a failure of one is recovered.
            fake.fail(mine[0])
            wait_until(lambda: fake.revivals(mine[0]), timeout=20, message="a survivor acting")
            wait_until(lambda: mine[0] not in fake.down, timeout=20)

            proxy.mend()
            wait_until(
                lambda: isolated.get("/health").json()["cluster"]["leaseState"] == "held",
                timeout=40,
                message="the replica back once the database answers",
            )
            assert overlapping(recoveries_of(group, mine[0])) == []
    finally:
        proxy.close()


def test_two_replicas_started_at_once_on_an_empty_database_share_the_services(
    tmp_path: Path,
) -> None:
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 2) as group:
        wait_until(
            lambda: sorted(m["owns"] for m in group.cluster()["members"]) == [3, 3],
            timeout=20 * LEASE,
            message="three services each",
        )
        leases = group.cluster()["leases"]
        assert sorted(lease["service"] for lease in leases) == SERVICES
        with psycopg.connect(_plain(group.database_url)) as connection:
            versions = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        assert len(versions) == 1, "migrated once, under the advisory lock"
        for server in group.servers.values():
            health = server.get("/health").json()
            assert health["cluster"]["members"] == ["replica-1", "replica-2"]
            assert health["status"] == "healthy" and health["warnings"] == []


def test_any_replica_takes_a_request_its_owner_carries_out(tmp_path: Path) -> None:
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 2) as group:
        service = SERVICES[2]
        owner = group.owner_of(service)
        other = next(name for name in group.servers if name != owner)
        playbooks = group.servers[other].get("/api/playbooks").json()["playbooks"]
        playbook_id = next(p["id"] for p in playbooks if p["service"] == service)

        answer = group.servers[other].post(
            f"/api/playbooks/{playbook_id}/execute", json={"reason": "drill"}
        )
        assert answer.status_code == 202, answer.text
        recovery_id = answer.json()["recoveryId"]
        finished = group.servers[other].finished(recovery_id)
        assert finished["status"] == "completed", finished
        [recorded] = [r for r in recoveries_of(group, service) if r["id"] == recovery_id]
        assert recorded["owner"] == owner, "carried out by the owner, not the replica asked"

        # Its status, as seen from the replica that does not own it, is the owner's.
        fake.fail(service, stuck=True)
        wait_until(
            lambda: group.servers[other].status_of(service) in ("unhealthy", "degraded"),
            timeout=20,
            message="the owner's view on the other replica",
        )
        fake.unstick(service)
        wait_until(lambda: group.servers[other].status_of(service) == "healthy", timeout=30)

        # A forwarded request that finds the service moved is refused, not passed on again.
        moved = group.servers[other].post(
            f"/api/playbooks/{playbook_id}/execute",
            json={},
            headers={"x-phoenix-forwarded-by": "replica-9"},
        )
        assert moved.status_code == 409 and moved.json()["error"]["code"] == "not_owner"


def test_while_no_replica_owns_a_service_a_request_for_it_is_refused_not_lost(
    tmp_path: Path,
) -> None:
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 2) as group:
        service = SERVICES[3]
        owner = group.owner_of(service)
        assert owner is not None
        other = next(name for name in group.servers if name != owner)
        playbooks = group.servers[other].get("/api/playbooks").json()["playbooks"]
        playbook_id = next(p["id"] for p in playbooks if p["service"] == service)
        before = len(recoveries_of(group, service))
        group.kill(owner)
        answer = group.servers[other].post(f"/api/playbooks/{playbook_id}/execute", json={})
        if answer.status_code == 503:
            assert "send it again" in answer.json()["error"]["message"]
            assert answer.headers["retry-after"]
            assert len(recoveries_of(group, service)) == before, "nothing acknowledged"
        else:  # the lease ran out already and this replica took it: it acts itself
            assert answer.status_code == 202, answer.text
        wait_until(
            lambda: (
                service in group.servers[other].get("/health").json()["cluster"]["ownedServices"]
            ),
            timeout=10 * LEASE,
            message="the other replica acting on the service",
        )
        again = group.servers[other].post(f"/api/playbooks/{playbook_id}/execute", json={})
        assert again.status_code == 202, again.text
        recorded = {r["id"] for r in recoveries_of(group, service)}
        assert again.json()["recoveryId"] in recorded


def test_an_alertmanager_payload_is_shared_out_to_the_owners_of_its_services(
    tmp_path: Path,
) -> None:
    fake = FakeServices()
    with fake.serving(), replicas(tmp_path, fake, SERVICES, 3) as group:
        owners = {service: group.owner_of(service) for service in SERVICES}
        receiver = "replica-1"
        chosen = []
        for name in group.names:  # one service of each replica, the receiver's own included
            chosen.append(next(s for s in SERVICES if owners[s] == name))
        alerts = [
            {
                "status": "firing",
                "labels": {"alertname": "Down", "service": service, "failure_type": "service_down"},
                "startsAt": "2026-11-30T02:00:00.000Z",
                "fingerprint": f"fp-{service}",
            }
            for service in chosen
        ]
        alerts.insert(1, {"status": "firing", "labels": {"alertname": "Down", "service": "nope"}})
        answer = group.servers[receiver].post(
            "/api/alerts/alertmanager", json={"version": "4", "alerts": alerts}
        )
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert [r["index"] for r in results] == [0, 1, 2, 3]
        assert (
            results[1]["action"] == "ignored" and "unknown service 'nope'" in results[1]["reason"]
        )
        acted = [r for r in results if r["action"] != "ignored"]
        assert [r["service"] for r in acted] == chosen
        assert all(r["action"] == "recovering" and r["recoveryId"] for r in acted), [
            r["reason"] for r in acted
        ]
        for result in acted:
            [recorded] = [
                r
                for r in recoveries_of(group, result["service"])
                if r["id"] == result["recoveryId"]
            ]
            assert recorded["owner"] == owners[result["service"]], "each owner acted on its own"

        again = group.servers["replica-2"].post(
            "/api/alerts/alertmanager", json={"version": "4", "alerts": alerts}
        )
        assert again.status_code == 200, again.text
        assert [r["action"] for r in again.json()["results"]] == [
            "duplicate",
            "ignored",
            "duplicate",
            "duplicate",
        ], "Alertmanager's re-send, to another replica, is known everywhere"
