"""API throughput and latency: ``GET /health``, ``GET /api/health/services`` (100 services) and
``POST /api/recovery/trigger`` at 1, 100 and 2,000 concurrent connections, beside a trivial
FastAPI endpoint in the same run; then what a liveness probe sees while the heavy ones are
hammered.

``python -m bench.api [--seconds 4] [--warmup 1] [--connections 1,100,2000]``. A real
``phoenix serve`` on loopback watches 100 services: 99 ``platform: external`` ones probed
every 2 s against a counting server (``bench.probes --serve``), and ``target``, a local
``sleep`` whose restart is cheap, which the triggers ask to recover (``force: false``: most
answer 409, a recovery already running). The trivial endpoint is ``GET /api/_bench/trivial``
on Phoenix itself when it serves one (``PHOENIX_BENCH_TRIVIAL=1``); otherwise a stand-in, a
minimal FastAPI app under the same uvicorn settings (uvloop, httptools) in its own process,
and the report says which. Load comes from ``wrk`` (Debian's ``wrk``; a Lua script counts
status codes) or, without it, from an aiohttp client in a child process, which costs more CPU
on a 2-core machine (throughput then understates). The liveness probe is one keep-alive
connection of its own sending ``GET /health`` every 10 ms with a 1 s timeout (a kubelet's
default). Issue targets: ``/health`` p99 < 50 ms at 2,000 connections; ``GET
/api/health/services`` ≥ 0.5x the trivial endpoint's requests per second. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench.api.liveness import PROBE_EVERY, PROBE_TIMEOUT, ProbeRecord, probing
from bench.api.load import Endpoint, Sample, load_with_python, load_with_wrk, python_load
from bench.api.servers import (
    SERVICES,
    TARGET_SERVICE,
    TRIVIAL_PATH,
    Servers,
    raise_descriptor_limit,
    settle,
    start_servers,
)
from bench.probes import Children, cpu_seconds, tail

TARGET_HEALTH_P99_MS = 50.0
TARGET_SERVICES_RATIO = 0.5


HEALTH = Endpoint("GET /health", "GET", "/health")
SERVICES_LIST = Endpoint("GET /api/health/services", "GET", "/api/health/services")
TRIGGER = Endpoint(
    "POST /api/recovery/trigger",
    "POST",
    "/api/recovery/trigger",
    json.dumps({"service": TARGET_SERVICE, "reason": "bench/api", "force": False}),
)
TRIVIAL = Endpoint("GET trivial", "GET", TRIVIAL_PATH)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.load = load_with_wrk if args.client == "wrk" else load_with_python

    def measure(
        self, base: str, pid: int, endpoint: Endpoint, connections: int, *, warm_up: bool
    ) -> Sample:
        quiet_url = f"{base}{TRIVIAL_PATH if endpoint is TRIVIAL else '/health'}"
        if warm_up and self.args.warmup > 0:
            self.load(base, endpoint, connections, self.args.warmup, self.workdir)
            settle(quiet_url, pid, self.args.settle_timeout)
        server = psutil.Process(pid)
        cpu_before = cpu_seconds(server)
        sample = self.load(base, endpoint, connections, self.args.seconds, self.workdir)
        sample.server_cpu = cpu_seconds(server) - cpu_before
        sample.drain = settle(quiet_url, pid, self.args.settle_timeout)
        return sample

    def matrix(self, servers: Servers) -> dict[tuple[str, int], Sample]:
        samples = {}
        for connections in self.args.connections:
            for endpoint in (TRIVIAL, HEALTH, SERVICES_LIST, TRIGGER):
                base, pid = (
                    (servers.trivial, servers.trivial_pid)
                    if endpoint is TRIVIAL
                    else (servers.phoenix, servers.phoenix_pid)
                )
                # Once per endpoint: a warm-up at 2,000 connections of a slow endpoint would
                # only add a backlog to drain.
                first = connections == self.args.connections[0]
                sample = self.measure(base, pid, endpoint, connections, warm_up=first)
                samples[endpoint.label, connections] = sample
                print(f"  {row(endpoint.label, connections, sample)}", flush=True)
        return samples

    def liveness(self, servers: Servers) -> dict[str, ProbeRecord]:
        port = int(servers.phoenix.rsplit(":", 1)[1])
        records = {}
        with probing(port) as probe:
            time.sleep(self.args.probe_idle)
        records["idle"] = probe.record
        heavy = max(self.args.connections)
        for endpoint in (SERVICES_LIST, TRIGGER):
            with probing(port) as probe:
                self.load(servers.phoenix, endpoint, heavy, self.args.seconds, self.workdir)
            probe.record.drain = settle(
                f"{servers.phoenix}/health", servers.phoenix_pid, self.args.settle_timeout
            )
            label = f"while {heavy:,} connections hammer {endpoint.label}"
            records[label] = probe.record
            print(f"  /health {label}: {probe.record.summary()}", flush=True)
        return records


# -- the report ------------------------------------------------------------------------------

HEADER = (
    f"{'endpoint':28} {'conns':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'server CPU':>10} {'drain s':>7}  statuses"
)


def row(label: str, connections: int, sample: Sample) -> str:
    statuses = "  ".join(f"{code}: {n:,}" for code, n in sorted(sample.statuses.items()))
    if sample.errors:
        statuses += f"  errors: {sample.errors:,}"
    cpu = 100 * sample.server_cpu / sample.seconds if sample.seconds else 0.0
    return (
        f"{label:28} {connections:6,} {sample.rps:9,.0f} {sample.p50_ms:8.2f} "
        f"{sample.p99_ms:8.2f} {cpu:9.0f}% {sample.drain:7.1f}  {statuses}"
    )


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report(
    args: argparse.Namespace,
    servers: Servers,
    samples: dict[tuple[str, int], Sample],
    probes: dict[str, ProbeRecord],
) -> None:
    print(
        f"\n{args.client}, {args.seconds:g} s measured after {args.warmup:g} s of warm-up per "
        f"point; {SERVICES} services; trivial endpoint: {servers.trivial_where}"
    )
    print(HEADER)
    for label in (TRIVIAL.label, HEALTH.label, SERVICES_LIST.label, TRIGGER.label):
        for connections in args.connections:
            print(row(label, connections, samples[label, connections]))
    heavy = max(args.connections)
    ratios = {
        c: samples[SERVICES_LIST.label, c].rps / max(samples[TRIVIAL.label, c].rps, 1e-9)
        for c in args.connections
    }
    print(
        "GET /api/health/services / trivial, req/s: "
        + ", ".join(f"{ratios[c]:.2f}x at {c:,}" for c in args.connections)
    )
    health = samples[HEALTH.label, heavy]
    print(
        f"target /health p99 < {TARGET_HEALTH_P99_MS:g} ms at {heavy:,} connections: "
        f"{verdict(health.p99_ms < TARGET_HEALTH_P99_MS)} ({health.p99_ms:.2f} ms)"
    )
    # Little's law: every connection waits for its answer before asking again.
    print(
        f"  note: closed-loop load, so the mean latency is at least connections / req/s "
        f"= {1000 * heavy / max(health.rps, 1e-9):.0f} ms here; a p99 under "
        f"{TARGET_HEALTH_P99_MS:g} ms at {heavy:,} connections needs over "
        f"{1000 * heavy / TARGET_HEALTH_P99_MS:,.0f} req/s. What a prober sees among "
        f"{heavy:,} busy connections is the liveness section below."
    )
    worst = min(ratios.values())
    stand_in = "" if servers.trivial_pid == servers.phoenix_pid else " [against the stand-in]"
    print(
        f"target GET /api/health/services >= {TARGET_SERVICES_RATIO}x the trivial endpoint "
        f"(at every concurrency): {verdict(worst >= TARGET_SERVICES_RATIO)} "
        f"(lowest {worst:.2f}x){stand_in}"
    )
    print(
        f"\nliveness probe: one connection, GET /health every {PROBE_EVERY * 1000:g} ms, "
        f"{PROBE_TIMEOUT:g} s timeout"
    )
    for label, record in probes.items():
        print(f"  {label}: {record.summary()}")
    for label, record in probes.items():
        if label != "idle":
            met = record.failures == 0 and record.p99_ms < TARGET_HEALTH_P99_MS
            print(
                f"  /health p99 < {TARGET_HEALTH_P99_MS:g} ms and no failed probe {label}: "
                f"{verdict(met)}"
            )


def run(args: argparse.Namespace) -> None:
    children = Children()
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-api-") as tmp:
        workdir = Path(tmp)
        log_path = workdir / "phoenix.log"
        try:
            servers = start_servers(children, workdir, log_path)
            bench = Bench(args, workdir)
            samples = bench.matrix(servers)
            probes = bench.liveness(servers)
            report(args, servers, samples, probes)
        except Exception:
            print(f"--- last lines of the Phoenix log ---\n{tail(log_path)}", file=sys.stderr)
            raise
        finally:
            children.stop_all()


def connection_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,100,2000; got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"connection counts must be 1 or more; got {text!r}")
    return counts


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through run()'s finally: children stopped


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per point")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="discarded run before each endpoint's first"
    )
    parser.add_argument("--connections", type=connection_counts, default=[1, 100, 2000])
    parser.add_argument("--probe-idle", type=float, default=2.0, help="idle liveness window")
    parser.add_argument(
        "--settle-timeout", type=float, default=30.0, help="longest wait for an idle server"
    )
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator (default: wrk when installed)",
    )
    parser.add_argument("--python-load", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--method", default="GET", help=argparse.SUPPRESS)
    parser.add_argument("--body", default="", help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_descriptor_limit()
    if args.python_load:
        python_load(args.python_load, args.method, args.body, args.concurrency, args.seconds)
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print(
        f"machine: nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"{platform.platform()}, load {os.getloadavg()[0]:.2f}; client {args.client}"
        + ("" if args.client == "wrk" else " (wrk not installed: aiohttp, which costs more CPU)"),
        flush=True,
    )
    try:
        run(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
