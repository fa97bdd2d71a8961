"""Phoenix's container image (Dockerfile, deploy/image/make-base.sh): built from Debian
packages and PyPI, it runs ``phoenix serve`` as an unprivileged user on a read-only root
filesystem, writing only its data directory, and holds no compiler or pip.

Needs a Docker engine (skipped with the reason without one; a failure under
``PHOENIX_REQUIRE_DOCKER=1``) and, the first time, root and debootstrap for the bases: about a
minute for the bases, half a minute for the image, seconds once both are cached.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import phoenix_server
from tests.deploy import images

pytestmark = pytest.mark.e2e

USER = "10001:10001"
DATA_DIR = "/var/lib/phoenix"
SIZE_LIMIT = 320 * 1024 * 1024
"""The image is about 240 MB (a Debian minbase with Python, and Phoenix's venv): far more
means something that does not belong there got in (a compiler, a cache)."""


@pytest.fixture(scope="module")
def image() -> str:
    images.engine_ready()
    runtime, build = images.base_images()
    built = images.phoenix_image(runtime, build)
    size = int(images.docker("image", "inspect", "--format", "{{.Size}}", built.tag).stdout)
    print(f"\nbases: {runtime}, {build}\nimage: {built}, {size / 1e6:.0f} MB")
    return built.tag


def run_in(image: str, *command: str, entrypoint: str | None = None) -> str:
    """What ``command`` prints in a fresh container of the image (removed after)."""
    chosen = ["--entrypoint", entrypoint] if entrypoint else []
    done = images.docker("run", "--rm", "--network", "host", *chosen, image, *command)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_image_says_which_phoenix_it_is(image: str) -> None:
    assert run_in(image, "--version").strip() == phoenix_server.__version__
    assert run_in(image, "version").strip() == phoenix_server.__version__


def test_the_image_is_set_up_to_serve_as_a_numeric_unprivileged_user(image: str) -> None:
    config = json.loads(
        images.docker("image", "inspect", "--format", "{{json .Config}}", image).stdout
    )
    assert config["User"] == USER
    assert config["Entrypoint"] == ["phoenix"]
    assert config["Cmd"] == ["serve"]
    assert "3051/tcp" in config["ExposedPorts"]
    environment = dict(line.split("=", 1) for line in config["Env"])
    assert environment["PHOENIX_DATA_DIR"] == DATA_DIR
    assert environment["PYTHONDONTWRITEBYTECODE"] == "1"
    assert run_in(image, "-u", entrypoint="id").strip() == "10001"


def test_the_image_holds_no_compiler_pip_or_build_tool(image: str) -> None:
    script = (
        "import importlib.util, shutil, sys; "
        "tools = ['gcc', 'cc', 'c++', 'g++', 'clang', 'make', 'ld', 'as', 'pip', 'pip3']; "
        "print(sorted(t for t in tools if shutil.which(t))); "
        "print(sorted(m for m in ('pip', 'setuptools', 'wheel', 'ensurepip') "
        "if importlib.util.find_spec(m)))"
    )
    found_tools, found_modules = run_in(image, "-c", script, entrypoint="python3").splitlines()
    assert found_tools == "[]", f"build tools in the image: {found_tools}"
    assert found_modules == "[]", f"packaging modules in the image's Python: {found_modules}"
    size = int(images.docker("image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size < SIZE_LIMIT, f"the image is {size / 1e6:.0f} MB"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read()


@pytest.fixture
def container_name() -> Iterator[str]:
    name = f"phoenix-image-test-{secrets.token_hex(4)}"
    yield name
    images.docker("rm", "-f", name)


def test_phoenix_serves_on_a_read_only_root_as_its_user(
    image: str, container_name: str, tmp_path: Path
) -> None:
    """As the Deployment runs it: read-only root, a writable data directory and /tmp, no
    capabilities, production settings with a token; a service file mounted read-only."""
    port = free_port()
    token = secrets.token_hex(16)
    service_file = tmp_path / "phoenix.yaml"
    service_file.write_text(
        "services:\n"
        "  - name: itself\n"
        "    platform: external\n"
        f"    health: {{http: 'http://127.0.0.1:{port}/health', interval: 1s}}\n"
    )
    service_file.chmod(0o644)
    started = images.docker(
        "run", "--detach", "--name", container_name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp",
        "--tmpfs", f"{DATA_DIR}:rw,uid=10001,gid=10001,mode=0700",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--volume", f"{service_file}:/etc/phoenix/phoenix.yaml:ro",
        "--env", f"PORT={port}",
        "--env", "PHOENIX_ENV=production",
        "--env", f"PHOENIX_API_TOKENS=test:admin:{token}",
        "--env", "PHOENIX_CONFIG=/etc/phoenix/phoenix.yaml",
        image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr

    def logs() -> str:
        said = images.docker("logs", container_name)
        return said.stdout + said.stderr

    deadline = time.monotonic() + 60
    status, body = 0, b""
    while time.monotonic() < deadline:
        try:
            status, body = get(f"http://127.0.0.1:{port}/health")
            break
        except OSError:
            state = images.docker("inspect", "--format", "{{.State.Status}}", container_name)
            assert state.stdout.strip() == "running", f"Phoenix stopped:\n{logs()}"
            time.sleep(0.2)
    else:
        pytest.fail(f"Phoenix did not answer /health within 60 s:\n{logs()}")
    assert status == 200, body
    health = json.loads(body)
    assert health["status"] == "healthy", health
    assert health["version"] == phoenix_server.__version__

    # The API needs the token; with it, Phoenix watches the file's service and records it.
    assert get(f"http://127.0.0.1:{port}/api/services")[0] == 401
    deadline = time.monotonic() + 20
    while True:
        status, body = get(f"http://127.0.0.1:{port}/api/health/services", token)
        assert status == 200, body
        services = {s["name"]: s["status"] for s in json.loads(body)["services"]}
        if services.get("itself") == "healthy" or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert services == {"itself": "healthy"}

    # Everything Phoenix wrote is in its data directory, owned by its user.
    listed = images.docker(
        "exec", container_name, "find", DATA_DIR, "-mindepth", "1", "-printf", "%u %P\n"
    )
    owners = (line.split(" ", 1) for line in listed.stdout.splitlines())
    written = {path: owner for owner, path in owners}
    assert {"phoenix.db", "installation-id"} <= set(written), written
    assert set(written.values()) == {"phoenix"}, written
    said = logs()
    for trouble in ("Read-only file system", "Permission denied", "Traceback"):
        assert trouble not in said, said
    first = said.splitlines()[0]
    assert "level" in json.loads(first), first  # production: JSON log lines

    # Phoenix is the container's process 1 and stops at once on SIGTERM, cleanly.
    started_stop = time.monotonic()
    assert images.docker("stop", "--time", "30", container_name).returncode == 0
    assert time.monotonic() - started_stop < 15
    code = images.docker("inspect", "--format", "{{.State.ExitCode}}", container_name)
    assert code.stdout.strip() == "0", logs()
