"""What Phoenix watches and has learned: ``phoenix status``, ``services``, ``incidents``
and ``learning``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from phoenix_server.cli.client import DEFAULT_URL
from phoenix_server.cli.options import JsonOption, LimitOption, ServiceFilter, UrlOption, session
from phoenix_server.cli.output import Column, number, percent, seconds, text, when
from phoenix_server.cli.recoveries import shown_of
from phoenix_server.domain.incidents import IncidentStatus

STATUS = (
    Column("Service"),
    Column("Status", status=True),
    Column("Uptime", right=True),
    Column("Latency", right=True),
    Column("Errors", right=True),
    Column("Req/s", right=True),
    Column("Since (UTC)"),
    Column("Note"),
)


def status(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Phoenix itself and every service it watches: status, uptime, key metrics."""
    with session(url, as_json) as (phoenix, out):
        health = phoenix.get("/health")
        services = phoenix.get("/api/health/services")
        if out.as_json:
            out.json({"health": health, "services": services})
            return
        active = health.get("activeRecoveries", 0)
        out.line(
            f"Phoenix {health.get('version')} at {phoenix.target.shown}: {health.get('status')}; "
            f"{health.get('monitoredServices')} service(s), {active} "
            f"recover{'y' if active == 1 else 'ies'} running, "
            f"{text(health.get('playbooksActive'))} playbook(s) active",
            style="bold",
        )
        for warning in health.get("warnings") or []:
            out.line(f"warning: {warning}", style="yellow")
        out.table(
            STATUS,
            [_status_row(s) for s in services.get("services") or []],
            empty="no services are watched (start Phoenix with --config FILE)",
        )


def _status_row(service: dict[str, Any]) -> list[str]:
    metrics = service.get("metrics") or {}
    notes = []
    if service.get("activeRecoveryId"):
        notes.append(f"recovering: {service['activeRecoveryId']}")
    if service.get("status") != "healthy" and service.get("reason"):
        notes.append(str(service["reason"]))
    notes.extend(str(symptom) for symptom in service.get("symptoms") or [])
    if service.get("circuit") not in (None, "closed"):
        notes.append(f"circuit {service['circuit']}")
    return [
        str(service.get("name")),
        str(service.get("status")),
        percent(service.get("uptime")),
        number(metrics.get("latency"), "ms"),
        percent(metrics.get("errorRate"), fraction=True),
        number(metrics.get("throughput")),
        when(service.get("statusSince")),
        "; ".join(notes),
    ]


SERVICES = (
    Column("Service"),
    Column("Status", status=True),
    Column("Platform"),
    Column("Port", right=True),
    Column("Version"),
    Column("Instances"),
    Column("Strategies"),
)


def services(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """The declared services: platform, port, version, running instances, strategies."""
    with session(url, as_json) as (phoenix, out):
        body = phoenix.get("/api/services")
        if out.as_json:
            out.json(body)
            return
        out.table(
            SERVICES,
            [
                [
                    str(s.get("name")),
                    str(s.get("status")),
                    str(s.get("platform")),
                    text(s.get("port")),
                    text(s.get("currentVersion")),
                    _instances(s.get("instances") or []),
                    ", ".join(s.get("strategies") or []) or "-",
                ]
                for s in body.get("services") or []
            ],
            empty="no services are declared (start Phoenix with --config FILE)",
        )


def _instances(instances: list[dict[str, Any]]) -> str:
    """``2 running (pid 4242 :40001, pid 4243 :40002)``, then any in other states."""
    running = [i for i in instances if i.get("state") == "running"]
    shown = ", ".join(
        f"pid {text(i.get('pid'))}" + (f" :{i['port']}" if i.get("port") else "") for i in running
    )
    said = f"{len(running)} running" + (f" ({shown})" if shown else "")
    others: dict[str, int] = {}
    for instance in instances:
        if instance.get("state") != "running":
            others[str(instance.get("state"))] = others.get(str(instance.get("state")), 0) + 1
    return ", ".join([said, *(f"{n} {state}" for state, n in others.items())])


INCIDENTS = (
    Column("Incident"),
    Column("Service"),
    Column("Failure type"),
    Column("Status", status=True),
    Column("Source"),
    Column("Detected (UTC)"),
    Column("Summary"),
)


def incidents(
    service: ServiceFilter = None,
    status: Annotated[
        IncidentStatus | None, typer.Option(help="Only incidents in this status.")
    ] = None,
    limit: LimitOption = 20,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """List incidents (what failed, its classified type), newest first."""
    with session(url, as_json) as (phoenix, out):
        body = phoenix.get(
            "/api/incidents",
            {"service": service, "status": status.value if status else None, "limit": limit},
        )
        if out.as_json:
            out.json(body)
            return
        items = body.get("incidents") or []
        out.table(
            INCIDENTS,
            [
                [
                    str(i.get("id")),
                    str(i.get("service")),
                    str(i.get("failureType")),
                    str(i.get("status")) + (" (false positive)" if i.get("falsePositive") else ""),
                    text(i.get("source")),
                    when(i.get("detectedAt")),
                    text(i.get("summary")),
                ]
                for i in items
            ],
            empty="no incidents match",
        )
        shown_of(out, len(items), body.get("total"))
        if body.get("falsePositiveRate") is not None:
            out.line(
                f"false positives: {body.get('falsePositives')} "
                f"({percent(body['falsePositiveRate'], fraction=True)} of those Phoenix detected)",
                style="dim",
            )


LEARNING = (
    Column("Service"),
    Column("Failure type"),
    Column("Strategy"),
    Column("Seen", right=True),
    Column("Success", right=True),
    Column("Expected", right=True),
    Column("Score", right=True),
    Column("Recovers in", right=True),
)


def learning(
    service: ServiceFilter = None, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """What the learned policy believes about each strategy, with its evidence."""
    with session(url, as_json) as (phoenix, out):
        body = phoenix.get("/api/learning/stats", {"service": service})
        if out.as_json:
            out.json(body)
            return
        estimates = body.get("estimates") or []
        out.table(
            LEARNING,
            [
                [
                    text(e.get("service")),
                    str(e.get("failureType")),
                    str(e.get("strategy")),
                    text(e.get("observations")),
                    percent(e.get("successRate"), fraction=True),
                    seconds(e.get("expectedSeconds")),
                    number(e.get("score"), digits=3),
                    seconds(e.get("timeToRecover")),
                ]
                for e in estimates
            ],
            empty="nothing learned yet"
            + (f" for {service}" if service else "")
            + ": no outcome of a recovery of a detected failure is recorded",
        )
        policy = body.get("policy") or {}
        if policy:
            out.line(
                f"policy: {policy.get('method')} over the last {policy.get('window')} outcomes; "
                f"a failed attempt costs {seconds(policy.get('failureCost'))}",
                style="dim",
            )
