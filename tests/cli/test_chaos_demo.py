"""``phoenix chaos`` against a real Phoenix and service, and ``phoenix demo`` end to end
(two of its failures, to keep the suite quick; ``phoenix demo`` runs all six)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support import REPO, PhoenixServer, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e


def phoenix(
    *args: str, url: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"PHOENIX_URL": url} if url else {})}
    env.pop("PHOENIX_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "phoenix_server", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("chaos")
    config = root / "phoenix.yaml"
    config.write_text("services:" + web_service_yaml("web", free_port()))
    running = PhoenixServer(config, root / "var").start()
    wait_until(lambda: running.status_of("web") == "healthy", timeout=20)
    yield running
    running.close()


def test_chaos_injects_real_faults(server: PhoenixServer) -> None:
    port = server.instance_port("web")
    errors = phoenix("chaos", "web", "errors", "--value", "1", url=server.url)
    assert errors.returncode == 0, errors.stderr
    assert "answering 500 (rate=1.0)" in errors.stdout
    assert httpx.get(f"http://127.0.0.1:{port}/work").status_code == 500
    reset = phoenix("chaos", "web", "reset", "--json", url=server.url)
    assert json.loads(reset.stdout)["fault"] == "reset"
    assert httpx.get(f"http://127.0.0.1:{port}/work").status_code == 200

    pid = server.live_pid("web")
    crash = phoenix("chaos", "web", "crash", url=server.url)
    assert crash.returncode == 0 and f"(pid {pid}) killed (SIGKILL)" in crash.stdout
    [recovery] = wait_until(lambda: server.recoveries_of("web"), timeout=10)
    assert server.finished(recovery["id"])["status"] == "completed"
    assert server.live_pid("web") != pid


def test_chaos_refusals_are_one_line(server: PhoenixServer) -> None:
    unknown = phoenix("chaos", "web", "meteor", url=server.url)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().startswith("phoenix: unknown fault 'meteor'; choose from")
    assert len(unknown.stderr.strip().splitlines()) == 1
    missing = phoenix("chaos", "nope", "crash", url=server.url)
    assert missing.returncode == 1 and "unknown service 'nope'" in missing.stderr


def test_the_demo_injects_recovers_and_reports() -> None:
    run = phoenix("demo", "--faults", "crash,dependency failure", timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {
        line.split()[0]: line
        for line in run.stdout.splitlines()
        if line.startswith(("crash ", "dependency "))
    }
    assert "service_down" in rows["crash"] and "restart" in rows["crash"]
    assert "cascading" in rows["dependency"]
    assert "Game day report" in run.stdout
    bad = phoenix("demo", "--faults", "flood")
    assert bad.returncode == 2 and "unknown fault(s) flood" in bad.stderr
