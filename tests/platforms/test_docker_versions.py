"""Docker versions on a real engine: a deploy rolls a new image through the containers, a
failed one is rolled back at once, and a rollback runs the image ID that proved good — not
whatever its tag names by then (tags move; IDs do not)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from phoenix_server.domain.deployments import Deployment, DeploymentReason, DeploymentStatus
from phoenix_server.domain.recoveries import RecoveryStatus, Strategy
from phoenix_server.runtime import Runtime
from phoenix_server.store import deployments
from tests.recovery.engine import engine, finished, healthy, history
from tests.support import eventually, free_port

pytestmark = pytest.mark.e2e  # starts real containers


def image_id(reference: str) -> str:
    shown = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference],
        check=True,
        capture_output=True,
        text=True,
    )
    return shown.stdout.strip()


@pytest.fixture
def broken_image(docker_image: str) -> Iterator[str]:
    """An image that starts and exits at once (the busybox image, its entrypoint ``false``)."""
    tag = f"phoenix-test/broken:{docker_image.rpartition(':')[2]}"
    dockerfile = f'FROM {docker_image}\nENTRYPOINT ["/bin/busybox", "false"]\n'
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    yield tag
    subprocess.run(["docker", "rmi", tag], capture_output=True)


@pytest.fixture
def moving_tags(docker_image: str) -> Iterator[list[str]]:
    """Tags a test points where it likes; removed afterwards."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "rmi", *made], capture_output=True)


def point(tag: str, at: str, made: list[str]) -> None:
    subprocess.run(["docker", "tag", at, tag], check=True, capture_output=True)
    if tag not in made:
        made.append(tag)


def versioned(port: int, *images: str, extra: str = "") -> str:
    """The web service with versions v1, v2, … of these images (v1 known good, running)."""
    versions = "".join(
        f'      - {{name: v{n}, image: "{image}"{", known_good: true" if n == 1 else ""}}}\n'
        for n, image in enumerate(images, start=1)
    )
    return f"""
  - name: web
    platform: docker
    image: {images[0]}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
    replicas: 2
    version: v1
    versions:
{versions}    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: 200ms
      timeout: 1s
      failure_threshold: 2
      startup_timeout: 3s
    stop: {{grace: 1s, drain: 1s}}
{extra}"""


async def deployments_of(runtime: Runtime) -> dict[str, Deployment]:
    items, _ = await runtime.store.read(
        deployments.list_deployments, service="web", owner=runtime.owner, limit=50, offset=0
    )
    return {d.id: d for d in items}


def current(runtime: Runtime) -> Deployment:
    found = runtime.versions.current("web")
    assert found is not None
    return found


def artifacts(runtime: Runtime) -> set[str | None]:
    assert runtime.docker is not None
    return {i.artifact for i in runtime.docker.instances("web") if i.alive}


async def test_a_failed_deploy_rolls_back_to_the_image_that_proved_good_though_its_tag_moved(
    tmp_path: Path, docker_image: str, broken_image: str, moving_tags: list[str]
) -> None:
    port = free_port()
    v1, v2 = f"phoenix-test/web:v1-{port}", f"phoenix-test/web:v2-{port}"
    point(v1, docker_image, moving_tags)
    point(v2, broken_image, moving_tags)
    good, bad = image_id(docker_image), image_id(broken_image)
    async with engine(tmp_path, versioned(port, v1, v2)) as runtime:
        await healthy(runtime, "web")
        assert artifacts(runtime) == {good}, "containers run the ID the tag named at start"
        await eventually(
            lambda: runtime.catalog.get("web").pins.get("v1") == good, message="v1 pinned"
        )
        # Someone moves v1's tag to a broken build: the proven v1 must not follow it.
        point(v1, broken_image, moving_tags)
        deployment, changed = await runtime.deployer.deploy("web", "v2")
        assert changed

        def rolled_back() -> bool:
            current = runtime.versions.current("web")
            return (
                current is not None
                and current.reason is DeploymentReason.ROLLBACK
                and current.status is DeploymentStatus.COMPLETED
            )

        await eventually(rolled_back, timeout=60, message="the automatic rollback")
        failed = (await deployments_of(runtime))[deployment.id]
        assert failed.status is DeploymentStatus.FAILED, failed
        [recovery] = await history(runtime, service="web")
        recovery = await finished(runtime, recovery.id)
        assert recovery.strategy is Strategy.ROLLBACK
        assert recovery.status is RecoveryStatus.COMPLETED, recovery
        await healthy(runtime, "web")
        assert artifacts(runtime) == {good}, "v1 runs the ID that proved good, not its tag's"
        assert bad not in artifacts(runtime)
        assert current(runtime).artifact == good, "the rollback recorded what it ran"
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200


async def test_rollback_needs_versions_and_says_so(tmp_path: Path, docker_image: str) -> None:
    port = free_port()
    services = f"""
  - name: web
    platform: docker
    image: {docker_image}
    command: [httpd, -f, -p, "127.0.0.1:{{port}}", -h, /www]
    port: {port}
"""
    async with engine(tmp_path, services) as runtime:
        await healthy(runtime, "web")
        reason = runtime.orchestrator.unavailable_reason(
            runtime.catalog.get("web"), Strategy.ROLLBACK
        )
        assert "declares no earlier version to roll back to" in reason


async def test_a_deploy_is_validated_by_its_smoke_hook_run_in_a_container(
    tmp_path: Path, docker_image: str, moving_tags: list[str]
) -> None:
    """The smoke hook runs inside a running container (docker exec, with its environment):
    v2 passes it and is deployed; v3 fails it and is rolled back to v2 at once."""
    port = free_port()
    tags = [f"phoenix-test/web:{v}-{port}" for v in ("v1", "v2", "v3")]
    for tag in tags:
        point(tag, docker_image, moving_tags)
    smoke = (
        '["/bin/busybox", "sh", "-c", '
        '"wget -q -O /dev/null http://127.0.0.1:$PORT/health && test {version} != v3"]'
    )
    services = versioned(port, *tags, extra=f"    hooks: {{smoke: {smoke}}}\n")
    async with engine(tmp_path, services) as runtime:
        assert runtime.docker is not None
        await healthy(runtime, "web")
        deployed, _ = await runtime.deployer.deploy("web", "v2")
        await eventually(
            lambda: (
                current(runtime).id == deployed.id
                and current(runtime).status is not DeploymentStatus.IN_PROGRESS
                and not runtime.orchestrator.busy("web")  # the deploy has let go of it
            ),
            timeout=60,
            message="v2 deployed",
        )
        done = current(runtime)
        assert done.status is DeploymentStatus.COMPLETED, done
        [smoked] = [s for s in done.steps if s.name == "Validation: smoke test"]
        assert "passed in phoenix-web-" in (smoked.detail or ""), smoked
        failing, _ = await runtime.deployer.deploy("web", "v3")
        await eventually(
            lambda: (
                current(runtime).reason is DeploymentReason.ROLLBACK
                and current(runtime).version == "v2"
                and current(runtime).status is DeploymentStatus.COMPLETED
            ),
            timeout=60,
            message="rolled back to v2",
        )
        failed = (await deployments_of(runtime))[failing.id]
        assert failed.status is DeploymentStatus.FAILED, failed
        assert "smoke" in failed.detail and "exited 1" in failed.detail, failed.detail
        await healthy(runtime, "web")
        assert {i.version for i in runtime.docker.instances("web") if i.alive} == {"v2"}
