"""Playbook management: create, list, read, update (versioned), delete.

Bodies are validated as a whole (shape and meaning) by ``config.playbooks``, so the API
and playbook files accept exactly the same documents; every problem comes back in one 422.
``PUT`` merges: fields it omits keep their stored values, so ``{"status": "disabled"}``
alone disables a playbook. Execution comes with the playbooks issue.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from phoenix_server.api.common import Limit, Offset, RuntimeDep, WireModel
from phoenix_server.config.playbooks import to_document, to_playbook, validate_playbook
from phoenix_server.domain import ids
from phoenix_server.domain.errors import ConflictError
from phoenix_server.domain.playbooks import Playbook, PlaybookSource, PlaybookStatus
from phoenix_server.runtime import Runtime
from phoenix_server.store import playbooks
from phoenix_server.support.timefmt import iso_ms

router = APIRouter(prefix="/api/playbooks", tags=["playbooks"])

PlaybookBody = Annotated[
    dict[str, Any],
    Body(
        openapi_examples={
            "seed": {
                "summary": "The product description's example",
                "value": {
                    "name": "Database Connection Recovery",
                    "service": "azora-education",
                    "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60}],
                    "steps": [
                        {"action": "restart_connection_pool", "timeout": 30},
                        {
                            "action": "restart_service",
                            "timeout": 60,
                            "condition": "if_previous_failed",
                        },
                    ],
                },
            }
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


def _validate(runtime: Runtime, body: object) -> Any:
    return validate_playbook(
        body,
        catalog=runtime.catalog,
        recovery_timeout=runtime.settings.recovery_timeout,
        allow_commands=False,
    )


@router.post("", status_code=201, response_model=PlaybookCreated, response_model_by_alias=True)
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
    await runtime.refresh_playbook_count()
    return PlaybookCreated(
        playbook_id=playbook.id,
        status=playbook.status,
        version=playbook.version,
        playbook=playbook_out(playbook),
    )


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


@router.put("/{playbook_id}", response_model=PlaybookResponse, response_model_by_alias=True)
async def update_playbook(
    playbook_id: str, body: PlaybookBody, runtime: RuntimeDep
) -> PlaybookResponse:
    """Replace the fields given (others keep their values); the version goes up by one.

    A ``version`` in the body must match the stored one (409 otherwise): a client that
    read, edited and wrote back cannot silently overwrite someone else's change.
    """
    current = await runtime.store.read(playbooks.get_playbook, playbook_id)
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
    await runtime.refresh_playbook_count()
    return PlaybookResponse(playbook=playbook_out(updated))


@router.delete("/{playbook_id}", response_model=PlaybookDeleted, response_model_by_alias=True)
async def delete_playbook(playbook_id: str, runtime: RuntimeDep) -> PlaybookDeleted:
    await runtime.store.write(playbooks.delete_playbook, playbook_id)
    await runtime.refresh_playbook_count()
    return PlaybookDeleted(playbook_id=playbook_id)
