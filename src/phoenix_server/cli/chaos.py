"""``phoenix chaos SERVICE FAULT``: inject one fault into a running local service, so
operators can rehearse their playbooks against a real failure (the seed's "test
playbooks").

``crash`` (SIGKILL) and ``hang`` (SIGSTOP: alive, answering nothing) work on any local
service of a Phoenix on this machine; ``resume`` sends SIGCONT. The others go through the
admin API of Phoenix's example service (``examples/services/web.py``) and of services that
offer the same endpoints: ``errors`` (fraction answered 500, default 1), ``latency`` (ms
added, default 500), ``leak`` (MB/s, default 15), ``cpu`` (CPU ms per request, default 20),
``health`` (the probe answers 503) and ``reset`` (back to normal).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer

from phoenix_server.cli.client import DEFAULT_URL, Json, Phoenix
from phoenix_server.cli.errors import REFUSED, USAGE, CliError
from phoenix_server.cli.options import JsonOption, UrlOption, session


@dataclass(frozen=True)
class Fault:
    what: str
    signal: int | None = None
    path: str | None = None
    field: str | None = None
    default: float | None = None


FAULTS: dict[str, Fault] = {
    "crash": Fault("killed (SIGKILL)", signal=signal.SIGKILL),
    "hang": Fault("stopped (SIGSTOP): alive, answering nothing", signal=signal.SIGSTOP),
    "resume": Fault("continued (SIGCONT)", signal=signal.SIGCONT),
    "errors": Fault("answering 500", path="/admin/errors", field="rate", default=1.0),
    "latency": Fault("slowed", path="/admin/latency", field="ms", default=500.0),
    "leak": Fault("leaking memory", path="/admin/leak", field="mb_per_s", default=15.0),
    "cpu": Fault("burning CPU per request", path="/admin/cpu", field="ms", default=20.0),
    "health": Fault("failing its health check", path="/admin/health", field="fail"),
    "reset": Fault("back to normal", path="/admin/reset"),
}


def running_instance(service: Json, instance_id: str | None) -> Json:
    """The instance to break: the one named, else the first running one."""
    running = [
        i
        for i in service.get("instances", [])
        if i.get("state") == "running" and (instance_id is None or i.get("id") == instance_id)
    ]
    if not running:
        which = f"instance '{instance_id}'" if instance_id else "a running instance"
        raise CliError(f"service '{service.get('name')}' has no {which}", REFUSED)
    chosen: Json = running[0]
    return chosen


def inject(service: Json, instance: Json, fault_name: str, value: float | None) -> str:
    """Break ``instance`` with the fault; returns what was done, as a sentence."""
    fault = FAULTS[fault_name]
    name, instance_id = service.get("name"), instance.get("id")
    if fault.signal is not None:
        pid = instance.get("pid")
        if not isinstance(pid, int):
            raise CliError(
                f"'{fault_name}' needs a local process; service '{name}' runs on "
                f"{service.get('platform')}",
                REFUSED,
            )
        try:
            os.kill(pid, fault.signal)
        except ProcessLookupError:
            raise CliError(f"pid {pid} of {instance_id} is gone already", REFUSED) from None
        except PermissionError:
            raise CliError(f"not allowed to signal pid {pid} (run as its user)", REFUSED) from None
        return f"{name}: {instance_id} (pid {pid}) {fault.what}"
    body: dict[str, Any] = {}
    if fault.field is not None:
        given = value if value is not None else fault.default
        body[fault.field] = True if fault.field == "fail" else given
    port = instance.get("port")
    url = f"http://127.0.0.1:{port}{fault.path}"
    try:
        answer = httpx.post(url, json=body, timeout=5)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {instance_id} at {url}: {exc}", USAGE) from None
    if answer.status_code == 404:
        raise CliError(
            f"{instance_id} has no {fault.path}: '{fault_name}' needs the example service's "
            "admin API (crash and hang work on any local service)",
            REFUSED,
        )
    if not answer.is_success:
        raise CliError(f"{instance_id} answered {answer.status_code} to {fault.path}", REFUSED)
    shown = f" ({fault.field}={body[fault.field]})" if fault.field else ""
    return f"{name}: {instance_id} {fault.what}{shown}"


def chaos(
    service: Annotated[str, typer.Argument(help="The service to break.")],
    fault: Annotated[
        str,
        typer.Argument(help="crash, hang, resume, errors, latency, leak, cpu, health or reset."),
    ],
    value: Annotated[
        float | None,
        typer.Option(help="The fault's amount: errors rate, latency/cpu ms, leak MB/s."),
    ] = None,
    instance: Annotated[
        str | None, typer.Option(help="This instance (default: the first running one).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Inject one real fault into a running local service (rehearse your playbooks)."""
    if fault not in FAULTS:
        raise CliError(f"unknown fault '{fault}'; choose from {', '.join(FAULTS)}", USAGE)
    with session(url, as_json) as (phoenix, out):
        described = break_service(phoenix, service, fault, value, instance)
        if out.as_json:
            out.json({"success": True, "service": service, "fault": fault, "done": described})
        else:
            out.line(described)
            out.line(f"watch it: phoenix status --url {phoenix.target.shown}")


def break_service(
    phoenix: Phoenix, service: str, fault: str, value: float | None, instance: str | None
) -> str:
    found = phoenix.get(f"/api/services/{service}")["service"]
    return inject(found, running_instance(found, instance), fault, value)
