"""The operator CLI end to end: ``python -m phoenix_server …`` as a real subprocess against a
real Phoenix (one module-scoped server with one example web service, and one with API
tokens), checking what an operator and a script see: tables, ``--json``, followed steps,
exit statuses, and one-line errors that never show the token."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, PhoenixServer, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

SERVICE = "cli-web"
EXTRA = """    version: v1
    versions:
      - {name: v1, known_good: true}
      - {name: v2, env: {SERVICE_VERSION: v2}}
    actions:
      restart_connection_pool: {http: {method: POST, url: "http://127.0.0.1:{port}/admin/pool/restart"}}
"""
PLAYBOOK = f"""name: CLI drill
service: {SERVICE}
description: the pool first, the service if that fails
triggers:
  - {{type: manual}}
steps:
  - {{action: restart_connection_pool, timeout: 10s}}
  - {{action: restart_service, condition: if_previous_failed}}
"""
BROKEN = f"""playbooks:
  - name: Broken
    service: {SERVICE}
    triggers: [{{type: error_rate, threshold: 3}}]
    steps:
      - {{action: restart_service, condition: sometimes}}
      - {{action: flush_everything}}
"""
VIEWER = "viewer-token-0123456789abcdef"
OPERATOR = "operator-token-0123456789abcdef"


def cli(
    *args: str, url: str | None = None, env: dict[str, str] | None = None, tty: bool = False
) -> subprocess.CompletedProcess[str]:
    """``phoenix ARGS`` as an operator runs it (stdout a pipe, or a terminal with ``tty``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}
    if url is not None:
        environment["PHOENIX_URL"] = url
    environment.update(env or {})
    argv = [sys.executable, "-m", "phoenix_server", *args]
    if tty:
        return _in_terminal(argv, environment)
    return subprocess.run(
        argv, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )


def _in_terminal(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    primary, secondary = pty.openpty()
    env = {**env, "TERM": "xterm-256color", "COLUMNS": "160"}
    with subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=secondary, stderr=subprocess.PIPE, text=True
    ) as process:
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(primary)
        stderr = process.stderr.read() if process.stderr else ""
        code = process.wait(60)
    return subprocess.CompletedProcess(argv, code, b"".join(chunks).decode(), stderr)


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The failure's single ``phoenix: …`` line on stderr, having checked the exit status."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("phoenix: "), result.stderr
    return lines[0]


def rows(output: str, first: str) -> list[list[str]]:
    """The plain-table rows whose first cell is ``first``, split into cells."""
    return [line.split() for line in output.splitlines() if line.split()[:1] == [first]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("cli")
    config = root / "phoenix.yaml"
    config.write_text("services:" + web_service_yaml(SERVICE, free_port(), extra=EXTRA))
    phoenix = PhoenixServer(config, root / "var").start()
    wait_until(lambda: phoenix.status_of(SERVICE) == "healthy", timeout=20, message=SERVICE)
    yield phoenix
    phoenix.close()


def settled(server: PhoenixServer) -> None:
    """Healthy, and no recovery of it running (a test before may have restarted it)."""

    def quiet() -> bool:
        health = server.health_of(SERVICE)
        return health["status"] == "healthy" and health["activeRecoveryId"] is None

    wait_until(quiet, timeout=20, message=f"{SERVICE} healthy and idle")


def test_status_and_services_show_the_service_in_plain_tables(server: PhoenixServer) -> None:
    settled(server)
    status = cli("status", url=server.url)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"Phoenix 0.1.0 at {server.url}: healthy; 1 service(s)")
    assert "SERVICE  STATUS" in status.stdout
    [row] = rows(status.stdout, SERVICE)
    assert row[1] == "healthy"

    services = cli("services", "--url", server.url)  # --url after the subcommand
    assert services.returncode == 0, services.stderr
    [row] = rows(services.stdout, SERVICE)
    assert row[1:3] == ["healthy", "local"]
    assert "v1" in row and "running" in row


def test_a_terminal_gets_rich_tables(server: PhoenixServer) -> None:
    result = cli("services", url=server.url, tty=True)
    assert result.returncode == 0, result.stderr
    assert SERVICE in result.stdout
    assert "\x1b[" in result.stdout  # styled: the header bold, the status coloured
    assert "─" in result.stdout  # the rule under the header
    assert "INSTANCES" not in result.stdout  # headers as written, not the plain capitals


def test_json_prints_the_servers_json(server: PhoenixServer) -> None:
    services = cli("services", "--json", url=server.url)
    assert services.returncode == 0, services.stderr
    body = json.loads(services.stdout)
    assert body["success"] is True and [s["name"] for s in body["services"]] == [SERVICE]
    status = json.loads(cli("status", "--json", url=server.url).stdout)
    assert status["health"]["monitoredServices"] == 1
    assert status["services"]["services"][0]["name"] == SERVICE
    assert json.loads(cli("learning", "--json", url=server.url).stdout)["policy"]
    assert "incidents" in json.loads(cli("incidents", "--json", url=server.url).stdout)


def test_trigger_follow_shows_the_steps_and_history_lists_the_recovery(
    server: PhoenixServer,
) -> None:
    settled(server)
    result = cli(
        "trigger", SERVICE, "--strategy", "restart", "--reason", "drill", "--follow", url=server.url
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stderr == ""
    match = re.match(rf"(rec-\w+): restart of {SERVICE}, attempt 1, manual", result.stdout)
    assert match, result.stdout
    recovery_id = match.group(1)
    assert re.search(r"\[1\] Graceful shutdown: completed in [\d.]+s: stopped", result.stdout)
    assert "Health verification: completed" in result.stdout
    assert f"{recovery_id}: completed (success)" in result.stdout.splitlines()[-1]

    history = cli("history", "--service", SERVICE, "--strategy", "restart", url=server.url)
    assert history.returncode == 0, history.stderr
    [row] = rows(history.stdout, recovery_id)
    assert row[1:5] == [SERVICE, "restart", "completed", "success"]

    once = cli("recovery", recovery_id, "--no-follow", url=server.url)
    assert once.returncode == 0, once.stderr
    assert "[4] Traffic restoration: completed" in once.stdout
    followed = cli("recovery", recovery_id, "--json", url=server.url)  # already ended
    assert followed.returncode == 0
    assert json.loads(followed.stdout)["recovery"]["status"] == "completed"


def test_recovery_follows_a_running_recovery_step_by_step(server: PhoenixServer) -> None:
    settled(server)
    created = server.post(
        "/api/playbooks",
        json={
            "name": "CLI slow drill",
            "service": SERVICE,
            "triggers": [{"type": "manual"}],
            "steps": [{"action": "wait", "seconds": 2}, {"action": "verify_health"}],
        },
    )
    assert created.status_code == 201, created.text
    started = server.post(f"/api/playbooks/{created.json()['playbookId']}/execute", json={})
    assert started.status_code == 202, started.text
    recovery_id = started.json()["recoveryId"]

    result = cli("recovery", recovery_id, url=server.url)
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    running = lines.index("  [1] Wait: running")  # seen running, then seen ending
    assert lines[running + 1].startswith("  [1] Wait: completed in 2.0")
    assert any(line.startswith("  [2] Verify health: completed") for line in lines)
    assert lines[-1].startswith(f"{recovery_id}: completed (success)")


def test_an_unknown_service_is_refused_in_one_line_naming_it(server: PhoenixServer) -> None:
    line = one_line_error(cli("trigger", "no-such-service", url=server.url), 1)
    assert "unknown service 'no-such-service'" in line
    line = one_line_error(cli("trigger", SERVICE, "--strategy", "bogus", url=server.url), 2)
    assert "'bogus' is not one of" in line and "phoenix trigger --help" in line
    line = one_line_error(cli("recovery", "rec-nothing", url=server.url), 1)
    assert "rec-nothing" in line


def test_an_unreachable_phoenix_is_a_connection_problem() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    line = one_line_error(cli("status", url=url), 2)
    assert line.startswith(f"phoenix: cannot reach Phoenix at {url}: ")
    line = one_line_error(cli("status", "--url", "ftp://example.org"), 2)
    assert "not an http:// or https:// URL" in line


def test_validate_reports_every_problem_with_its_path(
    server: PhoenixServer, tmp_path: Path
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text(BROKEN)
    result = cli("playbooks", "validate", "-f", str(bad))
    line = one_line_error(result, 1)
    assert "2 problem(s)" in line  # without a service file, actions are not checked
    assert f"{bad}: playbooks[0].steps[0].condition: unknown condition 'sometimes'" in result.stdout
    assert f"{bad}: playbooks[0].triggers[0].threshold: expected a fraction" in result.stdout
    assert "not checked" in result.stdout

    checked = cli("playbooks", "validate", "-f", str(bad), "--config", str(server.config))
    one_line_error(checked, 1)
    assert "playbooks[0].steps[1].action: unknown action 'flush_everything'" in checked.stdout

    good = tmp_path / "drill.yaml"
    good.write_text(PLAYBOOK)
    fine = cli("playbooks", "validate", "-f", str(good), env={"PHOENIX_CONFIG": str(server.config)})
    assert fine.returncode == 0, fine.stdout + fine.stderr
    assert fine.stdout == f"{good}: 1 playbook(s) valid: CLI drill\n"
    one_line_error(cli("playbooks", "validate", "-f", str(tmp_path / "missing.yaml")), 2)


def test_apply_creates_then_updates_and_dry_run_finds_it_by_name(
    server: PhoenixServer, tmp_path: Path
) -> None:
    path = tmp_path / "drill.yaml"
    path.write_text(PLAYBOOK)
    created = cli("playbooks", "apply", "-f", str(path), url=server.url)
    assert created.returncode == 0, created.stderr
    match = re.fullmatch(r"created (pb-\w+) 'CLI drill' \(version 1\)\n", created.stdout)
    assert match, created.stdout
    playbook_id = match.group(1)
    again = cli("playbooks", "apply", "-f", str(path), url=server.url)
    assert again.stdout == f"unchanged {playbook_id} 'CLI drill' (version 1)\n", again.stderr

    path.write_text(
        PLAYBOOK.replace("timeout: 10s", "timeout: 20s").replace("description: t", "# t")
    )
    updated = cli("playbooks", "apply", "-f", str(path), url=server.url)
    assert updated.stdout == f"updated {playbook_id} 'CLI drill' (version 2)\n", updated.stderr
    stored = server.get(f"/api/playbooks/{playbook_id}").json()["playbook"]
    assert stored["steps"][0]["timeout"] == 20
    assert stored["description"] == ""  # left out of the file: its default, not the old value

    listed = cli("playbooks", "list", url=server.url)
    [row] = rows(listed.stdout, playbook_id)
    assert row[1:3] == ["CLI", "drill"]

    dry = cli("playbooks", "dry-run", "CLI drill", url=server.url)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"dry run of 'CLI drill' ({playbook_id}, version 2) on {SERVICE}")
    assert re.search(
        r"^1\s+Restart connection pool\s+http_request\s+always\s+run", dry.stdout, re.M
    )
    assert "depends" in dry.stdout
    line = one_line_error(cli("playbooks", "dry-run", "No such drill", url=server.url), 1)
    assert "no playbook named 'No such drill'" in line


def test_apply_of_an_invalid_playbook_names_the_paths(
    server: PhoenixServer, tmp_path: Path
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    line = one_line_error(cli("playbooks", "apply", "-f", str(path), url=server.url), 1)
    assert "playbooks[0] 'Broken': invalid playbook" in line
    for where in ("steps[0].condition", "triggers[0].threshold", "steps[1].action"):
        assert where in line


def test_deploy_follows_a_version_and_refuses_an_unknown_one(server: PhoenixServer) -> None:
    line = one_line_error(cli("deploy", SERVICE, "v9", url=server.url), 1)
    assert "unknown version 'v9'" in line and "v1, v2" in line
    settled(server)
    result = cli("deploy", SERVICE, "v2", "--follow", url=server.url)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert re.match(rf"dep-\w+: deploy {SERVICE} v1 -> v2\n", result.stdout)
    assert "Health verification: completed" in result.stdout
    assert "completed" in result.stdout.splitlines()[-1]
    again = cli("deploy", SERVICE, "v2", url=server.url)
    assert again.stdout == f"{SERVICE} already runs v2: nothing to do\n"
    settled(server)


def test_usage_errors_are_one_line() -> None:
    line = one_line_error(cli("trigger"), 2)
    assert "Missing argument 'SERVICE'" in line


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("cli-tokens")
    config = root / "phoenix.yaml"
    config.write_text("services: []\n")
    phoenix = PhoenixServer(
        config,
        root / "var",
        env={"PHOENIX_API_TOKENS": f"view:viewer:{VIEWER},ops:operator:{OPERATOR}"},
    ).start()
    yield phoenix
    phoenix.close()


def test_tokens_are_sent_from_the_environment_and_never_shown(guarded: PhoenixServer) -> None:
    results: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        result = cli(*args, url=guarded.url, env={"PHOENIX_TOKEN": token} if token else None)
        results.append(result)
        return result

    line = one_line_error(run("status"), 1)
    assert "an API token is required" in line and "set PHOENIX_TOKEN" in line
    line = one_line_error(run("services", token="not-a-token-of-this-phoenix"), 1)
    assert "the API token is not valid" in line
    allowed = run("status", token=VIEWER)
    assert allowed.returncode == 0, allowed.stderr
    assert "0 service(s)" in allowed.stdout
    line = one_line_error(run("trigger", "anything", token=VIEWER), 1)
    assert "needs the operator role" in line
    line = one_line_error(run("trigger", "anything", token=OPERATOR), 1)
    assert "unknown service 'anything'" in line
    run("history", "--json", token=OPERATOR)
    one_line_error(run("status", "--url", f"http://127.0.0.1:{free_port()}", token=OPERATOR), 2)
    for result in results:
        for token in (VIEWER, OPERATOR):
            assert token not in result.stdout + result.stderr
