"""What a service is (its declared specification) and what runs for it (its instances).

A :class:`ServiceSpec` is built once from the operator's service file (or from an entry of
the service registry, :class:`ServiceOrigin`) and never changes while Phoenix runs. Strings
in commands, URLs and environments may hold placeholders (``{port}``, ``{python}``,
``{name}``, ``{version}``, ``{instance}``, ``{address}``) that a platform fills in per instance with
:func:`render`.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from phoenix_server.domain.errors import ConflictError, NotFoundError

PLACEHOLDERS = frozenset({"port", "python", "name", "version", "instance", "address"})


class ServiceOrigin(StrEnum):
    """Where a service's declaration came from: the operator's file wins over the registry."""

    FILE = "file"
    REGISTRY = "registry"
    """The service registry (``PHOENIX_REGISTRY_URL``): added and removed as it changes."""


class PlatformKind(StrEnum):
    LOCAL = "local"
    EXTERNAL = "external"
    DOCKER = "docker"
    KUBERNETES = "kubernetes"


@dataclass(frozen=True)
class HttpCheck:
    """Healthy when the URL answers a status within ``expect_status`` (inclusive)."""

    url: str
    method: str = "GET"
    expect_status: tuple[int, int] = (200, 399)


@dataclass(frozen=True)
class TcpCheck:
    """Healthy when a TCP connection to ``host:port`` opens."""

    address: str


@dataclass(frozen=True)
class ProcessCheck:
    """Healthy while the instance's process is alive (and not a zombie)."""


@dataclass(frozen=True)
class CommandCheck:
    """Healthy when the command exits 0 within the timeout."""

    argv: tuple[str, ...]


Check = HttpCheck | TcpCheck | ProcessCheck | CommandCheck


@dataclass(frozen=True)
class HealthPolicy:
    check: Check
    interval: float
    """Seconds between probes of one target (jittered by the scheduler)."""
    timeout: float
    """A probe that takes longer counts as failed."""
    failure_threshold: int
    """Consecutive failed probes before a target counts as unhealthy."""
    success_threshold: int = 1
    """Consecutive passing probes before an unhealthy target counts as healthy again."""
    startup_timeout: float = 30.0
    """How long a freshly started instance may take to pass its first probe."""


@dataclass(frozen=True)
class StopPolicy:
    signal: int = signal.SIGTERM
    """Sent to the whole process group first."""
    grace: float = 10.0
    """Seconds to wait for the group to exit before SIGKILL."""
    drain: float = 10.0
    """Seconds a routed instance gets to finish its requests, taken out of rotation, before
    it is signalled."""


@dataclass(frozen=True)
class Replicas:
    min: int = 1
    max: int = 1
    step: int = 1
    """Instances added by one scale-out."""
    scale_in_below: float = 1.0
    """Requests per second per instance under which load counts as low."""
    scale_in_after: float = 300.0
    """Seconds load must stay low before one instance is removed (never below ``min``)."""


class CircuitMode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitPolicy:
    """How circuit breaking isolates a service and lets traffic back."""

    open_for: float = 10.0
    """Seconds the circuit stays open before traffic is tried again."""
    steps: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    """Shares of traffic let through while half-open, raised one at a time."""
    hold: float = 5.0
    """Seconds each share must hold without a failure before the next."""
    queue_timeout: float = 2.0
    """Seconds a request waits (no backend, or the circuit open) before the fallback."""


@dataclass(frozen=True)
class Version:
    """A deployable version; ``command``/``env``/``cwd`` override the service's own."""

    name: str
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    known_good: bool = False
    image: str | None = None
    """A docker version's image (a tag or ``name@sha256:…``; default: the service's)."""


@dataclass(frozen=True)
class Backup:
    mode: str = "hot"
    """``hot``: a standby instance runs all the time; ``cold``: started on failover."""
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpAction:
    """A named action implemented by calling the service's own endpoint."""

    method: str
    url: str
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    expect_status: tuple[int, int] = (200, 299)


@dataclass(frozen=True)
class Fallback:
    """What clients get while no instance can answer: a fallback service (``upstream``,
    ``host:port``) if declared and reachable, else this static answer."""

    status: int = 503
    body: str = ""
    content_type: str = "text/plain"
    upstream: str | None = None


@dataclass(frozen=True)
class Resources:
    """Limits and priorities of each process of a local service, applied as it starts."""

    nice: int | None = None
    """Scheduling niceness, -20 (first) to 19 (last); below 0 needs privileges."""
    cpus: tuple[int, ...] | None = None
    """CPU affinity: the CPUs its processes may run on."""
    memory_max: int | None = None
    """Bytes of data (heap and private mappings, RLIMIT_DATA) a process may allocate."""
    open_files: int | None = None
    """File descriptors a process may hold open (RLIMIT_NOFILE)."""

    @property
    def declared(self) -> bool:
        return any(v is not None for v in (self.nice, self.cpus, self.memory_max, self.open_files))


@dataclass(frozen=True)
class ThresholdRule:
    """A metric beyond ``above`` for ``duration`` seconds fires; it clears once the metric
    has stayed at or under ``above * (1 - hysteresis)`` for ``duration`` again, so a value
    hovering at the threshold does not flap."""

    metric: str
    above: float
    duration: float
    hysteresis: float = 0.2


@dataclass(frozen=True)
class DetectionPolicy:
    """What counts as a failure beyond a failing health check (``detection:``)."""

    error_rate: ThresholdRule = field(
        default_factory=lambda: ThresholdRule("error_rate", 0.1, 10.0)
    )
    """Share of requests not really answered (5xx, broken, rejected) while it answers."""
    latency_p99: ThresholdRule = field(
        default_factory=lambda: ThresholdRule("latency_p99", 2000.0, 30.0)
    )
    """Milliseconds, p99 through the router."""
    cpu: ThresholdRule = field(default_factory=lambda: ThresholdRule("cpu", 90.0, 15.0))
    """Percent of one core per instance: saturated (with traffic) means high load."""
    throughput: ThresholdRule | None = None
    """Requests per second per replica above which load counts as high (none: CPU only)."""
    leak_window: float = 60.0
    """Seconds of memory samples a leak must show steady growth over."""
    leak_min_growth: float = 0.1
    """Growth over the window, as a share of the start, below which it is no leak."""
    memory_limit: int | None = None
    """Bytes; the limit a leak is projected to reach (default: resources.memory_max, else the
    machine's memory)."""
    min_requests: int = 20
    """Requests a one-second sample needs before its error rate counts."""
    anomaly_threshold: float = 0.5
    """Anomaly score (0-1; 0.5 is a one-in-a-thousand sample) from which a metric's sample
    is anomalous: named in incidents' evidence for ``anomaly_hold`` seconds."""
    anomaly_incidents: bool = False
    """Whether an anomaly alone (no rule firing) makes the service degraded and opens an
    incident. Off by default: one anomalous sample in a thousand is normal."""
    anomaly_hold: float = 30.0


@dataclass(frozen=True)
class MetricsSource:
    """A Prometheus endpoint of each instance, scraped into the service's signals."""

    prometheus: str
    """URL template (``http://127.0.0.1:{port}/metrics``), rendered per instance."""
    every: float = 5.0
    names: tuple[str, ...] | None = None
    """Metric names to keep (None: every gauge and counter, up to the series limit)."""


@dataclass(frozen=True)
class Backoff:
    initial: float = 1.0
    """Delay before the second attempt of a crash loop."""
    max: float = 300.0
    """The delay doubles up to this."""
    reset_after: float = 10.0
    """A crash after this long healthy restarts at once, with the delay reset."""

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.max, self.initial * 2 ** min(failures - 1, 64)))


@dataclass(frozen=True)
class Budget:
    attempts: int = 10
    """Recoveries allowed per window before Phoenix stops and waits for a person."""
    window: float = 3600.0


@dataclass(frozen=True)
class RecoveryPolicy:
    backoff: Backoff = field(default_factory=Backoff)
    budget: Budget = field(default_factory=Budget)
    stabilisation: float | None = None
    """Seconds a recovered service must stay healthy for its recovery to count as a
    success (None: ``backoff.reset_after``). A relapse inside it fails that attempt."""

    @property
    def stabilisation_period(self) -> float:
        return self.backoff.reset_after if self.stabilisation is None else self.stabilisation


@dataclass(frozen=True)
class ProcessRun:
    """The run section of a local service: the command its processes run, where and with
    which environment (a version or a backup may override each). A platform that runs
    containers or cluster workloads has a run section of its own."""

    command: tuple[str, ...]
    cwd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ContainerRun:
    """The run section of a docker service: the image its container runs, the arguments
    after the image's entrypoint, and the environment. Containers use the host's network:
    the service listens on its declared port on the host."""

    image: str
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    init: bool = False
    """Run Docker's init (tini) as the container's first process: it passes signals on and
    reaps orphans, for servers that do neither as process 1."""
    volumes: tuple[str, ...] = ()
    """``source:target[:ro]`` as ``docker run -v`` takes them (a host path or a named
    volume); Phoenix never removes a volume."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """The user's own labels (``phoenix.*`` are Phoenix's)."""
    user: str | None = None
    """``uid[:gid]`` or a name the image knows (default: the image's)."""
    healthcheck: ContainerHealthcheck | None = None
    """A HEALTHCHECK for the container (instead of the image's, if it has one)."""


@dataclass(frozen=True)
class ContainerHealthcheck:
    """Docker's own health check of a container, declared in the service file."""

    command: tuple[str, ...]
    """Run inside the container; exit 0 is healthy."""
    interval: float = 30.0
    timeout: float = 30.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class DockerEngine:
    """A Docker engine other than the default (``DOCKER_HOST``): where it is, and the
    certificates that authenticate both ends over TCP (TLS)."""

    name: str
    host: str
    """``unix:///path`` or ``tcp://host:port``."""
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def on_this_host(self) -> bool:
        """Its containers run on Phoenix's machine (a socket, or TCP on the loopback)."""
        address = self.host.split("://", 1)[-1].rsplit(":", 1)[0]
        return self.host.startswith("unix://") or address in ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class AdoptedContainers:
    """The run section of a docker service whose containers someone else created (by hand
    or with Compose): Phoenix finds them by their labels, stops and starts them in place,
    and never removes, recreates or reconfigures them."""

    labels: tuple[str, ...]
    """``key=value`` labels a container must all carry (a Compose project and service are
    ``com.docker.compose.project=…`` and ``com.docker.compose.service=…``)."""


class WorkloadKind(StrEnum):
    DEPLOYMENT = "Deployment"
    STATEFUL_SET = "StatefulSet"


@dataclass(frozen=True)
class KubernetesCluster:
    """How Phoenix reaches the cluster: a kubeconfig file and context, or (both None) the
    usual places — the pod's ServiceAccount inside a cluster, else ``KUBECONFIG`` or
    ``~/.kube/config`` with its current context."""

    kubeconfig: str | None = None
    context: str | None = None


@dataclass(frozen=True)
class KubernetesWorkload:
    """The run section of a kubernetes service: the workload that runs it in a cluster
    (its controller starts, restarts and rolls out its pods; Phoenix asks it for changes
    through the API and watches what follows), and the objects around it Phoenix may act on."""

    namespace: str
    name: str
    """The Deployment's (or StatefulSet's) name."""
    kind: WorkloadKind = WorkloadKind.DEPLOYMENT
    container: str | None = None
    """The container a version sets the image of (None: the pod's first container)."""
    port: int | None = None
    """The pod port Phoenix probes (``{port}``; None: the container's first declared port)."""
    service: str | None = None
    """The Kubernetes Service that routes to the pods: failover and circuit breaking act on
    its selector."""
    hpa: str | None = None
    """The HorizontalPodAutoscaler that scales the workload: scaling raises its minReplicas
    (within ``replicas.max``) instead of fighting it over the workload's replicas."""
    backup: str | None = None
    """A Deployment in the same namespace that can serve instead (failover switches the
    Service's selector to it, and back once the primary is healthy again)."""
    fallback: str | None = None
    """A Deployment serving a degraded answer (circuit breaking switches the Service to it)."""
    cluster: KubernetesCluster = field(default_factory=KubernetesCluster)


RunSection = ProcessRun | ContainerRun | AdoptedContainers | KubernetesWorkload


@dataclass(frozen=True)
class ServiceSpec:
    """One service as the operator declared it."""

    name: str
    platform: PlatformKind
    health: HealthPolicy
    run: RunSection | None = None
    """How its platform runs it: what a local service's processes run, or a docker
    service's container; None for a service Phoenix does not run (external). The rest of
    the spec is platform-neutral policy."""
    port: int | None = None
    """Where clients reach the service (the router's port when ``routed``)."""
    host: str = "127.0.0.1"
    """The address the public port listens on."""
    replica: str | None = None
    """With several Phoenix replicas, the one that alone may own it (a local service's,
    on its machine); None: whichever the leases give it to."""
    routed: bool = False
    """Phoenix's router holds the public port; instances get ports of their own."""
    engine: DockerEngine | None = None
    """The named Docker engine its containers run on (None: the default engine)."""
    zero_downtime: bool = False
    """A restart starts each replacement and puts it in rotation before it stops what it
    replaces (routed services only): capacity never drops, at the cost of running one more
    instance for a moment."""
    depends_on: tuple[str, ...] = ()
    replicas: Replicas = field(default_factory=Replicas)
    versions: tuple[Version, ...] = ()
    backup: Backup | None = None
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    actions: Mapping[str, HttpAction] = field(default_factory=dict)
    fallback: Fallback | None = None
    stop: StopPolicy = field(default_factory=StopPolicy)
    resources: Resources = field(default_factory=Resources)
    detection: DetectionPolicy = field(default_factory=DetectionPolicy)
    metrics: MetricsSource | None = None
    recovery: RecoveryPolicy = field(default_factory=RecoveryPolicy)
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    initial_version: str | None = None
    """The version a fresh installation runs (None: the newest declared)."""
    known_good_after: float = 300.0
    """Seconds a deployed version must run healthy to become known good (a rollback target)."""
    deployed: str | None = None
    """The version Phoenix last deployed (None: none yet, the newest declared runs)."""
    pins: Mapping[str, str] = field(default_factory=dict)
    """Known-good versions' artifacts, by version: a docker version that proved good runs
    the image ID it proved good with from then on, wherever its tag has moved since."""
    config_hash: str = ""
    """Digest of the declaration: an instance started from another declaration is not adopted."""
    origin: ServiceOrigin = ServiceOrigin.FILE

    @property
    def current_version(self) -> str | None:
        """The version a start runs: the deployed one, else the declared initial one, else
        the newest declared."""
        if self.deployed is not None:
            return self.deployed
        if self.initial_version is not None:
            return self.initial_version
        return self.versions[-1].name if self.versions else None

    def version(self, name: str) -> Version | None:
        return next((v for v in self.versions if v.name == name), None)


class InstanceRole(StrEnum):
    SERVICE = "service"
    ROUTER = "router"
    """The router process in front of a routed service (journalled, adopted, watched)."""
    STANDBY = "standby"
    """A hot backup: running and probed, out of rotation until a failover promotes it."""


class InstanceState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    """Died without being asked to (a crash or an outside kill)."""


LIVE_STATES = frozenset({InstanceState.STARTING, InstanceState.RUNNING, InstanceState.STOPPING})


@dataclass(frozen=True)
class Instance:
    """One running (or recently ended) copy of a service on a platform."""

    id: str
    service: str
    platform: PlatformKind
    state: InstanceState
    started_at: datetime
    pid: int | None = None
    port: int | None = None
    version: str | None = None
    ended_at: datetime | None = None
    exit_code: int | None = None
    """Exit status (negative: killed by that signal); None if unknown (an adopted process)."""
    end_reason: str | None = None
    """Why it ended, when the platform knows more than the exit code (``out of memory``)."""
    log_path: str | None = None
    config_hash: str = ""
    process_start: float | None = None
    """The OS's start time of ``pid``, so a recycled pid is never mistaken for this instance."""
    role: InstanceRole = InstanceRole.SERVICE
    artifact: str | None = None
    """What it runs, in its platform's immutable terms (a container's image ID, a pod's
    pod-template-hash)."""
    address: str | None = None
    """Where it listens, when not on this machine's loopback (a pod's IP): ``{address}``."""

    @property
    def alive(self) -> bool:
        return self.state in LIVE_STATES


@dataclass(frozen=True)
class RenderContext:
    """Values for the placeholders of one instance."""

    name: str
    python: str
    port: int | None = None
    version: str | None = None
    instance: str | None = None
    address: str = "127.0.0.1"

    def values(self) -> dict[str, str]:
        return {
            "name": self.name,
            "python": self.python,
            "port": "" if self.port is None else str(self.port),
            "version": self.version or "",
            "instance": self.instance or "",
            "address": self.address,
        }


_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""``{{`` and ``}}`` are literal braces; ``{word}`` is a placeholder. Anything else in braces
(JSON such as ``{"a": 1}``) is left as written, so it needs no escaping."""


def render(template: str, context: RenderContext) -> str:
    """Fill ``{placeholder}``s; the service file validator guarantees only known ones appear."""
    values = context.values()

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return values.get(match.group(1), token)

    return _TOKEN.sub(substitute, template)


def placeholders_in(template: str) -> set[str]:
    """Every ``{word}`` in ``template`` that :func:`render` would try to fill."""
    return {m.group(1) for m in _TOKEN.finditer(template) if m.group(1) is not None}


class ServiceCatalog:
    """The declared services, in file order (then the registry's), looked up by name."""

    def __init__(self, services: list[ServiceSpec] | tuple[ServiceSpec, ...] = ()) -> None:
        self._services = {service.name: service for service in services}
        self.generation = 0
        """Grows with every change (what is derived from the whole catalog is kept until
        it does: walking 10,000 services costs milliseconds)."""

    def __iter__(self) -> Iterator[ServiceSpec]:
        return iter(self._services.values())

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, name: object) -> bool:
        return name in self._services

    def get(self, name: str) -> ServiceSpec:
        """The service called ``name``; NotFoundError naming it otherwise."""
        try:
            return self._services[name]
        except KeyError:
            raise NotFoundError(f"unknown service '{name}'") from None

    def replace(self, service: ServiceSpec) -> None:
        """Swap in a new spec for a declared service (a deployed version changes it)."""
        if service.name not in self._services:
            raise NotFoundError(f"unknown service '{service.name}'")
        self._services[service.name] = service
        self.generation += 1

    def add(self, service: ServiceSpec) -> None:
        """Start knowing a service (one the registry added); ConflictError if the name is taken."""
        if service.name in self._services:
            raise ConflictError(f"service '{service.name}' already exists")
        self._services[service.name] = service
        self.generation += 1

    def remove(self, name: str) -> ServiceSpec:
        """Forget a service (one the registry dropped); NotFoundError naming it if unknown."""
        try:
            removed = self._services.pop(name)
        except KeyError:
            raise NotFoundError(f"unknown service '{name}'") from None
        self.generation += 1
        return removed

    def dependents(self, name: str) -> list[ServiceSpec]:
        """Services that declare ``name`` in their ``depends_on``."""
        return [service for service in self if name in service.depends_on]
