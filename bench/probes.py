"""Monitoring cost: Phoenix's whole probe pipeline (probe → health status → metrics) with its
HTTP client, against the same pipeline with the aiohttp probe it had before and a bare aiohttp
probe loop, in the same run, on the same counting HTTP server.

``python -m bench.probes --services 2000 --seconds 20``. A raw asyncio server (uvloop) answers
``GET /health/<n>`` and counts what it receives, so probes are measured where they land, not
by Phoenix's own account. Phoenix (``phoenix serve``) then watches N ``platform: external``
services probed every 1 s; once all are healthy (or a deadline passes: it says so) its CPU
(psutil, user+system, with children) is measured over a window. Then the same again with
Phoenix's HTTP probe replaced, in this bench only, by the aiohttp one it had before (one
shared ClientSession; registered in ``PROBES`` before ``phoenix serve`` starts in the same
process). The bare loop (one ClientSession, uvloop, N tasks, same interval, jitter and
timeout, results ignored) runs last as its own process and is measured the same way. With
``--rounds`` above 1 the two Phoenix runs alternate which goes first; figures are medians.
Issue targets: ≥ 2x the aiohttp pipeline's probes per CPU-second (issue 18), ≥ 5,000 probes
per CPU-second through the whole pipeline, and ≥ 0.6x the bare loop. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import psutil

ROOT = Path(__file__).resolve().parent.parent
INTERVAL = 1.0
TIMEOUT = 1.0
JITTER = 0.1  # as phoenix_server.monitoring.scheduling
TARGET_PER_CPU_SECOND = 5000
TARGET_RATIO = 0.6
TARGET_OVER_AIOHTTP = 2.0

# -- the counting HTTP server (child process) ------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class CountingProtocol(asyncio.Protocol):
    """Keep-alive HTTP/1.1 for body-less GETs (pipelining included), counting health probes.

    About 17 µs of CPU per request here, ~6x cheaper than an aiohttp.web server (108 µs)."""

    received = 0

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        *requests, self._pending = (self._pending + data).split(b"\r\n\r\n")
        replies = []
        for request in requests:
            if request.startswith(b"GET /health/"):
                CountingProtocol.received += 1
                replies.append(OK)
            elif request.startswith(b"GET /count"):
                body = str(CountingProtocol.received).encode()
                replies.append(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            else:
                replies.append(NOT_FOUND)
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))


def print_machine() -> None:
    """The line every benchmark starts with: what it ran on, and how busy that was."""
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))} ({os.cpu_count()} CPUs), "
        f"Python {platform.python_version()}, {platform.platform()}, "
        f"load {os.getloadavg()[0]:.2f}",
        flush=True,
    )


def serve_counter(protocol: type[asyncio.Protocol] = CountingProtocol) -> None:
    """Listen on a free loopback port, print it, and serve ``protocol`` until terminated."""
    import uvloop

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=4096)
        print(server.sockets[0].getsockname()[1], flush=True)
        await server.serve_forever()

    uvloop.run(serve())


# -- the bare probe loop (child process) -----------------------------------------------------


def run_bare(prefix: str, services: int) -> None:
    """N tasks on one shared session, each probing its URL every 1 s ±10 %; results ignored."""
    import aiohttp
    import uvloop

    async def probe_all() -> None:
        loop = asyncio.get_running_loop()
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)

        async def probe_forever(url: str) -> None:
            await asyncio.sleep(random.uniform(0, INTERVAL))
            while True:
                began = loop.time()
                try:
                    async with session.get(url, timeout=timeout) as response:
                        await response.read()
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                delay = INTERVAL * random.uniform(1 - JITTER, 1 + JITTER)
                await asyncio.sleep(max(0.0, began + delay - loop.time()))

        try:
            await asyncio.gather(*(probe_forever(f"{prefix}{i}") for i in range(services)))
        finally:
            await session.close()

    uvloop.run(probe_all())


# -- Phoenix with the aiohttp probe it had before (child process) ------------------------------


def run_phoenix_with_aiohttp(argv: list[str]) -> None:
    """``phoenix <argv>`` in this process, its HTTP probe replaced by the aiohttp one Phoenix
    used until issue 18 (as it was in monitoring/probing.py), for the same-run comparison."""
    import aiohttp
    import yarl

    from phoenix_server.cli import main as phoenix
    from phoenix_server.domain.health import ProbeResult
    from phoenix_server.domain.services import HttpCheck
    from phoenix_server.monitoring import probing

    sessions: dict[int, aiohttp.ClientSession] = {}

    def session(prober: probing.Prober) -> aiohttp.ClientSession:
        if id(prober) not in sessions:
            sessions[id(prober)] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                auto_decompress=False,
                headers={"User-Agent": "phoenix-probe"},
            )
        return sessions[id(prober)]

    def parsed(target: probing.ProbeTarget) -> tuple[yarl.URL, aiohttp.ClientTimeout]:
        cached = vars(target).get("_aiohttp")
        if cached is None:  # built once per target, as ProbeTarget's cached properties were
            assert isinstance(target.check, HttpCheck)
            cached = (yarl.URL(target.check.url), aiohttp.ClientTimeout(total=target.timeout))
            object.__setattr__(target, "_aiohttp", cached)
        return cast(tuple[yarl.URL, aiohttp.ClientTimeout], cached)

    async def probe_http(prober: probing.Prober, target: probing.ProbeTarget) -> ProbeResult:
        check = target.check
        assert isinstance(check, HttpCheck)
        url, timeout = parsed(target)
        started = time.perf_counter()
        failed = probing._failed
        for attempt in (1, 2):
            try:
                async with session(prober).request(
                    check.method, url, timeout=timeout, allow_redirects=False
                ) as response:
                    status = response.status
            except aiohttp.ServerDisconnectedError:
                if attempt == 1:
                    continue
                return failed(started, "server closed the connection without answering")
            except TimeoutError:
                return failed(started, f"no answer within {target.timeout:g}s")
            except aiohttp.ClientConnectorError as exc:
                return failed(started, f"cannot connect: {probing._os_reason(exc.os_error)}")
            except (aiohttp.ClientError, OSError) as exc:
                return failed(started, f"request failed: {exc.__class__.__name__}: {exc}")
            latency = time.perf_counter() - started
            low, high = check.expect_status
            if low <= status <= high:
                return ProbeResult(True, latency, f"HTTP {status}", status)
            return ProbeResult(False, latency, f"HTTP {status} (expected {low}-{high})", status)
        raise AssertionError("unreachable")

    close = probing.Prober.close

    async def close_with_session(prober: probing.Prober) -> None:
        if (own := sessions.pop(id(prober), None)) is not None:
            await own.close()
        await close(prober)

    probing.PROBES[HttpCheck] = probe_http
    probing.Prober.close = close_with_session  # type: ignore[assignment]
    sys.argv = ["phoenix", *argv]
    phoenix()


# -- the parent: children, measurement, report -----------------------------------------------


class Children:
    """Every child process started, so that all of them are stopped whatever happens."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        # A session of its own: Ctrl-C reaches only this process, which then stops the rest.
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self._procs)):
            self.stop(proc, grace=15.0)


@dataclass(frozen=True)
class Window:
    probes: int
    seconds: float
    cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.probes / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.probes / self.cpu if self.cpu > 0 else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.probes if self.probes else float("inf")


def cpu_seconds(proc: psutil.Process) -> float:
    """User+system CPU of ``proc`` and its descendants, live or reaped."""
    total = 0.0
    for each in [proc, *proc.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def get(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return cast(bytes, response.read())


def measure(pid: int, server_pid: int, server_url: str, seconds: float) -> Window:
    proc, server = psutil.Process(pid), psutil.Process(server_pid)
    count_before, cpu_before = int(get(f"{server_url}/count")), cpu_seconds(proc)
    server_before, started = cpu_seconds(server), time.perf_counter()
    time.sleep(seconds)
    count_after, cpu_after = int(get(f"{server_url}/count")), cpu_seconds(proc)
    elapsed, server_after = time.perf_counter() - started, cpu_seconds(server)
    return Window(
        count_after - count_before, elapsed, cpu_after - cpu_before, server_after - server_before
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_service_file(path: Path, server_url: str, services: int) -> None:
    lines = ["services:"]
    for i in range(services):
        lines += [
            f"  - name: probe-{i}",
            "    platform: external",
            f'    health: {{http: "{server_url}/health/{i}", interval: 1s, timeout: 1s,'
            " failure_threshold: 3}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def healthy_count(api: str) -> tuple[int, int]:
    services = json.loads(get(f"{api}/api/health/services", timeout=30))["services"]
    return sum(1 for s in services if s["status"] == "healthy"), len(services)


def wait_listening(proc: subprocess.Popen[bytes], api: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"phoenix exited with status {proc.returncode}")
        try:
            get(f"{api}/health", timeout=5)
            return True
        except OSError:
            time.sleep(0.2)  # not listening yet, or too busy to answer
    return False


def wait_all_healthy(api: str, services: int, deadline: float) -> int:
    """Poll (every 2 s: the listing costs Phoenix ~0.1 ms per service) until all ``services``
    are healthy or the deadline passes; the last count seen."""
    healthy = 0
    while time.monotonic() < deadline:
        try:
            healthy, _ = healthy_count(api)
        except OSError:
            pass  # too busy to answer in time
        if healthy == services:
            break
        time.sleep(2.0)
    return healthy


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


VARIANTS = {"client": "Phoenix (its client)", "aiohttp": "Phoenix (aiohttp)"}


def median_window(windows: list[Window]) -> Window:
    """The window with the median probes per CPU-second (the upper one of an even count)."""
    ranked = sorted(windows, key=lambda w: w.per_cpu_second)
    return ranked[len(ranked) // 2]


def report(
    args: argparse.Namespace,
    phoenix: dict[str, list[Window]],
    bare: Window,
    healthy: dict[str, str],
) -> None:
    offered = args.services / INTERVAL
    print(
        f"\n{args.services} external services, HTTP every {INTERVAL:g} s ±{JITTER:.0%} "
        f"(offered {offered:,.0f} probes/s), window {args.seconds:g} s, "
        f"{args.rounds} round(s) of each Phoenix (medians)"
    )
    print(
        f"{'':22} {'probes/s':>9} {'of offered':>10} {'probes/CPU-s':>13} "
        f"{'CPU s/1000 probes':>18} {'CPU %':>6} {'server CPU %':>13}"
    )
    rows = [(VARIANTS[v], median_window(ws)) for v, ws in phoenix.items()]
    for name, window in [*rows, ("bare aiohttp loop", bare)]:
        print(
            f"{name:22} {window.rate:9,.0f} {window.rate / offered:10.0%} "
            f"{window.per_cpu_second:13,.0f} {window.cpu_per_1000:18.3f} "
            f"{100 * window.cpu / window.seconds:6.0f} "
            f"{100 * window.server_cpu / window.seconds:13.0f}"
        )
        if window.rate < 0.95 * offered:
            print(f"{'':22} note: did not keep up with the offered load (overloaded or failing)")
    for variant, windows in phoenix.items():
        print(
            f"{VARIANTS[variant]}, per round: "
            + ", ".join(f"{w.per_cpu_second:,.0f}" for w in windows)
            + f" probes/CPU-s; healthy at the end: {healthy.get(variant, '?')}"
        )
    client = median_window(phoenix["client"]).per_cpu_second
    over_aiohttp = client / median_window(phoenix["aiohttp"]).per_cpu_second
    ratio = client / bare.per_cpu_second if bare.per_cpu_second else 0.0
    print(
        "ratio Phoenix (its client) / Phoenix (aiohttp), probes per CPU-second: "
        f"{over_aiohttp:.2f}x"
    )
    print(f"ratio Phoenix (its client) / bare aiohttp loop: {ratio:.2f}x")
    met = {True: "met", False: "NOT met"}
    print(
        f"target ≥ {TARGET_OVER_AIOHTTP:g}x the aiohttp pipeline: "
        f"{met[over_aiohttp >= TARGET_OVER_AIOHTTP]} ({over_aiohttp:.2f}x)"
    )
    print(
        f"target ≥ {TARGET_PER_CPU_SECOND:,} probes per CPU-second through the whole pipeline: "
        f"{met[client >= TARGET_PER_CPU_SECOND]} ({client:,.0f})"
    )
    print(f"target ≥ {TARGET_RATIO}x the bare loop: {met[ratio >= TARGET_RATIO]} ({ratio:.2f}x)")


def run_phoenix(
    children: Children, variant: str, args: argparse.Namespace, tmp: Path, log_path: Path,
    server: subprocess.Popen[bytes], server_url: str, config: Path,
) -> tuple[Window, str]:  # fmt: skip
    """One window of Phoenix watching the services, with ``variant``'s HTTP probe."""
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    data = tmp / f"data-{variant}-{time.monotonic_ns()}"
    data.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"PORT": str(api_port), "PHOENIX_DATA_DIR": str(data), "PHOENIX_HOST": "127.0.0.1"}
    serve = ["serve", "--config", str(config)]
    if variant == "aiohttp":
        argv = [sys.executable, "-m", "bench.probes", "--phoenix-aiohttp", *serve]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    else:
        argv = [sys.executable, "-m", "phoenix_server", *serve]
    with log_path.open("wb") as log:
        started = time.monotonic()
        phoenix = children.start(argv, cwd=data, env=env, stdout=log, stderr=log)
    deadline = started + args.ready_timeout
    answering = wait_listening(phoenix, api, deadline)
    listening = time.monotonic() - started
    ready = wait_all_healthy(api, args.services, deadline) if answering else 0
    print(
        f"{VARIANTS[variant]}: {'answering' if answering else 'NOT answering'} "
        f"{listening:.1f} s after start, {ready}/{args.services} healthy after "
        f"{time.monotonic() - started:.1f} s"
        f"{'' if ready == args.services else ' (NOT all: measuring anyway)'}; "
        f"warm-up {args.warmup:g} s, then {args.seconds:g} s measured",
        flush=True,
    )
    time.sleep(args.warmup)
    window = measure(phoenix.pid, server.pid, server_url, args.seconds)
    try:
        healthy = "{}/{}".format(*healthy_count(api))
    except OSError as exc:
        healthy = f"unknown (GET /api/health/services: {exc})"
    children.stop(phoenix, grace=15.0)
    print(f"  {window.per_cpu_second:,.0f} probes per CPU-second", flush=True)
    return window, healthy


def run(args: argparse.Namespace) -> None:
    children = Children()
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-probes-") as name:
        tmp = Path(name)
        log_path = tmp / "phoenix.log"
        try:
            me = [sys.executable, "-m", "bench.probes"]
            server = children.start([*me, "--serve"], cwd=ROOT, stdout=subprocess.PIPE)
            port = int(cast(IO[bytes], server.stdout).readline() or b"0")
            if not port:
                raise RuntimeError("the counting server did not start")
            server_url = f"http://127.0.0.1:{port}"
            config = tmp / "services.yaml"
            write_service_file(config, server_url, args.services)

            phoenix: dict[str, list[Window]] = {"client": [], "aiohttp": []}
            healthy: dict[str, str] = {}
            order = ["client", "aiohttp"]
            for _ in range(args.rounds):
                for variant in order:
                    window, healthy[variant] = run_phoenix(
                        children, variant, args, tmp, log_path, server, server_url, config
                    )
                    phoenix[variant].append(window)
                order.reverse()  # neither always goes first

            bare_argv = [*me, "--bare", f"{server_url}/health/", "--services", str(args.services)]
            bare = children.start(bare_argv, cwd=ROOT)
            print(f"bare loop: warm-up {args.warmup:g} s, then {args.seconds:g} s measured")
            time.sleep(args.warmup)
            if bare.poll() is not None:
                raise RuntimeError(f"the bare loop exited with status {bare.returncode}")
            bare_window = measure(bare.pid, server.pid, server_url, args.seconds)
            report(args, phoenix, bare_window, healthy)
        except Exception:
            print(f"--- last lines of the Phoenix log ---\n{tail(log_path)}", file=sys.stderr)
            raise
        except BaseException:
            print("interrupted: stopping the child processes", file=sys.stderr)
            raise
        finally:
            children.stop_all()


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s finally: children stopped


def main(argv: list[str]) -> None:
    if argv[:1] == ["--phoenix-aiohttp"]:  # the rest is phoenix's own command line
        run_phoenix_with_aiohttp(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m bench.probes", description=__doc__)
    parser.add_argument("--services", type=int, default=2000, help="N external services")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0, help="settling before a window")
    parser.add_argument("--ready-timeout", type=float, default=90.0, help="for all healthy")
    parser.add_argument("--rounds", type=int, default=1, help="windows of each Phoenix")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare", metavar="URL_PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_counter()
        return
    if args.bare:
        run_bare(args.bare, args.services)
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    print_machine()
    try:
        run(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(sys.argv[1:])
