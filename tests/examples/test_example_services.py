"""End-to-end tests of the example services Phoenix supervises.

The services are run as real child processes, exactly as Phoenix runs them, because what matters
is their observable behaviour: exit codes, signals, sockets that hang, RSS that grows. Every wait
is a poll against a deadline, so the tests are quick on a fast machine and still pass on a slow one.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

pytestmark = pytest.mark.e2e  # starts real processes

REPO_ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 10.0
POLL_S = 0.01
EXIT_DEADLINE_S = 5.0
HANG_TIMEOUT_S = 0.5
HAS_PROC = Path("/proc/self/status").exists()

Json = dict[str, object]


# --- helpers ----------------------------------------------------------------------------------


def free_port() -> int:
    """Ask the OS for a port nobody is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every POLL_S until it holds; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def http_call(
    port: int, method: str, path: str, body: Json | str | None = None, timeout: float = 5.0
) -> tuple[int, Json]:
    """Send one request and return (status, decoded JSON body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert isinstance(payload, dict)
        return response.status, payload
    finally:
        conn.close()


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in kB, as Phoenix's memory detector would read it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class LineReader:
    """Drains a pipe on a thread so the child never blocks on a full pipe and tests can wait."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None, "spawn children with stdout and stderr piped"
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[str]) -> None:
        for line in iter(stream.readline, ""):
            self.lines.put(line.rstrip("\n"))

    def next_line(self, timeout: float = START_DEADLINE_S) -> str:
        """The next line, or a test failure if none comes in time."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no output line within {timeout} s")


class Child:
    """A running example service plus what a test needs to talk to it."""

    def __init__(self, proc: subprocess.Popen[str], port: int | None) -> None:
        self.proc = proc
        self.port = port or 0
        self.stdout = LineReader(proc.stdout)
        self.stderr = LineReader(proc.stderr)

    def call(self, method: str, path: str, body: Json | str | None = None) -> tuple[int, Json]:
        """HTTP request to this service."""
        return http_call(self.port, method, path, body)

    def answers(self) -> bool:
        """True once the service answers /health at all (200 or 503)."""
        if self.proc.poll() is not None:
            pytest.fail(f"service exited early with code {self.proc.returncode}")
        try:
            http_call(self.port, "GET", "/health", timeout=1.0)
        except OSError:
            return False
        return True

    def wait_exit(self, timeout: float = EXIT_DEADLINE_S) -> int:
        """Exit code, failing the test if the process outlives ``timeout``."""
        return self.proc.wait(timeout=timeout)


class Children:
    """Starts services for one test and always kills and reaps them afterwards."""

    def __init__(self) -> None:
        self._started: list[Child] = []

    def spawn(self, module: str, *args: str, port: int | None = None, **env: str) -> Child:
        """Start ``python -m module args`` from the repo root, without waiting for it."""
        command = [sys.executable, "-m", module, *args]
        environment = {k: v for k, v in os.environ.items() if k != "SERVICE_VERSION"}
        proc = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**environment, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = Child(proc, port)
        self._started.append(child)
        return child

    def web(self, *args: str, **env: str) -> Child:
        """Start the web service on a free port and wait until it answers its probe."""
        port = free_port()
        child = self.spawn("examples.services.web", "--port", str(port), *args, port=port, **env)
        wait_until(child.answers, START_DEADLINE_S, "the web service to answer /health")
        return child

    def close(self) -> None:
        """Kill whatever is still running and reap it, so no test leaks a process."""
        for child in self._started:
            if child.proc.poll() is None:
                child.proc.kill()
            child.proc.wait(timeout=EXIT_DEADLINE_S)
            for stream in (child.proc.stdout, child.proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[Children]:
    """Per-test process registry whose teardown kills and waits for every child."""
    registry = Children()
    try:
        yield registry
    finally:
        registry.close()


# --- web: probe and traffic -------------------------------------------------------------------


def test_health_reports_identity_and_start_line(children: Children) -> None:
    web = children.web("--name", "azora-auth", SERVICE_VERSION="v7")
    status, body = web.call("GET", "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["name"] == "azora-auth"
    assert body["version"] == "v7"
    assert body["pid"] == web.proc.pid
    assert isinstance(body["uptime"], float) and body["uptime"] >= 0
    expected = f"web azora-auth v7 listening on 127.0.0.1:{web.port} pid {web.proc.pid}"
    assert web.stdout.next_line() == expected


def test_version_flag_overrides_environment(children: Children) -> None:
    web = children.web("--version", "v2", SERVICE_VERSION="v9")
    assert web.call("GET", "/health")[1]["version"] == "v2"


def test_ordinary_requests_answer_ok_and_are_counted(children: Children) -> None:
    web = children.web()
    for path in ("/", "/work?x=1"):
        status, body = web.call("GET", path)
        assert (status, body["ok"], body["name"], body["pid"]) == (200, True, "web", web.proc.pid)
    state = web.call("GET", "/admin/state")[1]
    assert (state["requests"], state["errors"]) == (2, 0)


def test_full_error_rate_fails_work_but_not_health(children: Children) -> None:
    web = children.web("--error-rate", "1.0")
    status, body = web.call("GET", "/")
    assert (status, body["error"], body["name"]) == (500, "injected", "web")
    assert web.call("GET", "/health")[0] == 200
    state = web.call("GET", "/admin/state")[1]
    assert (state["requests"], state["errors"], state["error_rate"]) == (1, 1, 1.0)


def test_error_rate_can_be_set_at_run_time(children: Children) -> None:
    web = children.web()
    assert web.call("POST", "/admin/errors", {"rate": 1}) == (200, {"error_rate": 1.0})
    assert web.call("GET", "/")[0] == 500


def test_latency_delays_work_but_not_health(children: Children) -> None:
    web = children.web("--latency-ms", "400")
    started = time.monotonic()
    assert web.call("GET", "/")[0] == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert web.call("GET", "/health")[0] == 200
    assert time.monotonic() - started < 0.4


def test_latency_can_be_set_at_run_time(children: Children) -> None:
    web = children.web()
    assert web.call("POST", "/admin/latency", {"ms": 250}) == (200, {"latency_ms": 250.0})
    started = time.monotonic()
    web.call("GET", "/")
    assert time.monotonic() - started >= 0.25


def test_fail_health_flag_answers_503(children: Children) -> None:
    web = children.web("--fail-health")
    status, body = web.call("GET", "/health")
    assert (status, body["status"], body["name"]) == (503, "failing", "web")
    assert web.call("POST", "/admin/health", {"fail": False}) == (200, {"fail_health": False})
    assert web.call("GET", "/health")[0] == 200
    assert web.call("POST", "/admin/health", {"fail": True})[0] == 200
    assert web.call("GET", "/health")[0] == 503


def test_pool_restart_clears_errors_and_counts(children: Children) -> None:
    web = children.web("--error-rate", "1")
    assert web.call("GET", "/")[0] == 500
    assert web.call("POST", "/admin/pool/restart") == (200, {"restarted": True, "count": 1})
    assert web.call("GET", "/")[0] == 200
    assert web.call("POST", "/admin/pool/restart")[1]["count"] == 2
    state = web.call("GET", "/admin/state")[1]
    assert (state["pool_restarts"], state["error_rate"]) == (2, 0.0)


def test_reset_restores_start_up_switches(children: Children) -> None:
    web = children.web("--error-rate", "0.25")
    web.call("POST", "/admin/errors", {"rate": 1})
    web.call("POST", "/admin/latency", {"ms": 10})
    web.call("POST", "/admin/health", {"fail": True})
    status, body = web.call("POST", "/admin/reset")
    assert (status, body["reset"]) == (200, True)
    state = web.call("GET", "/admin/state")[1]
    switches = {key: state[key] for key in ("error_rate", "latency_ms", "fail_health", "hanging")}
    assert switches == {
        "error_rate": 0.25,
        "latency_ms": 0.0,
        "fail_health": False,
        "hanging": False,
    }
    assert web.call("GET", "/health")[0] == 200


def test_state_lists_switches_and_counters(children: Children) -> None:
    web = children.web("--name", "billing")
    status, state = web.call("GET", "/admin/state")
    assert status == 200
    expected = {"requests", "errors", "leaked_mb", "pool_restarts", "version", "name", "pid"}
    expected |= {"error_rate", "latency_ms", "leak_mb_per_s", "fail_health", "hanging"}
    assert expected <= state.keys()
    assert (state["name"], state["pid"]) == ("billing", web.proc.pid)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/admin/errors", "not json", "JSON"),
        ("/admin/errors", "[1]", "object"),
        ("/admin/errors", {"rate": 2}, "between"),
        ("/admin/errors", {"rate": "high"}, "number"),
        ("/admin/latency", {}, "'ms'"),
        ("/admin/leak", {"mb_per_s": -1}, "between"),
        ("/admin/health", {"fail": "yes"}, "true or false"),
        ("/admin/crash", {"code": 300}, "between"),
    ],
)
def test_bad_admin_bodies_get_400(
    children: Children, path: str, body: Json | str, message: str
) -> None:
    web = children.web()
    status, answer = web.call("POST", path, body)
    assert status == 400
    assert message in str(answer["error"])
    assert web.proc.poll() is None


def test_unknown_paths_and_methods(children: Children) -> None:
    web = children.web()
    assert web.call("GET", "/admin/nope")[0] == 404
    assert web.call("POST", "/work")[0] == 404
    assert web.call("POST", "/admin/state")[0] == 405
    assert web.call("GET", "/admin/crash")[0] == 405
    assert web.proc.poll() is None


# --- web: faults ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [1, 3])
def test_admin_crash_exits_with_code(children: Children, code: int) -> None:
    web = children.web()
    assert web.call("POST", "/admin/crash", {"code": code}) == (
        200,
        {"crashing": True, "code": code},
    )
    assert web.wait_exit() == code


def test_crash_after_exits_with_1(children: Children) -> None:
    web = children.web("--crash-after", "0.3")
    assert web.wait_exit() == 1


def assert_hung(web: Child) -> None:
    """The port still accepts connections but /health never answers, and the process lives."""
    with socket.create_connection(("127.0.0.1", web.port), timeout=HANG_TIMEOUT_S):
        pass
    with pytest.raises(TimeoutError):
        http_call(web.port, "GET", "/health", timeout=HANG_TIMEOUT_S)
    assert web.proc.poll() is None


def test_admin_hang_blocks_health_while_alive(children: Children) -> None:
    web = children.web()
    assert web.call("POST", "/admin/hang") == (200, {"hanging": True})
    assert_hung(web)


def test_hang_after_blocks_health(children: Children) -> None:
    web = children.web("--hang-after", "0.2")

    def hung() -> bool:
        try:
            http_call(web.port, "GET", "/health", timeout=HANG_TIMEOUT_S)
        except TimeoutError:
            return True
        return False

    wait_until(hung, START_DEADLINE_S, "the service to hang")
    assert_hung(web)


def test_hung_service_still_exits_on_sigterm(children: Children) -> None:
    web = children.web()
    web.call("POST", "/admin/hang")
    assert_hung(web)
    web.proc.send_signal(signal.SIGTERM)
    assert web.wait_exit() == 0


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to read RSS")
def test_admin_leak_grows_rss(children: Children) -> None:
    web = children.web()
    before = rss_kb(web.proc.pid)
    assert web.call("POST", "/admin/leak", {"mb_per_s": 50}) == (200, {"leak_mb_per_s": 50.0})
    wait_until(lambda: rss_kb(web.proc.pid) >= before + 20_000, 10.0, "RSS to grow by 20 MB")
    web.call("POST", "/admin/leak", {"mb_per_s": 0})
    state = web.call("GET", "/admin/state")[1]
    assert isinstance(state["leaked_mb"], float) and state["leaked_mb"] >= 20


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to read RSS")
def test_leak_flag_grows_rss_from_start(children: Children) -> None:
    web = children.web("--leak-mb-per-s", "100")
    before = rss_kb(web.proc.pid)
    wait_until(lambda: rss_kb(web.proc.pid) >= before + 20_000, 10.0, "RSS to grow by 20 MB")


# --- web: signals and command line -------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_signal_exits_0_quickly(children: Children, signum: signal.Signals) -> None:
    web = children.web()
    started = time.monotonic()
    web.proc.send_signal(signum)
    assert web.wait_exit() == 0
    assert time.monotonic() - started < 1.0  # ~0.1 s normally; generous for loaded CI machines


def test_ignore_sigterm_survives_until_killed(children: Children) -> None:
    web = children.web("--ignore-sigterm")
    web.proc.send_signal(signal.SIGTERM)
    with pytest.raises(subprocess.TimeoutExpired):
        web.proc.wait(timeout=0.5)
    assert web.call("GET", "/health")[0] == 200
    web.proc.kill()
    assert web.wait_exit() == -signal.SIGKILL


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--port", "x"],
        ["--port", "70000"],
        ["--port", "1", "--error-rate", "2"],
        ["--port", "1", "--error-rate", "nan"],
        ["--port", "1", "--latency-ms", "-5"],
        ["--port", "1", "--crash-after", "soon"],
    ],
)
def test_bad_command_line_exits_2_with_one_line(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.services.web", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "error" in lines[0]
    assert result.stdout == ""


def test_busy_port_exits_1_with_message(children: Children) -> None:
    web = children.web()
    second = children.spawn("examples.services.web", "--port", str(web.port))
    assert second.wait_exit() == 1
    assert "cannot listen" in second.stderr.next_line()


def test_first_answer_comes_soon_after_exec(children: Children) -> None:
    started = time.monotonic()
    children.web()
    # ~0.1 s on a developer machine; the bound only catches a heavy import creeping in.
    assert time.monotonic() - started < 2.0


# --- worker -----------------------------------------------------------------------------------


def test_worker_heartbeats_and_exits_0_on_sigterm(children: Children) -> None:
    worker = children.spawn("examples.services.worker", "--name", "mailer", "--interval", "0.05")
    assert worker.stdout.next_line() == f"worker mailer started pid {worker.proc.pid}"
    for beat in (1, 2, 3):
        assert worker.stdout.next_line().startswith(f"worker mailer heartbeat {beat} ")
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.wait_exit() == 0
    assert time.monotonic() - started < 1.0


def test_worker_crash_after_exits_1(children: Children) -> None:
    worker = children.spawn("examples.services.worker", "--crash-after", "0.2")
    assert worker.wait_exit() == 1


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc to read RSS")
def test_worker_leak_grows_rss(children: Children) -> None:
    worker = children.spawn("examples.services.worker", "--leak-mb-per-s", "100")
    worker.stdout.next_line()  # started: the interpreter is up, so RSS is a fair baseline
    before = rss_kb(worker.proc.pid)
    wait_until(lambda: rss_kb(worker.proc.pid) >= before + 20_000, 10.0, "RSS to grow by 20 MB")


def test_worker_bad_interval_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.services.worker", "--interval", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1


def test_admin_cpu_makes_each_request_compute(children: Children) -> None:
    web = children.web()
    assert web.call("POST", "/admin/cpu", {"ms": 30}) == (200, {"cpu_ms": 30.0})
    process = psutil.Process(web.proc.pid)
    before = process.cpu_times()
    for _ in range(5):
        assert web.call("GET", "/work")[0] == 200
    after = process.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    assert used >= 0.1, f"5 requests of 30 ms CPU each used only {used:.3f}s"
    assert web.call("POST", "/admin/cpu", {"ms": -1})[0] == 400
