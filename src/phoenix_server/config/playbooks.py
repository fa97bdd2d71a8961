"""Playbook documents: the JSON (API) and YAML (files) shape, checked completely.

Shape errors come from pydantic, meaning errors (unknown service, an action the service
does not declare, a timeout over ``RECOVERY_TIMEOUT``, a shell command in a playbook that
came through the API) from :func:`check_playbook`. Both are reported together, each with
a path like ``steps[1].condition``, so one round trip shows every problem.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from phoenix_server.domain.errors import InvalidRequestError, Problem, problem_path
from phoenix_server.domain.incidents import FailureType
from phoenix_server.domain.playbooks import (
    BuiltinAction,
    Playbook,
    PlaybookSource,
    PlaybookStatus,
    PlaybookStep,
    PlaybookTrigger,
    TriggerType,
)
from phoenix_server.domain.recoveries import StepCondition
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.support.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
M = TypeVar("M", bound=BaseModel)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]

THRESHOLD_TRIGGERS = {
    TriggerType.ERROR_RATE: (0.0, 1.0, "a fraction of requests between 0 and 1"),
    TriggerType.LATENCY: (0.0, 3_600_000.0, "milliseconds"),
    TriggerType.MEMORY: (0.0, 16_777_216.0, "megabytes of resident memory"),
    TriggerType.CPU: (0.0, 100_000.0, "percent of one core"),
    TriggerType.ANOMALY_SCORE: (0.0, 1.0, "a score between 0 and 1"),
}
STRATEGY_ACTIONS = {
    BuiltinAction.RESTART_SERVICE,
    BuiltinAction.ROLLBACK,
    BuiltinAction.SCALE,
    BuiltinAction.FAILOVER,
    BuiltinAction.CIRCUIT_BREAK,
}


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TriggerDoc(_Doc):
    type: TriggerType
    threshold: float | None = Field(None, allow_inf_nan=False)
    duration: Seconds | None = Field(None, le=900)
    """At most the signal history Phoenix keeps (15 min)."""
    percentile: int | None = Field(None, ge=1, le=100)
    failure_type: FailureType | None = Field(None, alias="failureType")
    alert: Text | None = None


class StepDoc(_Doc):
    action: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    name: Text | None = None
    timeout: Seconds | None = Field(None, gt=0)
    condition: StepCondition = StepCondition.ALWAYS
    replicas: int | None = Field(None, ge=1, le=1000)
    seconds: Seconds | None = Field(None, le=86_400)
    url: Annotated[str, StringConstraints(max_length=2000)] | None = None
    method: Annotated[str, StringConstraints(pattern="^(GET|POST|PUT|PATCH|DELETE)$")] | None = None
    body: Annotated[str, StringConstraints(max_length=65536)] | None = None
    message: Annotated[str, StringConstraints(max_length=2000)] | None = None
    command: list[Annotated[str, StringConstraints(max_length=4096)]] | None = None


class PlaybookDoc(_Doc):
    name: Text
    service: str | None = None
    description: Annotated[str, StringConstraints(max_length=4000)] = ""
    status: PlaybookStatus = PlaybookStatus.ACTIVE
    priority: int = Field(0, ge=-1000, le=1000)
    triggers: list[TriggerDoc] = Field(min_length=1, max_length=50)
    steps: list[StepDoc] = Field(min_length=1, max_length=100)


_EXPECTED = {
    "type": [t.value for t in TriggerType],
    "condition": [c.value for c in StepCondition],
    "status": [s.value for s in PlaybookStatus],
    "failureType": [f.value for f in FailureType],
}


def problems_from(exc: ValidationError) -> list[Problem]:
    """Pydantic's errors as Problems whose messages say what was expected."""
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        field = str(loc[-1]) if loc else ""
        value = error.get("input")
        if error["type"] in ("enum", "literal_error") and field in _EXPECTED:
            message = f"unknown {field} {value!r}; expected one of {', '.join(_EXPECTED[field])}"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(Problem(problem_path(loc), message))
    return problems


def check_playbook(
    doc: PlaybookDoc,
    *,
    catalog: ServiceCatalog,
    recovery_timeout: float,
    allow_commands: bool,
) -> list[Problem]:
    """What the shape cannot say: references, limits, and what the API may not carry."""
    return _meaning(
        doc.service,
        list(enumerate(doc.triggers)),
        list(enumerate(doc.steps)),
        catalog=catalog,
        recovery_timeout=recovery_timeout,
        allow_commands=allow_commands,
    )


def _well_formed_parts(
    data: object,
) -> tuple[str | None, list[tuple[int, TriggerDoc]], list[tuple[int, StepDoc]]]:
    """The parts of a document with shape errors that are themselves well formed, so their
    meaning can be checked in the same pass."""
    if not isinstance(data, dict):
        return None, [], []
    service = data.get("service") if isinstance(data.get("service"), str) else None
    return service, _each(data.get("triggers"), TriggerDoc), _each(data.get("steps"), StepDoc)


def _each(items: object, model: type[M]) -> list[tuple[int, M]]:
    """Each list item that validates as ``model`` once its ill-formed fields are set aside,
    with its index."""
    found: list[tuple[int, M]] = []
    for index, item in enumerate(items if isinstance(items, list) else []):
        salvaged = _salvage(item, model)
        if salvaged is not None:
            found.append((index, salvaged))
    return found


def _salvage(item: object, model: type[M]) -> M | None:
    """``item`` as ``model`` without its ill-formed fields, so that the meaning of the rest
    (a step's unknown action beside its bad condition) is checked in the same answer; None
    when what is left is no ``model`` (a required field is missing or ill-formed)."""
    if not isinstance(item, dict):
        return None
    data = dict(item)
    while True:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            if not bad & data.keys():
                return None
            for key in bad:
                data.pop(key, None)


def _meaning(
    service: str | None,
    triggers: list[tuple[int, TriggerDoc]],
    steps: list[tuple[int, StepDoc]],
    *,
    catalog: ServiceCatalog,
    recovery_timeout: float,
    allow_commands: bool,
) -> list[Problem]:
    problems: list[Problem] = []
    bound = None
    if service is not None:
        if service in catalog:
            bound = catalog.get(service)
        else:
            known = ", ".join(s.name for s in catalog) or "none declared"
            problems.append(Problem("service", f"unknown service '{service}' (known: {known})"))
    for index, trigger in triggers:
        problems.extend(_check_trigger(trigger, f"triggers[{index}]"))
    builtins = {action.value for action in BuiltinAction}
    declared = set(bound.actions) if bound else {name for s in catalog for name in s.actions}
    for index, step in steps:
        where = f"steps[{index}]"
        if step.action not in builtins and step.action not in declared:
            owner = f"service '{bound.name}'" if bound else "any service"
            problems.append(
                Problem(
                    f"{where}.action",
                    f"unknown action '{step.action}': not a built-in action "
                    f"({', '.join(sorted(builtins))}) and not declared by {owner}",
                )
            )
        if step.action == BuiltinAction.RUN_COMMAND and not allow_commands:
            problems.append(
                Problem(
                    f"{where}.action",
                    "run_command is allowed only in playbooks loaded from the operator's files",
                )
            )
        problems.extend(_check_step_params(step, where))
        if step.timeout is not None and step.timeout > recovery_timeout:
            problems.append(
                Problem(
                    f"{where}.timeout",
                    f"{step.timeout:g}s exceeds RECOVERY_TIMEOUT ({recovery_timeout:g}s)",
                )
            )
        if index == 0 and step.condition in (
            StepCondition.IF_PREVIOUS_FAILED,
            StepCondition.IF_PREVIOUS_SUCCEEDED,
        ):
            problems.append(
                Problem(
                    f"{where}.condition",
                    f"{step.condition.value} on the first step has no previous step",
                )
            )
    return problems


def _check_trigger(trigger: TriggerDoc, where: str) -> list[Problem]:
    problems = []
    bounds = THRESHOLD_TRIGGERS.get(trigger.type)
    if bounds is not None:
        low, high, unit = bounds
        if trigger.threshold is None:
            problems.append(
                Problem(f"{where}.threshold", f"required for {trigger.type.value} ({unit})")
            )
        elif not low <= trigger.threshold <= high:
            problems.append(
                Problem(
                    f"{where}.threshold",
                    f"expected {unit} ({low:g} to {high:g}), got {trigger.threshold:g}",
                )
            )
    elif trigger.threshold is not None:
        problems.append(Problem(f"{where}.threshold", f"{trigger.type.value} takes no threshold"))
    if trigger.type is TriggerType.FAILURE_TYPE and trigger.failure_type is None:
        problems.append(Problem(f"{where}.failureType", "required for a failure_type trigger"))
    if trigger.type is TriggerType.ALERT and trigger.alert is None:
        problems.append(Problem(f"{where}.alert", "required: the Alertmanager alert name"))
    if trigger.percentile is not None and trigger.type is not TriggerType.LATENCY:
        problems.append(Problem(f"{where}.percentile", "only latency triggers take a percentile"))
    return problems


_PARAMS_OF: dict[str, set[str]] = {
    BuiltinAction.SCALE: {"replicas"},
    BuiltinAction.WAIT: {"seconds"},
    BuiltinAction.HTTP_REQUEST: {"url", "method", "body"},
    BuiltinAction.NOTIFY: {"message"},
    BuiltinAction.RUN_COMMAND: {"command"},
}
_REQUIRED_OF: dict[str, set[str]] = {
    BuiltinAction.WAIT: {"seconds"},
    BuiltinAction.HTTP_REQUEST: {"url"},
    BuiltinAction.RUN_COMMAND: {"command"},
}
_PARAM_FIELDS = ("replicas", "seconds", "url", "method", "body", "message", "command")


def _check_step_params(step: StepDoc, where: str) -> list[Problem]:
    allowed = _PARAMS_OF.get(step.action, set())
    problems = []
    for param in _PARAM_FIELDS:
        if getattr(step, param) is not None and param not in allowed:
            problems.append(
                Problem(f"{where}.{param}", f"not a parameter of action '{step.action}'")
            )
    for param in sorted(_REQUIRED_OF.get(step.action, set())):
        if getattr(step, param) is None:
            problems.append(Problem(f"{where}.{param}", f"required for action '{step.action}'"))
    return problems


def validate_playbook(
    data: object, *, catalog: ServiceCatalog, recovery_timeout: float, allow_commands: bool
) -> PlaybookDoc:
    """Shape and meaning together; InvalidRequestError (422) with every problem of both."""
    try:
        doc = PlaybookDoc.model_validate(data)
    except ValidationError as exc:
        service, triggers, steps = _well_formed_parts(data)
        meaning = _meaning(
            service,
            triggers,
            steps,
            catalog=catalog,
            recovery_timeout=recovery_timeout,
            allow_commands=allow_commands,
        )
        shape = problems_from(exc)
        reported = {problem.path for problem in shape}
        # A field whose shape is wrong is reported once, not again as "required".
        extra = [problem for problem in meaning if problem.path not in reported]
        raise InvalidRequestError("invalid playbook", shape + extra) from None
    problems = check_playbook(
        doc, catalog=catalog, recovery_timeout=recovery_timeout, allow_commands=allow_commands
    )
    if problems:
        raise InvalidRequestError("invalid playbook", problems)
    return doc


def to_playbook(
    doc: PlaybookDoc,
    *,
    playbook_id: str,
    created_at: datetime,
    updated_at: datetime,
    version: int,
    source: PlaybookSource,
) -> Playbook:
    return Playbook(
        id=playbook_id,
        name=doc.name,
        service=doc.service,
        description=doc.description,
        status=doc.status,
        priority=doc.priority,
        version=version,
        source=source,
        created_at=created_at,
        updated_at=updated_at,
        triggers=tuple(
            PlaybookTrigger(
                type=t.type,
                threshold=t.threshold,
                duration=t.duration,
                params={
                    key: value
                    for key, value in (
                        ("percentile", t.percentile),
                        ("failureType", t.failure_type.value if t.failure_type else None),
                        ("alert", t.alert),
                    )
                    if value is not None
                },
            )
            for t in doc.triggers
        ),
        steps=tuple(
            PlaybookStep(
                action=s.action,
                name=s.name,
                timeout=s.timeout,
                condition=s.condition,
                params={p: getattr(s, p) for p in _PARAM_FIELDS if getattr(s, p) is not None},
            )
            for s in doc.steps
        ),
    )


def to_document(playbook: Playbook) -> dict[str, Any]:
    """The playbook in the shape it was written (what the API returns and files hold)."""
    return {
        "name": playbook.name,
        "service": playbook.service,
        "description": playbook.description,
        "status": playbook.status.value,
        "priority": playbook.priority,
        "triggers": [
            {
                "type": t.type.value,
                **({"threshold": t.threshold} if t.threshold is not None else {}),
                **({"duration": t.duration} if t.duration is not None else {}),
                **dict(t.params),
            }
            for t in playbook.triggers
        ],
        "steps": [
            {
                "action": s.action,
                **({"name": s.name} if s.name else {}),
                **({"timeout": s.timeout} if s.timeout is not None else {}),
                "condition": s.condition.value,
                **dict(s.params),
            }
            for s in playbook.steps
        ],
    }
