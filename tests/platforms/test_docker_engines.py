"""One Phoenix, two real Docker engines: the default one (its Unix socket) and a second
``dockerd`` reached over TCP with TLS and a client certificate, as an engine on another host
would be. Each service's containers run, die and are replaced on its own engine; a restarted
Phoenix adopts both; bad certificates and an unreachable engine are named."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from phoenix_server.domain.recoveries import RecoveryStatus
from phoenix_server.platforms.docker import DockerPlatform
from phoenix_server.runtime import Runtime
from tests.platforms.docker_engine import SecondEngine
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e  # two real engines


def fleet(image: str, remote: SecondEngine, local_port: int, remote_port: int) -> str:
    return f"""
  - name: near
    platform: docker
    image: {image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {local_port}
    health: {{http: "http://127.0.0.1:{{port}}/health", interval: 200ms, timeout: 1s}}
    stop: {{grace: 1s, drain: 1s}}
  - name: far
    platform: docker
    engine: edge
    image: {remote.image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {remote_port}
    health: {{http: "http://127.0.0.1:{{port}}/health", interval: 200ms, timeout: 1s}}
    stop: {{grace: 1s, drain: 1s}}
"""


def engines(remote: SecondEngine, certs: Path) -> str:
    return (
        "docker_engines:\n"
        f"  edge: {{host: '{remote.host}', tls: {{ca: {certs}/ca.pem, "
        f"cert: {certs}/cert.pem, key: {certs}/key.pem}}}}\n"
    )


def names(remote: SecondEngine | None = None) -> list[str]:
    command = ["ps", "-a", "--filter", "label=phoenix.owner", "--format", "{{.Names}}"]
    if remote is not None:
        return sorted(remote.cli(*command).stdout.split())
    return sorted(
        subprocess.run(["docker", *command], capture_output=True, text=True).stdout.split()
    )


def router_pid(runtime: Runtime, service: str) -> int:
    platform = runtime.platforms.for_service(runtime.catalog.get(service))
    assert isinstance(platform, DockerPlatform)
    router = platform.routers.instance(service)
    assert router is not None and router.pid is not None
    return router.pid


async def test_each_service_runs_and_heals_on_its_own_engine(
    tmp_path: Path, docker_image: str, second_engine: SecondEngine
) -> None:
    local_port, remote_port = free_port(), free_port()
    services = fleet(docker_image, second_engine, local_port, remote_port)
    text = engines(second_engine, second_engine.certs)
    async with engine(tmp_path, services, PHOENIX_KEEP_SERVICES="true", prelude=text) as runtime:
        await healthy(runtime, "near")
        await healthy(runtime, "far")
        [near] = [
            i.id
            for i in runtime.platforms.for_service(runtime.catalog.get("near")).instances("near")
        ]
        far_platform = runtime.platforms.for_service(runtime.catalog.get("far"))
        [far] = [i.id for i in far_platform.instances("far")]
        assert near in names() and near not in names(second_engine)
        assert far in names(second_engine) and far not in names()
        second_engine.cli("kill", far)
        [recovery] = await eventually(lambda: history(runtime, service="far"), message="recovery")
        recovery = await finished(runtime, recovery.id)
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        [again] = [i.id for i in far_platform.instances("far")]
        assert again != far and again in names(second_engine)
        assert await history(runtime, service="near") == []
        routers = {name: router_pid(runtime, name) for name in ("near", "far")}
    # Phoenix gone: both engines' containers serve on; the next Phoenix adopts each.
    async with engine(tmp_path, services, prelude=text) as runtime:
        await healthy(runtime, "near")
        await healthy(runtime, "far")
        far_platform = runtime.platforms.for_service(runtime.catalog.get("far"))
        assert [i.id for i in far_platform.instances("far")] == [again], "adopted"
        near_platform = runtime.platforms.for_service(runtime.catalog.get("near"))
        assert [i.id for i in near_platform.instances("near")] == [near], "adopted"
        # Each engine adopted its own router; neither took the other's for a stray.
        assert {name: router_pid(runtime, name) for name in ("near", "far")} == routers
    assert names(second_engine) == [] and near not in names()


async def test_a_certificate_the_engine_refuses_is_named_and_phoenix_stays_up(
    tmp_path: Path, second_engine: SecondEngine, docker_image: str
) -> None:
    """Phoenix's client certificate is replaced by one the engine's CA never signed: the
    remote service could not start and says why; the local one is untouched."""
    certs = tmp_path / "certs"
    shutil.copytree(second_engine.certs, certs)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
         str(certs / "key.pem"), "-out", str(certs / "cert.pem"), "-days", "1",
         "-subj", "/CN=stranger"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    local_port, remote_port = free_port(), free_port()
    services = fleet(docker_image, second_engine, local_port, remote_port)
    async with engine(tmp_path, services, prelude=engines(second_engine, certs)) as runtime:
        await healthy(runtime, "near")
        view = await eventually(
            lambda: (v := runtime.tracker.view("far")).reason and v, message="a reason"
        )
        assert "could not start" in view.reason and second_engine.host in view.reason, view
    assert names(second_engine) == []
