"""The service file (YAML): what operators write, checked as a whole, turned into ServiceSpecs.

Unknown keys are refused (a typo must not silently become a default). Every problem is
reported, each located as ``services[0] (azora-auth).health.interval``, so one run of
``phoenix serve`` shows everything to fix.

Scalar values may name environment variables, ``${NAME}`` or ``${NAME:-default}`` (``$$`` is
a literal ``$``), as Compose files do; they are filled in on the parsed YAML, never on its
text, so a variable's value can change a value but never the file's structure. A top-level
``port_offset`` shifts every service's ``port``, so one variable can move a whole fleet.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import signal
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from phoenix_server.config.engines import parse_engines
from phoenix_server.config.kubernetes import (
    KubernetesDoc,
    kubernetes_problems,
    parse_cluster,
    workload,
)
from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import ConfigError, Problem
from phoenix_server.domain.playbooks import BuiltinAction
from phoenix_server.support.durations import parse_duration
from phoenix_server.support.sizes import parse_size

Seconds = Annotated[float, BeforeValidator(parse_duration)]
Bytes = Annotated[int, BeforeValidator(parse_size)]
ServiceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")]
_UNKNOWN_KEY = "unknown key (check its spelling against docs/configuration.md)"
_TOP_LEVEL_KEYS = ("services", "port_offset", "docker_engines", "kubernetes_cluster")
_MAX_PORT = 65535
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


def _url_mapping(value: object) -> object:
    """``http: "http://…"`` is shorthand for ``http: {url: "http://…"}``."""
    return {"url": value} if isinstance(value, str) else value


def _replicas_mapping(value: object) -> object:
    """``replicas: 3`` is shorthand for ``replicas: {min: 3, max: 3}``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"min": value, "max": max(1, value)}
    return value


class HealthDoc(_Doc):
    http: Annotated[HttpCheckDoc, BeforeValidator(_url_mapping)] | None = None
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
    step: int = Field(1, ge=1, le=100)
    scale_in_below: float = Field(1.0, ge=0)
    scale_in_after: Seconds = Field(300.0, gt=0)

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
    image: str | None = Field(None, min_length=1, max_length=512)
    """A docker version's image (default: the service's)."""


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
    upstream: str | None = None
    """``host:port`` of a service that answers instead (a static copy, a degraded mode)."""


class StopDoc(_Doc):
    signal: str = "SIGTERM"
    grace: Seconds = Field(10.0, ge=0)
    drain: Seconds = Field(10.0, ge=0)

    @field_validator("signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        name = value.upper()
        name = name if name.startswith("SIG") else f"SIG{name}"
        if name not in signal.Signals.__members__:
            raise ValueError(f"unknown signal {value!r}; expected e.g. SIGTERM, SIGINT, SIGQUIT")
        return name


class CircuitDoc(_Doc):
    open_for: Seconds = Field(10.0, ge=0)
    steps: list[Annotated[float, Field(gt=0, le=100)]] = Field(
        default_factory=lambda: [10.0, 25.0, 50.0, 100.0], min_length=1, max_length=20
    )
    """Percentages of traffic let through while half-open; the last must be 100."""
    hold: Seconds = Field(5.0, ge=0)
    queue_timeout: Seconds = Field(2.0, ge=0, le=300)

    @field_validator("steps")
    @classmethod
    def _rising_to_all(cls, steps: list[float]) -> list[float]:
        if steps != sorted(steps) or steps[-1] != 100:
            raise ValueError("expected rising percentages ending at 100, e.g. [10, 25, 50, 100]")
        return steps


class ResourcesDoc(_Doc):
    nice: int | None = Field(None, ge=-20, le=19)
    cpus: list[Annotated[int, Field(ge=0, le=4095)]] | None = Field(None, min_length=1)
    memory_max: Bytes | None = None
    open_files: int | None = Field(None, ge=16, le=1_048_576)

    @field_validator("cpus")
    @classmethod
    def _existing_cpus(cls, cpus: list[int] | None) -> list[int] | None:
        if cpus is None:
            return None
        usable = sorted(os.sched_getaffinity(0))
        missing = sorted(set(cpus) - set(usable))
        if missing:
            raise ValueError(
                f"CPU(s) {', '.join(map(str, missing))} not available here; "
                f"usable: {', '.join(map(str, usable))}"
            )
        return sorted(set(cpus))


class RuleDoc(_Doc):
    above: float = Field(ge=0)
    for_: Seconds = Field(alias="for", ge=0, le=3600)
    hysteresis: float = Field(0.2, ge=0, lt=1)


class LatencyRuleDoc(RuleDoc):
    above: Seconds = Field(gt=0)
    """A duration (``2s``, ``500ms``); the metric is in milliseconds."""


class MemoryDoc(_Doc):
    leak_window: Seconds = Field(60.0, ge=5, le=900)
    min_growth: float = Field(0.1, gt=0, le=10)
    limit: Bytes | None = None


class AnomalyDoc(_Doc):
    threshold: float = Field(0.5, gt=0, le=1)
    incidents: bool = False
    hold: Seconds = Field(30.0, ge=0, le=3600)


class MetricsDoc(_Doc):
    prometheus: str
    every: Seconds = Field(5.0, ge=0.5, le=3600)
    names: list[Annotated[str, StringConstraints(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")]] | None = (
        Field(None, min_length=1, max_length=64)
    )


class DetectionDoc(_Doc):
    error_rate: RuleDoc = Field(default_factory=lambda: RuleDoc(above=0.1, **{"for": 10.0}))
    latency_p99: LatencyRuleDoc = Field(
        default_factory=lambda: LatencyRuleDoc(above=2.0, **{"for": 30.0})
    )
    cpu: RuleDoc = Field(default_factory=lambda: RuleDoc(above=90.0, **{"for": 15.0}))
    throughput: RuleDoc | None = None
    memory: MemoryDoc = Field(default_factory=MemoryDoc)
    min_requests: int = Field(20, ge=1, le=1_000_000)
    anomaly: AnomalyDoc = Field(default_factory=AnomalyDoc)

    @model_validator(mode="after")
    def _fractions(self) -> DetectionDoc:
        if self.error_rate.above > 1:
            raise ValueError("error_rate.above is a share of requests, 0 to 1")
        return self


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
    stabilisation: Seconds | None = Field(None, ge=0, le=86_400)
    """How long a recovered service must stay healthy for the recovery to be a success
    (default: ``backoff.reset_after``)."""


def _volume(value: str) -> str:
    """``source:target[:ro|rw]``: a host path or a volume name, then an absolute path."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValueError(f"expected source:target[:ro], got {value!r}")
    if not parts[1].startswith("/"):
        raise ValueError(f"the target must be a path in the container, got {parts[1]!r}")
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        raise ValueError(f"the mode must be ro or rw, got {parts[2]!r}")
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(key for key in value if key.startswith("phoenix."))
    if reserved:
        raise ValueError(f"labels phoenix.* are Phoenix's own: {', '.join(reserved)}")
    return value


class HealthcheckDoc(_Doc):
    command: Argv = Field(min_length=1)
    interval: Seconds = Field(30.0, gt=0)
    timeout: Seconds = Field(30.0, gt=0)
    retries: int = Field(3, ge=1, le=100)
    start_period: Seconds = Field(0.0, ge=0)


class ContainerDoc(_Doc):
    """How Phoenix creates a docker service's containers, beyond image, command and env."""

    volumes: list[Annotated[str, AfterValidator(_volume)]] = Field(default_factory=list)
    labels: Annotated[dict[str, str], AfterValidator(_labels)] = Field(default_factory=dict)
    user: str | None = Field(None, min_length=1, max_length=64)
    healthcheck: HealthcheckDoc | None = None


class AdoptDoc(_Doc):
    label: str | None = Field(None, pattern=r"^[^=\s]+=[^\s]*$", max_length=512)
    """``key=value``: the containers carrying this label."""
    compose_project: str | None = Field(None, min_length=1, max_length=256)
    compose_service: str | None = Field(None, min_length=1, max_length=256)


class ServiceDoc(_Doc):
    name: ServiceName
    platform: Literal["local", "external", "docker", "kubernetes"] = "local"
    image: str | None = Field(None, min_length=1, max_length=512)
    """``platform: docker``: the image its containers run (a tag or ``name@sha256:…``)."""
    adopt: AdoptDoc | None = None
    """``platform: docker``: take over containers that already run instead of an image."""
    engine: str | None = None
    """``platform: docker``: the name of one of the file's ``docker_engines`` (default: the
    engine at ``DOCKER_HOST``)."""
    init: bool = False
    """``platform: docker``: Docker's init runs as the container's process 1."""
    container: ContainerDoc | None = None
    """``platform: docker``: volumes, labels, user and a healthcheck of its containers."""
    kubernetes: KubernetesDoc | None = None
    """``platform: kubernetes``: the workload that runs it and the objects around it."""
    replica: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
    """With several replicas (``PHOENIX_CLUSTER``): the one that owns this service, by its
    installation id — the replica on the machine a local service runs on. None: any."""
    command: Argv | None = None
    cwd: str | None = None
    env: Env = Field(default_factory=dict)
    port: int | None = Field(None, ge=1, le=65535)
    host: str = "127.0.0.1"
    router: bool | None = None
    zero_downtime: bool = False
    """Restart by starting the replacement first (routed services)."""
    health: HealthDoc | None = None
    depends_on: list[str] = Field(default_factory=list)
    replicas: Annotated[ReplicasDoc, BeforeValidator(_replicas_mapping)] = Field(
        default_factory=ReplicasDoc
    )
    versions: list[VersionDoc] = Field(default_factory=list)
    version: str | None = None
    """The version a fresh installation runs (default: the newest declared)."""
    known_good_after: Seconds = Field(300.0, ge=0)
    backup: BackupDoc | None = None
    hooks: HooksDoc = Field(default_factory=HooksDoc)
    actions: dict[str, ActionDoc] = Field(default_factory=dict)
    fallback: FallbackDoc | None = None
    stop: StopDoc = Field(default_factory=StopDoc)
    resources: ResourcesDoc = Field(default_factory=ResourcesDoc)
    detection: DetectionDoc = Field(default_factory=DetectionDoc)
    metrics: MetricsDoc | None = None
    recovery: RecoveryDoc = Field(default_factory=RecoveryDoc)
    circuit: CircuitDoc = Field(default_factory=CircuitDoc)


def load_service_file(
    path: Path, *, default_interval: float, environ: Mapping[str, str] | None = None
) -> svc.ServiceCatalog:
    """Read, validate and convert ``path``; ConfigError lists every problem found.
    ``${NAME}`` references are filled from ``environ`` (default: the process environment)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [Problem("", f"cannot read the file: {exc.strerror}")]) from None
    return parse_service_file(
        text,
        source=source,
        base_dir=path.parent.resolve(),
        default_interval=default_interval,
        environ=environ,
    )


def parse_service_file(
    text: str,
    *,
    source: str,
    base_dir: Path,
    default_interval: float,
    environ: Mapping[str, str] | None = None,
) -> svc.ServiceCatalog:
    raw = _load_yaml(text, source, os.environ if environ is None else environ)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(source, [Problem("", "expected a mapping with a 'services' list")])
    problems = [Problem(str(key), _UNKNOWN_KEY) for key in raw if key not in _TOP_LEVEL_KEYS]
    offset, offset_problem = _port_offset(raw.get("port_offset", 0))
    if offset_problem is not None:
        problems.append(offset_problem)
    engines, engine_problems = parse_engines(raw.get("docker_engines"), base_dir)
    problems.extend(engine_problems)
    cluster, cluster_problems = parse_cluster(raw.get("kubernetes_cluster"), base_dir)
    problems.extend(cluster_problems)
    items = raw.get("services") or []
    if not isinstance(items, list):
        raise ConfigError(source, [Problem("services", "expected a list of services")])
    # Each service is checked on its own, so one broken service does not hide the
    # problems of the others, nor the whole-file checks below.
    valid: list[tuple[int, ServiceDoc]] = []
    for index, item in enumerate(items):
        try:
            doc = ServiceDoc.model_validate(item)
        except ValidationError as exc:
            problems.extend(_problems_from(exc, _where(item, index)))
            continue
        shifted, port_problem = _shift_port(doc, offset, _where(item, index))
        if port_problem is not None:
            problems.append(port_problem)
        else:
            valid.append((index, shifted))
    declared = [
        item["name"]
        for item in items
        if isinstance(item, dict) and isinstance(item.get("name"), str)
    ]
    valid_indexes = {index for index, _ in valid}
    for index, item in enumerate(items):
        if index not in valid_indexes:
            problems.extend(_dangling_references(item, _where(item, index), declared))
    problems.extend(_check_whole_file(valid, declared))
    declared_engines = raw.get("docker_engines") or {}
    for index, doc in valid:
        if doc.engine is None:
            continue
        where = f"services[{index}] ({doc.name}).engine"
        if doc.platform != "docker":
            problems.append(Problem(where, "only a docker service runs on a Docker engine"))
        elif doc.engine not in declared_engines:  # (a declared one's problems are its own)
            known = ", ".join(engines) or "none declared"
            message = f"unknown engine '{doc.engine}'; docker_engines: {known}"
            problems.append(Problem(where, message))
        elif doc.engine in engines and not engines[doc.engine].on_this_host:
            for key, asks in (
                ("router", doc.router is True),
                ("replicas", doc.replicas.max > 1),
                ("zero_downtime", doc.zero_downtime),
                ("fallback", doc.fallback is not None),
            ):
                if asks:
                    problems.append(
                        Problem(
                            f"services[{index}] ({doc.name}).{key}",
                            f"needs Phoenix's router, which runs on Phoenix's machine: the "
                            f"containers of engine '{doc.engine}' run on another host and "
                            "serve their port themselves",
                        )
                    )
    if problems:
        raise ConfigError(source, _dedupe(problems))
    return svc.ServiceCatalog(
        [
            _in_cluster(
                _on_engine(
                    _to_spec(doc, base_dir=base_dir, default_interval=default_interval),
                    engines.get(doc.engine) if doc.engine else None,
                ),
                doc,
                cluster,
            )
            for _, doc in valid
        ]
    )


# --- environment variables and the port offset --------------------------------------------

_REFERENCE = re.compile(r"\$(?:\$|\{(?P<body>[^}]*)\}|(?P<open>\{))")
_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_STR_TAG = "tag:yaml.org,2002:str"


def _load_yaml(text: str, source: str, environ: Mapping[str, str]) -> object:
    """Parse ``text``, filling ``${NAME}`` references in scalar values from ``environ``.

    The expansion works on the composed node tree so that each problem can name its line, and
    so that a plain (unquoted) scalar is typed after expansion as YAML would type it:
    ``replicas: ${N:-2}`` is the number 2, ``"${N:-2}"`` stays the string "2"."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems: list[Problem] = []
        _expand_node(node, loader, environ, problems, seen=set())
        if problems:
            raise ConfigError(source, problems)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem(where, f"not valid YAML: {problem}")]) from None
    finally:
        loader.dispose()


def _expand_node(
    node: yaml.Node,
    loader: yaml.SafeLoader,
    environ: Mapping[str, str],
    problems: list[Problem],
    seen: set[int],
) -> None:
    # An alias is the same node object as its anchor: expanding it twice would expand a
    # literal "$${X}" (now "${X}") a second time.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        if "$" not in node.value:
            return
        mark = node.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        expanded = _expand(node.value, environ, where, problems)
        if expanded != node.value:
            node.value = expanded
            # An empty value stays the empty string rather than becoming YAML's null.
            if node.style is None and node.tag == _STR_TAG and expanded:
                node.tag = _implicit_tag(loader, expanded)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _expand_node(item, loader, environ, problems, seen)
    elif isinstance(node, yaml.MappingNode):
        for _key, value in node.value:  # keys are names Phoenix defines: never expanded
            _expand_node(value, loader, environ, problems, seen)


def _implicit_tag(loader: yaml.SafeLoader, value: str) -> str:
    """The tag YAML gives ``value`` written as a plain scalar (int, float, bool, str, ...)."""
    resolve = cast(Callable[[type[yaml.Node], str, tuple[bool, bool]], str], loader.resolve)
    return resolve(yaml.ScalarNode, value, (True, False))


def _expand(value: str, environ: Mapping[str, str], where: str, problems: list[Problem]) -> str:
    """``value`` with every ``${NAME}`` / ``${NAME:-default}`` filled and ``$$`` made ``$``.
    An unset variable without a default or a malformed reference is a problem at ``where``."""

    def fill(match: re.Match[str]) -> str:
        if match.group("open") is not None:
            problems.append(Problem(where, "'${' without a closing '}' (write $$ for a literal $)"))
            return match.group(0)
        body = match.group("body")
        if body is None:
            return "$"
        reference = _BODY.fullmatch(body)
        if reference is None:
            problems.append(
                Problem(
                    where,
                    f"invalid variable reference '${{{body}}}': expected ${{NAME}} or "
                    "${NAME:-default}, NAME of letters, digits and '_' (write $$ for a literal $)",
                )
            )
            return match.group(0)
        name, default = reference.group("name"), reference.group("default")
        found = environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                problems.append(
                    Problem(
                        where,
                        f"environment variable {name} is not set and has no default "
                        f"(set it, or write ${{{name}:-value}})",
                    )
                )
                return match.group(0)
            return default
        return found

    return _REFERENCE.sub(fill, value)


def _port_offset(value: object) -> tuple[int, Problem | None]:
    """The declared ``port_offset`` (a whole number, 0 or more), or 0 and why it is wrong."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    if number is None:
        message = f"expected a whole number of ports (0 or more), got {value!r}"
        return 0, Problem("port_offset", message)
    if number < 0:
        return 0, Problem("port_offset", f"must be 0 or more, got {number}")
    if number >= _MAX_PORT:
        return 0, Problem("port_offset", f"must be less than {_MAX_PORT}, got {number}")
    return number, None


def _shift_port(doc: ServiceDoc, offset: int, where: str) -> tuple[ServiceDoc, Problem | None]:
    """``doc`` with its ``port`` moved by ``offset``; a port shifted past 65535 is a problem."""
    if doc.port is None or offset == 0:
        return doc, None
    port = doc.port + offset
    if port > _MAX_PORT:
        message = (
            f"{doc.port} + port_offset {offset} = {port}, over the highest port {_MAX_PORT}; "
            "lower port_offset or this port"
        )
        return doc, Problem(f"{where}.port", message)
    return doc.model_copy(update={"port": port}), None


def parse_registry_entry(
    item: object,
    *,
    index: int,
    dependencies: Collection[str],
    base_dir: Path,
    default_interval: float,
) -> svc.ServiceSpec:
    """One service of the service registry, written as a service-file entry (as JSON) and
    checked as the file's are. It may depend only on ``dependencies``. ConfigError lists its
    problems, located as ``services[3] (billing).health``."""
    where = _where(item, index)
    try:
        doc = ServiceDoc.model_validate(item)
    except ValidationError as exc:
        raise ConfigError(where, _dedupe(_problems_from(exc, where))) from None
    problems = _check_whole_file([(index, doc)], [*dependencies, doc.name])
    if problems:
        raise ConfigError(where, _dedupe(problems))
    spec = _to_spec(doc, base_dir=base_dir, default_interval=default_interval)
    return replace(spec, origin=svc.ServiceOrigin.REGISTRY)


def _where(item: object, index: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"services[{index}] ({name})" if isinstance(name, str) and name else f"services[{index}]"


def _dangling_references(item: object, where: str, declared: list[str]) -> list[Problem]:
    """``depends_on`` names of a service that failed its own checks, checked anyway."""
    deps = item.get("depends_on") if isinstance(item, dict) else None
    if not isinstance(deps, list):
        return []
    return [
        Problem(f"{where}.depends_on[{i}]", f"unknown service '{dep}'")
        for i, dep in enumerate(deps)
        if isinstance(dep, str) and dep not in declared
    ]


def _problems_from(exc: ValidationError, where: str) -> list[Problem]:
    problems = []
    for error in exc.errors():
        parts = [where]
        for item in error["loc"]:
            if isinstance(item, int):
                parts[-1] = f"{parts[-1]}[{item}]"
            else:
                parts.append(str(item))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = _UNKNOWN_KEY
        elif error["type"] == "string_pattern_mismatch":
            message = f"expected {_NAME_HINT}, got {error.get('input')!r}"
        problems.append(Problem(".".join(parts), message))
    return problems


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    out = []
    for problem in problems:
        key = (problem.path, problem.message)
        if key not in seen:
            seen.add(key)
            out.append(problem)
    return out


def _check_whole_file(valid: list[tuple[int, ServiceDoc]], names: list[str]) -> list[Problem]:
    """Checks that need more than one field: references, uniqueness, placeholders, platforms.
    ``names`` are all declared names, including those of services with shape errors."""
    problems: list[Problem] = []
    ports: dict[int, str] = {}
    seen: set[str] = set()
    for index, service in valid:
        where = f"services[{index}] ({service.name})"

        def add(path: str, message: str, where: str = where) -> None:
            problems.append(Problem(f"{where}.{path}" if path else where, message))

        if service.name in seen:
            add("name", f"duplicate service name '{service.name}'")
        seen.add(service.name)
        # Only ports Phoenix serves on this machine can clash; external services (and a
        # cluster's pods) listen elsewhere, several of them on one port of one server.
        if service.port is not None and service.platform in ("local", "docker"):
            if service.port in ports:
                add("port", f"port {service.port} is already used by '{ports[service.port]}'")
            else:
                ports[service.port] = service.name
        for dep_index, dep in enumerate(service.depends_on):
            if dep == service.name:
                add(f"depends_on[{dep_index}]", "a service cannot depend on itself")
            elif dep not in names:
                add(f"depends_on[{dep_index}]", f"unknown service '{dep}'")
        for path, message in kubernetes_problems(service):
            add(path, message)
        if service.platform == "docker":
            problems.extend(_docker_problems(service, where))
        elif service.platform != "kubernetes":
            if service.image is not None:
                add("image", "only a docker service runs an image (set platform: docker)")
            if service.adopt is not None:
                add("adopt", "only a docker service adopts containers (set platform: docker)")
            if service.init:
                add("init", "only a docker service's container has Docker's init")
            if service.container is not None:
                add("container", "only a docker service has containers (set platform: docker)")
        if service.platform == "local" and not service.command:
            add("command", "required for a local service: the argument list that starts it")
        if service.platform == "docker":
            if service.resources.nice is not None:
                add("resources.nice", "niceness applies to the processes of a local service")
            if service.adopt is not None and service.resources != ResourcesDoc():
                add("resources", "Phoenix does not change the resources of a container it adopts")
        elif service.platform != "local" and service.resources != ResourcesDoc():
            add("resources", "resources apply to the processes of a local service only")
        if service.platform == "external":
            if service.command:
                add("command", "an external service runs elsewhere; Phoenix does not start it")
            if service.health is None:
                add("health", "required for an external service: how Phoenix checks it")
            elif service.health.process:
                add("health.process", "an external service has no local process to watch")
            elif not (service.health.http or service.health.tcp or service.health.command):
                add("health", "an external service needs a check: http, tcp or command")
        replicas = service.replicas
        if service.router and service.port is None:
            add("router", "a router needs the service's public port: set port")
        if service.fallback is not None and not _routed(service):
            add("fallback", "a fallback is served by Phoenix's router: declare a port")
        if service.zero_downtime and not _routed(service):
            add(
                "zero_downtime",
                "starting the replacement first needs Phoenix's router to switch traffic: "
                "declare a port on a service Phoenix runs (and do not set router: false)",
            )
        if service.router and not _may_route(service):
            add(
                "router",
                "only services Phoenix runs (local commands, docker images) have its router",
            )
        if _may_route(service) and replicas.max > 1 and not _routed(service):
            add(
                "replicas",
                "more than one replica needs Phoenix's router in front of them: "
                "declare a port (and do not set router: false)",
            )
        version_names: set[str] = set()
        for version_index, version in enumerate(service.versions):
            if version.name in version_names:
                add(f"versions[{version_index}].name", f"duplicate version '{version.name}'")
            version_names.add(version.name)
            where = f"versions[{version_index}]"
            if version.image is not None and service.platform not in ("docker", "kubernetes"):
                add(f"{where}.image", "only a docker or kubernetes version runs an image")
            if version.cwd is not None and service.platform == "docker":
                add(f"{where}.cwd", "a container's working directory is the image's")
        if service.version is not None and service.version not in version_names:
            declared = ", ".join(dict.fromkeys(v.name for v in service.versions)) or "none"
            add("version", f"unknown version '{service.version}'; declared: {declared}")
        if service.versions and service.platform == "external":
            add("versions", "Phoenix deploys versions only of services it runs")
        for name in service.actions:
            if name in BuiltinAction.__members__.values():
                add(f"actions.{name}", "shadows a built-in playbook action; choose another name")
        for path, message in _address_problems(service):
            add(path, message)
        for path, template in _templates(service):
            for key in sorted(svc.placeholders_in(template) - svc.PLACEHOLDERS):
                add(
                    path,
                    f"unknown placeholder '{{{key}}}'; known: "
                    + ", ".join(f"{{{p}}}" for p in sorted(svc.PLACEHOLDERS))
                    + " (write {{ and }} for literal braces)",
                )
            if (
                "port" in svc.placeholders_in(template)
                and service.port is None
                and service.platform != "kubernetes"  # a pod's port: kubernetes.port or its own
            ):
                add(path, "uses {port} but the service declares no port")
    problems.extend(_cycles(valid))
    return problems


_SAMPLE = svc.RenderContext(name="x", python="x", port=1, version="x", instance="x")


def _address_problems(service: ServiceDoc) -> list[tuple[str, str]]:
    """URLs and host:port addresses that cannot work once their placeholders are filled."""
    found: list[tuple[str, str]] = []
    urls = [(f"actions.{n}.http.url", a.http.url) for n, a in service.actions.items()]
    if service.metrics is not None:
        urls.append(("metrics.prometheus", service.metrics.prometheus))
    if service.health is not None and service.health.http is not None:
        urls.append(("health.http", service.health.http.url))
    for path, template in urls:
        parts = urlsplit(svc.render(template, _SAMPLE))
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError as exc:
            found.append((path, f"invalid port in {template!r}: {exc}"))
            continue
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(
                (path, f"expected an http:// or https:// URL with a host, got {template!r}")
            )
    if service.fallback is not None and service.fallback.upstream is not None:
        upstream = service.fallback.upstream
        host, _, port = upstream.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            found.append(("fallback.upstream", f"expected host:port, got {upstream!r}"))
        elif (
            service.port is not None
            and int(port) == service.port
            and host
            in (
                service.host,
                "localhost",
                "127.0.0.1",
            )
        ):
            found.append(("fallback.upstream", "is the service's own public port"))
    if service.health is not None and service.health.tcp is not None:
        host, _, port = svc.render(service.health.tcp, _SAMPLE).rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            found.append(
                (
                    "health.tcp",
                    f"expected host:port with a port 1-65535, got {service.health.tcp!r}",
                )
            )
    return found


def _cycles(valid: list[tuple[int, ServiceDoc]]) -> list[Problem]:
    # Self-dependencies are reported on their own above; they are not cycles to trace here.
    graph = {s.name: [d for d in s.depends_on if d != s.name] for _, s in valid}
    index_of = {s.name: i for i, s in valid}
    state: dict[str, int] = {}
    problems: list[Problem] = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for dep in graph.get(name, []):
            if state.get(dep) == 1:
                cycle = [*trail[trail.index(dep) :], dep] if dep in trail else [name, dep]
                problems.append(
                    Problem(
                        f"services[{index_of[name]}] ({name}).depends_on",
                        "dependency cycle: " + " -> ".join(cycle),
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
        if health.http is not None:
            found.append(("health.http", health.http.url))
        if health.tcp:
            found.append(("health.tcp", health.tcp))
        for i, arg in enumerate(health.command or []):
            found.append((f"health.command[{i}]", arg))
    for name, action in service.actions.items():
        found.append((f"actions.{name}.http.url", action.http.url))
    if service.metrics is not None:
        found.append(("metrics.prometheus", service.metrics.prometheus))
    for vi, version in enumerate(service.versions):
        for i, arg in enumerate(version.command or []):
            found.append((f"versions[{vi}].command[{i}]", arg))
        for key, value in version.env.items():
            found.append((f"versions[{vi}].env.{key}", value))
        if version.cwd:
            found.append((f"versions[{vi}].cwd", version.cwd))
    for hook, argv in service.hooks.model_dump().items():
        for i, arg in enumerate(argv or []):
            found.append((f"hooks.{hook}[{i}]", arg))
    if service.backup is not None:
        for i, arg in enumerate(service.backup.command or []):
            found.append((f"backup.command[{i}]", arg))
        for key, value in service.backup.env.items():
            found.append((f"backup.env.{key}", value))
    return found


DOCKER_NOT_YET = "not available for docker services yet"


def _docker_problems(service: ServiceDoc, where: str) -> list[Problem]:
    """What a docker service declares that this version cannot do for it (yet)."""
    problems: list[Problem] = []

    def add(path: str, message: str) -> None:
        problems.append(Problem(f"{where}.{path}", message))

    adopt = service.adopt
    if adopt is not None:
        compose = (adopt.compose_project, adopt.compose_service)
        if (adopt.label is None) == (None in compose):
            add(
                "adopt",
                "name the containers to take over with label: 'key=value', or with both "
                "compose_project and compose_service",
            )
        for field_name in ("image", "command"):
            if getattr(service, field_name):
                add(field_name, "Phoenix does not create or change a container it adopts")
        if service.container is not None:
            add("container", "Phoenix does not create or change a container it adopts")
        if service.env or service.init:
            add(
                "env" if service.env else "init",
                "Phoenix does not create or change a container it adopts",
            )
    elif service.image is None:
        add("image", "required for a docker service: the image its containers run")
    if service.cwd is not None:
        add("cwd", "a container's working directory is the image's; cwd is for local services")
    if adopt is not None and service.replicas.max > 1:
        add("replicas", "Phoenix runs no more containers of a service it adopts than it found")
    if adopt is not None and service.fallback is not None:
        add("fallback", "a fallback is served by Phoenix's router, which adopted containers lack")
    if adopt is not None and service.versions:
        add("versions", "Phoenix does not change the image of a container it adopts")
    if adopt is not None and service.backup is not None:
        add("backup", "Phoenix starts no backup of containers it adopts")
    if service.health is not None and service.health.command:
        add("health.command", f"a command check is {DOCKER_NOT_YET}; use http, tcp or process")
    return problems


def _may_route(service: ServiceDoc) -> bool:
    """Phoenix's router fronts only instances Phoenix starts: local commands and containers
    of a declared image (not adopted ones, which listen where their owner put them)."""
    return service.platform == "local" or (service.platform == "docker" and service.adopt is None)


def _routed(service: ServiceDoc) -> bool:
    """Services Phoenix runs, with a port, get a router unless they opt out."""
    if not _may_route(service) or service.port is None:
        return False
    return service.router is not False


def _health(service: ServiceDoc, default_interval: float) -> svc.HealthPolicy:
    doc = service.health or HealthDoc()
    check: svc.Check
    if doc.http is not None:
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


def _rule(metric: str, doc: RuleDoc, scale: float = 1.0) -> svc.ThresholdRule:
    return svc.ThresholdRule(metric, doc.above * scale, doc.for_, doc.hysteresis)


def _detection(doc: DetectionDoc) -> svc.DetectionPolicy:
    return svc.DetectionPolicy(
        error_rate=_rule("error_rate", doc.error_rate),
        latency_p99=_rule("latency_p99", doc.latency_p99, scale=1000.0),
        cpu=_rule("cpu", doc.cpu),
        throughput=_rule("throughput", doc.throughput) if doc.throughput else None,
        leak_window=doc.memory.leak_window,
        leak_min_growth=doc.memory.min_growth,
        memory_limit=doc.memory.limit,
        min_requests=doc.min_requests,
        anomaly_threshold=doc.anomaly.threshold,
        anomaly_incidents=doc.anomaly.incidents,
        anomaly_hold=doc.anomaly.hold,
    )


def _run_section(service: ServiceDoc, cwd: str) -> svc.RunSection | None:
    adopt = service.adopt
    if service.platform == "docker" and adopt is not None:
        if adopt.label is not None:
            return svc.AdoptedContainers((adopt.label,))
        return svc.AdoptedContainers(
            (
                f"com.docker.compose.project={adopt.compose_project}",
                f"com.docker.compose.service={adopt.compose_service}",
            )
        )
    if service.platform == "docker" and service.image is not None:
        return svc.ContainerRun(
            image=service.image,
            command=tuple(service.command or ()),
            env=dict(service.env),
            init=service.init,
            **_container(service.container),
        )
    if service.platform == "local" and service.command:
        return svc.ProcessRun(command=tuple(service.command), cwd=cwd, env=dict(service.env))
    return None


def _on_engine(spec: svc.ServiceSpec, engine: svc.DockerEngine | None) -> svc.ServiceSpec:
    """A docker service on ``engine``: not routed if the engine's containers run on another
    host (Phoenix's router forwards to this machine's loopback)."""
    if engine is None:
        return spec
    return replace(spec, engine=engine, routed=spec.routed and engine.on_this_host)


def _in_cluster(
    spec: svc.ServiceSpec, doc: ServiceDoc, cluster: svc.KubernetesCluster
) -> svc.ServiceSpec:
    """A kubernetes service's workload, reached through the file's cluster."""
    if doc.kubernetes is None:
        return spec
    return replace(spec, run=workload(doc.kubernetes, cluster))


def _container(doc: ContainerDoc | None) -> dict[str, Any]:
    """The ``container`` section as ContainerRun's fields."""
    if doc is None:
        return {}
    check = doc.healthcheck
    return {
        "volumes": tuple(doc.volumes),
        "labels": dict(doc.labels),
        "user": doc.user,
        "healthcheck": svc.ContainerHealthcheck(
            tuple(check.command), check.interval, check.timeout, check.retries, check.start_period
        )
        if check
        else None,
    }


def _to_spec(service: ServiceDoc, *, base_dir: Path, default_interval: float) -> svc.ServiceSpec:
    cwd = str((base_dir / service.cwd).resolve()) if service.cwd else str(base_dir)
    replicas = service.replicas
    hooks = {
        name: tuple(argv) for name, argv in service.hooks.model_dump().items() if argv is not None
    }
    # Only what shapes the running process: a changed probe or backoff must not restart a
    # healthy service the next time Phoenix starts.
    process_shape = [
        service.image,
        service.adopt.model_dump() if service.adopt else None,
        service.command,
        service.env,
        cwd,
        service.port,
        _routed(service),
        # A version's image only where declared: a version without one hashes as before.
        [v.model_dump(exclude={"image"} if v.image is None else set()) for v in service.versions],
        sys.executable,
        *([{"init": True}] if service.init else []),  # absent: hashes as before it existed
        *([service.container.model_dump()] if service.container else []),
        *([service.kubernetes.model_dump()] if service.kubernetes else []),
    ]
    digest = hashlib.sha256(json.dumps(process_shape, sort_keys=True).encode()).hexdigest()[:16]
    return svc.ServiceSpec(
        name=service.name,
        platform=svc.PlatformKind(service.platform),
        health=_health(service, default_interval),
        run=_run_section(service, cwd),
        port=service.port,
        host=service.host,
        replica=service.replica,
        routed=_routed(service),
        zero_downtime=service.zero_downtime,
        depends_on=tuple(service.depends_on),
        replicas=svc.Replicas(
            min=replicas.min,
            max=replicas.max,
            step=replicas.step,
            scale_in_below=replicas.scale_in_below,
            scale_in_after=replicas.scale_in_after,
        ),
        versions=tuple(
            svc.Version(
                name=v.name,
                command=tuple(v.command) if v.command else None,
                env=dict(v.env),
                cwd=str((base_dir / v.cwd).resolve()) if v.cwd else None,
                known_good=v.known_good,
                image=v.image,
            )
            for v in service.versions
        ),
        initial_version=service.version,
        known_good_after=service.known_good_after,
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
            signal=int(signal.Signals[service.stop.signal]),
            grace=service.stop.grace,
            drain=service.stop.drain,
        ),
        resources=svc.Resources(
            nice=service.resources.nice,
            cpus=tuple(service.resources.cpus) if service.resources.cpus else None,
            memory_max=service.resources.memory_max,
            open_files=service.resources.open_files,
        ),
        detection=_detection(service.detection),
        metrics=svc.MetricsSource(
            prometheus=service.metrics.prometheus,
            every=service.metrics.every,
            names=tuple(service.metrics.names) if service.metrics.names else None,
        )
        if service.metrics
        else None,
        circuit=svc.CircuitPolicy(
            open_for=service.circuit.open_for,
            steps=tuple(share / 100 for share in service.circuit.steps),
            hold=service.circuit.hold,
            queue_timeout=service.circuit.queue_timeout,
        ),
        recovery=svc.RecoveryPolicy(
            backoff=svc.Backoff(**service.recovery.backoff.model_dump()),
            budget=svc.Budget(**service.recovery.budget.model_dump()),
            stabilisation=service.recovery.stabilisation,
        ),
        config_hash=digest,
    )
