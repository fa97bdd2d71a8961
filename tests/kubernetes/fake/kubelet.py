"""The scheduler and kubelet of the fake cluster's single node.

Each pod gets a worker task: it binds the pod to the node, gives it a loopback pod IP, and
runs each container through the lifecycle its behaviour dictates (pull, create, start, crash
and restart with exponential back-off, image pull back-off, config errors, liveness kills),
reporting what happens as the kubelet does: pod status (phase, conditions, containerStatuses)
and Events. A running container's process is a real HTTP server on podIP:containerPort.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from . import errors, naming
from .behaviour import Behaviour
from .controllers import Context, Controller, Key, is_ready
from .events import NORMAL, WARNING
from .pod_servers import Address, Endpoint, PodServers
from .resources import PODS

Obj = dict[str, Any]
COMPONENT = "kubelet"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Timings:
    """How long things take, in cluster seconds (multiplied by the cluster's time scale)."""

    sandbox: float = 0.2  # pod sandbox and network set up: the pod IP appears
    pull: float = 0.3  # pulling an image not yet on the node
    crash_after: float = 1.0  # a crashing container's run before it exits
    shutdown: float = 0.3  # a terminating pod's containers stopping
    first_backoff: float = 10.0  # CrashLoopBackOff and ImagePullBackOff start here, doubling
    max_backoff: float = 300.0
    config_retry: float = 10.0


def qualified_image(image: str) -> str:
    """The image as containerd reports it: ``shop:v1`` → ``docker.io/library/shop:v1``."""
    name = image
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def image_id(image: str) -> str:
    repository = qualified_image(image).rsplit(":", 1)[0]
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


@dataclass(eq=False)
class ContainerRun:
    spec: Obj
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    ever_started: bool = False
    pulled: bool = False
    container_id: str | None = None
    crashes: int = 0  # consecutive, for the back-off
    run_started: float = 0.0  # monotonic
    pull_failures: int = 0
    addresses: list[Address] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def image(self) -> str:
        return str(self.spec.get("image", ""))

    @property
    def field_path(self) -> str:
        return f"spec.containers{{{self.name}}}"


class Kubelet(Controller):
    name = "kubelet"
    kinds = (PODS,)

    def __init__(self, ctx: Context, timings: Timings | None = None) -> None:
        super().__init__(ctx)
        self.timings = timings or Timings()
        self.servers = PodServers()
        self.pulled_images: set[str] = set()
        self.workers: dict[Key, PodWorker] = {}

    async def sync(self, key: Key) -> float | None:
        pod = self.ctx.store.get(PODS, *key)
        worker = self.workers.get(key)
        if worker is not None and (pod is None or pod["metadata"]["uid"] != worker.uid):
            await worker.stop()
            del self.workers[key]
            worker = None
        if pod is None:
            self.ctx.behaviours.forget(key)
            return None
        if worker is None:
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return None
            worker = PodWorker(self, pod)
            self.workers[key] = worker
            worker.start()
        if pod["metadata"].get("deletionTimestamp"):
            worker.terminating.set()
        return None

    async def stop(self) -> None:
        for worker in list(self.workers.values()):
            await worker.stop()
        self.workers.clear()
        await self.servers.close_all()


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.ctx = kubelet.ctx
        self.t = kubelet.timings
        meta = pod["metadata"]
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.key: Key = (self.namespace, self.name)
        self.containers = [ContainerRun(c) for c in pod["spec"]["containers"]]
        self.ip: str | None = None
        self.start_time = naming.timestamp()
        self.terminating = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._guarded(), name=f"fake-kubelet-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_servers()

    def behaviour(self, c: ContainerRun) -> Behaviour:
        return self.ctx.behaviours.for_container(self.key, c.image)

    async def sleep(self, cluster_seconds: float) -> None:
        await asyncio.sleep(self.ctx.real(cluster_seconds))

    def event(
        self, event_type: str, reason: str, message: str, c: ContainerRun | None = None
    ) -> None:
        pod = self.ctx.store.get(PODS, *self.key)
        if pod is not None:
            self.ctx.events.record(
                pod, event_type, reason, message, component=COMPONENT, host=self.ctx.node,
                field_path=c.field_path if c else None,
            )  # fmt: skip

    # -- the pod -------------------------------------------------------------------------

    async def _guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except errors.ApiStatusError:
            pass  # the pod went away while we wrote its status
        except Exception:
            self.ctx.failures.append(f"kubelet {self.key}: {traceback.format_exc()}")

    async def _run(self) -> None:
        pod = self.ctx.registry.bind(self.namespace, self.name, self.ctx.node)
        if pod is None:
            return
        message = f"Successfully assigned {self.namespace}/{self.name} to {self.ctx.node}"
        self.ctx.events.record(pod, NORMAL, "Scheduled", message, component="default-scheduler")
        self.publish()
        await self.sleep(self.t.sandbox)
        self.ip = self.ctx.network.pod_ip()
        self.publish()
        loops = [asyncio.create_task(self._container_loop(c)) for c in self.containers]
        try:
            await self.terminating.wait()
        finally:
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        await self._terminate()

    async def _terminate(self) -> None:
        for c in self.containers:
            if "running" in c.state:
                self.event(NORMAL, "Killing", f"Stopping container {c.name}", c)
        await self._close_servers()
        await self.sleep(self.t.shutdown)
        now = naming.timestamp()
        for c in self.containers:
            if "running" in c.state:
                started = c.state["running"].get("startedAt", now)
                c.state = {"terminated": self._terminated("Completed", 0, started, now, c)}
            c.ready = False
        self.publish()
        with contextlib.suppress(errors.ApiStatusError):
            self.ctx.registry.delete(PODS, self.namespace, self.name, grace_seconds=0)

    async def _close_servers(self) -> None:
        for c in self.containers:
            for address in c.addresses:
                await self.kubelet.servers.close(address)
            c.addresses.clear()

    # -- one container -------------------------------------------------------------------

    async def _container_loop(self, c: ContainerRun) -> None:
        try:
            while True:
                if self.behaviour(c) is Behaviour.IMAGE_PULL:
                    await self._pull_failure(c)
                    continue
                if not c.pulled:
                    await self._pull(c)
                if self.behaviour(c) is Behaviour.CONFIG_ERROR:
                    await self._config_error(c)
                    continue
                await self._start(c)
                reason, code = await self._running(c)
                await self._exit(c, reason, code)
                await self._back_off(c)
        except asyncio.CancelledError:
            raise
        except errors.ApiStatusError:
            pass
        except Exception:
            self.ctx.failures.append(f"kubelet {self.key} {c.name}: {traceback.format_exc()}")

    async def _pull(self, c: ContainerRun) -> None:
        policy = c.spec.get("imagePullPolicy", "IfNotPresent")
        if policy != "Always" and c.image in self.kubelet.pulled_images:
            self.event(
                NORMAL, "Pulled", f'Container image "{c.image}" already present on machine', c
            )
        else:
            self.event(NORMAL, "Pulling", f'Pulling image "{c.image}"', c)
            await self.sleep(self.t.pull)
            took = f"{int(self.t.pull * 1000)}ms"
            self.event(
                NORMAL, "Pulled",
                f'Successfully pulled image "{c.image}" in {took} ({took} including waiting). '
                "Image size: 10485760 bytes.", c,
            )  # fmt: skip
            self.kubelet.pulled_images.add(c.image)
        c.pulled = True

    async def _pull_failure(self, c: ContainerRun) -> None:
        reference = qualified_image(c.image)
        detail = (
            f'failed to pull and unpack image "{reference}": failed to resolve reference '
            f'"{reference}": pull access denied, repository does not exist or may require '
            "authorization"
        )
        self.event(NORMAL, "Pulling", f'Pulling image "{c.image}"', c)
        c.state = {"waiting": {"reason": "ErrImagePull", "message": detail}}
        self.event(WARNING, "Failed", f'Failed to pull image "{c.image}": {detail}', c)
        self.event(WARNING, "Failed", "Error: ErrImagePull", c)
        self.publish()
        await self.sleep(self.t.pull)
        c.pull_failures += 1
        delay = min(self.t.first_backoff * 2 ** (c.pull_failures - 1), self.t.max_backoff)
        message = f'Back-off pulling image "{c.image}"'
        c.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
        self.event(NORMAL, "BackOff", message, c)
        self.event(WARNING, "Failed", "Error: ImagePullBackOff", c)
        self.publish()
        await self.ctx.behaviours.changed(self.ctx.real(delay))

    async def _config_error(self, c: ContainerRun) -> None:
        detail = f'configmap "{self.name.rsplit("-", 2)[0]}-config" not found'
        c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": detail}}
        self.event(WARNING, "Failed", f"Error: {detail}", c)
        self.publish()
        await self.ctx.behaviours.changed(self.ctx.real(self.t.config_retry))

    async def _start(self, c: ContainerRun) -> None:
        c.container_id = f"containerd://{secrets.token_hex(32)}"
        self.event(NORMAL, "Created", f"Created container: {c.name}", c)
        c.state = {"running": {"startedAt": naming.timestamp()}}
        c.started = c.ever_started = True
        c.run_started = time.monotonic()
        await self._open_servers(c)
        self.event(NORMAL, "Started", f"Started container {c.name}", c)
        self.publish()

    def _ports(self, c: ContainerRun) -> list[int]:
        declared = [p["containerPort"] for p in c.spec.get("ports") or []]
        if declared:
            return declared
        nobody_declares = not any(x.spec.get("ports") for x in self.containers)
        return [DEFAULT_PORT] if nobody_declares and c is self.containers[0] else []

    async def _open_servers(self, c: ContainerRun) -> None:
        if not self.ctx.serve_pods or self.ip is None:
            return
        for port in self._ports(c):
            address = (self.ip, port)
            endpoint = Endpoint(
                self.namespace, self.name, c.name, c.image, partial(self.behaviour, c)
            )
            try:
                await self.kubelet.servers.open(address, endpoint)
            except OSError as exc:
                self.ctx.failures.append(f"kubelet {self.key}: cannot listen on {address}: {exc}")
                continue
            c.addresses.append(address)

    async def _running(self, c: ContainerRun) -> tuple[str, int]:
        """Watch a running container until it exits: the exit's (reason, code)."""
        started = time.monotonic()
        liveness = c.spec.get("livenessProbe") or {}
        readiness = c.spec.get("readinessProbe") or {}
        failing_since: float | None = None
        next_unhealthy = 0.0
        while True:
            now = time.monotonic()
            b = self.behaviour(c)
            if self.ctx.behaviours.take_crash_request(self.key):
                return "Error", 1
            waits: list[float] = []
            if b.crashes:
                crash_at = started + self.ctx.real(self.t.crash_after)
                if now >= crash_at:
                    return ("OOMKilled", 137) if b is Behaviour.OOM else ("Error", 1)
                waits.append(crash_at - now)
            delay = self.ctx.real(readiness.get("initialDelaySeconds", 0))
            ready = self._ready(b, readiness) and now - started >= delay
            if not ready and now - started < delay:
                waits.append(started + delay - now)
            if ready != c.ready:
                c.ready = ready
                self.publish()
            period = self.ctx.real(readiness.get("periodSeconds", 10))
            if readiness and not self._ready(b, readiness) and now >= next_unhealthy:
                self.event(
                    WARNING, "Unhealthy", f"Readiness probe failed: {self._probe_failure(b)}", c
                )
                next_unhealthy = now + period
            if readiness and not self._ready(b, readiness):
                waits.append(max(0.0, next_unhealthy - now))
            fails_liveness = "httpGet" in liveness and b in (Behaviour.HANG, Behaviour.UNREADY)
            if fails_liveness:
                failing_since = failing_since or now
                allowed = liveness.get("initialDelaySeconds", 0) + liveness.get(
                    "periodSeconds", 10
                ) * (liveness.get("failureThreshold", 3))
                kill_at = max(failing_since, started) + self.ctx.real(allowed)
                if now >= kill_at:
                    self.event(
                        WARNING, "Unhealthy", f"Liveness probe failed: {self._probe_failure(b)}", c
                    )
                    message = f"Container {c.name} failed liveness probe, will be restarted"
                    self.event(NORMAL, "Killing", message, c)
                    return "Error", 137
                waits.append(kill_at - now)
            else:
                failing_since = None
            await self.ctx.behaviours.changed(min(waits) if waits else None)

    @staticmethod
    def _ready(b: Behaviour, readiness: Obj) -> bool:
        if b in (Behaviour.UNREADY, Behaviour.CRASH, Behaviour.OOM):
            # A crashing container fails before it ever serves: never Ready.
            return False
        return not (b is Behaviour.HANG and "httpGet" in readiness)

    def _probe_failure(self, b: Behaviour) -> str:
        if b is Behaviour.HANG:
            return (
                f'Get "http://{self.ip}:{DEFAULT_PORT}/": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)"
            )
        return "HTTP probe failed with statuscode: 503"

    async def _exit(self, c: ContainerRun, reason: str, code: int) -> None:
        for address in c.addresses:
            await self.kubelet.servers.close(address)
        c.addresses.clear()
        now = naming.timestamp()
        started = c.state.get("running", {}).get("startedAt", now)
        terminated = self._terminated(reason, code, started, now, c)
        c.last_state = {"terminated": terminated}
        c.state = {"terminated": dict(terminated)}
        c.ready = c.started = False
        self.publish()

    @staticmethod
    def _terminated(reason: str, code: int, started: str, finished: str, c: ContainerRun) -> Obj:
        found: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": started,
            "finishedAt": finished,
        }
        if c.container_id:
            found["containerID"] = c.container_id
        return found

    async def _back_off(self, c: ContainerRun) -> None:
        """The first restart is immediate; later ones wait 10 s, 20 s, 40 s ... up to 5 min.
        A container that ran for twice the longest back-off starts the count afresh."""
        if time.monotonic() - c.run_started >= self.ctx.real(2 * self.t.max_backoff):
            c.crashes = 0
        c.crashes += 1
        if c.crashes > 1:
            delay = min(self.t.first_backoff * 2 ** (c.crashes - 2), self.t.max_backoff)
            pod = f"{self.name}_{self.namespace}({self.uid})"
            message = f"back-off {int(delay)}s restarting failed container={c.name} pod={pod}"
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            self.event(
                WARNING, "BackOff", f"Back-off restarting failed container {c.name} in pod {pod}", c
            )
            self.publish()
            await self.sleep(delay)
        c.restart_count += 1

    # -- status --------------------------------------------------------------------------

    def publish(self) -> None:
        """Write the pod's status as the kubelet's status manager would (if it changed)."""
        pod = self.ctx.store.get(PODS, *self.key)
        if pod is None or pod["metadata"]["uid"] != self.uid:
            return
        status = self._status(pod.get("status") or {})
        uid = self.uid
        if is_ready({"status": status}):
            self.ctx.ready_since.setdefault(uid, time.monotonic())
        else:
            self.ctx.ready_since.pop(uid, None)
        self.ctx.registry.mutate(
            PODS, self.namespace, self.name, lambda p: p.__setitem__("status", status), status=True
        )

    def _status(self, old: Obj) -> Obj:
        unready = sorted(c.name for c in self.containers if not c.ready)
        ready = "False" if unready else "True"
        detail = {
            "reason": "ContainersNotReady",
            "message": f"containers with unready status: [{' '.join(unready)}]",
        }
        wanted = [
            ("PodReadyToStartContainers", "True" if self.ip else "False", {}),
            ("Initialized", "True", {}),
            ("Ready", ready, detail if unready else {}),
            ("ContainersReady", ready, detail if unready else {}),
            ("PodScheduled", "True", {}),
        ]
        previous = {c["type"]: c for c in old.get("conditions") or []}
        conditions = []
        for kind, state, extra in wanted:
            before = previous.get(kind)
            moment = (
                before["lastTransitionTime"]
                if before and before["status"] == state
                else naming.timestamp()
            )
            conditions.append(
                {"type": kind, "status": state, "lastTransitionTime": moment, **extra}
            )
        status: Obj = {
            "phase": "Running" if any(c.ever_started for c in self.containers) else "Pending",
            "conditions": conditions,
            "hostIP": self.ctx.network.node_ip,
            "hostIPs": [{"ip": self.ctx.network.node_ip}],
        }
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        status["startTime"] = self.start_time
        status["containerStatuses"] = [
            self._container_status(c) for c in sorted(self.containers, key=lambda c: c.name)
        ]
        status["qosClass"] = old.get("qosClass", "BestEffort")
        return status

    @staticmethod
    def _container_status(c: ContainerRun) -> Obj:
        found: Obj = {
            "name": c.name,
            "state": c.state,
            "lastState": c.last_state,
            "ready": c.ready,
            "restartCount": c.restart_count,
            "image": qualified_image(c.image) if c.pulled else c.image,
            "imageID": image_id(c.image) if c.pulled else "",
            "started": c.started,
        }
        if c.container_id:
            found["containerID"] = c.container_id
        return found
