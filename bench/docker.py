"""Crash-to-serving time for a container: SIGKILL its process from outside the engine (a real
crash: the kernel kills it, the engine only sees it die) and time until its port answers 200.

In one run, on the same image (busybox ``httpd`` built ``FROM scratch``, on the host's
network) and the same client (a fresh connection every millisecond, 50 ms timeout each:
``POLL_TIMEOUT``):

* Phoenix (``phoenix serve`` with the service declared ``platform: docker``) with one
  replica: its router holds the service's port, it notices the death from the engine's event
  stream and starts a replacement container on a port of its own (restart strategy);
* Phoenix with two replicas behind its router: one of them is killed, and a client polling
  the port every millisecond counts the requests that fail while the other serves and the
  replacement is started and put in rotation;
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
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.docker_images import busybox_image
from bench.mttr import describe, free_port, get_json, wait_for

TARGET_RATIO = 1.0
"""Phoenix with one replica at most as slow as Docker's restart policy (median)."""
TARGET_FAILED = 0
"""Requests lost by a client polling every millisecond while one of two replicas crashes."""
DOCKER_RESET_AFTER = 10.5
"""Seconds up after which Docker's restart policy starts again from its shortest delay."""
PROBE_INTERVAL = 1.0
HANG_TARGET = 3 * PROBE_INTERVAL
"""A hung container serving again within three of Phoenix's probe intervals."""
HEALTHY_FOR = 0.6
"""Seconds a Phoenix service runs healthy before the next fault (past its ``reset_after``)."""
POLL_TIMEOUT = 0.05
"""The timing client's timeout per request. busybox httpd answers in about a millisecond;
with a long timeout, a request sent to a hung container blocks the client until it gives
up, so a hang's time to serving would be counted in whole timeouts (every figure a
multiple of it), not from when the port answers again."""


def httpd(port: int | str) -> list[str]:
    """The container's command: busybox httpd on ``port`` (a number, or Phoenix's ``{port}``
    placeholder, which it renders to the port it assigns the container)."""
    return ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"]


def serves(port: int, timeout: float = 1.0) -> bool:
    return answers_path(port, "/health", timeout)


def answers_path(port: int, path: str, timeout: float = 1.0) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            connection.request("GET", path)
            return connection.getresponse().status == 200
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return False


def time_to_serving(port: int, kill: Callable[[], None], timeout: float = 300) -> float:
    started = time.perf_counter()
    kill()
    while True:
        if serves(port, POLL_TIMEOUT):
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
    healthy_for: float = HEALTHY_FOR,
) -> list[float]:
    """``runs`` times: wait until settled and healthy for ``healthy_for`` (past the
    contender's own backoff reset, so each kill is a fresh failure, not a crash loop), send
    ``fault`` to the container's process (SIGKILL: a crash; SIGSTOP: a hang), and time
    until it serves again. A hang is found by probes on a schedule, so it comes a random
    part of a probe interval later still: otherwise each would come at about the same point
    of the schedule (the previous recovery ends a fixed time after a probe) and the figures
    would measure that point, not a hang at any moment."""
    timings = []
    for _ in range(runs):
        wait_for(serving_pid, 120, "the container to settle and serve")
        jitter = random.uniform(0, PROBE_INTERVAL) if fault == signal.SIGSTOP else 0.0
        time.sleep(healthy_for + jitter)
        pid = serving_pid()
        assert pid is not None
        timings.append(time_to_serving(port, lambda pid=pid: os.kill(pid, fault)))
    return timings


# -- Phoenix ----------------------------------------------------------------------------------


@dataclass
class Client:
    """GET /health through the router every millisecond, a fresh connection each (timeout
    1 s), counting what answered 200 and what did not (any other status, or an error)."""

    port: int
    answered: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    """The first few failures: seconds into the run, and what happened."""
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        began = time.perf_counter()
        while not self.stop.is_set():
            outcome = self.request()
            if outcome is None:
                self.answered += 1
            else:
                self.failed += 1
                if len(self.failures) < 20:
                    self.failures.append(f"{time.perf_counter() - began:.3f}s: {outcome}")
            time.sleep(0.001)

    def request(self) -> str | None:
        """None if it answered 200, else what went wrong."""
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                connection.request("GET", "/health")
                status = connection.getresponse().status
            finally:
                connection.close()
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}: {error}"
        return None if status == 200 else f"status {status}"


@dataclass
class PhoenixRun:
    timings: list[float]
    """Crash or hang → serving (one replica), or crash → replacement running (two)."""
    client: Client | None = None
    """With two replicas: the client polling the router throughout."""


@contextmanager
def phoenix_serving(workdir: Path, config: str) -> Iterator[str]:
    """``phoenix serve`` with ``config``, its log in ``workdir``; yields its API's URL. When
    the run fails, the log is kept under /tmp (the workdir is temporary)."""
    api_port = free_port()
    (workdir / "phoenix.yaml").write_text(config)
    env = {**os.environ, "PORT": str(api_port), "PHOENIX_DATA_DIR": str(workdir / "var")}
    command = [sys.executable, "-m", "phoenix_server", "serve"]
    with (workdir / "phoenix.log").open("wb") as log:
        server = subprocess.Popen(
            [*command, "--config", str(workdir / "phoenix.yaml")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{api_port}"
    except BaseException:
        kept = Path(tempfile.gettempdir()) / f"phoenix-bench-docker-{api_port}.log"
        shutil.copy(workdir / "phoenix.log", kept)
        print(f"Phoenix's log: {kept}", file=sys.stderr)
        raise
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)


def phoenix_run(
    runs: int,
    workdir: Path,
    image: str,
    fault: signal.Signals = signal.SIGKILL,
    replicas: int = 1,
) -> PhoenixRun:
    """Phoenix running the busybox image behind its router, ``replicas`` containers (1 or 2),
    each listening on the port Phoenix assigns it (``{port}``).

    One replica: ``runs`` times, ``fault`` to the container's process and the time until the
    router's port answers 200 again. Declared ``zero_downtime`` (with two replicas it is the
    default for docker): a hung container is replaced before it is stopped, so its stop
    grace (a stopped process cannot act on SIGTERM, so it is waited in full) is not on the
    path to serving; after a crash there is nothing left to stop.

    Two replicas: a :class:`Client` polls the router throughout, and ``runs`` times one
    container is SIGKILLed and timed until Phoenix runs two again (the replacement running,
    the recovery over: in rotation)."""
    if replicas not in (1, 2):
        raise ValueError("replicas: 1 or 2")
    port = free_port()
    config = f"""services:
  - name: web
    platform: docker
    image: {image}
    command: {json.dumps(httpd("{port}"))}
    port: {port}
    replicas: {replicas}
    zero_downtime: true
    health:
      http: "http://127.0.0.1:{{port}}/health"
      interval: {PROBE_INTERVAL:g}s
      timeout: 500ms
      failure_threshold: 2
    stop: {{grace: 1s}}
    recovery: {{backoff: {{reset_after: 500ms}}}}
"""
    with phoenix_serving(workdir, config) as api:

        def state() -> tuple[list[str], int] | None:
            """The running instances' ids and the number of active recoveries."""
            try:
                service = get_json(f"{api}/api/services/web")["service"]
                health = get_json(f"{api}/health")
            except (OSError, ValueError):
                return None
            assert isinstance(service, dict)
            running = [str(i["id"]) for i in service["instances"] if i["state"] == "running"]
            active = health["activeRecoveries"]
            assert isinstance(active, int)
            return running, active

        if replicas == 1:

            def settled() -> int | None:
                seen = state()
                if seen is None or seen[1] != 0 or len(seen[0]) != 1 or not serves(port):
                    return None
                return container_pid(seen[0][0])

            return PhoenixRun(kill_repeatedly(runs, port, settled, fault))
        client = Client(port)
        return PhoenixRun(replace_repeatedly(runs, port, state, client), client)


def replace_repeatedly(
    runs: int, port: int, state: Callable[[], tuple[list[str], int] | None], client: Client
) -> list[float]:
    """Once both replicas first serve, start ``client`` polling the router; then ``runs``
    times: wait until both replicas run, no recovery is active and the service has served
    for a moment; SIGKILL one container's process (each in turn) and time until Phoenix runs
    two again, neither of them the killed one, and the recovery is over."""

    def both() -> list[str] | None:
        seen = state()
        if seen is None or seen[1] != 0 or len(seen[0]) != 2 or not serves(port):
            return None
        return sorted(seen[0])

    wait_for(both, 120, "two replicas to start and serve")
    poller = threading.Thread(target=client.run, daemon=True)
    poller.start()
    try:
        return kill_replicas(runs, both, state)
    finally:
        client.stop.set()
        poller.join(10)


def kill_replicas(
    runs: int,
    both: Callable[[], list[str] | None],
    state: Callable[[], tuple[list[str], int] | None],
) -> list[float]:
    timings: list[float] = []
    while len(timings) < runs:
        wait_for(both, 120, "two replicas to settle and serve")
        time.sleep(HEALTHY_FOR)
        running = both()
        if running is None:
            continue
        victim = running[len(timings) % 2]
        pid = container_pid(victim)
        if pid is None:
            continue
        started = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        while True:
            seen = state()
            if seen is not None and seen[1] == 0 and len(seen[0]) == 2 and victim not in seen[0]:
                timings.append(time.perf_counter() - started)
                break
            if time.perf_counter() - started > 120:
                raise TimeoutError(f"no replacement for {victim} within 120 s")
            time.sleep(0.005)
    return timings


# -- Docker -----------------------------------------------------------------------------------


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
            while not serves(port, POLL_TIMEOUT):
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
    bare = bare_start_run(args.runs, image)
    policy = restart_policy_run(args.runs, image)
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-docker-") as tmp:
        phoenix = phoenix_run(args.runs, Path(tmp), image).timings
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-docker-replicas-") as tmp:
        paired = phoenix_run(args.runs, Path(tmp), image, replicas=2)
    print(describe("docker start", bare))
    print(describe("restart=always", policy))
    print(describe("phoenix", phoenix))
    ratio = statistics.median(phoenix) / statistics.median(policy)
    print(f"phoenix / restart=always: {ratio:.2f}x  (target <= {TARGET_RATIO}x)")
    client = paired.client
    assert client is not None
    print(describe("phoenix x2", paired.timings) + "  (crash -> replacement in rotation)")
    met = "met" if client.failed <= TARGET_FAILED else "missed"
    print(
        f"phoenix x2: {client.answered + client.failed} requests through the router, "
        f"{client.failed} failed  (target {TARGET_FAILED}: {met})"
    )
    for failure in client.failures:
        print(f"  failed at {failure}")
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-docker-hang-") as tmp:
        hung = phoenix_run(args.hang_runs, Path(tmp), image, signal.SIGSTOP).timings
    print(describe("phoenix hang", hung))
    print(f"phoenix hang median {statistics.median(hung):.2f} s (target <= {HANG_TARGET:g} s)")
    if args.autoheal_runs:
        healed = autoheal_run(args.autoheal_runs, image)
        print(describe("autoheal hang", healed))
        ratio = statistics.median(hung) / statistics.median(healed)
        print(f"phoenix / autoheal-style on a hang: {ratio:.3f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
