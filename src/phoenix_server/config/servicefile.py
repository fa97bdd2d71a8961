"""The service file (YAML): what operators write, checked as a whole, turned into ServiceSpecs.

Unknown keys are refused (a typo must not silently become a default). Every problem is
reported, each located as ``services[0] (azora-auth).health.interval``, so one run of
``phoenix serve`` shows everything to fix.
"""

from __future__ import annotations

import hashlib
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import ConfigError, Problem
from phoenix_server.domain.playbooks import BuiltinAction
from phoenix_server.support.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]
_NAME_HINT = (
    "lowercase letters, digits, '.', '_' and '-', starting and ending with a letter or digit"
)


def _argv(value: object) -> object:
    """Commands are argument lists; a plain string is split like a shell would, without one."""
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(item) if isinstance(item, int | float) else item for item in value]
    return value


def _str_values(value: object) -> object:
    """Environment values written as YAML numbers or booleans become the strings a process sees."""
    if isinstance(value, dict):
        return {
            key: ("true" if item is True else "false" if item is False else str(item))
            if isinstance(item, int | float | bool)
            else item
            for key, item in value.items()
        }
    return value


Argv = Annotated[list[str], BeforeValidator(_argv), Field(min_length=1)]
Env = Annotated[dict[str, str], BeforeValidator(_str_values)]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpCheckDoc(_Doc):
    url: str
    method: Literal["GET", "HEAD", "POST"] = "GET"
    expect_status: tuple[int, int] = (200, 399)


class HealthDoc(_Doc):
    http: str | HttpCheckDoc | None = None
    tcp: str | None = None
    process: bool | None = None
    command: Argv | None = None
    interval: Seconds | None = Field(None, gt=0)
    timeout: Seconds | None = Field(None, gt=0)
    failure_threshold: int = Field(3, ge=1, le=100)
    success_threshold: int = Field(1, ge=1, le=100)
    startup_timeout: Seconds = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_check(self) -> HealthDoc:
        chosen = [
            name
            for name in ("http", "tcp", "process", "command")
            if getattr(self, name) not in (None, False)
        ]
        if len(chosen) > 1:
            raise ValueError(f"choose one of http, tcp, process, command; got {', '.join(chosen)}")
        if self.tcp is not None and ":" not in self.tcp:
            raise ValueError(f"tcp: expected 'host:port', got {self.tcp!r}")
        return self


class ReplicasDoc(_Doc):
    min: int = Field(1, ge=0, le=1000)
    max: int = Field(1, ge=1, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicasDoc:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class VersionDoc(_Doc):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    command: Argv | None = None
    env: Env = Field(default_factory=dict)
    cwd: str | None = None
    known_good: bool = False


class BackupDoc(_Doc):
    mode: Literal["hot", "cold"] = "hot"
    command: Argv | None = None
    env: Env = Field(default_factory=dict)


class HooksDoc(_Doc):
    data_migration: Argv | None = None
    data_sync: Argv | None = None
    consistency_check: Argv | None = None
    smoke: Argv | None = None


class HttpActionDoc(_Doc):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str
    body: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    expect_status: tuple[int, int] = (200, 299)


class ActionDoc(_Doc):
    http: HttpActionDoc


class FallbackDoc(_Doc):
    status: int = Field(503, ge=100, le=599)
    body: str = ""
    content_type: str = "text/plain"


class StopDoc(_Doc):
    signal: str = "SIGTERM"
    grace: Seconds = Field(10.0, ge=0)

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name not in signal.Signals.__members__:
            raise ValueError(f"unknown signal {value!r}; expected e.g. SIGTERM, SIGINT, SIGQUIT")
        return name


class BackoffDoc(_Doc):
    initial: Seconds = Field(1.0, gt=0)
    max: Seconds = Field(300.0, gt=0)
    reset_after: Seconds = Field(10.0, ge=0)


class BudgetDoc(_Doc):
    attempts: int = Field(10, ge=1, le=10_000)
    window: Seconds = Field(3600.0, gt=0)


class RecoveryDoc(_Doc):
    backoff: BackoffDoc = Field(default_factory=BackoffDoc)
    budget: BudgetDoc = Field(default_factory=BudgetDoc)


class ServiceDoc(_Doc):
    name: ServiceName
    platform: Literal["local", "external", "docker", "kubernetes"] = "local"
    command: Argv | None = None
    cwd: str | None = None
    env: Env = Field(default_factory=dict)
    port: int | None = Field(None, ge=1, le=65535)
    health: HealthDoc | None = None
    depends_on: list[str] = Field(default_factory=list)
    replicas: int | ReplicasDoc = 1
    versions: list[VersionDoc] = Field(default_factory=list)
    backup: BackupDoc | None = None
    hooks: HooksDoc = Field(default_factory=HooksDoc)
    actions: dict[str, ActionDoc] = Field(default_factory=dict)
    fallback: FallbackDoc | None = None
    stop: StopDoc = Field(default_factory=StopDoc)
    recovery: RecoveryDoc = Field(default_factory=RecoveryDoc)


class ServiceFileDoc(_Doc):
    services: list[ServiceDoc] = Field(default_factory=list)


def load_service_file(path: Path, *, default_interval: float) -> svc.ServiceCatalog:
    """Read, validate and convert ``path``; ConfigError lists every problem found."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_service_file(
        text, source=source, base_dir=path.parent.resolve(), default_interval=default_interval
    )


def parse_service_file(
    text: str, *, source: str, base_dir: Path, default_interval: float
) -> svc.ServiceCatalog:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem(where, f"not valid YAML: {problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [Problem("", "expected a mapping with a 'services' list")])
    try:
        doc = ServiceFileDoc.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, _problems_from(exc, raw)) from None
    problems = _check_whole_file(doc)
    if problems:
        raise ConfigError(source, problems)
    return svc.ServiceCatalog(
        [
            _to_spec(item, base_dir=base_dir, default_interval=default_interval)
            for item in doc.services
        ]
    )


def _where(raw: object, index: int) -> str:
    name = None
    if isinstance(raw, dict):
        items = raw.get("services")
        if isinstance(items, list) and index < len(items) and isinstance(items[index], dict):
            name = items[index].get("name")
    return f"services[{index}] ({name})" if name else f"services[{index}]"


def _problems_from(exc: ValidationError, raw: object) -> list[Problem]:
    problems = []
    for error in exc.errors():
        loc = list(error["loc"])
        parts: list[str] = []
        if len(loc) >= 2 and loc[0] == "services" and isinstance(loc[1], int):
            parts.append(_where(raw, loc[1]))
            loc = loc[2:]
        for item in loc:
            if isinstance(item, int):
                parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            elif item in {"str", "HttpCheckDoc", "int", "ReplicasDoc"}:
                continue  # pydantic's name for a union branch, meaningless to a user
            else:
                parts.append(str(item))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key (check its spelling against the README's service file reference)"
        elif error["type"] == "string_pattern_mismatch":
            message = f"expected {_NAME_HINT}, got {error.get('input')!r}"
        problems.append(Problem(".".join(parts), message))
    return _dedupe(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for problem in problems:
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


def _check_whole_file(doc: ServiceFileDoc) -> list[Problem]:
    """Checks that need more than one field: references, uniqueness, placeholders, platforms."""
    problems: list[Problem] = []
    names = [service.name for service in doc.services]
    ports: dict[int, str] = {}
    for index, service in enumerate(doc.services):
        where = f"services[{index}] ({service.name})"

        def add(path: str, message: str, where: str = where) -> None:
            problems.append(Problem(f"{where}.{path}" if path else where, message))

        if names.count(service.name) > 1 and names.index(service.name) != index:
            add("name", f"duplicate service name '{service.name}'")
        if service.port is not None:
            if service.port in ports:
                add("port", f"port {service.port} is already used by '{ports[service.port]}'")
            else:
                ports[service.port] = service.name
        for dep_index, dep in enumerate(service.depends_on):
            if dep == service.name:
                add(f"depends_on[{dep_index}]", "a service cannot depend on itself")
            elif dep not in names:
                add(f"depends_on[{dep_index}]", f"unknown service '{dep}'")
        if service.platform in ("docker", "kubernetes"):
            add(
                "platform",
                f"the {service.platform} platform is not available yet; use local or external",
            )
        if service.platform == "local" and not service.command:
            add("command", "required for a local service: the argument list that starts it")
        if service.platform == "external":
            if service.command:
                add("command", "an external service runs elsewhere; Phoenix does not start it")
            if service.health is None:
                add("health", "required for an external service: how Phoenix checks it")
            elif service.health.process:
                add("health.process", "an external service has no local process to watch")
        replicas = _replicas(service)
        if service.platform == "local" and replicas.max > 1:
            add(
                "replicas",
                "more than one replica needs Phoenix's traffic router, which this version "
                "does not have yet; use 1",
            )
        for name in service.actions:
            if name in BuiltinAction.__members__.values():
                add(f"actions.{name}", "shadows a built-in playbook action; choose another name")
        for path, template in _templates(service):
            for key in sorted(svc.placeholders_in(template) - svc.PLACEHOLDERS):
                add(
                    path,
                    f"unknown placeholder '{{{key}}}'; known: "
                    + ", ".join(f"{{{p}}}" for p in sorted(svc.PLACEHOLDERS)),
                )
            if "port" in svc.placeholders_in(template) and service.port is None:
                add(path, "uses {port} but the service declares no port")
    problems.extend(_cycles(doc))
    return problems


def _cycles(doc: ServiceFileDoc) -> list[Problem]:
    graph = {service.name: list(service.depends_on) for service in doc.services}
    state: dict[str, int] = {}
    problems: list[Problem] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, []):
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep) :], dep] if dep in trail else [name, dep]
                problems.append(
                    Problem(
                        f"services ({name}).depends_on", "dependency cycle: " + " -> ".join(cycle)
                    )
                )
            elif dep in graph and state.get(dep) is None:
                visit(dep, [*trail, dep])
        state[name] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [name])
    return problems


def _templates(service: ServiceDoc) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for i, arg in enumerate(service.command or []):
        found.append((f"command[{i}]", arg))
    for key, value in service.env.items():
        found.append((f"env.{key}", value))
    if service.cwd:
        found.append(("cwd", service.cwd))
    health = service.health
    if health is not None:
        if isinstance(health.http, str):
            found.append(("health.http", health.http))
        elif health.http is not None:
            found.append(("health.http.url", health.http.url))
        if health.tcp:
            found.append(("health.tcp", health.tcp))
        for i, arg in enumerate(health.command or []):
            found.append((f"health.command[{i}]", arg))
    for name, action in service.actions.items():
        found.append((f"actions.{name}.http.url", action.http.url))
    for vi, version in enumerate(service.versions):
        for i, arg in enumerate(version.command or []):
            found.append((f"versions[{vi}].command[{i}]", arg))
    return found


def _replicas(service: ServiceDoc) -> ReplicasDoc:
    if isinstance(service.replicas, int):
        return ReplicasDoc(min=service.replicas, max=max(1, service.replicas))
    return service.replicas


def _health(service: ServiceDoc, default_interval: float) -> svc.HealthPolicy:
    doc = service.health or HealthDoc()
    check: svc.Check
    if isinstance(doc.http, str):
        check = svc.HttpCheck(url=doc.http)
    elif doc.http is not None:
        check = svc.HttpCheck(doc.http.url, doc.http.method, doc.http.expect_status)
    elif doc.tcp is not None:
        check = svc.TcpCheck(doc.tcp)
    elif doc.command is not None:
        check = svc.CommandCheck(tuple(doc.command))
    elif doc.process or service.port is None:
        check = svc.ProcessCheck()
    else:
        # A local service with a port and no declared check: its port opening is the signal.
        check = svc.TcpCheck("127.0.0.1:{port}")
    interval = doc.interval or default_interval
    return svc.HealthPolicy(
        check=check,
        interval=interval,
        timeout=doc.timeout or min(interval, 5.0),
        failure_threshold=doc.failure_threshold,
        success_threshold=doc.success_threshold,
        startup_timeout=doc.startup_timeout,
    )


def _to_spec(service: ServiceDoc, *, base_dir: Path, default_interval: float) -> svc.ServiceSpec:
    cwd = str((base_dir / service.cwd).resolve()) if service.cwd else str(base_dir)
    replicas = _replicas(service)
    hooks = {
        name: tuple(argv) for name, argv in service.hooks.model_dump().items() if argv is not None
    }
    digest = hashlib.sha256(
        (service.model_dump_json() + "\0" + cwd + "\0" + sys.executable).encode()
    ).hexdigest()[:16]
    return svc.ServiceSpec(
        name=service.name,
        platform=svc.PlatformKind(service.platform),
        health=_health(service, default_interval),
        command=tuple(service.command or ()),
        cwd=cwd,
        env=dict(service.env),
        port=service.port,
        depends_on=tuple(service.depends_on),
        replicas=svc.Replicas(min=replicas.min, max=replicas.max),
        versions=tuple(
            svc.Version(
                name=v.name,
                command=tuple(v.command) if v.command else None,
                env=dict(v.env),
                cwd=str((base_dir / v.cwd).resolve()) if v.cwd else None,
                known_good=v.known_good,
            )
            for v in service.versions
        ),
        backup=svc.Backup(
            service.backup.mode,
            tuple(service.backup.command) if service.backup.command else None,
            dict(service.backup.env),
        )
        if service.backup
        else None,
        hooks=hooks,
        actions={
            name: svc.HttpAction(
                method=action.http.method,
                url=action.http.url,
                body=action.http.body,
                headers=dict(action.http.headers),
                expect_status=action.http.expect_status,
            )
            for name, action in service.actions.items()
        },
        fallback=svc.Fallback(**service.fallback.model_dump()) if service.fallback else None,
        stop=svc.StopPolicy(
            signal=int(signal.Signals[service.stop.signal]), grace=service.stop.grace
        ),
        recovery=svc.RecoveryPolicy(
            backoff=svc.Backoff(**service.recovery.backoff.model_dump()),
            budget=svc.Budget(**service.recovery.budget.model_dump()),
        ),
        config_hash=digest,
    )
