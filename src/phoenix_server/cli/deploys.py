"""``phoenix deploy SERVICE VERSION``: roll a service to one of its declared versions, and
with ``--follow`` watch the deploy's steps until it ends."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from phoenix_server.cli.client import DEFAULT_URL, Phoenix
from phoenix_server.cli.errors import CliError
from phoenix_server.cli.following import Snapshot, follow
from phoenix_server.cli.options import JsonOption, UrlOption, session
from phoenix_server.domain.deployments import DeploymentStatus


def deploy(
    service: Annotated[str, typer.Argument(metavar="SERVICE", help="The service to deploy.")],
    version: Annotated[
        str, typer.Argument(metavar="VERSION", help="One of its declared versions.")
    ],
    follow_it: Annotated[
        bool,
        typer.Option("--follow", help="Follow its steps until it ends (exit 1 unless completed)."),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Roll SERVICE to VERSION (one of the versions its service file declares)."""
    with session(url, as_json) as (phoenix, out):
        answer = phoenix.post(f"/api/services/{service}/deploy", {"version": version})
        deployment: dict[str, Any] = answer.get("deployment") or {}
        if not answer.get("changed"):
            if out.as_json:
                out.json(answer)
            else:
                out.line(f"{service} already runs {version}: nothing to do")
            return
        if not follow_it:
            if out.as_json:
                out.json(answer)
                return
            out.line(
                f"{deployment.get('id')}: deploying {service} "
                f"{deployment.get('previousVersion') or '-'} -> {version}"
            )
            out.line(f"follow it with: phoenix deploy {service} {version} --follow", style="dim")
            return
        last = follow(
            lambda: _snapshot(phoenix, service, str(deployment.get("id"))),
            out,
            resume=f"see it with: phoenix services, or GET /api/services/{service}/deployments",
        )
        ended: dict[str, Any] = last.body["deployment"]
        if out.as_json:
            out.json(last.body)
        else:
            out.line(f"{ended.get('id')}: {last.status}; {ended.get('detail') or ''}".rstrip("; "))
        if last.status != DeploymentStatus.COMPLETED:
            raise CliError(
                f"deploy {ended.get('id')} of {service} {version} ended {last.status}: "
                f"{ended.get('detail') or 'see its steps'}"
            )


def _snapshot(phoenix: Phoenix, service: str, deployment_id: str) -> Snapshot:
    page = phoenix.get(f"/api/services/{service}/deployments", {"limit": 20})
    found = next((d for d in page.get("deployments") or [] if d.get("id") == deployment_id), None)
    if found is None:
        raise CliError(f"deploy {deployment_id} of {service} is no longer listed by Phoenix")
    status = str(found.get("status"))
    return Snapshot(
        title=f"{deployment_id}: deploy {service} {found.get('previousVersion') or '-'} -> "
        f"{found.get('version')}",
        status=status,
        steps=list(found.get("steps") or []),
        done=status != DeploymentStatus.IN_PROGRESS,
        body={"success": True, "deployment": found},
    )
