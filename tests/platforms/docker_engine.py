"""What the Docker tests share: a reachable engine (or a skip naming why; a failure in CI,
where ``PHOENIX_REQUIRE_DOCKER=1``), the busybox image built once, and a check that a test
leaves no container behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    content and kept between runs on purpose): the busybox image, and Phoenix's own image and
    its bases (tests/deploy/images.py)."""
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    cached = ("phoenix-test/busybox:", "phoenix-image-test/")
    return {t for t in listed.stdout.split() if not t.startswith(cached)}


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


@dataclass(frozen=True)
class SecondEngine:
    """Another real Docker engine on this machine, reached over TCP with TLS (client
    certificate), as an engine on another host would be."""

    host: str
    certs: Path
    """ca.pem, cert.pem and key.pem, as Docker's own DOCKER_CERT_PATH holds them."""
    image: str
    """The busybox test image, loaded into it."""

    @property
    def env(self) -> dict[str, str]:
        """The environment in which ``docker`` talks to this engine."""
        return {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": str(self.certs),
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", *args], env=self.env, capture_output=True, text=True)


def _certificates(folder: Path) -> None:
    """A CA, the engine's certificate for 127.0.0.1 and Phoenix's client certificate."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=phoenix-test-ca")  # fmt: skip
    for name, subject, usage in (
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "/CN=phoenix", "extendedKeyUsage=clientAuth\n"),
    ):
        key = "key.pem" if name == "client" else "server-key.pem"
        cert = "cert.pem" if name == "client" else "server.pem"
        (folder / f"{name}.ext").write_text(usage)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out",
                f"{name}.csr", "-subj", subject)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", f"{name}.ext")  # fmt: skip


@pytest.fixture(scope="session")
def second_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondEngine]:
    """A second ``dockerd`` (its own data and state, TCP with TLS on a free port) for the
    tests of several engines; stopped and removed, with all it ran, at the end."""
    image = docker_ready()
    if shutil.which("dockerd") is None or shutil.which("openssl") is None:
        _skip_or_fail("a second Docker engine needs dockerd and openssl")
    # Short paths: dockerd's sockets live under its exec root.
    root = Path(tempfile.mkdtemp(prefix="phx-d2-", dir="/tmp"))
    certs = root / "certs"
    certs.mkdir()
    _certificates(certs)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = (root / "dockerd.log").open("wb")
    daemon = subprocess.Popen(
        [
            "dockerd",
            "--host",
            f"tcp://127.0.0.1:{port}",
            "--tlsverify",
            "--tlscacert",
            str(certs / "ca.pem"),
            "--tlscert",
            str(certs / "server.pem"),
            "--tlskey",
            str(certs / "server-key.pem"),
            "--data-root",
            str(root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    engine = SecondEngine(f"tcp://127.0.0.1:{port}", certs, image)
    try:
        deadline = time.monotonic() + 60
        while engine.cli("version").returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                said = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                _skip_or_fail(f"a second Docker engine did not start: {said}")
            time.sleep(0.2)
        saved = subprocess.run(["docker", "save", image], capture_output=True, check=True)
        loaded = subprocess.run(
            ["docker", "load"], input=saved.stdout, env=engine.env, capture_output=True
        )
        assert loaded.returncode == 0, loaded.stderr
        yield engine
    finally:
        left = engine.cli("ps", "-aq").stdout.split()
        if left:
            engine.cli("rm", "-f", *left)
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)
