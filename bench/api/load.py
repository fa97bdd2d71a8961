"""The load generators: wrk with a Lua script that counts status codes, or, without wrk, an
aiohttp client in a child process. Both print one ``BENCH-RESULT {json}`` line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent.parent
CLIENT_TIMEOUT = 10.0
"""Seconds before the load generator gives up on a response: long, so that a slow tail is
measured rather than dropped as an error (wrk's default of 2 s would hide it)."""


@dataclass(frozen=True)
class Endpoint:
    label: str
    method: str
    path: str
    body: str = ""


@dataclass
class Sample:
    """One measured window of one endpoint at one concurrency."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int
    """Connection errors and timeouts (no HTTP status)."""
    server_cpu: float = 0.0
    """CPU seconds the serving process used in the window."""
    drain: float = 0.0
    """Seconds the server went on working after the load stopped (requests whose callers had
    gone): the next point starts only once it is quiet."""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


WRK_SCRIPT = """
wrk.method = %(method)s
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body) counts[status] = (counts[status] or 0) + 1 end
function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      statuses[#statuses + 1] = string.format('"%%d":%%d', status, n)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests":%%d,"micros":%%d,"p50":%%d,"p99":%%d,"errors":%%d,'
    .. '"statuses":{%%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, table.concat(statuses, ",")))
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of ASCII text is a valid Lua string literal


def parse_result(output: str) -> dict[str, object]:
    match = re.search(r"^BENCH-RESULT (.*)$", output, re.M)
    if match is None:
        raise RuntimeError(f"the load generator printed no result:\n{output[-2000:]}")
    result: dict[str, object] = json.loads(match.group(1))
    return result


def sample_from(result: dict[str, object], seconds: float) -> Sample:
    statuses = cast(dict[str, int], result["statuses"])
    return Sample(
        requests=int(cast(int, result["requests"])),
        seconds=seconds,
        p50_ms=float(cast(float, result["p50"])) / 1000,
        p99_ms=float(cast(float, result["p99"])) / 1000,
        statuses={int(code): int(n) for code, n in statuses.items()},
        errors=int(cast(int, result["errors"])),
    )


def load_with_wrk(
    base: str, endpoint: Endpoint, connections: int, seconds: float, workdir: Path
) -> Sample:
    script = workdir / f"{endpoint.method.lower()}.lua"
    script.write_text(
        WRK_SCRIPT % {"method": _lua_string(endpoint.method), "body": _lua_string(endpoint.body)}
    )
    duration = max(1, round(seconds))  # wrk counts whole seconds
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{duration}s", f"--timeout={CLIENT_TIMEOUT:g}s",
        "-s", str(script), f"{base}{endpoint.path}",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_result(done.stdout)
    return sample_from(result, int(cast(int, result["micros"])) / 1e6)


def load_with_python(
    base: str, endpoint: Endpoint, connections: int, seconds: float, workdir: Path
) -> Sample:
    argv = [
        sys.executable, "-m", "bench.api", "--python-load", f"{base}{endpoint.path}",
        "--method", endpoint.method, "--body", endpoint.body,
        "--concurrency", str(connections), "--seconds", str(seconds),
    ]  # fmt: skip
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"the Python load generator failed: {done.stderr.strip()[-2000:]}")
    result = parse_result(done.stdout)
    return sample_from(result, float(cast(float, result["micros"])) / 1e6)


def python_load(url: str, method: str, body: str, connections: int, seconds: float) -> None:
    """The fallback client (a child process): ``connections`` keep-alive connections, each
    sending its next request when the previous answer is read, for ``seconds``."""
    import asyncio

    import aiohttp
    import uvloop

    async def run() -> None:
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        errors = 0
        connector = aiohttp.TCPConnector(limit=connections, force_close=False)
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        headers = {"Content-Type": "application/json"}
        data = body.encode() if body else None
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            started = time.perf_counter()
            stop = started + seconds

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < stop:
                    began = time.perf_counter()
                    try:
                        async with session.request(method, url, data=data, headers=headers) as r:
                            await r.read()
                            statuses[r.status] = statuses.get(r.status, 0) + 1
                    except (aiohttp.ClientError, OSError, TimeoutError):
                        errors += 1
                        continue
                    latencies.append(time.perf_counter() - began)

            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        result = {
            "requests": len(latencies),
            "micros": elapsed * 1e6,
            "p50": p50 * 1e6,
            "p99": p99 * 1e6,
            "errors": errors,
            "statuses": {str(code): n for code, n in statuses.items()},
        }
        print(f"BENCH-RESULT {json.dumps(result)}", flush=True)

    uvloop.run(run())


def percentile(ordered: list[float], percent: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]
