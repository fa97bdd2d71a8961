"""``phoenix demo``: a game day on this machine, in about two minutes.

It starts Phoenix (a child ``phoenix serve`` on a free port, with its own temporary data
directory) in front of two example services — ``shop-api``, routed and under client load,
and ``shop-db``, which the API depends on — then injects real failures one after the
other: a crash, a hang, an error burst, a memory leak, a load spike and the dependency's
failure. For each it waits for Phoenix to notice and recover, and reports the failure,
the type Phoenix classified, the strategy it chose, the time to detect, the time to
recover (from the injection) and the requests the clients lost. Everything stops at the
end, or on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from phoenix_server.cli.chaos import break_service
from phoenix_server.cli.client import Json, Phoenix, Target
from phoenix_server.cli.errors import REFUSED, USAGE, CliError
from phoenix_server.cli.output import Column, Output, seconds

EXAMPLES = Path(__file__).resolve().parents[3]
"""The checkout holding ``examples/`` (the demo runs the example service from it)."""
FAULTS = ["crash", "hang", "error burst", "memory leak", "load spike", "dependency failure"]
WAIT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_file(api_port: int, db_port: int, flag: Path) -> str:
    """The shop: ``flag`` is shop-db's broken state (its check fails while the file exists,
    and its start clears it, as a restart clears a wedged database); shop-api's check asks
    its own /health and, like a real service's readiness check, whether its database works."""
    web = '["{python}", "-m", "examples.services.web", "--port", "{port}", "--name", "{name}"]'
    db_start = (
        "import os, runpy, sys; "
        f"os.path.exists({str(flag)!r}) and os.remove({str(flag)!r}); "
        "sys.argv = ['shop-db'] + sys.argv[1:]; "
        "runpy.run_module('examples.services.web', run_name='__main__')"
    )
    db_check = f"import os, sys; sys.exit(os.path.exists({str(flag)!r}))"
    api_check = (
        "import os, sys, urllib.request; "
        "urllib.request.urlopen(sys.argv[1], timeout=1).read(); "
        f"sys.exit(os.path.exists({str(flag)!r}))"
    )
    return f"""services:
  - name: shop-db
    command: {json.dumps(["{python}", "-c", db_start, "--port", "{port}", "--name", "{name}"])}
    cwd: {EXAMPLES}
    port: {db_port}
    health: {{command: {json.dumps(["{python}", "-c", db_check])}, interval: 1s, timeout: 1s,
             failure_threshold: 2}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
  - name: shop-api
    command: {web}
    cwd: {EXAMPLES}
    port: {api_port}
    depends_on: [shop-db]
    health:
      command: {json.dumps(["{python}", "-c", api_check, "http://127.0.0.1:{port}/health"])}
      interval: 1s
      timeout: 2s
      failure_threshold: 2
    replicas: {{min: 1, max: 2}}
    resources: {{memory_max: 1GiB}}
    detection:
      error_rate: {{above: 0.5, for: 2s}}
      cpu: {{above: 60, for: 2s}}
      memory: {{leak_window: 10s, min_growth: 0.2}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
    stop: {{grace: 2s}}
"""


@dataclass
class Row:
    failure: str
    detected_as: str = "-"
    strategy: str = "-"
    detect: float | None = None
    recover: float | None = None
    lost: int | None = None
    note: str = ""


class Load:
    """Clients of the shop's API: a few threads sending requests until stopped."""

    def __init__(self, port: int, threads: int = 2, path: str = "/work") -> None:
        self.stop = threading.Event()
        self.failed = 0
        self._threads = [
            threading.Thread(target=self._loop, args=(port, path), daemon=True)
            for _ in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def _loop(self, port: int, path: str) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while not self.stop.is_set():
                try:
                    if client.get(path).status_code >= 500:
                        self.failed += 1
                except httpx.HTTPError:
                    self.failed += 1
                    time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)


def _wait(what: str, check: Callable[[], Any], timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise CliError(f"demo: timed out after {timeout:g}s waiting for {what}", REFUSED)


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@contextmanager
def _phoenix(folder: Path, config: Path) -> Iterator[Phoenix]:
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "PHOENIX_DATA_DIR": str(folder / "var"),
        "PHOENIX_HOST": "127.0.0.1",
        "AUTO_RECOVERY": "true",
    }
    for variable in ("DATABASE_URL", "PHOENIX_API_TOKENS", "PHOENIX_TOKENS_FILE"):
        env.pop(variable, None)
    log = (folder / "phoenix.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "phoenix_server", "serve", "--config", str(config)],
        cwd=EXAMPLES,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    phoenix = Phoenix(Target(f"http://127.0.0.1:{port}"))
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise CliError(f"demo: Phoenix exited; see {folder / 'phoenix.log'}", REFUSED)
            try:
                phoenix.get("/health")
            except CliError:
                return False
            return True

        _wait("Phoenix to start", ready, 60)
        yield phoenix
    finally:
        phoenix.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class GameDay:
    def __init__(self, phoenix: Phoenix, api_port: int, flag: Path, out: Output) -> None:
        self.phoenix = phoenix
        self.api_port = api_port
        self.flag = flag
        self.out = out

    def statuses(self) -> dict[str, str]:
        found = self.phoenix.get("/api/health/services")["services"]
        return {s["name"]: s["status"] for s in found}

    def settled(self) -> bool:
        healthy = all(s == "healthy" for s in self.statuses().values())
        idle = self.phoenix.get("/health")["activeRecoveries"] == 0
        open_incidents = self.phoenix.get("/api/incidents", {"status": "open"})["total"]
        return healthy and idle and open_incidents == 0

    def incidents(self) -> list[Json]:
        found: list[Json] = self.phoenix.get("/api/incidents", {"limit": 1000})["incidents"]
        return found

    def run(self, failure: str) -> Row:
        row = Row(failure)
        _wait("the shop to be healthy and quiet", self.settled)
        time.sleep(0.6)  # past reset_after: a first failure, not a crash loop
        known = {i["id"] for i in self.incidents()}
        load = Load(self.api_port, threads=4 if failure == "load spike" else 2)
        try:
            injected = time.time()
            self.inject(failure)
            # A broken dependency takes its caller down too: report the root's incident.
            target = "shop-db" if failure == "dependency failure" else "shop-api"
            incident = _wait(
                f"Phoenix to notice the {failure}",
                lambda: next(
                    (
                        i
                        for i in self.incidents()
                        if i["id"] not in known and i["service"] == target
                    ),
                    None,
                ),
            )
            row.detected_as = incident["failureType"]
            row.detect = _at(incident["detectedAt"]) - injected
            detail = self.phoenix.get(f"/api/incidents/{incident['id']}")["incident"]
            settled = _wait(
                f"the recovery from the {failure}",
                lambda: self._recovered(incident["id"]),
            )
            attempts = settled["recoveries"]
            if attempts:
                last = self.phoenix.get(f"/api/recovery/status/{attempts[0]['id']}")["recovery"]
                row.strategy = " → ".join(a["strategy"] for a in reversed(attempts))
                if last.get("endTime"):
                    row.recover = _at(last["endTime"]) - injected
                row.lost = sum(
                    self.phoenix.get(f"/api/recovery/status/{a['id']}")["recovery"]["metrics"].get(
                        "requestsLost"
                    )
                    or 0
                    for a in attempts
                )
            row.note = detail["summary"].split(";")[0]
        finally:
            load.close()
            self.flag.unlink(missing_ok=True)
            self._reset()
        return row

    def _recovered(self, incident_id: str) -> Json | None:
        incident: Json = self.phoenix.get(f"/api/incidents/{incident_id}")["incident"]
        return incident if incident["status"] in ("resolved", "unresolved") else None

    def inject(self, failure: str) -> None:
        match failure:
            case "crash":
                break_service(self.phoenix, "shop-api", "crash", None, None)
            case "hang":
                break_service(self.phoenix, "shop-api", "hang", None, None)
            case "error burst":
                break_service(self.phoenix, "shop-api", "errors", 1.0, None)
            case "memory leak":
                break_service(self.phoenix, "shop-api", "leak", 15.0, None)
            case "load spike":
                break_service(self.phoenix, "shop-api", "cpu", 20.0, None)
            case "dependency failure":
                self.flag.touch()

    def _reset(self) -> None:
        """Whatever instance serves now starts clean (a fault may have outlived its run)."""
        service = self.phoenix.get("/api/services/shop-api")["service"]
        for instance in service.get("instances", []):
            if instance.get("state") == "running" and instance.get("port"):
                try:
                    httpx.post(f"http://127.0.0.1:{instance['port']}/admin/reset", timeout=2)
                except httpx.HTTPError:
                    pass


def demo(
    faults: Annotated[
        str,
        typer.Option(help="Comma-separated, in order; default all: " + ", ".join(FAULTS)),
    ] = ",".join(FAULTS),
    keep: Annotated[
        bool, typer.Option(help="Keep the demo's folder (Phoenix's log and database).")
    ] = False,
) -> None:
    """Start Phoenix with example services, break them for real, and report how it coped."""
    chosen = [f.strip() for f in faults.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown or not chosen:
        raise CliError(
            f"unknown fault(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FAULTS)}",
            USAGE,
        )
    if not (EXAMPLES / "examples" / "services" / "web.py").exists():
        raise CliError("demo: the example services are not here (run it from a checkout)", USAGE)
    out = Output()
    folder = Path(tempfile.mkdtemp(prefix="phoenix-demo-"))
    api_port, db_port = _free_port(), _free_port()
    flag = folder / "shop-db-is-down"
    config = folder / "demo.yaml"
    config.write_text(service_file(api_port, db_port, flag))
    rows: list[Row] = []
    try:
        out.line(f"Starting Phoenix with shop-api (:{api_port}) and shop-db (:{db_port})…")
        with _phoenix(folder, config) as phoenix:
            day = GameDay(phoenix, api_port, flag, out)
            for failure in chosen:
                out.line(f"• {failure}: injecting…")
                row = day.run(failure)
                rows.append(row)
                out.line(
                    f"  detected as {row.detected_as} in {seconds(row.detect)}; "
                    f"{row.strategy}; recovered {seconds(row.recover)} after the fault; "
                    f"{row.lost if row.lost is not None else '-'} request(s) lost"
                )
    finally:
        if keep:
            out.line(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    out.table(
        [
            Column("Failure"),
            Column("Detected as"),
            Column("Strategy"),
            Column("Time to detect", right=True),
            Column("Time to recover", right=True),
            Column("Requests lost", right=True),
        ],
        [
            [
                r.failure,
                r.detected_as,
                r.strategy,
                seconds(r.detect),
                seconds(r.recover),
                "-" if r.lost is None else str(r.lost),
            ]
            for r in rows
        ],
        title="Game day report",
    )
