"""Failover time and requests lost in a rolling restart, through Phoenix's router.

1. Failover: a routed service with a hot standby (``backup: {mode: hot}``); SIGKILL the
   primary and time until the service's port answers 200 again (the client polls every
   millisecond; the router holds its requests until the standby is promoted). Repeated.
2. Rolling restart under load: two replicas, four client threads sending GETs over
   keep-alive connections, a manual restart; requests that failed on the client side and
   Phoenix's ``requestsLost``. Repeated.

``python -m bench.failover [--runs 10]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.mttr import answers, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
TARGET_FAILOVER = 0.5


def service_yaml(name: str, port: int, extra: str) -> str:
    return f"""
  - name: {name}
    command: ["{{python}}", "-m", "examples.services.web", "--port", "{{port}}"]
    cwd: {ROOT}
    port: {port}
    health: {{http: "http://127.0.0.1:{{port}}/health", interval: 1s, timeout: 1s}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
{extra}"""


class Phoenix:
    def __init__(self, workdir: Path, services: str) -> None:
        self.api = free_port()
        config = workdir / "phoenix.yaml"
        config.write_text("services:" + services)
        env = {**os.environ, "PORT": str(self.api), "PHOENIX_DATA_DIR": str(workdir / "var")}
        with (workdir / "phoenix.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "phoenix_server", "serve", "--config", str(config)],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.api}{path}", timeout=5) as answer:
            return json.load(answer)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.api}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            return json.load(answer)

    def service(self, name: str) -> dict[str, Any]:
        try:
            found: dict[str, Any] = self.get(f"/api/services/{name}")["service"]
            return found
        except OSError:
            return {}

    def idle(self) -> bool:
        try:
            return bool(self.get("/health")["activeRecoveries"] == 0)
        except OSError:
            return False

    def finished(self, recovery_id: str) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            recovery: dict[str, Any] = self.get(f"/api/recovery/status/{recovery_id}")["recovery"]
            return recovery if recovery["status"] not in ("pending", "in_progress") else None

        found: dict[str, Any] | None = None

        def check() -> bool:
            nonlocal found
            found = ended()
            return found is not None

        wait_for(check, 60, f"{recovery_id} to end")
        assert found is not None
        return found

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def failover_times(runs: int, workdir: Path) -> list[float]:
    port = free_port()
    phoenix = Phoenix(workdir, service_yaml("ledger", port, "    backup: {mode: hot}\n"))
    try:

        def ready() -> int | None:
            service = phoenix.service("ledger")
            running = [i for i in service.get("instances", []) if i["state"] == "running"]
            if len(running) == 1 and service.get("standby") and phoenix.idle() and answers(port):
                return int(running[0]["pid"])
            return None

        timings = []
        for _ in range(runs):
            wait_for(ready, 60, "a primary and a standby")
            time.sleep(0.6)  # past reset_after: a first failure, not a crash loop
            pid = ready()
            assert pid is not None
            started = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            while not answers(port):
                time.sleep(0.001)
            timings.append(time.perf_counter() - started)
        return timings
    finally:
        phoenix.close()


def rolling_restarts(runs: int, workdir: Path) -> list[tuple[int, int, int]]:
    """(client requests answered, client failures, Phoenix's requestsLost) per restart."""
    port = free_port()
    phoenix = Phoenix(workdir, service_yaml("search", port, "    replicas: 2\n"))
    results = []
    try:
        wait_for(lambda: len(_running(phoenix, "search")) == 2 and answers(port), 60, "2 replicas")
        for _ in range(runs):
            wait_for(
                lambda: len(_running(phoenix, "search")) == 2 and phoenix.idle(), 60, "settled"
            )
            counts = {"ok": 0, "failed": 0}
            stop = threading.Event()
            threads = [
                threading.Thread(target=_client, args=(port, stop, counts), daemon=True)
                for _ in range(4)
            ]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            started = phoenix.post(
                "/api/recovery/trigger", {"service": "search", "strategy": "restart"}
            )
            recovery = phoenix.finished(started["recoveryId"])
            time.sleep(0.5)
            stop.set()
            for thread in threads:
                thread.join(10)
            results.append((counts["ok"], counts["failed"], recovery["metrics"]["requestsLost"]))
        return results
    finally:
        phoenix.close()


def _running(phoenix: Phoenix, name: str) -> list[dict[str, Any]]:
    return [i for i in phoenix.service(name).get("instances", []) if i["state"] == "running"]


_lock = threading.Lock()


def _client(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    connection: http.client.HTTPConnection | None = None
    while not stop.is_set():
        try:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("GET", "/")
            answer = connection.getresponse()
            answer.read()
            outcome = "ok" if answer.status == 200 else "failed"
        except (OSError, http.client.HTTPException):
            outcome = "failed"
            if connection is not None:
                connection.close()
            connection = None
        with _lock:
            counts[outcome] += 1
    if connection is not None:
        connection.close()


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    python = platform.python_version()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {python}")
    with tempfile.TemporaryDirectory(prefix="phoenix-failover-", dir="/tmp") as tmp:
        (Path(tmp) / "a").mkdir()
        (Path(tmp) / "b").mkdir()
        times = failover_times(args.runs, Path(tmp) / "a")
        restarts = rolling_restarts(max(1, args.runs // 3), Path(tmp) / "b")
    ordered = sorted(times)
    print(
        f"failover, primary SIGKILLed -> serving (hot standby, {len(times)} runs): "
        f"median {_median_ms(times)}, p90 {ordered[int(0.9 * (len(ordered) - 1))] * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms (target < {TARGET_FAILOVER * 1000:.0f} ms)"
    )
    for index, (ok, failed, lost) in enumerate(restarts, start=1):
        print(
            f"rolling restart {index} of 2 replicas under load: {ok} requests answered, "
            f"{failed} failed on the client side, requestsLost {lost} (target 0)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
