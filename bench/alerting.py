"""The alert path end to end: a failure only a blackbox probe sees, through the real
Prometheus, Alertmanager and blackbox exporter (Debian's packages), to Phoenix's recovery.

A service Phoenix checks over TCP only starts answering ``/health`` with 503. The blackbox
exporter probes it through its public port; Prometheus (scrape and evaluation every 500 ms)
fires ``ServiceProbeFailing`` (no ``for:``); Alertmanager (``group_wait: 0s``,
``group_interval: 1s``) posts it to Phoenix, which opens an incident and restarts the
service; the probe passes, the alert resolves and the resolution closes the incident.
Per run: fault → alert at Phoenix (the incident's ``detectedAt``), → recovered (the
recovery's ``endTime``), → incident closed (``resolvedAt``). Medians.

``python -m bench.alerting [--runs 5]``; skipped, saying which package is missing, where the
programs are not installed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from bench.detection import post
from bench.failover import ROOT, Phoenix
from bench.mttr import free_port, wait_for
from bench.prometheus_stack import PrometheusStack, missing_programs

STEPS = ("fault → alert at Phoenix", "fault → recovered", "fault → incident closed")


def _service(port: int) -> str:
    return f"""
  - name: web
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {ROOT}
    port: {port}
    health: {{tcp: "127.0.0.1:{{port}}", interval: 0.5s}}
    stop: {{grace: 2s}}
"""


def _alertmanager(phoenix_api: int) -> dict[str, Any]:
    return {
        "route": {
            "receiver": "phoenix",
            "group_by": ["alertname", "service"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "phoenix",
                "webhook_configs": [
                    {
                        "url": f"http://127.0.0.1:{phoenix_api}/api/alerts/alertmanager",
                        "send_resolved": True,
                        "max_alerts": 1000,
                    }
                ],
            }
        ],
    }


RULES = {
    "groups": [
        {
            "name": "bench",
            "rules": [
                {
                    "alert": "ServiceProbeFailing",
                    "expr": 'probe_success{job="blackbox"} == 0',
                    "labels": {"failure_type": "service_down"},
                }
            ],
        }
    ]
}


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _one_run(phoenix: Phoenix, stack: PrometheusStack, port: int, seen: set[str]) -> list[float]:
    post(port, "/admin/health", {"fail": True})
    broke = time.time()
    found: dict[str, Any] = {}

    def opened() -> bool:
        incidents = phoenix.get("/api/incidents?service=web&limit=100")["incidents"]
        new = [i for i in incidents if i["id"] not in seen and i["source"] == "alert"]
        if new:
            found["incident"] = new[0]
        return bool(new)

    wait_for(opened, 60, "the alert's incident")
    incident = found["incident"]
    seen.add(incident["id"])

    def recovery_of_it() -> bool:
        recoveries = phoenix.get("/api/recovery/history?service=web&limit=100")["recoveries"]
        mine = [r for r in recoveries if r.get("incidentId") == incident["id"]]
        if mine:
            found["recovery"] = mine[0]
        return bool(mine)

    wait_for(recovery_of_it, 30, "the alert's recovery")
    recovered = phoenix.finished(found["recovery"]["id"])
    if recovered["status"] != "completed":
        raise RuntimeError(f"the recovery did not complete: {recovered}")

    def closed() -> bool:
        current = phoenix.get(f"/api/incidents/{incident['id']}")["incident"]
        found["closed"] = current
        return bool(current["status"] == "resolved")

    wait_for(closed, 60, "the incident closed")
    wait_for(lambda: not stack.query("ALERTS"), 30, "the alert resolved in Prometheus")
    wait_for(phoenix.idle, 30, "Phoenix idle")
    return [
        _at(incident["detectedAt"]) - broke,
        _at(recovered["endTime"]) - broke,
        _at(found["closed"]["resolvedAt"]) - broke,
    ]


def run(runs: int, workdir: Path) -> list[list[float]]:
    port = free_port()
    phoenix = Phoenix(workdir, _service(port))
    stack = PrometheusStack(workdir)
    try:
        wait_for(lambda: phoenix.service("web").get("status") == "healthy", 60, "web healthy")
        (workdir / "rules.yml").write_text(yaml.safe_dump(RULES))
        stack.start(
            scrape_configs=[stack.blackbox_job({"web": f"http://127.0.0.1:{port}/health"})],
            rule_files=[workdir / "rules.yml"],
            alertmanager=_alertmanager(phoenix.api),
        )
        wait_for(
            lambda: [r["value"][1] for r in stack.query("probe_success")] == ["1"],
            30,
            "the probe passing",
        )
        seen: set[str] = set()
        return [_one_run(phoenix, stack, port, seen) for _ in range(runs)]
    finally:
        stack.close()
        phoenix.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.alerting", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="faults injected (default 5)")
    args = parser.parse_args(argv)
    python = platform.python_version()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {python}")
    if missing := missing_programs():
        print(f"skipped: not installed: {', '.join(missing)} (Debian packages)")
        return
    print("Prometheus scrape and evaluation every 500 ms; Alertmanager group_wait 0s")
    with tempfile.TemporaryDirectory(prefix="phoenix-alerting-", dir="/tmp") as tmp:
        timings = run(args.runs, Path(tmp))
    for index, step in enumerate(STEPS):
        values = [t[index] for t in timings]
        print(
            f"{step}: median {statistics.median(values):.2f} s over {len(values)} runs "
            f"(min {min(values):.2f}, max {max(values):.2f})"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
