"""Playbook management: create, list, read, update (versioned), delete.

Bodies are validated as a whole (shape and meaning) by ``config.playbooks``, so the API
and playbook files accept exactly the same documents; every problem comes back in one 422.
``PUT`` merges: fields it omits keep their stored values, so ``{"status": "disabled"}``
alone disables a playbook. ``dry-run`` shows what a run would do now; ``execute`` runs one
as a recovery.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import Field

from phoenix_server.api.common import Limit, Offset, RuntimeDep, StrictInput, WireModel
from phoenix_server.api.engine import Engine
from phoenix_server.api.forwarding import to_owner
from phoenix_server.api.recoveries import TriggerResponse, started_fields
from phoenix_server.config.playbooks import (
    PlaybookDoc,
    to_document,
    to_playbook,
    validate_playbook,
)
from phoenix_server.domain import ids
from phoenix_server.domain.errors import ConflictError, InvalidRequestError, Problem
from phoenix_server.domain.playbooks import Playbook, PlaybookSource, PlaybookStatus
from phoenix_server.domain.recoveries import StepCondition, Strategy
from phoenix_server.recovery.playbook_runs import main_strategy, preview
from phoenix_server.store import playbooks
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/playbooks", tags=["playbooks"])

EXAMPLE = {
    "name": "Database Connection Recovery",
    "service": "azora-education",
    "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60}],
    "steps": [
        {"action": "restart_connection_pool", "timeout": 30},
        {"action": "restart_service", "timeout": 60, "condition": "if_previous_failed"},
    ],
}
DURATIONS = ("duration", "timeout", "seconds")
"""Fields that take seconds as a number or a string with a unit (``30s``, ``5m``)."""


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``$ref`` to ``defs`` replaced by the definition itself."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rpartition("/")[2]], defs)
        return {key: _inline(value, defs) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


def _widen_durations(node: Any) -> None:
    if isinstance(node, dict):
        for name, field in node.get("properties", {}).items():
            if name in DURATIONS and "anyOf" in field:
                field["anyOf"].insert(1, {"type": "string", "examples": ["30s", "500ms"]})
        for value in node.values():
            _widen_durations(value)
    elif isinstance(node, list):
        for item in node:
            _widen_durations(item)


def playbook_schema(*, partial: bool) -> dict[str, Any]:
    """The JSON schema of a playbook document, self-contained, for the OpenAPI document
    (``config.playbooks`` checks the body as a whole, so every problem comes back at once;
    this tells clients and the fuzzer what it takes). ``partial``: a PUT, where every
    field is optional and the bookkeeping fields of a GET may be echoed back."""
    schema = PlaybookDoc.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    schema = _inline(schema, defs)
    _widen_durations(schema)
    if partial:
        schema.pop("required", None)
        schema["properties"]["version"] = {
            "type": "integer",
            "minimum": 1,
            "description": "The version you read: the update is refused (409) if it moved on",
        }
        for name in ("id", "source", "createdAt", "updatedAt"):
            schema["properties"][name] = {"type": "string", "description": "Ignored"}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


PlaybookBody = Annotated[
    dict[str, Any],
    Body(
        openapi_examples={
            "seed": {"summary": "The product description's example", "value": EXAMPLE}
        }
    ),
]


READ_ONLY = ("id", "version", "source", "createdAt", "updatedAt")
"""Bookkeeping fields in a playbook's JSON; a PUT may echo them back from a GET."""


class PlaybookOut(WireModel):
    """A playbook as written (name … steps) with Phoenix's bookkeeping beside it."""

    id: str
    name: str
    service: str | None
    description: str
    status: PlaybookStatus
    priority: int
    triggers: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    version: int
    source: str
    created_at: str
    updated_at: str


class PlaybookCreated(WireModel):
    success: bool = True
    playbook_id: str
    status: PlaybookStatus
    version: int
    playbook: PlaybookOut


class PlaybookResponse(WireModel):
    success: bool = True
    playbook: PlaybookOut


class PlaybooksResponse(WireModel):
    success: bool = True
    playbooks: list[PlaybookOut]
    total: int
    limit: int
    offset: int


class PlaybookDeleted(WireModel):
    success: bool = True
    playbook_id: str
    deleted: bool = True


def playbook_out(playbook: Playbook) -> PlaybookOut:
    return PlaybookOut(
        id=playbook.id,
        **to_document(playbook),
        version=playbook.version,
        source=playbook.source.value,
        created_at=iso_ms(playbook.created_at) or "",
        updated_at=iso_ms(playbook.updated_at) or "",
    )


def _refuse_file_playbook(playbook: Playbook) -> None:
    if playbook.source is PlaybookSource.FILE:
        raise ConflictError(
            f"playbook '{playbook.name}' comes from a file in PHOENIX_PLAYBOOKS_DIR; "
            "change or remove the file instead"
        )


def _validate(runtime: Engine, body: object) -> Any:
    return validate_playbook(
        body,
        catalog=runtime.catalog,
        recovery_timeout=runtime.settings.recovery_timeout,
        allow_commands=False,
    )


FROM_FILE = "the playbook comes from a file in PHOENIX_PLAYBOOKS_DIR"


def _check_version_type(version: object) -> None:
    """A ``version`` that no stored playbook can have is the client's mistake (422), not a
    conflict with someone else's change (409)."""
    if isinstance(version, int) and not isinstance(version, bool) and version >= 1:
        return
    message = f"expected the version you read, a whole number from 1, got {version!r}"
    raise InvalidRequestError(f"version: {message}", [Problem("version", message)])


@router.post(
    "",
    status_code=201,
    response_model=PlaybookCreated,
    response_model_by_alias=True,
    responses={409: {"description": "A playbook of that name exists"}},
    openapi_extra=playbook_schema(partial=False),
)
async def create_playbook(body: PlaybookBody, runtime: RuntimeDep) -> PlaybookCreated:
    """Validate and store a playbook; 422 lists every problem, 409 if the name is taken."""
    doc = _validate(runtime, body)
    now = runtime.clock.now()
    playbook = to_playbook(
        doc,
        playbook_id=ids.new_id(ids.PLAYBOOK),
        created_at=now,
        updated_at=now,
        version=1,
        source=PlaybookSource.API,
    )
    await runtime.store.write(playbooks.create_playbook, playbook)
    await runtime.refresh_playbooks()
    return PlaybookCreated(
        playbook_id=playbook.id,
        status=playbook.status,
        version=playbook.version,
        playbook=playbook_out(playbook),
    )


class PlaybookValid(WireModel):
    success: bool = True
    valid: bool = True
    playbook: dict[str, Any]
    """The playbook as it would be stored (defaults filled in)."""


@router.post(
    "/validate",
    response_model=PlaybookValid,
    response_model_by_alias=True,
    openapi_extra=playbook_schema(partial=False),
)
async def validate(body: PlaybookBody, runtime: RuntimeDep) -> PlaybookValid:
    """Check a playbook without storing it: 200 with its normal form, or 422 listing every
    problem (the same checks as creating it; a name already taken is not one)."""
    doc = _validate(runtime, body)
    now = runtime.clock.now()
    playbook = to_playbook(
        doc,
        playbook_id="pb-000000000000",
        created_at=now,
        updated_at=now,
        version=1,
        source=PlaybookSource.API,
    )
    return PlaybookValid(playbook=to_document(playbook))


@router.get("", response_model=PlaybooksResponse, response_model_by_alias=True)
async def list_playbooks(
    runtime: RuntimeDep,
    service: Annotated[str | None, Query(max_length=128)] = None,
    status: PlaybookStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> PlaybooksResponse:
    """Playbooks, newest first."""
    items, total = await runtime.store.read(
        playbooks.list_playbooks, service=service, status=status, limit=limit, offset=offset
    )
    return PlaybooksResponse(
        playbooks=[playbook_out(p) for p in items], total=total, limit=limit, offset=offset
    )


@router.get("/{playbook_id}", response_model=PlaybookResponse, response_model_by_alias=True)
async def get_playbook(playbook_id: str, runtime: RuntimeDep) -> PlaybookResponse:
    playbook = await runtime.store.read(playbooks.get_playbook, playbook_id)
    return PlaybookResponse(playbook=playbook_out(playbook))


@router.put(
    "/{playbook_id}",
    response_model=PlaybookResponse,
    response_model_by_alias=True,
    responses={
        409: {
            "description": "The body's version is not the stored one (it changed since it was "
            f"read), the name is taken, or {FROM_FILE}"
        }
    },
    openapi_extra=playbook_schema(partial=True),
)
async def update_playbook(
    playbook_id: str, body: PlaybookBody, runtime: RuntimeDep
) -> PlaybookResponse:
    """Replace the fields given (others keep their values); the version goes up by one.

    A ``version`` in the body must match the stored one (409 otherwise): a client that
    read, edited and wrote back cannot silently overwrite someone else's change.
    """
    if "version" in body:
        _check_version_type(body["version"])
    current = await runtime.store.read(playbooks.get_playbook, playbook_id)
    _refuse_file_playbook(current)
    if "version" in body and body["version"] != current.version:
        raise ConflictError(
            f"playbook '{playbook_id}' is at version {current.version}, not "
            f"{body['version']!r}: it changed since you read it; fetch it and apply again"
        )
    merged = {**to_document(current), **{k: v for k, v in body.items() if k not in READ_ONLY}}
    doc = _validate(runtime, merged)
    updated = to_playbook(
        doc,
        playbook_id=current.id,
        created_at=current.created_at,
        updated_at=runtime.clock.now(),
        version=current.version + 1,
        source=current.source,
    )
    await runtime.store.write(playbooks.update_playbook, updated)
    await runtime.refresh_playbooks()
    return PlaybookResponse(playbook=playbook_out(updated))


@router.delete(
    "/{playbook_id}",
    response_model=PlaybookDeleted,
    response_model_by_alias=True,
    responses={409: {"description": FROM_FILE.capitalize()}},
)
async def delete_playbook(playbook_id: str, runtime: RuntimeDep) -> PlaybookDeleted:
    _refuse_file_playbook(await runtime.store.read(playbooks.get_playbook, playbook_id))
    await runtime.store.write(playbooks.delete_playbook, playbook_id)
    await runtime.refresh_playbooks()
    return PlaybookDeleted(playbook_id=playbook_id)


class RunRequest(StrictInput):
    service: str | None = Field(None, min_length=1, max_length=128)
    """Required for a playbook bound to no service; optional (and must match) otherwise."""
    reason: str = Field("", max_length=2000)


class StepPreviewOut(WireModel):
    position: int
    name: str
    action: str
    condition: StepCondition
    timeout: float
    would: str
    """``run``, ``skip``, or ``depends`` (on how the steps before it end)."""
    why: str
    plan: list[str]
    """A strategy step's own steps, for the service as it is now."""


class DryRunResponse(WireModel):
    success: bool = True
    playbook_id: str
    version: int
    service: str
    service_status: str
    strategy: Strategy
    steps: list[StepPreviewOut]


class ExecuteResponse(TriggerResponse):
    """The trigger's 202, with the playbook (and version) that runs."""

    playbook_id: str
    version: int


def _target(playbook: Playbook, body: RunRequest | None) -> str:
    asked = body.service if body is not None else None
    if playbook.service is not None and asked not in (None, playbook.service):
        message = f"this playbook is bound to service '{playbook.service}'"
        raise InvalidRequestError(message, [Problem("service", message)])
    service = asked or playbook.service
    if service is None:
        message = "required: this playbook is bound to no service, so name the one to run it on"
        raise InvalidRequestError(message, [Problem("service", message)])
    return service


@router.post("/{playbook_id}/dry-run", response_model=DryRunResponse, response_model_by_alias=True)
async def dry_run(
    playbook_id: str, runtime: RuntimeDep, body: RunRequest | None = None
) -> DryRunResponse:
    """What running the playbook on the service now would do; nothing is acted on."""
    playbook = await runtime.store.read(playbooks.get_playbook, playbook_id)
    spec = runtime.catalog.get(_target(playbook, body))
    status = runtime.health(spec.name).status
    previews = preview(
        playbook,
        spec,
        tuple(runtime.instances(spec)),
        serving=status.serving,
        rollback_to=runtime.rollback_target(spec),
    )
    return DryRunResponse(
        playbook_id=playbook.id,
        version=playbook.version,
        service=spec.name,
        service_status=status.value,
        strategy=main_strategy(playbook),
        steps=[
            StepPreviewOut(
                position=p.position,
                name=p.name,
                action=p.action,
                condition=p.condition,
                timeout=p.timeout,
                would=p.would,
                why=p.why,
                plan=list(p.plan),
            )
            for p in previews
        ],
    )


@router.post(
    "/{playbook_id}/execute",
    status_code=202,
    response_model=ExecuteResponse,
    response_model_by_alias=True,
    responses={
        409: {
            "description": "The playbook is disabled, a recovery of the service is running "
            "(its recoveryId is given), or its recovery budget is spent"
        }
    },
)
async def execute(
    playbook_id: str, runtime: RuntimeDep, request: Request, body: RunRequest | None = None
) -> ExecuteResponse | Response:
    """Run the playbook on the service now, as a recovery (202; follow its recoveryId).
    409 if the playbook is disabled or a recovery of the service is running."""
    playbook = await runtime.store.read(playbooks.get_playbook, playbook_id)
    service = _target(playbook, body)
    if (owners := await to_owner(request, runtime, service)) is not None:
        return owners
    if playbook.status is not PlaybookStatus.ACTIVE:
        raise ConflictError(
            f"playbook '{playbook.name}' is disabled; set its status to active to run it"
        )
    reason = (body.reason if body is not None else "") or f"playbook '{playbook.name}' run"
    recovery = await runtime.trigger(
        service=service, strategy=None, reason=reason, force=False, playbook=playbook
    )
    return ExecuteResponse(
        **started_fields(recovery), playbook_id=playbook.id, version=playbook.version
    )
