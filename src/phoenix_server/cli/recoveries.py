"""``phoenix trigger``, ``phoenix recovery ID`` and ``phoenix history``: start a recovery,
follow one step by step until it ends, and list what happened."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from phoenix_server.cli.client import DEFAULT_URL, Phoenix
from phoenix_server.cli.errors import CliError
from phoenix_server.cli.following import Snapshot, follow, step_line, steps_view
from phoenix_server.cli.options import JsonOption, LimitOption, ServiceFilter, UrlOption, session
from phoenix_server.cli.output import Column, Output, seconds, text, when
from phoenix_server.domain.recoveries import RecoveryStatus, Strategy

ACTIVE = {RecoveryStatus.PENDING.value, RecoveryStatus.IN_PROGRESS.value}


def trigger(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="The service to recover.")],
    strategy: Annotated[
        Strategy | None,
        typer.Option(
            help="How to recover it; default: Phoenix decides (playbook > learned > default)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Cancel a running recovery of the service and bypass backoff and budget.",
        ),
    ] = False,
    follow_it: Annotated[
        bool,
        typer.Option("--follow", help="Follow its steps until it ends (exit 1 unless completed)."),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Start a recovery of SERVICE now."""
    body: dict[str, Any] = {"service": service}
    if reason:
        body["reason"] = reason
    if strategy is not None:
        body["strategy"] = strategy.value
    if force:
        body["force"] = True
    with session(url, as_json) as (phoenix, out):
        started = phoenix.post("/api/recovery/trigger", body)
        recovery_id = str(started.get("recoveryId"))
        if not follow_it:
            if out.as_json:
                out.json(started)
                return
            decision = started.get("decision") or {}
            out.line(
                f"{recovery_id}: {started.get('strategy')} of {service} started "
                f"({decision.get('source')}: {decision.get('reason')})"
            )
            out.line(f"follow it with: phoenix recovery {recovery_id}", style="dim")
            return
        _follow(phoenix, out, recovery_id)


def recovery(
    recovery_id: Annotated[str, typer.Argument(metavar="ID", help="The recovery (rec-…).")],
    keep_following: Annotated[
        bool,
        typer.Option(
            "--follow/--no-follow", help="Follow it until it ends, or print it once as it is now."
        ),
    ] = True,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Show a recovery's steps, following them live until it ends (exit 1 unless completed)."""
    with session(url, as_json) as (phoenix, out):
        if keep_following:
            _follow(phoenix, out, recovery_id)
            return
        body = phoenix.get(f"/api/recovery/status/{recovery_id}")
        if out.as_json:
            out.json(body)
            return
        now = snapshot(body)
        _print_once(out, now)
        if now.done:
            _summary(out, body["recovery"])


def _follow(phoenix: Phoenix, out: Output, recovery_id: str) -> None:
    last = follow(
        lambda: snapshot(phoenix.get(f"/api/recovery/status/{recovery_id}")),
        out,
        resume=f"follow it again: phoenix recovery {recovery_id}",
    )
    if out.as_json:
        out.json(last.body)
    else:
        _summary(out, last.body["recovery"])
    if last.status != RecoveryStatus.COMPLETED:
        raise CliError(f"recovery {recovery_id} ended {last.status}: {_why(last.body['recovery'])}")


def snapshot(body: dict[str, Any]) -> Snapshot:
    recovery: dict[str, Any] = body.get("recovery") or {}
    decision = recovery.get("decision") or {}
    title = (
        f"{recovery.get('id')}: {recovery.get('strategy')} of {recovery.get('service')}, "
        f"attempt {recovery.get('attempt')}, {recovery.get('trigger')} "
        f"(decided by {decision.get('source')}: {decision.get('reason')})"
    )
    status = str(recovery.get("status"))
    return Snapshot(
        title=title,
        status=status,
        steps=list(recovery.get("steps") or []),
        done=status not in ACTIVE,
        body=body,
    )


def _print_once(out: Output, shot: Snapshot) -> None:
    if out.rich:
        out.console.print(steps_view(shot))
        return
    out.line(f"{shot.title}: {shot.status}")
    for index, step in enumerate(shot.steps):
        out.line(step_line(index, step))


def _summary(out: Output, recovery: dict[str, Any]) -> None:
    metrics = recovery.get("metrics") or {}
    outcome = f" ({recovery['outcome']})" if recovery.get("outcome") else ""
    out.line(
        f"{recovery.get('id')}: {recovery.get('status')}{outcome} in "
        f"{seconds(recovery.get('duration'))}; downtime {seconds(metrics.get('downtime'))}, "
        f"requests lost {text(metrics.get('requestsLost'))}, "
        f"data integrity {text(metrics.get('dataIntegrity'))}",
        style="bold",
    )


def _why(recovery: dict[str, Any]) -> str:
    """The detail of the step that went wrong, else the recovery's own reason."""
    for step in reversed(recovery.get("steps") or []):
        if step.get("status") in ("failed", "timed_out") and step.get("detail"):
            return f"{step.get('name')}: {step['detail']}"
    return str(recovery.get("reason") or "see its steps")


HISTORY = (
    Column("Recovery"),
    Column("Service"),
    Column("Strategy"),
    Column("Status", status=True),
    Column("Outcome", status=True),
    Column("Duration", right=True),
    Column("Attempt", right=True),
    Column("Trigger"),
    Column("Started (UTC)"),
)


def history(
    service: ServiceFilter = None,
    status: Annotated[
        RecoveryStatus | None, typer.Option(help="Only recoveries in this status.")
    ] = None,
    strategy: Annotated[Strategy | None, typer.Option(help="Only this strategy.")] = None,
    limit: LimitOption = 20,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """List recoveries, newest first."""
    with session(url, as_json) as (phoenix, out):
        body = phoenix.get(
            "/api/recovery/history",
            {
                "service": service,
                "status": status.value if status else None,
                "strategy": strategy.value if strategy else None,
                "limit": limit,
            },
        )
        if out.as_json:
            out.json(body)
            return
        items = body.get("recoveries") or []
        out.table(
            HISTORY,
            [
                [
                    str(r.get("id")),
                    str(r.get("service")),
                    str(r.get("strategy")),
                    str(r.get("status")),
                    text(r.get("outcome")),
                    seconds(r.get("duration")),
                    text(r.get("attempt")),
                    text(r.get("trigger")),
                    when(r.get("timestamp")),
                ]
                for r in items
            ],
            empty="no recoveries match",
        )
        shown_of(out, len(items), body.get("total"))


def shown_of(out: Output, shown: int, total: object) -> None:
    """``20 of 143 (--limit to see more)`` under a list that holds only part of them."""
    if isinstance(total, int) and total > shown:
        out.line(f"{shown} of {total} (--limit N to see more)", style="dim")
