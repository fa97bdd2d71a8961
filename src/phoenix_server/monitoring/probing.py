"""Health probes: HTTP, TCP, process liveness and commands, each bounded by a timeout.

HTTP probes go through :mod:`.http_client`, a small keep-alive client of Phoenix's own,
because probing is the hot path: bench/probe_clients measured it against aiohttp, pycurl,
pyreqwest and aiosonic in one run, and it probes the most endpoints per CPU-second
(BENCHMARKS.md). One client per prober pools keep-alive connections across all targets.
Probe kinds register in :data:`PROBES`, keyed by check type, so a new kind is one function.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from phoenix_server.domain.health import ProbeResult
from phoenix_server.domain.services import (
    Check,
    CommandCheck,
    HttpCheck,
    Instance,
    ProcessCheck,
    RenderContext,
    ServiceSpec,
    TcpCheck,
    render,
)
from phoenix_server.monitoring.http_client import (
    ConnectError,
    Endpoint,
    HttpClient,
    HttpError,
    ServerDisconnected,
)
from phoenix_server.support import procinfo


@dataclass(frozen=True)
class ProbeTarget:
    """A check with its placeholders filled in for one target."""

    service: str
    target: str
    """Instance id, or the service name for an external service."""
    check: Check
    timeout: float
    interval: float
    pid: int | None = None
    process_start: float | None = None

    @cached_property
    def http_endpoint(self) -> Endpoint:
        """The parsed URL and its request bytes, built once: on every probe they would be a
        measurable share of its cost."""
        assert isinstance(self.check, HttpCheck)
        return Endpoint.parse(self.check.url, self.check.method)


def target_for(spec: ServiceSpec, instance: Instance | None, *, python: str) -> ProbeTarget:
    """The probe target of ``instance`` (or of the external service itself)."""
    context = RenderContext(
        name=spec.name,
        python=python,
        port=instance.port if instance and instance.port is not None else spec.port,
        version=instance.version if instance else None,
        instance=instance.id if instance else None,
        address=instance.address if instance and instance.address else "127.0.0.1",
    )
    check = spec.health.check
    rendered: Check
    if isinstance(check, HttpCheck):
        rendered = HttpCheck(render(check.url, context), check.method, check.expect_status)
    elif isinstance(check, TcpCheck):
        rendered = TcpCheck(render(check.address, context))
    elif isinstance(check, CommandCheck):
        rendered = CommandCheck(tuple(render(arg, context) for arg in check.argv))
    else:
        rendered = check
    return ProbeTarget(
        service=spec.name,
        target=instance.id if instance else spec.name,
        check=rendered,
        timeout=spec.health.timeout,
        interval=spec.health.interval,
        pid=instance.pid if instance else None,
        process_start=instance.process_start if instance else None,
    )


ProbeFunction = Callable[["Prober", ProbeTarget], Awaitable[ProbeResult]]


class Prober:
    """Runs one probe of any kind; owns the shared HTTP client."""

    def __init__(self) -> None:
        self.http = HttpClient()

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        """Run the check; never raises (a probe that breaks is a failed probe, with why)."""
        started = time.perf_counter()
        try:
            return await PROBES[type(target.check)](self, target)
        except Exception as exc:
            return _failed(started, f"probe error: {exc.__class__.__name__}: {exc}")

    async def close(self) -> None:
        await self.http.close()


async def probe_http(prober: Prober, target: ProbeTarget) -> ProbeResult:
    check = target.check
    assert isinstance(check, HttpCheck)
    started = time.perf_counter()
    for attempt in (1, 2):
        try:
            # No redirect is followed: a 3xx is the answer, judged by expect_status.
            status = await prober.http.request(target.http_endpoint, target.timeout)
        except ServerDisconnected:
            # A pooled keep-alive connection to a process that has since restarted: that is
            # not the service failing now, so try once more on a fresh connection.
            if attempt == 1:
                continue
            return _failed(started, "server closed the connection without answering")
        except TimeoutError:
            return _failed(started, f"no answer within {target.timeout:g}s")
        except ConnectError as exc:
            return _failed(started, f"cannot connect: {_connect_reason(exc.os_error)}")
        except (HttpError, OSError, ValueError) as exc:
            return _failed(started, f"request failed: {exc.__class__.__name__}: {exc}")
        latency = time.perf_counter() - started
        low, high = check.expect_status
        if low <= status <= high:
            return ProbeResult(True, latency, f"HTTP {status}", status)
        return ProbeResult(False, latency, f"HTTP {status} (expected {low}-{high})", status)
    raise AssertionError("unreachable")  # pragma: no cover


async def probe_tcp(prober: Prober, target: ProbeTarget) -> ProbeResult:
    check = target.check
    assert isinstance(check, TcpCheck)
    host, _, port = check.address.rpartition(":")
    started = time.perf_counter()
    try:
        async with asyncio.timeout(target.timeout):
            _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except TimeoutError:
        return _failed(started, f"no connection within {target.timeout:g}s")
    except (OSError, ValueError) as exc:
        return _failed(started, f"cannot connect to {check.address}: {_os_reason(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ProbeResult(True, time.perf_counter() - started, f"connected to {check.address}")


async def probe_process(prober: Prober, target: ProbeTarget) -> ProbeResult:
    started = time.perf_counter()
    if target.pid is None:
        return _failed(started, "no process to watch")
    if procinfo.is_running(target.pid, target.process_start):
        return ProbeResult(True, time.perf_counter() - started, f"pid {target.pid} running")
    return _failed(started, f"pid {target.pid} is not running")


async def probe_command(prober: Prober, target: ProbeTarget) -> ProbeResult:
    check = target.check
    assert isinstance(check, CommandCheck)
    started = time.perf_counter()
    try:
        process = await asyncio.create_subprocess_exec(
            *check.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        return _failed(started, f"cannot run {check.argv[0]!r}: {_os_reason(exc)}")
    try:
        async with asyncio.timeout(target.timeout):
            _, stderr = await process.communicate()
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        return _failed(started, f"command did not finish within {target.timeout:g}s")
    finally:
        if process.returncode is None:  # cancelled mid-probe: leave nothing running
            _kill_group(process.pid)
    latency = time.perf_counter() - started
    if process.returncode == 0:
        return ProbeResult(True, latency, "command exited 0")
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] if stderr else []
    reason = f": {tail[0][:200]}" if tail else ""
    return ProbeResult(False, latency, f"command exited {process.returncode}{reason}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _failed(started: float, detail: str) -> ProbeResult:
    return ProbeResult(False, time.perf_counter() - started, detail)


def _connect_reason(exc: OSError) -> str:
    """What stopped a connection; DNS and TLS errors carry errnos that would say nothing."""
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    return _os_reason(exc)


def _os_reason(exc: BaseException) -> str:
    """``connection refused`` rather than asyncio's ``Connect call failed ('127.0.0.1', 80)``."""
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or exc.__class__.__name__


PROBES: dict[type[Any], ProbeFunction] = {
    HttpCheck: probe_http,
    TcpCheck: probe_tcp,
    ProcessCheck: probe_process,
    CommandCheck: probe_command,
}
"""The probe kinds, by check type: register a new kind here."""
