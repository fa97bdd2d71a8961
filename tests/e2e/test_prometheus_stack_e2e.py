"""Phoenix behind the real Prometheus, Alertmanager and blackbox exporter from Debian, each on
a free loopback port with its own configuration and data directory (started with its final
configuration: Prometheus drops alerts for a few seconds after a reload).

- ``web`` is checked by Phoenix over TCP only; its ``/health`` starts answering 503, which
  only the blackbox probe sees → Prometheus fires → Alertmanager posts → Phoenix opens an
  incident (source ``alert``) and restarts it → the probe passes, the alert resolves →
  exactly that incident is closed, and no other was opened.
- ``shop`` fails in a way Phoenix sees itself (HTTP check) and Phoenix fixes it first; the
  alert about it reaches Phoenix late (its route waits 10 s): ``stale``, not acted on.
- A rule on ``phoenix_service_up == 0`` routed back to Phoenix — the configuration the docs
  warn against — never fires during Phoenix's own restarts.
- ``promtool check metrics`` finds nothing wrong with ``/metrics`` after all that, every
  Phoenix metric the shipped rules name is exported, and Prometheus evaluates the shipped
  rules without error.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from bench.prometheus_stack import PrometheusStack

from tests.support import (
    REPO,
    PhoenixServer,
    free_port,
    prometheus_program,
    running_phoenix,
    wait_until,
)

pytestmark = pytest.mark.e2e

SHIPPED_RULES = REPO / "examples" / "prometheus" / "phoenix-rules.yml"


def _services(web_port: int, shop_port: int, api_port: int, stuck_port: int | None) -> str:
    def entry(name: str, port: int, health: str, extra: str = "", flags: str = "") -> str:
        return f"""
  - name: {name}
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}", "--name", "{{name}}"{flags}]
    cwd: {REPO}
    port: {port}
    health: {health}
    stop: {{grace: 2s}}
{extra}"""

    return "services:" + (
        entry("web", web_port, '{tcp: "127.0.0.1:{port}", interval: 0.5s}')
        + entry(
            "shop",
            shop_port,
            '{http: "http://127.0.0.1:{port}/health", interval: 1s, timeout: 0.5s, '
            "failure_threshold: 3}",
            "    recovery: {stabilisation: 1s}\n",
        )
        + entry(
            "api",
            api_port,
            '{http: "http://127.0.0.1:{port}/health", interval: 0.5s, timeout: 0.5s}',
        )
        + (
            # Its /health fails from the start, and a restart does not fix that.
            entry(
                "stuck",
                stuck_port,
                '{tcp: "127.0.0.1:{port}", interval: 0.5s}',
                "    recovery: {stabilisation: 1s}\n",
                ', "--fail-health"',
            )
            if stuck_port is not None
            else ""
        )
    )


@dataclass
class Stack:
    phoenix: PhoenixServer
    programs: PrometheusStack

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.programs.query(promql)

    def incidents(self, service: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.phoenix.get(
            "/api/incidents", params={"service": service, "limit": 100}
        ).json()["incidents"]
        return found

    def reports(self, action: str) -> float:
        text = self.phoenix.get("/metrics").text
        line = f'phoenix_reports_total{{action="{action}",origin="alertmanager"}} '
        for row in text.splitlines():
            if row.startswith(line):
                return float(row.removeprefix(line))
        return 0.0


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """The whole loop; ``indirect`` parameter ``{"stuck": True}`` adds a service whose
    failure only the probe sees and no restart fixes."""
    for program in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter"):
        prometheus_program(program)
    web_port, shop_port, api_port = free_port(), free_port(), free_port()
    stuck_port = free_port() if getattr(request, "param", {}).get("stuck") else None
    services = tmp_path / "phoenix.yaml"
    services.write_text(_services(web_port, shop_port, api_port, stuck_port), encoding="utf-8")
    names = ["web", "shop", "api"] + (["stuck"] if stuck_port else [])
    env = {"PHOENIX_ALERT_GRACE": "3s"}
    with running_phoenix(services, tmp_path / "var", env=env) as phoenix:
        for name in names:
            wait_until(lambda n=name: phoenix.status_of(n) == "healthy", timeout=30)
        probed = {"web": web_port, "shop": shop_port}
        yield from _with_prometheus(tmp_path, phoenix, probed, stuck_port)


def _with_prometheus(
    tmp_path: Path, phoenix: PhoenixServer, probed: dict[str, int], stuck_port: int | None
) -> Iterator[Stack]:
    routes = {
        "receiver": "people",
        "group_by": ["alertname", "service"],
        "group_wait": "0s",
        "group_interval": "1s",
        "repeat_interval": "1h",
        "routes": [
            {
                # Repeats soon: a copy still firing past Phoenix's grace (3 s) after a
                # recovery says that recovery did not fix it.
                "receiver": "phoenix",
                "matchers": ['to_phoenix="true"', 'service="stuck"'],
                "repeat_interval": "2s",
            },
            {
                "receiver": "phoenix",
                "matchers": ['to_phoenix="true"', 'service="shop"'],
                "group_wait": "10s",  # Phoenix fixes shop itself before this alert arrives
            },
            {"receiver": "phoenix", "matchers": ['to_phoenix="true"']},
        ],
    }
    alertmanager = {
        "route": routes,
        "receivers": [
            {"name": "people"},
            {
                "name": "phoenix",
                "webhook_configs": [
                    {
                        "url": f"{phoenix.url}/api/alerts/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 1000,
                    }
                ],
            },
        ],
    }
    probe_failing = {"to_phoenix": "true", "failure_type": "service_down"}
    rules = {
        "groups": [
            {
                "name": "test",
                "rules": [
                    {
                        "alert": "ServiceProbeFailing",
                        "expr": 'probe_success{job="blackbox",service="web"} == 0',
                        "labels": probe_failing,
                    },
                    {
                        # Still firing after Phoenix fixed shop, when its route (10 s) posts
                        # it: a late alert about a failure already fixed.
                        "alert": "ShopProbeFailing",
                        "expr": 'probe_success{job="blackbox",service="shop"} == 0',
                        "keep_firing_for": "30s",
                        "labels": probe_failing,
                    },
                    {
                        "alert": "StuckProbeFailing",
                        "expr": 'probe_success{job="blackbox",service="stuck"} == 0',
                        "labels": probe_failing,
                    },
                    {
                        # What the docs warn against: Phoenix's own metric back to Phoenix.
                        "alert": "PhoenixSaysDown",
                        "expr": "phoenix_service_up == 0",
                        "labels": {"to_phoenix": "true"},
                    },
                ],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    probes = {**probed, **({"stuck": stuck_port} if stuck_port else {})}
    programs = PrometheusStack(tmp_path)
    programs.start(
        scrape_configs=[
            {"job_name": "phoenix", "static_configs": [{"targets": [f"127.0.0.1:{phoenix.port}"]}]},
            programs.blackbox_job(
                {name: f"http://127.0.0.1:{port}/health" for name, port in probes.items()}
            ),
        ],
        rule_files=[tmp_path / "rules.yml", SHIPPED_RULES],
        alertmanager=alertmanager,
    )
    try:
        stack = Stack(phoenix, programs)
        seen: list[Any] = []

        def probes_pass() -> bool:
            found = stack.query('probe_success{job="blackbox",service!="stuck"}')
            seen[:] = [found]
            return len(found) == len(probed) and all(r["value"][1] == "1" for r in found)

        try:
            wait_until(probes_pass, timeout=30, message="the blackbox probes passing")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; probes: {seen}; targets: {programs.targets()}") from None
        yield stack
    finally:
        programs.close()


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _break_health(phoenix: PhoenixServer, service: str) -> float:
    port = phoenix.instance_port(service)
    answer = httpx.post(f"http://127.0.0.1:{port}/admin/health", json={"fail": True}, timeout=5)
    assert answer.status_code == 200, answer.text
    return time.time()


def test_an_alert_only_the_blackbox_sees_is_recovered_and_its_incident_closed(
    stack: Stack,
) -> None:
    phoenix = stack.phoenix
    broke = _break_health(phoenix, "web")
    assert phoenix.status_of("web") == "healthy", "Phoenix's TCP check cannot see it"

    def opened() -> dict[str, Any] | None:
        found = [i for i in stack.incidents("web") if i["source"] == "alert"]
        return found[0] if found else None

    incident = wait_until(opened, timeout=60, message="the alert's incident at Phoenix")
    [recovery] = wait_until(
        lambda: phoenix.recoveries_of("web"), timeout=30, message="the alert's recovery"
    )
    assert recovery["trigger"] == "alert"
    recovered = phoenix.finished(recovery["id"], timeout=60)
    assert recovered["status"] == "completed", recovered

    def closed() -> dict[str, Any] | None:
        found = phoenix.get(f"/api/incidents/{incident['id']}").json()["incident"]
        return found if found["status"] == "resolved" else None

    done = wait_until(closed, timeout=60, message="the incident closed")
    wait_until(
        lambda: not stack.query('ALERTS{alertname="ServiceProbeFailing",service="web"}'),
        timeout=30,
        message="the alert resolved in Prometheus",
    )
    assert [i["id"] for i in stack.incidents("web")] == [incident["id"]], "one incident only"
    assert len(phoenix.recoveries_of("web")) == 1, "one recovery only"
    timings = {
        "fault → alert at Phoenix": _at(incident["detectedAt"]) - broke,
        "fault → recovered": _at(recovered["endTime"]) - broke,
        "fault → incident closed": _at(done["resolvedAt"]) - broke,
    }
    print("alert path timings: " + json.dumps({k: round(v, 2) for k, v in timings.items()}))
    assert all(0 < took < 120 for took in timings.values()), timings


def test_an_alert_about_a_failure_phoenix_already_fixed_changes_nothing(stack: Stack) -> None:
    phoenix = stack.phoenix
    _break_health(phoenix, "shop")
    [recovery] = wait_until(
        lambda: phoenix.recoveries_of("shop"), timeout=30, message="Phoenix's own recovery"
    )
    assert recovery["trigger"] != "alert"
    assert phoenix.finished(recovery["id"], timeout=60)["status"] == "completed"
    wait_until(
        lambda: stack.query('ALERTS{alertname="ShopProbeFailing",service="shop"}'),
        timeout=30,
        message="Prometheus saw shop fail too",
    )
    wait_until(lambda: stack.reports("stale") >= 1, timeout=60, message="the late alert: stale")
    assert len(phoenix.recoveries_of("shop")) == 1, "the late alert restarted nothing"
    assert all(i["source"] != "alert" for i in stack.incidents("shop"))


def test_phoenix_own_restarts_never_fire_a_rule_on_its_up_metric(stack: Stack) -> None:
    phoenix = stack.phoenix
    for _ in range(5):
        started = phoenix.post(
            "/api/recovery/trigger",
            json={"service": "api", "strategy": "restart", "reason": "feedback-loop test"},
        )
        assert started.status_code == 202, started.text
        assert phoenix.finished(started.json()["recoveryId"], timeout=60)["status"] == "completed"
    wait_until(
        lambda: stack.query('count_over_time(phoenix_service_recovering{service="api"}[5m]) > 0'),
        timeout=10,
        message="Prometheus scraped Phoenix during the restarts",
    )
    assert not stack.query('count_over_time(ALERTS{alertname="PhoenixSaysDown"}[5m])')
    assert all(i["source"] != "alert" for i in stack.incidents("api"))


def test_promtool_finds_nothing_wrong_with_metrics_and_the_shipped_rules_evaluate(
    stack: Stack,
) -> None:
    text = stack.phoenix.get("/metrics").text
    checked = subprocess.run(
        [prometheus_program("promtool"), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked
    exported = {
        line.split()[2].removesuffix("_total")
        for line in text.splitlines()
        if line.startswith("# TYPE ")
    }
    named = {
        name
        for group in yaml.safe_load(SHIPPED_RULES.read_text(encoding="utf-8"))["groups"]
        for rule in group["rules"]
        for name in _metric_names(rule["expr"])
    }
    assert named and named <= exported, named - exported

    def evaluated() -> list[dict[str, Any]] | None:
        rules = stack.programs.rules()
        shipped = [r for r in rules if r["file"] == str(SHIPPED_RULES)]
        return shipped if all(r["health"] == "ok" for r in shipped) and shipped else None

    shipped = wait_until(evaluated, timeout=30, message="the shipped rules evaluated")
    assert len(shipped) >= 8


def _metric_names(expr: str) -> set[str]:
    """The Phoenix metric families ``expr`` reads (a counter's family has no ``_total``)."""
    return {m.removesuffix("_total") for m in re.findall(r"\bphoenix_[a-z_]+", expr)}


@pytest.mark.parametrize("stack", [{"stuck": True}], indirect=True)
def test_a_failure_no_restart_fixes_is_escalated_then_handed_to_people(stack: Stack) -> None:
    """Phoenix's TCP check passes after each attempt, but Alertmanager keeps re-sending the
    firing alert: past the grace each copy fails the attempt and the next one runs, until
    Phoenix gives up — and the shipped PhoenixGaveUp rule pages a person, for as long as
    the alert fires."""
    phoenix = stack.phoenix

    def gave_up() -> dict[str, Any] | None:
        found = [i for i in stack.incidents("stuck") if i["status"] == "unresolved"]
        return found[0] if found else None

    incident = wait_until(gave_up, timeout=120, interval=0.5, message="Phoenix gave up")
    assert incident["source"] == "alert"
    attempts = sorted(phoenix.recoveries_of("stuck"), key=lambda r: r["attempt"])
    assert [r["attempt"] for r in attempts] == [1, 2, 3], attempts
    assert all(r["trigger"] == "alert" for r in attempts)
    assert all(r["incidentId"] == incident["id"] for r in attempts)
    wait_until(
        lambda: stack.query(
            'ALERTS{alertname="PhoenixGaveUp",service="stuck",alertstate="firing"}'
        ),
        timeout=30,
        message="the shipped PhoenixGaveUp rule firing",
    )
    # Giving up sticks while the alert fires, though Phoenix's own check says healthy: the
    # gauge is there for 20 scrapes (10 s, twice Phoenix's 5 s sweep), the incident unresolved.
    wait_until(
        lambda: stack.query(
            'count_over_time(phoenix_unresolved_incidents{service="stuck",state="gave_up"}[15s])'
            " >= 20"
        ),
        timeout=60,
        interval=0.5,
        message="the given-up incident kept for 10 s",
    )
    current = phoenix.get(f"/api/incidents/{incident['id']}").json()["incident"]
    assert current["status"] == "unresolved", current
