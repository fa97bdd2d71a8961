"""``phoenix playbooks list|apply|validate|dry-run``: playbooks as files an operator keeps.

A file holds one playbook document (the API's shape, in YAML) or several under
``playbooks:``, as in ``PHOENIX_PLAYBOOKS_DIR``. ``validate`` checks it here with the
server's own parser (``config.playbooks``); ``apply`` makes the server's playbooks what the
file says: a new name is created, a known one replaced (fields the file leaves out take
their defaults, so the file is the whole truth) at the version it was read at, so a
change someone made in between is refused rather than overwritten; an identical one is
left alone.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

from phoenix_server.cli.client import DEFAULT_URL, Json, Phoenix
from phoenix_server.cli.errors import REFUSED, USAGE, CliError
from phoenix_server.cli.local import settings_from
from phoenix_server.cli.options import JsonOption, ServiceFilter, UrlOption, session
from phoenix_server.cli.output import Column, Output, text
from phoenix_server.config.playbook_files import MAX_FILE_BYTES
from phoenix_server.config.playbooks import (
    PlaybookDoc,
    to_document,
    to_playbook,
    validate_playbook,
)
from phoenix_server.config.servicefile import load_service_file
from phoenix_server.domain.errors import ConfigError, InvalidRequestError, Problem
from phoenix_server.domain.playbooks import BuiltinAction, PlaybookSource
from phoenix_server.domain.services import (
    HealthPolicy,
    HttpAction,
    PlatformKind,
    ProcessCheck,
    ServiceCatalog,
    ServiceSpec,
)

app = typer.Typer(
    help="List, apply, validate and dry-run playbooks.", no_args_is_help=True, add_completion=False
)

FileOption = Annotated[
    Path,
    typer.Option(
        "--file", "-f", help="A playbook YAML file: one playbook, or several under playbooks:."
    ),
]
Document = tuple[str, Any]
"""A document of a file and where it is in it (``playbooks[1].``, or ``""`` for the file)."""


def read_documents(path: Path) -> list[Document]:
    """The file's playbook documents, split as ``PHOENIX_PLAYBOOKS_DIR`` files are; an
    unreadable file is a usage error (2), one that is not YAML a refusal (1)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise CliError(f"{path}: larger than {MAX_FILE_BYTES} bytes", REFUSED)
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"{path}: cannot read it: {exc.strerror or exc}", USAGE) from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text", REFUSED) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise CliError(f"{path}: not YAML: {' '.join(str(exc).split())}", REFUSED) from None
    if data is None:
        raise CliError(f"{path}: empty: no playbook in it", REFUSED)
    # Plain JSON values: YAML's dates and the like go as the strings they were written as.
    data = json.loads(json.dumps(data, default=str))
    if (
        isinstance(data, dict)
        and set(data) == {"playbooks"}
        and isinstance(data["playbooks"], list)
    ):
        return [(f"playbooks[{i}].", doc) for i, doc in enumerate(data["playbooks"])]
    return [("", data)]


def _named(prefix: str, document: Any) -> str:
    """``playbooks[1] ('Name')`` for messages; ``'Name'`` for a file of one."""
    name = document.get("name") if isinstance(document, dict) else None
    where = prefix.rstrip(".")
    shown = f"'{name}'" if isinstance(name, str) else "(no name)"
    return f"{where} {shown}" if where else shown


# --- validate ---------------------------------------------------------------------------


@app.command()
def validate(
    file: FileOption,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The service file, to check the services and actions named "
            "(default $PHOENIX_CONFIG); without one they are not checked.",
        ),
    ] = None,
    allow_commands: Annotated[
        bool,
        typer.Option(
            "--allow-commands",
            help="Validate for PHOENIX_PLAYBOOKS_DIR, where run_command steps are allowed "
            "(the API refuses them).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check a playbook file here, as the server would; every problem with its path."""
    documents = read_documents(file)
    settings = settings_from(PHOENIX_CONFIG=config)
    checked = settings.config_file is not None
    if settings.config_file is not None:
        try:
            catalog = load_service_file(
                settings.config_file, default_interval=settings.health_check_interval
            )
        except ConfigError as exc:
            lines = exc.lines()
            raise CliError(
                f"{len(lines)} problem(s) in the service file, first: {lines[0]}; "
                f"see phoenix check-config --config {settings.config_file}",
                USAGE,
            ) from None
    else:
        catalog = assumed_catalog(documents)
    problems: list[Problem] = []
    names: list[str] = []
    for prefix, document in documents:
        try:
            doc = validate_playbook(
                document,
                catalog=catalog,
                recovery_timeout=settings.recovery_timeout,
                allow_commands=allow_commands,
            )
        except InvalidRequestError as exc:
            problems += [Problem(prefix + p.path, p.message) for p in exc.problems]
            continue
        names.append(doc.name)
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem("name", f"'{name}' appears twice in the file"))
    out = Output(as_json=as_json)
    if out.as_json:
        out.json(
            {
                "file": str(file),
                "valid": not problems,
                "playbooks": names,
                "referencesChecked": checked,
                "problems": [{"path": p.path, "message": p.message} for p in problems],
            }
        )
    elif not problems:
        out.line(f"{file}: {len(names)} playbook(s) valid: {', '.join(names)}")
    for problem in problems if not out.as_json else []:
        out.line(f"{file}: {problem}")
    if not checked and not out.as_json:
        out.line(
            "services and actions were not checked: pass --config FILE (the service file) "
            "or set PHOENIX_CONFIG",
            style="dim",
        )
    if problems:
        raise CliError(f"{file}: invalid: {len(problems)} problem(s)", REFUSED)


ANY_SERVICE = "*"


def assumed_catalog(documents: list[Document]) -> ServiceCatalog:
    """Without a service file, every service and action the documents name is taken as
    declared: shape, limits and conditions are checked, references are not."""
    builtins = {action.value for action in BuiltinAction}
    named: dict[str, set[str]] = {}
    for _, document in documents:
        if not isinstance(document, dict):
            continue
        service = document.get("service")
        steps = document.get("steps")
        actions = {
            step["action"].strip()
            for step in (steps if isinstance(steps, list) else [])
            if isinstance(step, dict) and isinstance(step.get("action"), str)
        }
        owner = service if isinstance(service, str) else ANY_SERVICE
        named.setdefault(owner, set()).update(actions - builtins)
    return ServiceCatalog(
        [
            ServiceSpec(
                name=name,
                platform=PlatformKind.EXTERNAL,
                health=HealthPolicy(
                    check=ProcessCheck(), interval=1, timeout=1, failure_threshold=1
                ),
                actions={action: HttpAction("POST", "http://127.0.0.1/") for action in actions},
            )
            for name, actions in named.items()
        ]
    )


# --- apply ------------------------------------------------------------------------------


@app.command()
def apply(file: FileOption, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Create the file's playbooks on the server, or update those whose name exists."""
    documents = read_documents(file)
    with session(url, as_json) as (phoenix, out):
        existing = {p["name"]: p for p in all_playbooks(phoenix)}
        results: list[Json] = []
        for prefix, document in documents:
            name = document.get("name") if isinstance(document, dict) else None
            current = existing.get(name.strip()) if isinstance(name, str) else None
            try:
                action, playbook = _apply_one(phoenix, document, current)
            except CliError as exc:
                exc.message = f"{file}: {_named(prefix, document)}: {exc.message}"
                raise
            results.append({"action": action, "playbook": playbook})
            if not out.as_json:
                out.line(
                    f"{action} {playbook.get('id')} '{playbook.get('name')}' "
                    f"(version {playbook.get('version')})"
                )
        if out.as_json:
            out.json({"success": True, "results": results})


def _apply_one(phoenix: Phoenix, document: Any, current: Json | None) -> tuple[str, Json]:
    if current is None:
        created = phoenix.post("/api/playbooks", document)
        return "created", created["playbook"]
    if same_playbook(document, current):
        return "unchanged", current
    body = {**playbook_defaults(), **document, "version": current["version"]}
    updated = phoenix.put(f"/api/playbooks/{current['id']}", body)
    return "updated", updated["playbook"]


def playbook_defaults() -> Json:
    """Every optional top-level field at its default: what a file that leaves it out means
    (a PUT alone would keep the stored value)."""
    defaults: Json = {}
    for name, spec in PlaybookDoc.model_fields.items():
        if not spec.is_required():
            value = spec.get_default(call_default_factory=True)
            defaults[spec.alias or name] = value.value if isinstance(value, Enum) else value
    return defaults


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def same_playbook(document: Any, current: Json) -> bool:
    """Whether the document, read as the server reads it, is what the server holds."""
    try:
        doc = PlaybookDoc.model_validate(document)
    except ValidationError:
        return False  # the server says what is wrong with it
    wanted = to_document(
        to_playbook(
            doc,
            playbook_id="",
            created_at=EPOCH,
            updated_at=EPOCH,
            version=1,
            source=PlaybookSource.API,
        )
    )
    return all(current.get(key) == value for key, value in wanted.items())


def all_playbooks(phoenix: Phoenix, service: str | None = None) -> list[Json]:
    """Every playbook on the server (page by page)."""
    found: list[Json] = []
    while True:
        page = phoenix.get(
            "/api/playbooks", {"service": service, "limit": 1000, "offset": len(found)}
        )
        items = page.get("playbooks") or []
        found.extend(items)
        if not items or len(found) >= int(page.get("total") or 0):
            return found


# --- list -------------------------------------------------------------------------------

PLAYBOOKS = (
    Column("Playbook"),
    Column("Name"),
    Column("Service"),
    Column("Status", status=True),
    Column("Priority", right=True),
    Column("Version", right=True),
    Column("Source"),
    Column("Triggers"),
    Column("Steps"),
)


@app.command("list")
def list_playbooks(
    service: ServiceFilter = None, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """The server's playbooks, newest first."""
    with session(url, as_json) as (phoenix, out):
        playbooks = all_playbooks(phoenix, service)
        if out.as_json:
            out.json({"success": True, "playbooks": playbooks, "total": len(playbooks)})
            return
        out.table(
            PLAYBOOKS,
            [
                [
                    str(p.get("id")),
                    str(p.get("name")),
                    text(p.get("service")),
                    str(p.get("status")),
                    text(p.get("priority")),
                    text(p.get("version")),
                    text(p.get("source")),
                    ", ".join(str(t.get("type")) for t in p.get("triggers") or []),
                    ", ".join(str(s.get("action")) for s in p.get("steps") or []),
                ]
                for p in playbooks
            ],
            empty="no playbooks"
            + (f" for {service}" if service else "")
            + " (add some with: phoenix playbooks apply -f FILE)",
        )


# --- dry-run ----------------------------------------------------------------------------

DRY_RUN = (
    Column("#", right=True),
    Column("Step"),
    Column("Action"),
    Column("Condition"),
    Column("Would", status=True),
    Column("Why"),
    Column("Plan"),
)


@app.command("dry-run")
def dry_run(
    playbook: Annotated[
        str, typer.Argument(metavar="NAME-OR-ID", help="The playbook's name or id.")
    ],
    service: Annotated[
        str | None,
        typer.Option(help="The service to run it on (required if the playbook names none)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """What running a playbook on a service now would do, step by step; nothing is done."""
    with session(url, as_json) as (phoenix, out):
        found = resolve(phoenix, playbook)
        body = phoenix.post(
            f"/api/playbooks/{found['id']}/dry-run", {"service": service} if service else None
        )
        if out.as_json:
            out.json(body)
            return
        out.line(
            f"dry run of '{found.get('name')}' ({body.get('playbookId')}, version "
            f"{body.get('version')}) on {body.get('service')} ({body.get('serviceStatus')}): "
            f"strategy {body.get('strategy')}; nothing was done",
            style="bold",
        )
        out.table(
            DRY_RUN,
            [
                [
                    _ordinal(step.get("position")),
                    str(step.get("name")),
                    str(step.get("action")),
                    str(step.get("condition")),
                    str(step.get("would")),
                    text(step.get("why")),
                    "; ".join(step.get("plan") or []) or "-",
                ]
                for step in body.get("steps") or []
            ],
        )


def _ordinal(position: object) -> str:
    """The API counts steps from 0; people (and its ``why`` texts) from 1."""
    return str(position + 1) if isinstance(position, int) else "-"


def resolve(phoenix: Phoenix, name_or_id: str) -> Json:
    """The playbook with this id, or else this name; a refusal naming the known ones."""
    playbooks = all_playbooks(phoenix)
    for key in ("id", "name"):
        for playbook in playbooks:
            if playbook.get(key) == name_or_id:
                return playbook
    known = ", ".join(f"'{p.get('name')}'" for p in playbooks[:10]) or "none"
    raise CliError(f"no playbook named '{name_or_id}' or with that id (known: {known})", REFUSED)
