"""The servers under test: a real ``phoenix serve`` watching 100 services, and the trivial
endpoint (Phoenix's own, or a stand-in), each left to go quiet between points."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import psutil

from bench.api.liveness import PROBE_TIMEOUT
from bench.probes import Children, cpu_seconds, free_port, get, healthy_count, wait_listening

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = 100
TRIVIAL_PATH = "/api/_bench/trivial"
TARGET_SERVICE = "target"
DESCRIPTORS_NEEDED = 8192


def write_service_file(path: Path, counter_url: str) -> None:
    """99 external services probed every 2 s, and a local ``sleep`` for the triggers."""
    lines = ["services:"]
    for i in range(SERVICES - 1):
        lines += [
            f"  - name: ext-{i}",
            "    platform: external",
            f'    health: {{http: "{counter_url}/health/{i}", interval: 2s, timeout: 1s}}',
        ]
    lines += [
        f"  - name: {TARGET_SERVICE}",
        "    platform: local",
        '    command: ["sleep", "100000"]',
        "    health: {process: true, interval: 1s}",
        # Triggers keep a recovery going for the whole run instead of spending the default
        # budget (10 an hour) in the first second: the 409s are then 'in progress'.
        "    recovery: {budget: {attempts: 10000, window: 1h}}",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def wait_all_healthy(api: str, deadline: float) -> int:
    healthy = 0
    while time.monotonic() < deadline:
        try:
            healthy, _ = healthy_count(api)
        except OSError:
            pass
        if healthy == SERVICES:
            break
        time.sleep(0.5)
    return healthy


def serves_trivial(api: str) -> bool:
    try:
        get(f"{api}{TRIVIAL_PATH}", timeout=5)
        return True
    except urllib.error.HTTPError:
        return False  # 404: this Phoenix has no such route


STAND_IN = f"""
import sys, uvicorn
from fastapi import FastAPI
app = FastAPI()
@app.get("{TRIVIAL_PATH}")
async def trivial() -> dict[str, bool]:
    return {{"success": True}}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
            access_log=False, log_level="warning", backlog=2048)
"""


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited with status {proc.returncode} before answering")
        try:
            get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered {url} within {timeout:g} s")


QUIET_CPU = 0.3
"""Share of a core below which the server counts as idle (its 99 probes every 2 s cost
a few per cent)."""
QUIET_ANSWER = 0.05
"""Seconds within which an idle server answers its trivial GET."""


def settle(url: str, pid: int, timeout: float) -> float:
    """Wait until the server is idle again: uvicorn finishes every request it has read, even
    one whose caller has hung up, so a heavy point leaves a backlog that would otherwise be
    measured as the next point's latency. ``url``: a cheap GET on that server. The seconds
    it took (at the deadline, says so)."""
    server = psutil.Process(pid)
    started = time.monotonic()
    quiet = 0
    while quiet < 2:
        if time.monotonic() - started > timeout:
            print(f"note: the server was still busy {timeout:g} s after the load stopped")
            break
        before = cpu_seconds(server)
        began = time.perf_counter()
        try:
            get(url, timeout=PROBE_TIMEOUT)
            answered = time.perf_counter() - began
        except OSError:
            answered = float("inf")
        time.sleep(max(0.0, 0.25 - (time.perf_counter() - began)))
        busy = (cpu_seconds(server) - before) / (time.perf_counter() - began)
        quiet = quiet + 1 if busy < QUIET_CPU and answered < QUIET_ANSWER else 0
    return time.monotonic() - started


def raise_descriptor_limit() -> None:
    """2,000 client sockets here (wrk inherits the limit) and as many in the server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, DESCRIPTORS_NEEDED))
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * 2000 + 256:
        print(f"note: ulimit -n is {soft}: 2,000 connections may fail (raise the hard limit)")


@dataclass
class Servers:
    phoenix: str
    phoenix_pid: int
    trivial: str
    trivial_pid: int
    trivial_where: str


def start_servers(children: Children, workdir: Path, log_path: Path) -> Servers:
    me = [sys.executable, "-m", "bench.probes"]
    counter = children.start([*me, "--serve"], cwd=ROOT, stdout=subprocess.PIPE)
    counter_port = int(cast(IO[bytes], counter.stdout).readline() or b"0")
    if not counter_port:
        raise RuntimeError("the counting server did not start")
    config = workdir / "services.yaml"
    write_service_file(config, f"http://127.0.0.1:{counter_port}")
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "PORT": str(port),
        "PHOENIX_DATA_DIR": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_BENCH_TRIVIAL": "1",
    }
    argv = [sys.executable, "-m", "phoenix_server", "serve", "--config", str(config)]
    with log_path.open("wb") as log:
        started = time.monotonic()
        phoenix = children.start(argv, cwd=workdir, env=env, stdout=log, stderr=log)
    deadline = started + 60
    if not wait_listening(phoenix, api, deadline):
        raise RuntimeError("phoenix did not answer /health within 60 s")
    healthy = wait_all_healthy(api, deadline)
    print(
        f"phoenix: {healthy}/{SERVICES} services healthy {time.monotonic() - started:.1f} s "
        f"after start{'' if healthy == SERVICES else ' (NOT all: measuring anyway)'}",
        flush=True,
    )
    if serves_trivial(api):
        return Servers(api, phoenix.pid, api, phoenix.pid, "Phoenix itself")
    stand_in_port = free_port()
    stand_in = children.start(
        [sys.executable, "-c", STAND_IN, str(stand_in_port)], cwd=workdir, stdout=subprocess.DEVNULL
    )
    stand_in_url = f"http://127.0.0.1:{stand_in_port}"
    wait_answering(f"{stand_in_url}{TRIVIAL_PATH}", stand_in)
    return Servers(
        api,
        phoenix.pid,
        stand_in_url,
        stand_in.pid,
        f"a STAND-IN (Phoenix serves no {TRIVIAL_PATH}: start it with PHOENIX_BENCH_TRIVIAL=1 "
        "once that route exists): a minimal FastAPI app, uvicorn + uvloop + httptools, "
        "in its own process",
    )
