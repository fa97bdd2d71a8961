"""Crash-to-serving time for a container: SIGKILL its process from outside the engine (a real
crash: the kernel kills it, the engine only sees it die) and time until its port answers 200.

Three ways, in one run, on the same image (busybox ``httpd`` built ``FROM scratch``, on the
host's network) and the same client (a fresh connection every millisecond):

* Phoenix (``phoenix serve`` with the service declared ``platform: docker``): it notices the
  death from the engine's event stream and replaces the container (restart strategy);
* Docker's own restart policy (``docker run --restart=always``) — the peer the issue names;
* a bare ``docker start`` of a stopped container — the floor (the engine starting a
  container and the server coming up), which nothing that goes through the engine can beat.

Then hang → serving again: the container's process is SIGSTOPped (it stops answering but
does not die), for Phoenix (its probe every 1 s, 2 failures, 500 ms timeout) beside Docker's
HEALTHCHECK with its defaults (every 30 s, 30 s timeout, 3 retries) plus an autoheal-style
restarter that restarts ``unhealthy`` containers every 5 s, as docker-autoheal does.

``python -m bench.docker [--runs 20] [--hang-runs 10] [--autoheal-runs 1]`` (needs a Docker
engine and Debian's busybox-static; the autoheal peer takes about three minutes a run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.docker_images import busybox_image
from bench.mttr import describe, free_port, get_json, wait_for

TARGET_RATIO = 1.0
"""Phoenix with one replica at most as slow as Docker's restart policy (median)."""
DOCKER_RESET_AFTER = 10.5
"""Seconds up after which Docker's restart policy starts again from its shortest delay."""
PROBE_INTERVAL = 1.0
HANG_TARGET = 3 * PROBE_INTERVAL
"""A hung container serving again within three of Phoenix's probe intervals."""


def httpd(port: int) -> list[str]:
    return ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"]


def serves(port: int) -> bool:
    return answers_path(port, "/health")


def answers_path(port: int, path: str) -> bool:
    import http.client

    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        connection.request("GET", path)
        status = connection.getresponse().status
        connection.close()
        return status == 200
    except OSError:
        return False


def time_to_serving(port: int, kill: Callable[[], None], timeout: float = 300) -> float:
    started = time.perf_counter()
    kill()
    while True:
        if serves(port):
            return time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"port {port} did not serve again within {timeout}s")
        time.sleep(0.001)


def container_pid(name: str) -> int | None:
    shown = subprocess.run(
        ["docker", "inspect", "--format", "{{.State.Running}} {{.State.Pid}}", name],
        capture_output=True,
        text=True,
    )
    running, _, pid = shown.stdout.strip().partition(" ")
    return int(pid) if shown.returncode == 0 and running == "true" and pid != "0" else None


def kill_repeatedly(
    runs: int,
    port: int,
    serving_pid: Callable[[], int | None],
    fault: signal.Signals = signal.SIGKILL,
    healthy_for: float = 0.6,
) -> list[float]:
    """``runs`` times: wait until settled and healthy for ``healthy_for`` (past the
    contender's own backoff reset, so each kill is a fresh failure, not a crash loop), send
    ``fault`` to the container's process (SIGKILL: a crash; SIGSTOP: a hang), and time
    until it serves again."""
    timings = []
    for _ in range(runs):
        wait_for(serving_pid, 120, "the container to settle and serve")
        time.sleep(healthy_for)
        pid = serving_pid()
        assert pid is not None
        timings.append(time_to_serving(port, lambda pid=pid: os.kill(pid, fault)))
    return timings


def phoenix_run(
    runs: int, workdir: Path, image: str, fault: signal.Signals = signal.SIGKILL
) -> list[float]:
    port, api_port = free_port(), free_port()
    config = workdir / "phoenix.yaml"
    config.write_text(
        f"""services:
  - name: web
    platform: docker
    image: {image}
    command: {json.dumps(httpd(port))}
    port: {port}
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: {PROBE_INTERVAL:g}s
      timeout: 500ms
      failure_threshold: 2
    stop: {{grace: 1s}}
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
            try:
                service = get_json(f"{api}/api/services/web")["service"]
                health = get_json(f"{api}/health")
            except OSError:
                return None
            assert isinstance(service, dict)
            running = [i for i in service["instances"] if i["state"] == "running"]
            if health["activeRecoveries"] == 0 and len(running) == 1 and serves(port):
                return container_pid(str(running[0]["id"]))
            return None

        return kill_repeatedly(runs, port, settled, fault)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def restart_policy_run(runs: int, image: str) -> list[float]:
    port = free_port()
    name = f"phoenix-bench-restart-{port}"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--restart=always",
            "--network=host",
            image,
            *httpd(port),
        ],
        check=True,
        capture_output=True,
    )
    try:
        # Docker resets a container's restart delay once it has run 10 s; a quicker kill
        # would measure its backoff (doubling from 100 ms up to a minute) instead.
        return kill_repeatedly(
            runs,
            port,
            lambda: container_pid(name) if serves(port) else None,
            healthy_for=DOCKER_RESET_AFTER,
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def bare_start_run(runs: int, image: str) -> list[float]:
    port = free_port()
    name = f"phoenix-bench-bare-{port}"
    subprocess.run(
        ["docker", "create", "--name", name, "--network=host", image, *httpd(port)],
        check=True,
        capture_output=True,
    )
    try:
        timings = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run(["docker", "start", name], check=True, capture_output=True)
            while not serves(port):
                time.sleep(0.001)
            timings.append(time.perf_counter() - started)
            subprocess.run(["docker", "kill", name], check=True, capture_output=True)
            wait_for(lambda: container_pid(name) is None, 10, "the container to stop")
        return timings
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def autoheal_run(runs: int, image: str) -> list[float]:
    """Docker's HEALTHCHECK at its defaults, and a restarter that looks every 5 s for
    unhealthy containers and restarts them (what willfarrell/docker-autoheal does)."""
    port = free_port()
    name = f"phoenix-bench-autoheal-{port}"
    probe = f"/bin/busybox wget -q -O /dev/null http://127.0.0.1:{port}/health"
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network=host"),
            *("--health-cmd", probe, "--health-interval", "30s", "--health-retries", "3"),
            *("--health-timeout", "30s", "--label", "autoheal=true"),
            image,
            *httpd(port),
        ],
        check=True,
        capture_output=True,
    )
    stop = threading.Event()

    def restarter() -> None:
        while not stop.wait(5.0):
            found = subprocess.run(
                ["docker", "ps", "-q", "--filter", "health=unhealthy", "--filter", f"name={name}"],
                capture_output=True,
                text=True,
            )
            for container in found.stdout.split():
                subprocess.run(["docker", "restart", "-t", "1", container], capture_output=True)

    watcher = threading.Thread(target=restarter, daemon=True)
    watcher.start()
    try:
        return kill_repeatedly(
            runs, port, lambda: container_pid(name) if serves(port) else None, signal.SIGSTOP
        )
    finally:
        stop.set()
        watcher.join(10)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.docker", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="kills per contender (default 20)")
    parser.add_argument("--hang-runs", type=int, default=10, help="hangs for Phoenix")
    parser.add_argument("--autoheal-runs", type=int, default=1, help="hangs for the peer")
    args = parser.parse_args(argv)
    image = busybox_image()
    print(f"image: {image} (busybox httpd), {args.runs} SIGKILLs of the container's process each")
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-docker-") as tmp:
        bare = bare_start_run(args.runs, image)
        policy = restart_policy_run(args.runs, image)
        phoenix = phoenix_run(args.runs, Path(tmp), image)
    print(describe("docker start", bare))
    print(describe("restart=always", policy))
    print(describe("phoenix", phoenix))
    ratio = statistics.median(phoenix) / statistics.median(policy)
    print(f"phoenix / restart=always: {ratio:.2f}x  (target <= {TARGET_RATIO}x)")
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-docker-hang-") as tmp:
        hung = phoenix_run(args.hang_runs, Path(tmp), image, signal.SIGSTOP)
    print(describe("phoenix hang", hung))
    print(f"phoenix hang median {statistics.median(hung):.2f} s (target <= {HANG_TARGET:g} s)")
    if args.autoheal_runs:
        healed = autoheal_run(args.autoheal_runs, image)
        print(describe("autoheal hang", healed))
        ratio = statistics.median(hung) / statistics.median(healed)
        print(f"phoenix / autoheal-style on a hang: {ratio:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
