"""Detection latency per failure type: from fault injection to Phoenix's incident.

Each scenario runs a real example service under Phoenix, injects a fault through the
service's admin API (or its dependency's health), and reads the incident's ``detectedAt``;
the latency is that minus the wall-clock time of the injection. Repeated; medians. The
Kubernetes column is what its defaults would do (liveness probe every 10 s, 3 failures:
about 30 s to act on a hang; a crashed container is restarted by the kubelet, which
notices within about a second; errors, load and latency are not its business, and a leak
ends in an OOM kill at the limit).

Detection settings: health checks every 1 s with a 1 s timeout and 2 failures (so a hang
is confirmed within 3 probe intervals); errors, CPU and latency rules fire after 2 s;
the leak window is 10 s with a 1 GiB limit and a 15 MB/s leak.

``python -m bench.detection [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.failover import Phoenix
from bench.mttr import answers, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
LEAK_MB_PER_S = 15
MEMORY_LIMIT_MB = 1024

DETECTION = """    detection:
      error_rate: {above: 0.5, for: 2s}
      cpu: {above: 60, for: 2s}
      memory: {leak_window: 10s, min_growth: 0.2}
    resources: {memory_max: 1GiB}
"""


def service(name: str, port: int, extra: str = "", health: str = "") -> str:
    check = health or 'http: "http://127.0.0.1:{port}/health"'
    return f"""
  - name: {name}
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {ROOT}
    port: {port}
    health: {{{check}, interval: 1s, timeout: 1s, failure_threshold: 2}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
    stop: {{grace: 2s}}
{DETECTION}{extra}"""


def post(port: int, path: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


def load(port: int, stop: threading.Event, threads: int = 3) -> list[threading.Thread]:
    def loop() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/work", timeout=5) as a:
                    a.read()
            except OSError:
                time.sleep(0.01)

    started = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for thread in started:
        thread.start()
    return started


class Scenario:
    def __init__(self, workdir: Path, services: str, name: str) -> None:
        self.phoenix = Phoenix(workdir, services)
        self.name = name

    def instance_port(self) -> int:
        running = [
            i
            for i in self.phoenix.service(self.name).get("instances", [])
            if i["state"] == "running"
        ]
        return int(running[0]["port"])

    def incidents(self) -> list[dict[str, Any]]:
        try:
            found: list[dict[str, Any]] = self.phoenix.get(
                f"/api/incidents?service={self.name}&limit=1000"
            )["incidents"]
        except OSError:
            return []
        return found

    def settled(self) -> bool:
        return (
            self.phoenix.idle()
            and all(i["status"] != "open" for i in self.incidents())
            and any(
                i["state"] == "running"
                for i in self.phoenix.service(self.name).get("instances", [])
            )
        )

    def measure(self, inject: Callable[[], None]) -> tuple[float, dict[str, Any]]:
        """Inject, then seconds until a new incident appears (by its detectedAt)."""
        wait_for(self.settled, 120, f"{self.name} settled")
        time.sleep(0.6)  # past reset_after: a first failure, not a crash loop
        known = {i["id"] for i in self.incidents()}
        injected = time.time()
        inject()
        found: dict[str, Any] = {}

        def new_incident() -> bool:
            fresh = [i for i in self.incidents() if i["id"] not in known]
            if fresh:
                found.update(fresh[-1])
            return bool(fresh)

        wait_for(new_incident, 120, f"an incident of {self.name}")
        detected = datetime.fromisoformat(found["detectedAt"].replace("Z", "+00:00")).timestamp()
        return detected - injected, found

    def close(self) -> None:
        self.phoenix.close()


def inject(
    kind: str,
    direct: int,
    port: int,
    flag: Path,
    stop: threading.Event,
    threads: list[threading.Thread],
) -> None:
    """The fault of ``kind``, into the instance on port ``direct`` (the service's is ``port``)."""
    if kind == "crash":
        post(direct, "/admin/crash", {})
    elif kind == "hang":
        post(direct, "/admin/hang", {})
    elif kind == "error burst":
        threads.extend(load(port, stop))
        post(direct, "/admin/errors", {"rate": 1.0})
    elif kind == "load spike":
        post(direct, "/admin/cpu", {"ms": 20})
        threads.extend(load(port, stop, threads=4))
    elif kind == "memory leak":
        post(direct, "/admin/leak", {"mb_per_s": LEAK_MB_PER_S})
    else:
        flag.touch()


def run_scenario(kind: str, runs: int, workdir: Path) -> tuple[list[float], list[dict[str, Any]]]:
    port = free_port()
    name = "svc"
    flag = workdir / "dependency-is-down"
    if kind == "dependency failure":
        script = "import os,sys; sys.exit(os.path.exists(sys.argv[1]))"
        check = f'command: ["{{python}}", "-c", "{script}", "{flag}"]'
        services = service("svc", port, health=check) + service(
            "caller", free_port(), extra="    depends_on: [svc]\n", health=check
        )
    else:
        extra = "    replicas: {min: 1, max: 2}\n" if kind == "load spike" else ""
        services = service(name, port, extra=extra)
    scenario = Scenario(workdir, services, name)
    timings: list[float] = []
    incidents: list[dict[str, Any]] = []
    try:
        wait_for(lambda: answers(port), 60, "the service")
        for _ in range(runs):
            stop = threading.Event()
            threads: list[threading.Thread] = []
            try:
                took, incident = scenario.measure(
                    lambda stop=stop, threads=threads: inject(
                        kind, scenario.instance_port(), port, flag, stop, threads
                    )
                )
            finally:
                stop.set()
                for thread in threads:
                    thread.join(10)
                flag.unlink(missing_ok=True)
            timings.append(took)
            incidents.append(incident)
        return timings, incidents
    finally:
        scenario.close()


KUBERNETES = {
    "crash": "~1 s (kubelet restarts the exited container)",
    "hang": "~30 s (liveness every 10 s, 3 failures)",
    "error burst": "not detected",
    "load spike": "not detected (an HPA scales on CPU after its 15 s sync and 5 min window)",
    "memory leak": "OOM kill at the limit",
    "dependency failure": "not detected (each caller is restarted on its own)",
}
TARGETS = {
    "crash": "< 50 ms",
    "hang": "< 3 probe intervals (3 s)",
    "memory leak": "before the limit",
}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detection", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    python = platform.python_version()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {python}")
    kinds = ["crash", "hang", "error burst", "load spike", "memory leak", "dependency failure"]
    with tempfile.TemporaryDirectory(prefix="phoenix-detection-", dir="/tmp") as tmp:
        for index, kind in enumerate(kinds):
            workdir = Path(tmp) / str(index)
            workdir.mkdir()
            runs = args.runs * 2 if kind == "crash" else args.runs
            timings, incidents = run_scenario(kind, runs, workdir)
            types = sorted({i["failureType"] for i in incidents})
            line = (
                f"{kind}: median {statistics.median(timings) * 1000:.0f} ms over {len(timings)} "
                f"runs (max {max(timings) * 1000:.0f} ms), classified {', '.join(types)}"
            )
            if kind in TARGETS:
                line += f"; target {TARGETS[kind]}"
            if kind == "memory leak":
                line += f"; at detection: {incidents[-1]['summary'].split('; ')[-1]}"
            print(line + f"; Kubernetes default: {KUBERNETES[kind]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
