"""What the Docker tests share: a reachable engine (or a skip naming why; a failure in CI,
where ``PHOENIX_REQUIRE_DOCKER=1``), the busybox image built once, and a check that a test
leaves no container behind."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from bench.docker_images import busybox_image


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("PHOENIX_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (PHOENIX_REQUIRE_DOCKER=1)")
    pytest.skip(reason)


def docker_ready() -> str:
    """The busybox test image's tag, on a reachable engine (else skip or fail)."""
    try:
        answer = subprocess.run(
            ["docker", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _skip_or_fail(f"no Docker engine: {exc}")
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()[-1:] or ["no answer"]
        _skip_or_fail(f"no Docker engine reachable (Debian package docker.io): {said[0]}")
    try:
        return busybox_image()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        _skip_or_fail(f"cannot build the busybox test image: {exc}")
    raise AssertionError("unreachable")


def phoenix_containers() -> set[str]:
    """Names of every container (running or not) carrying a Phoenix owner label."""
    listed = subprocess.run(
        ["docker", "ps", "-a", "--filter", "label=phoenix.owner", "--format", "{{json .Names}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {json.loads(line) for line in listed.stdout.splitlines() if line.strip()}


def image_tags() -> set[str]:
    """Every ``repository:tag`` on the engine, but the cached test images (built once per
    content and kept between runs on purpose)."""
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return {t for t in listed.stdout.split() if not t.startswith("phoenix-test/busybox:")}


def volumes() -> set[str]:
    listed = subprocess.run(
        ["docker", "volume", "ls", "-q"], capture_output=True, text=True, check=True
    )
    return set(listed.stdout.split())


@pytest.fixture
def docker_image() -> Iterator[str]:
    """The test image; fails the test that leaves a Phoenix container, an image tag or a
    volume behind (and removes them). It counts every container with a Phoenix owner label
    on the engine, so run one Docker test session at a time against an engine."""
    image = docker_ready()
    before = (phoenix_containers(), image_tags(), volumes())
    yield image
    left = phoenix_containers() - before[0]
    tags = image_tags() - before[1]
    kept = volumes() - before[2]
    if left:
        subprocess.run(["docker", "rm", "-f", *sorted(left)], capture_output=True)
    if tags:
        subprocess.run(["docker", "rmi", *sorted(tags)], capture_output=True)
    if kept:
        subprocess.run(["docker", "volume", "rm", *sorted(kept)], capture_output=True)
    if left or tags or kept:
        pytest.fail(
            f"test left behind: containers {sorted(left)}, image tags {sorted(tags)}, "
            f"volumes {sorted(kept)}"
        )
