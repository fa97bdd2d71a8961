"""Taking over at start, for the Docker platform: the routers first (their rotation says
which containers serve), then every container this installation owns — adopted if it runs
what its service declares now, within its numbers, else removed — and the containers of
adopted services; then what is missing is started."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from aiodocker.exceptions import DockerError

from phoenix_server.domain.errors import PlatformError
from phoenix_server.domain.services import (
    AdoptedContainers,
    ContainerRun,
    InstanceRole,
    InstanceState,
    PlatformKind,
    ServiceSpec,
)
from phoenix_server.platforms import processes
from phoenix_server.platforms.base import InstanceEventKind
from phoenix_server.platforms.docker.containers import (
    CONFIG_LABEL,
    OWNER_LABEL,
    PORT_LABEL,
    ROLE_LABEL,
    SERVICE_LABEL,
    VERSION_LABEL,
)
from phoenix_server.platforms.docker.watching import EngineWatching
from phoenix_server.platforms.router.config import BackendState

log = logging.getLogger("phoenix.platform.docker")

ROUTER_OWNER_ENV = "PHOENIX_DOCKER_ROUTER_OWNER"
"""Marks the router processes this installation started for its docker services (not
``PHOENIX_OWNER``: the local platform would take them for strays of its own)."""
ROUTER_INSTANCE_ENV = "PHOENIX_INSTANCE"
STRAY_GRACE = 5.0
"""Seconds a stray router gets between SIGTERM and SIGKILL."""


class Adopting(EngineWatching):
    async def reconcile(self, services: Sequence[ServiceSpec]) -> dict[str, str]:
        every = [s for s in services if s.platform is PlatformKind.DOCKER]
        docker = [s for s in every if s.engine == self._engine_declared]
        # Services of other engines are theirs: their routers and containers are left alone
        # (two names for one engine would otherwise remove each other's containers).
        self._elsewhere = {s.name for s in every} - {s.name for s in docker}
        specs = {s.name: s for s in docker if isinstance(s.run, ContainerRun)}
        self._specs = dict(specs)
        taken_over = [s for s in docker if isinstance(s.run, AdoptedContainers)]
        if not docker:
            # Nothing of this engine's is declared: only the routers an earlier Phoenix left
            # for it (its services since removed) are stopped; the engine is not contacted.
            await self._ensure_routers({})
            return {}
        failed: dict[str, str] = {}
        self._follow_engine()
        for other in taken_over:
            try:
                await self._take_over(other)
            except PlatformError as exc:
                failed[other.name] = exc.message
        # Routers first: their rotation says which containers serve (a promoted standby).
        failed |= await self._ensure_routers(specs)
        try:
            found = await self._owned()
        except PlatformError as exc:
            return {**failed, **{name: exc.message for name in specs}}
        # Those in rotation first: if there are more than a service may run, they are kept.
        found.sort(key=lambda shown: not self._in_rotation(shown))
        for shown in found:
            name = shown["Name"].lstrip("/")
            if (shown["Config"]["Labels"] or {}).get(SERVICE_LABEL) in self._elsewhere:
                continue
            if not self._adoptable(specs, name, shown):
                await self._remove_undeclared(name)
        for spec in specs.values():
            if spec.routed and spec.name not in failed:
                serving = {i.id for i in self.instances(spec.name)}
                await self.routers.keep_only(spec.name, serving)
            if spec.resources.declared and self.instances(spec.name):
                # The declaration may have changed while Phoenix was away.
                try:
                    log.info("%s: resources: %s", spec.name, await self.apply_resources(spec))
                except PlatformError as exc:
                    log.error("%s", exc.message)
        await self._stop_stray_routers()
        for spec in specs.values():
            if spec.name in failed:
                continue
            missing = max(1, spec.replicas.min) - len(self.instances(spec.name))
            try:
                if missing > 0:
                    await self.start(spec, count=missing)
                if self._wants_standby(spec):
                    await self.start_standby(spec)
            except PlatformError as exc:
                failed[spec.name] = exc.message
        return failed

    def _follow_engine(self) -> None:
        """Follow the engine's events and stats from now on, even if it cannot be reached
        yet: the loops retry (and /health names them meanwhile), so an engine that comes
        back is seen."""
        if self._watching:
            return
        self._watching = True
        self._tasks.keep_running(self._watch_events, name="docker-events")
        self._tasks.keep_running(self._sample_stats, name="docker-stats")

    async def take_over(self, spec: ServiceSpec) -> str | None:
        """This replica owns ``spec`` from now, a docker service any replica may own: its
        containers are adopted as the previous owner left them (nothing that runs what the
        service declares now is restarted), those that do not are removed, and what is
        missing is started. Raises :class:`PlatformError` if its containers cannot be
        listed (nothing was adopted: try again); returns why, if what was missing could not
        be started (what runs is adopted)."""
        assert self._floating_owner is not None and spec.replica is None
        self._specs[spec.name] = spec
        self._follow_engine()
        labels = [f"{OWNER_LABEL}={self._floating_owner}", f"{SERVICE_LABEL}={spec.name}"]
        async with self._errors(f"cannot list the containers of '{spec.name}'"):
            listed = await self._engine().containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
            found = [await c.show() for c in listed]
        for shown in found:
            name = shown["Name"].lstrip("/")
            if name not in self._containers and not self._adoptable({spec.name: spec}, name, shown):
                await self._remove_undeclared(name)
        missing = max(1, spec.replicas.min) - len(self.instances(spec.name))
        try:
            if missing > 0:
                await self.start(spec, count=missing)
        except PlatformError as exc:
            return exc.message
        return None

    async def remove_abandoned(self, service: str) -> list[str]:
        """Remove the containers of ``service``, a docker service any replica could own that
        no live replica declares any more (it was removed from the service file): no one
        would ever adopt them. Returns their names; raises :class:`PlatformError` if the
        engine cannot list or remove them (try again later)."""
        if self._floating_owner is None or service in self._specs:
            return []
        labels = [f"{OWNER_LABEL}={self._floating_owner}", f"{SERVICE_LABEL}={service}"]
        async with self._errors(f"cannot list the containers of '{service}'"):
            listed = await self._engine().containers.list(
                all=True, filters=json.dumps({"label": labels})
            )
        removed = []
        for container in listed:
            name = (container["Names"] or [container.id])[0].lstrip("/")
            try:
                async with self._errors(f"cannot remove container {name}"):
                    await container.delete(force=True)
            except PlatformError as exc:
                if not isinstance(exc.__cause__, DockerError) or exc.__cause__.status != 404:
                    raise
                continue  # another replica removed it first
            removed.append(name)
        return removed

    async def _remove_undeclared(self, name: str) -> None:
        """Remove a container found running something the service file no longer declares
        (a failure is logged: the next reconcile or takeover tries again)."""
        log.info("removing container %s: not what the service file declares now", name)
        try:
            async with self._errors(f"cannot remove container {name}"):
                await self._engine().containers.container(name).delete(force=True)
        except PlatformError as exc:
            log.error("%s", exc.message)

    def let_go(self, service: str) -> None:
        """Another replica owns ``service`` now (a docker service any replica may own): its
        containers are forgotten here and left running, for the new owner to adopt."""
        for name, record in list(self._containers.items()):
            if record.instance.service == service:
                del self._containers[name]
        self._specs.pop(service, None)

    def _adoptable(
        self, specs: Mapping[str, ServiceSpec], name: str, shown: dict[str, Any]
    ) -> bool:
        """Adopt ``shown`` if it runs what its service declares now, within its numbers
        (``replicas.max`` serving, one hot standby); say whether it was."""
        labels = shown["Config"]["Labels"] or {}
        spec = specs.get(labels.get(SERVICE_LABEL, ""))
        if (
            spec is None
            or labels.get(CONFIG_LABEL) != spec.config_hash
            or labels.get(VERSION_LABEL, "") != (spec.current_version or "")
            or not shown["State"].get("Running")
        ):
            return False
        role, state = InstanceRole.SERVICE, InstanceState.RUNNING
        in_rotation = self._in_rotation(shown)
        if labels.get(ROLE_LABEL) == InstanceRole.STANDBY.value and not in_rotation:
            role = InstanceRole.STANDBY
            if not self._wants_standby(spec):
                return False
        elif len(self.instances(spec.name)) >= spec.replicas.max:
            return False
        elif spec.routed and not in_rotation:
            # Started but never put in rotation (Phoenix died first): it is verified and
            # admitted like any container started now.
            state = InstanceState.STARTING
        self._adopt(spec, name, shown, role=role, state=state)
        return True

    def _in_rotation(self, shown: dict[str, Any]) -> bool:
        """The container takes its service's traffic (the router outlived Phoenix). One the
        router was draining was being stopped: it is not."""
        service = (shown["Config"]["Labels"] or {}).get(SERVICE_LABEL, "")
        serving = {
            b.id for b in self.routers.backends(service) if b.state is not BackendState.DRAINING
        }
        return shown["Name"].lstrip("/") in serving

    async def _ensure_routers(self, specs: Mapping[str, ServiceSpec]) -> dict[str, str]:
        """Adopt (or start) the router of each routed service; stop the routers of services
        no longer routed."""
        journalled = {
            record.service: record
            for record in await self._journal.load_instances(PlatformKind.DOCKER)
            if record.role is InstanceRole.ROUTER
        }
        failed: dict[str, str] = {}
        for name, record in journalled.items():
            spec = specs.get(name)
            if name in self._elsewhere:
                continue
            if spec is None or not spec.routed:
                log.info("stopping the router of %s: no longer a routed docker service", name)
                await self.routers.stop_record(record)
        for spec in specs.values():
            if not spec.routed:
                continue
            try:
                await self.routers.ensure(spec, journalled.get(spec.name))
            except PlatformError as exc:
                log.error("cannot run the router of %s: %s", spec.name, exc.message)
                failed[spec.name] = exc.message
        return failed

    async def _stop_stray_routers(self) -> None:
        """Stop any router this installation started but never journalled (it died in
        between): it would hold the port its successor needs."""
        known = self.routers.pgids()
        strays = set()
        marked = processes.marked_processes(
            ROUTER_OWNER_ENV, self._router_marker, ROUTER_INSTANCE_ENV
        )
        for pid, _ in marked:
            try:
                group = os.getpgid(pid)
            except ProcessLookupError:
                continue
            if group not in known:
                log.warning("stopping stray router process group %d of an earlier Phoenix", group)
                strays.add(group)
        await asyncio.gather(*(processes.stop_group(group, STRAY_GRACE) for group in strays))

    async def _take_over(self, spec: ServiceSpec) -> None:
        """Adopt every container carrying the service's labels, running or not."""
        assert isinstance(spec.run, AdoptedContainers)
        filters = json.dumps({"label": list(spec.run.labels)})
        async with self._errors(f"cannot list the containers of '{spec.name}'"):
            listed = await self._engine().containers.list(all=True, filters=filters)
            found = [await c.show() for c in listed]
        if not found:
            raise PlatformError(
                f"no container carries {' and '.join(spec.run.labels)} to adopt for '{spec.name}'"
            )
        for shown in found:
            name = shown["Name"].lstrip("/")
            policy = ((shown.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name")
            if policy not in (None, "", "no"):
                self._restart_policies[spec.name] = policy
            self._adopt(spec, name, shown, adopted=True)
            if not shown["State"].get("Running"):
                self._ended(self._containers[name], shown["State"].get("ExitCode"))

    def _adopt(
        self,
        spec: ServiceSpec,
        name: str,
        shown: dict[str, Any],
        *,
        adopted: bool = False,
        role: InstanceRole = InstanceRole.SERVICE,
        state: InstanceState = InstanceState.RUNNING,
    ) -> None:
        port = None
        if spec.routed and not adopted:
            port = int((shown["Config"]["Labels"] or {}).get(PORT_LABEL) or 0) or None
            if port is not None:
                self._ports.hold(port)
        record = self._record(spec, name, shown, state, adopted=adopted, port=port, role=role)
        log.info("%s: adopted running container %s", spec.name, name)
        self._emit(InstanceEventKind.ADOPTED, record.instance)
        health = (shown["State"].get("Health") or {}).get("Status")
        if health == "unhealthy":
            self._health_said(record, health)  # it failed while no Phoenix watched

    async def _owned(self) -> list[dict[str, Any]]:
        """Every container (running or not) carrying this installation's owner label."""
        client = self._engine()
        filters = json.dumps({"label": [f"{OWNER_LABEL}={self._owner}"]})
        async with self._errors("cannot list containers"):
            listed = await client.containers.list(all=True, filters=filters)
            return [await c.show() for c in listed]
