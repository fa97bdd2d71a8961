"""Which HTTP client for probes: candidates side by side, in one run, on one counting server.

``python -m bench.probe_clients --services 2000 --seconds 10 --rounds 3``. The counting
keep-alive server of bench/probes answers ``GET /health/<n>``; probes are counted where they
land. Each candidate runs as its own process (uvloop; N tasks, each probing its URL every
1 s ±10 %, 1 s timeout, keep-alive, no redirects, status checked) and is measured over a
window after a warm-up by CPU (psutil, user+system, all threads) and probes received:

- ``aiohttp``: today's path (one ClientSession as probing.py had it);
- ``pycurl``: libcurl's multi interface driven by the event loop (socket_action);
- ``pyreqwest``: Rust's reqwest on its own tokio runtime;
- ``aiosonic``: a pure-Python asyncio client;
- ``httptools``: Phoenix's asyncio.Protocol + httptools client (monitoring/http_client.py).

Rounds rotate the order; the report gives medians and each candidate's ratio to aiohttp.
A candidate that cannot be imported or fails is reported with the reason. Nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import IO, Any, cast

import psutil

from bench.probes import ROOT, Children, Window, cpu_seconds, get, print_machine

INTERVAL = 1.0
TIMEOUT = 1.0
JITTER = 0.1
CANDIDATES = ["aiohttp", "pycurl", "pyreqwest", "aiosonic", "httptools"]
USER_AGENT = "phoenix-probe"

Probe = Callable[[str], Awaitable[int]]
"""Probes one URL; its status (raises on no answer)."""


# -- the candidates (child process) ----------------------------------------------------------


async def aiohttp_client() -> tuple[Probe, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT},
    )
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)

    async def probe(url: str) -> int:
        async with session.request("GET", url, timeout=timeout, allow_redirects=False) as r:
            return r.status

    return probe, session.close


async def pycurl_client() -> tuple[Probe, Callable[[], Awaitable[None]]]:
    import pycurl

    loop = asyncio.get_running_loop()
    multi = pycurl.CurlMulti()
    timer: list[asyncio.TimerHandle | None] = [None]
    watched: dict[int, int] = {}
    waiters: dict[Any, asyncio.Future[int]] = {}
    spare: list[Any] = []

    def act(fd: int, events: int) -> None:
        while multi.socket_action(fd, events)[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, done, failed = multi.info_read()
            for curl in done:
                multi.remove_handle(curl)
                status = curl.getinfo(pycurl.RESPONSE_CODE)
                spare.append(curl)
                waiter = waiters.pop(curl)
                if not waiter.done():
                    waiter.set_result(status)
            for curl, code, message in failed:
                multi.remove_handle(curl)
                spare.append(curl)
                waiter = waiters.pop(curl)
                if not waiter.done():
                    waiter.set_exception(OSError(code, message))
            if not queued:
                break

    def on_socket(what: int, fd: int, _multi: Any, _data: Any) -> None:
        if watched.pop(fd, 0):
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        if what == pycurl.POLL_REMOVE:
            return
        watched[fd] = what
        if what & pycurl.POLL_IN:
            loop.add_reader(fd, act, fd, pycurl.CSELECT_IN)
        if what & pycurl.POLL_OUT:
            loop.add_writer(fd, act, fd, pycurl.CSELECT_OUT)

    def on_timer(ms: int) -> None:
        if timer[0] is not None:
            timer[0].cancel()
        timer[0] = None if ms < 0 else loop.call_later(ms / 1000, act, pycurl.SOCKET_TIMEOUT, 0)

    multi.setopt(pycurl.M_SOCKETFUNCTION, on_socket)
    multi.setopt(pycurl.M_TIMERFUNCTION, on_timer)

    async def probe(url: str) -> int:
        curl = spare.pop() if spare else pycurl.Curl()
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.TIMEOUT_MS, int(TIMEOUT * 1000))
        curl.setopt(pycurl.FOLLOWLOCATION, 0)
        curl.setopt(pycurl.USERAGENT, USER_AGENT)
        curl.setopt(pycurl.WRITEFUNCTION, len)
        curl.setopt(pycurl.NOSIGNAL, 1)
        waiter: asyncio.Future[int] = loop.create_future()
        waiters[curl] = waiter
        multi.add_handle(curl)
        return await waiter

    async def close() -> None:
        multi.close()

    return probe, close


async def pyreqwest_client() -> tuple[Probe, Callable[[], Awaitable[None]]]:
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder()
        .timeout(timedelta(seconds=TIMEOUT))
        .follow_redirects(False)
        .user_agent(USER_AGENT)
        .build()
    )

    async def probe(url: str) -> int:
        response = await client.get(url).build().send()
        return int(response.status)

    return probe, client.close


async def aiosonic_client() -> tuple[Probe, Callable[[], Awaitable[None]]]:
    import aiosonic
    from aiosonic.connectors import TCPConnector
    from aiosonic.pools import PoolConfig
    from aiosonic.timeout import Timeouts

    timeouts = Timeouts(sock_connect=TIMEOUT, sock_read=TIMEOUT, request_timeout=TIMEOUT)
    connector = TCPConnector(pool_configs={":default": PoolConfig(size=256)}, timeouts=timeouts)
    client = aiosonic.HTTPClient(connector=connector)
    headers = {"User-Agent": USER_AGENT}

    async def probe(url: str) -> int:
        response = await client.get(url, headers=headers)
        await response.content()  # releases the connection to the pool
        return int(response.status_code)

    return probe, client.connector.cleanup


async def httptools_client() -> tuple[Probe, Callable[[], Awaitable[None]]]:
    from phoenix_server.monitoring.http_client import Endpoint, HttpClient

    client = HttpClient()
    endpoints: dict[str, Endpoint] = {}

    async def probe(url: str) -> int:
        endpoint = endpoints.get(url)
        if endpoint is None:  # parsed once per target, as ProbeTarget does
            endpoint = endpoints[url] = Endpoint.parse(url)
        return await client.request(endpoint, TIMEOUT)

    return probe, client.close


FACTORIES: dict[str, Callable[[], Awaitable[tuple[Probe, Callable[[], Awaitable[None]]]]]] = {
    "aiohttp": aiohttp_client,
    "pycurl": pycurl_client,
    "pyreqwest": pyreqwest_client,
    "aiosonic": aiosonic_client,
    "httptools": httptools_client,
}


def run_candidate(name: str, prefix: str, services: int) -> None:
    """Probe N URLs with ``name`` until SIGTERM; then print what was seen as JSON."""
    import uvloop

    outcomes: Counter[str] = Counter()

    async def probe_all() -> None:
        loop = asyncio.get_running_loop()
        probe, close = await FACTORIES[name]()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)

        async def probe_forever(url: str) -> None:
            await asyncio.sleep(random.uniform(0, INTERVAL))
            while True:
                began = loop.time()
                try:
                    outcomes[str(await probe(url))] += 1
                except Exception as exc:
                    outcomes[exc.__class__.__name__] += 1
                delay = INTERVAL * random.uniform(1 - JITTER, 1 + JITTER)
                await asyncio.sleep(max(0.0, began + delay - loop.time()))

        tasks = [asyncio.create_task(probe_forever(f"{prefix}{i}")) for i in range(services)]
        print("ready", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await close()

    uvloop.run(probe_all())
    print(json.dumps(dict(outcomes)), flush=True)


# -- the parent ------------------------------------------------------------------------------


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


def one_window(
    children: Children, name: str, server: subprocess.Popen[bytes], server_url: str,
    args: argparse.Namespace,
) -> tuple[Window | None, str]:  # fmt: skip
    """A window of ``name``, and what its probes saw (or why it has no window)."""
    argv = [sys.executable, "-m", "bench.probe_clients", "--client", name]
    argv += ["--prefix", f"{server_url}/health/", "--services", str(args.services)]
    child = children.start(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = cast(IO[bytes], child.stdout)
    if out.readline().strip() != b"ready":
        children.stop(child)
        err = cast(IO[bytes], child.stderr).read().decode(errors="replace").strip()
        return None, (err.splitlines() or ["exited without a word"])[-1]
    time.sleep(args.warmup)
    if child.poll() is not None:
        err = cast(IO[bytes], child.stderr).read().decode(errors="replace").strip()
        return None, (err.splitlines() or [f"exited {child.returncode}"])[-1]
    window = measure(child.pid, server.pid, server_url, args.seconds)
    children.stop(child, grace=15.0)
    lines = out.read().decode(errors="replace").strip().splitlines()
    try:
        seen: dict[str, int] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        seen = {}
    total = sum(seen.values()) or 1
    summary = ", ".join(
        f"{key} {100 * n / total:.1f} %" for key, n in sorted(seen.items(), key=lambda kv: -kv[1])
    )
    if not summary:
        err = cast(IO[bytes], child.stderr).read().decode(errors="replace").strip()
        summary = (
            "no outcome reported: " + (err.splitlines() or [f"exit status {child.returncode}"])[-1]
        )
    return window, summary


def report(
    args: argparse.Namespace, windows: dict[str, list[Window]], notes: dict[str, str]
) -> None:
    offered = args.services / INTERVAL
    print(
        f"\n{args.services} targets, GET every {INTERVAL:g} s ±{JITTER:.0%} (offered "
        f"{offered:,.0f} probes/s), {args.rounds} round(s) of {args.seconds:g} s; medians"
    )
    base = [w.per_cpu_second for w in windows.get("aiohttp", [])]
    base_median = statistics.median(base) if base else 0.0
    print(
        f"{'client':10} {'probes/s':>9} {'of offered':>10} {'probes/CPU-s':>13} "
        f"{'µs CPU/probe':>13} {'x aiohttp':>10}  outcomes (last round)"
    )
    for name in args.candidates:
        runs = windows.get(name, [])
        if not runs:
            print(f"{name:10} {'—':>9} {'':10} {'—':>13} {'':13} {'':10}  {notes.get(name)}")
            continue
        rate = statistics.median(w.rate for w in runs)
        per_cpu = statistics.median(w.per_cpu_second for w in runs)
        ratio = f"{per_cpu / base_median:.2f}x" if base_median else "—"
        print(
            f"{name:10} {rate:9,.0f} {rate / offered:10.0%} {per_cpu:13,.0f} "
            f"{1e6 / per_cpu if per_cpu else 0:13.0f} {ratio:>10}  {notes.get(name, '')}"
        )
        if rate < 0.95 * offered:
            print(f"{'':10} note: did not keep up with the offered load")
    print("per round, probes per CPU-second:")
    for name in args.candidates:
        runs = windows.get(name, [])
        print(f"  {name:10} " + " ".join(f"{w.per_cpu_second:,.0f}" for w in runs))


def run(args: argparse.Namespace) -> None:
    children = Children()
    try:
        server = children.start(
            [sys.executable, "-m", "bench.probes", "--serve"], cwd=ROOT, stdout=subprocess.PIPE
        )
        port = int(cast(IO[bytes], server.stdout).readline() or b"0")
        if not port:
            raise RuntimeError("the counting server did not start")
        server_url = f"http://127.0.0.1:{port}"
        windows: dict[str, list[Window]] = {}
        notes: dict[str, str] = {}
        order = list(args.candidates)
        for round_ in range(args.rounds):
            for name in order:
                if name in notes and name not in windows:
                    continue  # failed to start before: the reason is already known
                window, note = one_window(children, name, server, server_url, args)
                notes[name] = note
                if window is not None:
                    windows.setdefault(name, []).append(window)
                shown = f"{window.per_cpu_second:,.0f} probes/CPU-s" if window else "FAILED"
                print(f"round {round_ + 1}: {name}: {shown} ({note})", flush=True)
            order = order[1:] + order[:1]  # no candidate always goes first (or last)
        report(args, windows, notes)
    finally:
        children.stop_all()


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probe_clients", description=__doc__)
    parser.add_argument("--services", type=int, default=2000, help="N targets")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=4.0, help="settling before a window")
    parser.add_argument("--rounds", type=int, default=3, help="windows per candidate")
    parser.add_argument(
        "--candidates", type=lambda s: s.split(","), default=CANDIDATES,
        help=f"comma-separated, from {','.join(CANDIDATES)}",
    )  # fmt: skip
    parser.add_argument("--client", choices=CANDIDATES, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client:
        run_candidate(args.client, args.prefix, args.services)
        return
    if unknown := set(args.candidates) - set(CANDIDATES):
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    signal.signal(signal.SIGTERM, _on_sigterm)
    print_machine()
    try:
        run(args)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(sys.argv[1:])
