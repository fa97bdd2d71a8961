"""Crash-to-serving time: SIGKILL a managed HTTP service and time until it answers 200 again.

Three ways, in one run, on the same service (``python -m http.server``, stdlib):

* Phoenix (``phoenix serve`` with the service declared ``platform: local``);
* supervisord 4.3 (``autorestart=true``, ``startsecs=0``) — the peer the issue names;
* a bare respawn (spawn the process and poll it ourselves) — the floor: how long the
  service itself takes to come up, which no supervisor can beat.

Each kill waits until the previous recovery has finished and the service has run healthy
for a moment (Phoenix's first restart after a healthy run is immediate; crash-loop backoff
only applies to quicker failures, and ``reset_after`` is set short here so that 20 kills do
not take minutes). The client polls the port every millisecond with fresh connections.

``python -m bench.mttr [--runs 20]``
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

TARGET_SECONDS = 0.15
TARGET_RATIO = 0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", "/")
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except OSError:
        return False


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def time_to_serving(port: int, kill: Callable[[], None], timeout: float = 30) -> float:
    """SIGKILL via ``kill``, then the seconds until the port answers 200 again."""
    started = time.perf_counter()
    kill()
    while True:
        if answers(port):
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"port {port} did not serve again within {timeout}s")
        time.sleep(0.001)


def kill_repeatedly(
    runs: int, port: int, serving_pid: Callable[[], int | None], what: str
) -> list[float]:
    """``runs`` times: wait until settled and healthy for a moment, SIGKILL, time to serving."""
    timings = []
    for _ in range(runs):
        wait_for(serving_pid, 30, what)
        time.sleep(0.6)  # run healthy past reset_after: a fresh failure, not a crash loop
        pid = serving_pid()
        assert pid is not None
        timings.append(time_to_serving(port, lambda pid=pid: os.kill(pid, signal.SIGKILL)))
    return timings


def service_command(port: int) -> list[str]:
    return [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]


# -- Phoenix ----------------------------------------------------------------------------------


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: dict[str, object] = json.load(response)
        return body


def phoenix_run(runs: int, workdir: Path) -> list[float]:
    port, api_port = free_port(), free_port()
    config = workdir / "phoenix.yaml"
    config.write_text(
        f"""services:
  - name: web
    command: {json.dumps([sys.executable, "-m", "http.server", "{port}", "--bind", "127.0.0.1"])}
    cwd: {workdir}
    port: {port}
    health: {{http: "http://127.0.0.1:{{port}}/", interval: 1s, timeout: 1s}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
"""
    )
    env = {**os.environ, "PORT": str(api_port), "PHOENIX_DATA_DIR": str(workdir / "var")}
    api = f"http://127.0.0.1:{api_port}"
    with (workdir / "phoenix.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "phoenix_server", "serve", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def settled() -> int | None:
            """The running instance's pid once no recovery is active and it is in rotation."""
            try:
                service = get_json(f"{api}/api/services/web")["service"]
                health = get_json(f"{api}/health")
            except OSError:
                return None
            assert isinstance(service, dict)
            running = [i for i in service["instances"] if i["state"] == "running"]
            if health["activeRecoveries"] == 0 and len(running) == 1 and answers(port):
                return int(running[0]["pid"])
            return None

        return kill_repeatedly(runs, port, settled, "Phoenix and the service to settle")
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)


# -- supervisord ------------------------------------------------------------------------------


def supervisord_run(runs: int, workdir: Path) -> list[float]:
    port = free_port()
    conf = workdir / "supervisord.conf"
    conf.write_text(
        f"""[supervisord]
nodaemon=true
logfile={workdir}/supervisord.log
pidfile={workdir}/supervisord.pid

[program:web]
command={" ".join(service_command(port))}
directory={workdir}
autorestart=true
startsecs=0
startretries=1000
stdout_logfile={workdir}/web.log
redirect_stderr=true
"""
    )
    supervisord = Path(sys.executable).parent / "supervisord"
    daemon = subprocess.Popen([str(supervisord), "-c", str(conf)], stdout=subprocess.DEVNULL)
    try:

        def child() -> int | None:
            try:
                children = psutil.Process(daemon.pid).children()
            except psutil.Error:
                return None
            live = [c for c in children if c.status() != psutil.STATUS_ZOMBIE]
            return live[0].pid if len(live) == 1 and answers(port) else None

        return kill_repeatedly(runs, port, child, "supervisord's child to serve")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)


# -- bare respawn -----------------------------------------------------------------------------


def bare_run(runs: int, workdir: Path) -> list[float]:
    port = free_port()
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        process = subprocess.Popen(
            service_command(port), cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            while not answers(port):
                time.sleep(0.001)
            timings.append(time.perf_counter() - started)
        finally:
            process.kill()
            process.wait()
    return timings


def describe(name: str, timings: list[float]) -> str:
    ordered = sorted(timings)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return (
        f"{name:<12} median {statistics.median(ordered) * 1000:7.1f} ms   "
        f"p90 {p90 * 1000:7.1f} ms   min {ordered[0] * 1000:6.1f} ms   n={len(ordered)}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mttr", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="kills per contender (default 20)")
    args = parser.parse_args(argv)
    python = platform.python_version()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {python}")
    print(f"service: {' '.join(service_command(0)[1:4])} (stdlib), {args.runs} SIGKILLs each")
    with tempfile.TemporaryDirectory(prefix="phoenix-mttr-") as tmp:
        root = Path(tmp)
        for name in ("phoenix", "supervisord", "bare"):
            (root / name).mkdir()
        bare = bare_run(args.runs, root / "bare")
        phoenix = phoenix_run(args.runs, root / "phoenix")
        supervisord = supervisord_run(args.runs, root / "supervisord")
    print(describe("bare respawn", bare))
    print(describe("phoenix", phoenix))
    print(describe("supervisord", supervisord))
    phoenix_median = statistics.median(phoenix)
    ratio = phoenix_median / statistics.median(supervisord)
    overhead = phoenix_median - statistics.median(bare)
    print(f"phoenix / supervisord: {ratio:.3f}x  (target <= {TARGET_RATIO}x)")
    print(
        f"phoenix median {phoenix_median:.3f} s  (target <= {TARGET_SECONDS} s); "
        f"over the bare respawn: {overhead * 1000:+.1f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
