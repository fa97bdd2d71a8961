"""Phoenix's container image, built for the tests as an operator builds it
(docs/kubernetes.md#building-the-image): the Python bases from Debian packages with
``deploy/image/make-base.sh``, then the repository's ``Dockerfile``.

Each image is built once per content and kept between runs: its tag carries a digest of what
went into it (the script for the bases; the Dockerfile, the build context and the bases' IDs
for Phoenix's), and a build removes the older tags of the same repository, so one copy of
each stays on the engine. The repositories are under ``phoenix-image-test/``, which the
Docker tests' check for leftover image tags ignores (tests/platforms/docker_engine.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE_BASE = ROOT / "deploy" / "image" / "make-base.sh"
PREFIX = "phoenix-image-test/"
RUNTIME_BASE = f"{PREFIX}python"
BUILD_BASE = f"{PREFIX}python-build"
PHOENIX = f"{PREFIX}phoenix"
PHOENIX_BUILD_STAGE = f"{PREFIX}phoenix-build"
CONTEXT = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "src")
"""What the image is made of: the Dockerfile, .dockerignore and the files it lets in."""
LOCAL_CAS = Path("/usr/local/share/ca-certificates")
"""Where Debian keeps the CA certificates a machine adds to its trust store (a proxy's)."""


def skip_or_fail(reason: str) -> None:
    """Skip with the reason; fail instead under ``PHOENIX_REQUIRE_DOCKER=1`` (CI)."""
    if os.environ.get("PHOENIX_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (PHOENIX_REQUIRE_DOCKER=1)")
    pytest.skip(reason)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def engine_ready() -> None:
    """A reachable Docker engine, or a skip (a failure in CI) saying why."""
    if shutil.which("docker") is None:
        skip_or_fail("no docker command on PATH (Debian package docker.io)")
    try:
        answer = docker("version", "--format", "{{.Server.Version}}", timeout=20)
    except subprocess.TimeoutExpired:
        skip_or_fail("the Docker engine did not answer `docker version` within 20 s")
    if answer.returncode != 0:
        said = answer.stderr.strip().splitlines()[-1:] or ["no answer"]
        skip_or_fail(f"no Docker engine reachable (Debian package docker.io): {said[0]}")


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float | None
    """How long the build took; None: it was on the engine already."""

    def __str__(self) -> str:
        took = "cached" if self.seconds is None else f"built in {self.seconds:.0f} s"
        return f"{self.tag} ({took})"


def _exists(tag: str) -> bool:
    return docker("image", "inspect", tag).returncode == 0


def _image_id(tag: str) -> str:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def _drop_other_tags(repository: str, keep: str) -> None:
    """Remove the repository's other (older) tags: one copy per repository stays cached."""
    listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    stale = [tag for tag in listed if tag != keep]
    if stale:
        docker("rmi", *stale)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def base_images() -> tuple[Built, Built]:
    """The runtime and build bases made by make-base.sh (about a minute the first time)."""
    digest = hashlib.sha256(MAKE_BASE.read_bytes()).hexdigest()[:12]
    runtime, build = f"{RUNTIME_BASE}:{digest}", f"{BUILD_BASE}:{digest}"
    if _exists(runtime) and _exists(build):
        return Built(runtime, None), Built(build, None)
    if os.geteuid() != 0:
        skip_or_fail("making the Python base image runs debootstrap, which needs root")
    if shutil.which("debootstrap") is None:
        skip_or_fail("no debootstrap to make the Python base image (apt-get install debootstrap)")
    started = time.monotonic()
    made = subprocess.run(
        ["sh", str(MAKE_BASE), runtime, build], capture_output=True, text=True, timeout=900
    )
    if made.returncode != 0:
        pytest.fail(f"deploy/image/make-base.sh failed:\n{_tail(made.stdout + made.stderr)}")
    took = time.monotonic() - started
    _drop_other_tags(RUNTIME_BASE, runtime)
    _drop_other_tags(BUILD_BASE, build)
    return Built(runtime, took), Built(build, took)


def _context_files() -> Iterator[Path]:
    """The files of the build context, as .dockerignore lets them in."""
    for name in CONTEXT:
        path = ROOT / name
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            if (
                found.is_file()
                and "__pycache__" not in found.parts
                and found.suffix not in (".pyc", ".pyo", ".pyd")
                and not any(part.endswith(".egg-info") for part in found.parts)
            ):
                yield found


def build_ca_certs() -> str:
    """The CA certificates this machine added to its trust store (a TLS-intercepting proxy's
    between it and PyPI), for the build stage's pip; empty where there are none."""
    if not LOCAL_CAS.is_dir():
        return ""
    return "".join(path.read_text() for path in sorted(LOCAL_CAS.rglob("*.crt")))


def phoenix_image(runtime: Built, build: Built) -> Built:
    """Phoenix's image from the repository's Dockerfile on those bases."""
    content = hashlib.sha256()
    for tag in (runtime.tag, build.tag):
        content.update(_image_id(tag).encode())
    for path in _context_files():
        content.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest = content.hexdigest()[:12]
    tag, stage = f"{PHOENIX}:{digest}", f"{PHOENIX_BUILD_STAGE}:{digest}"
    if _exists(tag):
        return Built(tag, None)
    arguments = [
        "--network",
        "host",
        "--force-rm",
        "--build-arg",
        f"BASE={runtime.tag}",
        "--build-arg",
        f"BUILD_BASE={build.tag}",
        "--build-arg",
        f"BUILD_CA_CERTS={build_ca_certs()}",
    ]
    # The classic builder (the engine's default here) keeps each stage as an image: the build
    # stage is tagged too, so that it is cached and no untagged image is left behind.
    environment = {**os.environ, "DOCKER_BUILDKIT": "0"}
    started = time.monotonic()
    for command in (
        ["docker", "build", *arguments, "--target", "build", "-t", stage, str(ROOT)],
        ["docker", "build", *arguments, "-t", tag, str(ROOT)],
    ):
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=900, env=environment, check=False
        )
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command[:2])} failed:\n{_tail(done.stdout + done.stderr)}")
    took = time.monotonic() - started
    _drop_other_tags(PHOENIX, tag)
    _drop_other_tags(PHOENIX_BUILD_STAGE, stage)
    return Built(tag, took)
