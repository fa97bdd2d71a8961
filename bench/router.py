"""Router overhead: requests per second and p50/p99 latency through Phoenix's router against
straight to the instance, in the same run, at 100 concurrent keep-alive connections.

The instance is the example web service (``examples.services.web``, HTTP/1.1 keep-alive,
one thread per connection: the kind of Python service Phoenix fronts), then a raw asyncio
server that answers in microseconds, to show the router's own ceiling. Rounds alternate
direct and routed and the medians are compared. Load comes from ``wrk`` when it is installed
(Debian's ``wrk`` package: C, cheap enough not to distort a 2-core machine), otherwise from
an aiohttp client in a child process (which costs more CPU, so the ratio is pessimistic).

``python -m bench.router [--seconds 8] [--rounds 3] [--connections 100]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.5
TARGET_ADDED_P99_MS = 2.0

FAST_SERVER = """
import asyncio, sys, uvloop
BODY = b'{"ok":true}'
HEAD = b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
ANSWER = HEAD + b"Content-Length: 11\\r\\n\\r\\n" + BODY
class Fast(asyncio.Protocol):
    def connection_made(self, transport): self.transport, self.buffer = transport, b""
    def data_received(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\\r\\n\\r\\n", 1)
            self.transport.write(ANSWER)
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Fast, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    await server.serve_forever()
uvloop.run(main())
"""


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_answering(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing answers on {port}")


def _millis(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def load_with_wrk(port: int, seconds: float, connections: int) -> Sample:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _millis(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _millis(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Sample(rps, p50, p99, errors + (int(non_2xx.group(1)) if non_2xx else 0))


def load_with_python(port: int, seconds: float, connections: int) -> Sample:
    code = f"""
import asyncio, json, time, aiohttp, uvloop
async def main():
    latencies, errors = [], 0
    stop = time.monotonic() + {seconds}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit={connections})) as s:
        async def worker():
            nonlocal errors
            while time.monotonic() < stop:
                began = time.perf_counter()
                try:
                    async with s.get("http://127.0.0.1:{port}/") as r:
                        await r.read()
                        errors += r.status != 200
                except Exception:
                    errors += 1
                latencies.append(time.perf_counter() - began)
        await asyncio.gather(*(worker() for _ in range({connections})))
    latencies.sort()
    print(json.dumps([len(latencies) / {seconds}, latencies[len(latencies) // 2] * 1000,
                      latencies[int(len(latencies) * 0.99)] * 1000, errors]))
uvloop.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    rps, p50, p99, errors = json.loads(out.stdout)
    return Sample(rps, p50, p99, int(errors))


def start_router(port: int, backend: int, workdir: Path) -> subprocess.Popen[bytes]:
    control = workdir / "c.sock"
    router = subprocess.Popen(
        [sys.executable, "-m", "phoenix_server.platforms.router", "--service", "bench",
         "--listen", f"127.0.0.1:{port}", "--control", str(control),
         "--state", str(workdir / "state.json")],
        stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    config = {"service": "bench", "backends": [{"id": "i", "port": backend}], "version": 1}
    deadline = time.monotonic() + 15
    while True:
        try:
            asyncio.run(_push(control, json.dumps(config)))
            return router
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


async def _push(control: Path, body: str) -> None:
    reader, writer = await asyncio.open_unix_connection(str(control))
    writer.write(
        f"PUT /config HTTP/1.1\r\nHost: r\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n{body}".encode()
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    if b" 200 " not in answer.split(b"\r\n", 1)[0]:
        raise OSError(f"router refused the configuration: {answer[:200]!r}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM) if process.pid == os.getpgid(
            process.pid
        ) else process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def compare(name: str, backend_cmd: list[str], args: argparse.Namespace, workdir: Path) -> None:
    load = load_with_wrk if shutil.which("wrk") else load_with_python
    backend_port, router_port = free_port(), free_port()
    backend = subprocess.Popen(
        [*backend_cmd, str(backend_port)], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    router = None
    try:
        wait_answering(backend_port)
        router = start_router(router_port, backend_port, workdir)
        wait_answering(router_port)
        direct, routed = [], []
        for _ in range(args.rounds):
            direct.append(load(backend_port, args.seconds, args.connections))
            routed.append(load(router_port, args.seconds, args.connections))
    finally:
        if router is not None:
            stop(router)
        stop(backend)
    print(
        f"\n{name}  ({load.__name__.removeprefix('load_with_')}, {args.connections} connections, "
        f"{args.rounds} x {args.seconds:g} s each, medians)"
    )
    print(f"{'':10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for label, samples in (("direct", direct), ("router", routed)):
        print(
            f"{label:10} {statistics.median(s.rps for s in samples):10,.0f} "
            f"{statistics.median(s.p50_ms for s in samples):9.2f} "
            f"{statistics.median(s.p99_ms for s in samples):9.2f} "
            f"{sum(s.errors for s in samples):7d}"
        )
    ratio = statistics.median(s.rps for s in routed) / statistics.median(s.rps for s in direct)
    added = statistics.median(s.p99_ms for s in routed) - statistics.median(
        s.p99_ms for s in direct
    )
    print(
        f"throughput router/direct: {ratio:.2f}x (target >= {TARGET_RATIO}x); "
        f"added p99: {added:+.2f} ms (target < {TARGET_ADDED_P99_MS} ms)"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.router", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    args = parser.parse_args(argv)
    python = platform.python_version()
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python {python}")
    with tempfile.TemporaryDirectory(prefix="phoenix-router-", dir="/tmp") as tmp:
        compare(
            "example web service",
            [sys.executable, "-m", "examples.services.web", "--port"],
            args,
            Path(tmp),
        )
        compare("raw asyncio server", [sys.executable, "-c", FAST_SERVER], args, Path(tmp))


if __name__ == "__main__":
    main(sys.argv[1:])
