"""examples/phoenix.yaml, the fleet `make run` starts, gives every recovery strategy something to
act on, and one variable moves all its ports.

The fast tests read the file as Phoenix does; the end-to-end test starts the real server on it
(its ports moved out of the way with PHOENIX_PORT_OFFSET, as a user would) and triggers each of
the five strategies through the API, as the README's tour does.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from phoenix_server.config.servicefile import load_service_file
from phoenix_server.domain import services as svc
from tests.support import REPO, PhoenixServer, free_port, wait_until

EXAMPLE = REPO / "examples" / "phoenix.yaml"
DEFAULT_PORTS = {"azora-auth": 8081, "azora-education": 8083, "azora-db": 8090}

# The tour of the README, in an order where each strategy finds what it needs: the hot standby
# is promoted before the rollback replaces the instances, scaling before the circuit opens.
TOUR = [
    ("azora-auth", "failover"),
    ("azora-auth", "restart"),
    ("azora-auth", "rollback"),
    ("azora-education", "scale"),
    ("azora-education", "circuit_break"),
]


def example(environ: dict[str, str] | None = None) -> svc.ServiceCatalog:
    return load_service_file(EXAMPLE, default_interval=30.0, environ=environ or {})


def test_the_example_declares_what_each_strategy_needs() -> None:
    fleet = example()
    auth, education = fleet.get("azora-auth"), fleet.get("azora-education")
    assert [v.name for v in auth.versions] == ["v1", "v2"]
    assert auth.versions[0].known_good, "rollback needs an older known-good version"
    assert auth.backup is not None and auth.backup.mode == "hot", "failover needs a backup"
    assert education.replicas.max > education.replicas.min, "scale needs room to grow"
    assert education.routed and auth.routed, "circuit breaking needs the router"
    assert "azora-db" in education.depends_on, "a failing dependency cascades to its callers"


def test_the_example_ports_are_the_documented_ones_by_default() -> None:
    assert {s.name: s.port for s in example() if s.port is not None} == DEFAULT_PORTS


def ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_offset() -> int:
    """A PHOENIX_PORT_OFFSET under which every port of the example is free right now."""
    for _ in range(50):
        offset = free_port() - min(DEFAULT_PORTS.values())
        moved = [port + offset for port in DEFAULT_PORTS.values()]
        if 0 <= offset and max(moved) <= 65535 and ports_free(moved):
            return offset
    pytest.fail("found no offset under which the example's ports are free")


def trigger(server: PhoenixServer, service: str, strategy: str) -> dict[str, Any]:
    body = {"service": service, "strategy": strategy, "reason": "README tour"}
    response = server.post("/api/recovery/trigger", json=body)
    assert response.status_code == 202, f"{strategy} on {service}: {response.text}"
    recovery: dict[str, Any] = server.finished(response.json()["recoveryId"], timeout=60)
    return recovery


def all_healthy(server: PhoenixServer) -> bool:
    services = server.get("/api/health/services").json()["services"]
    return bool(services) and all(s["status"] == "healthy" for s in services)


@pytest.mark.e2e
def test_every_strategy_can_be_triggered_on_the_example_fleet(tmp_path: Path) -> None:
    offset = free_offset()
    server = PhoenixServer(EXAMPLE, tmp_path / "var", env={"PHOENIX_PORT_OFFSET": str(offset)})
    try:
        server.start()
        wait_until(lambda: all_healthy(server), timeout=60, message="the example fleet healthy")
        for name, port in DEFAULT_PORTS.items():
            health = httpx.get(f"http://127.0.0.1:{port + offset}/health", timeout=5)
            assert health.json()["name"] == name, f"{name} is served on its moved port"
        for service, strategy in TOUR:
            if strategy == "failover":
                wait_until(lambda: server.service("azora-auth")["standby"], timeout=30)
            recovery = trigger(server, service, strategy)
            assert (recovery["strategy"], recovery["status"]) == (strategy, "completed"), recovery
            wait_until(lambda: all_healthy(server), timeout=30, message=f"healthy after {strategy}")
        assert server.service("azora-auth")["currentVersion"] == "v1", "rolled back from v2"
        running = [
            i for i in server.service("azora-education")["instances"] if i["state"] == "running"
        ]
        assert len(running) == 2, "scaled out by one replica"
    finally:
        server.close()
