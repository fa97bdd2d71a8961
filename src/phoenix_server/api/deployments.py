"""Deploys: ``POST /api/services/{name}/deploy`` and the versions a service ran."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import Field

from phoenix_server.api.common import Limit, Offset, RuntimeDep, StrictInput, WireModel
from phoenix_server.api.forwarding import to_owner
from phoenix_server.api.recoveries import StepOut, step_out
from phoenix_server.domain.deployments import Deployment
from phoenix_server.store import deployments
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/services", tags=["services"])


class DeployRequest(StrictInput):
    version: str = Field(min_length=1, max_length=64)


class DeploymentOut(WireModel):
    id: str
    service: str
    version: str
    previous_version: str | None
    reason: str
    """``deploy`` (an operator), ``rollback`` (a recovery) or ``initial`` (first run)."""
    status: str
    start_time: str
    end_time: str | None
    known_good_at: str | None
    """When this run of the version had stayed healthy long enough to be a rollback target."""
    recovery_id: str | None
    detail: str
    steps: list[StepOut]


class DeployResponse(WireModel):
    success: bool = True
    changed: bool
    """False when the service already ran the version (nothing was done)."""
    deployment: DeploymentOut


class DeploymentsResponse(WireModel):
    success: bool = True
    deployments: list[DeploymentOut]
    total: int
    limit: int
    offset: int


def deployment_out(deployment: Deployment) -> DeploymentOut:
    return DeploymentOut(
        id=deployment.id,
        service=deployment.service,
        version=deployment.version,
        previous_version=deployment.previous_version,
        reason=deployment.reason.value,
        status=deployment.status.value,
        start_time=iso_ms(deployment.started_at) or "",
        end_time=iso_ms(deployment.ended_at),
        known_good_at=iso_ms(deployment.known_good_at),
        recovery_id=deployment.recovery_id,
        detail=deployment.detail,
        steps=[step_out(step) for step in deployment.steps],
    )


@router.post(
    "/{name}/deploy",
    status_code=202,
    response_model=DeployResponse,
    response_model_by_alias=True,
    responses={
        200: {"model": DeployResponse, "description": "Already at that version: changed false"},
        409: {"description": "A recovery or another deploy of the service is running"},
    },
)
async def deploy(
    name: str, body: DeployRequest, runtime: RuntimeDep, response: Response, request: Request
) -> DeployResponse | Response:
    """Roll the service to one of its declared versions (202; follow it in deployments).
    200 with ``changed: false`` if it already runs that version; 409 while a recovery or
    another deploy of the service runs."""
    if (owners := await to_owner(request, runtime, name)) is not None:
        return owners
    deployment, changed = await runtime.deploy(name, body.version)
    if not changed:
        response.status_code = 200
    return DeployResponse(changed=changed, deployment=deployment_out(deployment))


@router.get("/{name}/deployments", response_model=DeploymentsResponse, response_model_by_alias=True)
async def list_deployments(
    name: str, runtime: RuntimeDep, limit: Limit = 50, offset: Offset = 0
) -> DeploymentsResponse:
    """The versions the service ran, newest first, with each deploy's steps."""
    runtime.catalog.get(name)  # 404 naming an unknown service
    items, total = await runtime.store.read(
        deployments.list_deployments,
        service=name,
        owner=runtime.owner,
        limit=limit,
        offset=offset,
    )
    return DeploymentsResponse(
        deployments=[deployment_out(d) for d in items], total=total, limit=limit, offset=offset
    )
