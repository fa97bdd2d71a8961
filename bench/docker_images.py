"""Images for the Docker benchmarks and tests, built here (nothing can be pulled): a busybox
image ``FROM scratch`` with Debian's ``busybox-static`` as its entrypoint, so that
``["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"]`` serves ``/www`` (``/www/health``
answers 200) and ``["sleep", "3600"]`` just runs. Built once per content (the tag carries a
digest of what went in) and reused across runs."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")
REPOSITORY = "phoenix-test/busybox"
DOCKERFILE = """FROM scratch
COPY busybox /bin/busybox
COPY www /www
ENTRYPOINT ["/bin/busybox"]
"""
WWW = {"health": "ok\n", "ready": "ok\n"}
"""What httpd serves: /health for Phoenix's probes, /ready for an image's HEALTHCHECK."""


def docker_cli() -> str:
    """The ``docker`` command, or an error saying what is missing."""
    found = shutil.which("docker")
    if found is None:
        raise RuntimeError("no docker command on PATH (Debian package docker.io)")
    return found


def busybox_image(*, healthcheck: str | None = None) -> str:
    """The tag of the busybox test image, built now if this content was never built.
    ``healthcheck``: a HEALTHCHECK instruction's options and command, for an image with one
    (``--interval=1s --retries=1 CMD ["/bin/busybox", "test", "-f", "/www/ready"]``)."""
    if not BUSYBOX.exists():
        raise RuntimeError(f"no {BUSYBOX} (Debian package busybox-static) to build the image")
    dockerfile = DOCKERFILE + (f"HEALTHCHECK {healthcheck}\n" if healthcheck else "")
    content = BUSYBOX.read_bytes() + dockerfile.encode() + repr(sorted(WWW.items())).encode()
    digest = hashlib.sha256(content).hexdigest()[:12]
    tag = f"{REPOSITORY}:{digest}"
    docker = docker_cli()
    known = subprocess.run([docker, "image", "inspect", tag], capture_output=True)
    if known.returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as folder:
        context = Path(folder)
        shutil.copy(BUSYBOX, context / "busybox")
        (context / "www").mkdir()
        for name, text in WWW.items():
            (context / "www" / name).write_text(text)
        (context / "Dockerfile").write_text(dockerfile)
        subprocess.run(
            [docker, "build", "-q", "-t", tag, str(context)], check=True, capture_output=True
        )
    return tag
