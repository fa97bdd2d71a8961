"""Service registry sync end to end: a real registry endpoint and real health endpoints on
loopback, and a real Phoenix that adds what the registry names, probes it, lets the service
file win, refuses what would run a command, removes what the registry drops, and keeps its
services (saying why in /health) while the registry is broken or down."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.support import LoopbackHTTPServer, PhoenixServer, service_file, wait_until

pytestmark = pytest.mark.e2e


class Endpoint(LoopbackHTTPServer):
    """A tiny HTTP server on loopback: answers GETs with what the test sets per path and
    counts the requests of each path."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.hits: dict[str, int] = {}
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.hits[self.path] = endpoint.hits.get(self.path, 0) + 1
                status, body = endpoint.answers.get(self.path, (404, b"not here"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(Handler)

    def serve(self, path: str, document: object, status: int = 200) -> None:
        self.answers[path] = (status, json.dumps(document).encode())


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with Endpoint() as running:
        yield running


def services(server: PhoenixServer) -> dict[str, dict[str, Any]]:
    listed = server.get("/api/services").json()["services"]
    return {s["name"]: s for s in listed}


def warnings(server: PhoenixServer) -> list[str]:
    return list(server.get("/health").json()["warnings"])


def test_the_registry_adds_and_removes_services_and_the_file_wins(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.serve("/auth-health", {"ok": True})
    endpoint.serve("/orders-health", {"ok": True})
    marker = tmp_path / "pwned"
    path = service_file(
        tmp_path,
        f"""
  - name: auth
    platform: external
    health: {{http: "{endpoint.url}/auth-health", interval: 300ms}}
""",
    )
    registry = {
        "services": [
            {"name": "orders", "url": endpoint.url, "health": "/orders-health"},
            {"name": "auth", "url": endpoint.url, "health": "/registry-auth-health"},
            {
                "name": "evil",
                "platform": "local",
                "command": [sys.executable, "-c", f"open({str(marker)!r}, 'w')"],
            },
        ]
    }
    endpoint.serve("/registry", registry)
    env = {
        "PHOENIX_REGISTRY_URL": f"{endpoint.url}/registry",
        "PHOENIX_REGISTRY_INTERVAL": "200ms",
        "HEALTH_CHECK_INTERVAL": "300ms",
    }
    server = PhoenixServer(path, tmp_path / "var", env=env).start()
    try:
        # The registry's service appears, marked as the registry's, and is probed healthy.
        orders = wait_until(lambda: services(server).get("orders"), message="orders listed")
        assert orders["source"] == "registry"
        assert orders["platform"] == "external"
        assert orders["health"]["type"] == "http"
        assert orders["health"]["target"] == f"{endpoint.url}/orders-health"
        wait_until(
            lambda: server.status_of("orders") == "healthy",
            message="orders probed healthy",
        )
        assert endpoint.hits.get("/orders-health", 0) >= 1

        # The file's auth wins: its declaration, its check; the registry's is never probed.
        auth = server.service("auth")
        assert auth["source"] == "file"
        assert auth["health"]["target"] == f"{endpoint.url}/auth-health"
        assert "/registry-auth-health" not in endpoint.hits

        # The local entry is refused, named in /health, and nothing ran.
        assert "evil" not in services(server)
        refused = [w for w in warnings(server) if "evil" in w]
        assert len(refused) == 1 and "platform: external" in refused[0], refused
        assert "evil" in server.log() and "refused" in server.log()
        assert not marker.exists()

        # A broken document changes nothing and says so.
        endpoint.answers["/registry"] = (200, b"<html>502 Bad Gateway</html>")
        wait_until(
            lambda: any("stay as they were" in w for w in warnings(server)),
            message="the broken registry in /health warnings",
        )
        problem = next(w for w in warnings(server) if "stay as they were" in w)
        assert problem.startswith("the service registry sent no valid JSON")
        assert {"auth", "orders"} <= set(services(server))

        # An unreachable registry changes nothing either (the probing goes on).
        endpoint.serve("/registry", {"error": "down"}, status=503)
        wait_until(
            lambda: any("answered HTTP 503" in w for w in warnings(server)),
            message="the registry's 503 in /health warnings",
        )
        probed = endpoint.hits.get("/orders-health", 0)
        wait_until(lambda: endpoint.hits.get("/orders-health", 0) > probed, message="probes")
        assert server.status_of("orders") == "healthy"

        # Dropped from the registry: no longer watched; the file's auth stays.
        endpoint.serve("/registry", {"services": [registry["services"][1]]})
        wait_until(lambda: "orders" not in services(server), message="orders removed")
        assert server.get("/api/services/orders").status_code == 404
        assert set(services(server)) == {"auth"}
        assert not any("service registry" in w for w in warnings(server))
        assert server.get("/health").json()["monitoredServices"] == 1
        probed = endpoint.hits.get("/orders-health", 0)
        auth_probed = endpoint.hits.get("/auth-health", 0)
        wait_until(lambda: endpoint.hits.get("/auth-health", 0) > auth_probed + 2)
        assert endpoint.hits.get("/orders-health", 0) <= probed + 1  # one in flight at most
    finally:
        server.close()
    assert "Traceback" not in server.log()
