"""Which version each service runs, which versions are known good, and their records.

The :class:`VersionKeeper` is the one owner of a service's deployed version: it writes the
deployment record *before* the catalog names the new version (so instances started after
that, by a deploy, a rollback or any later recovery, run it), and it promotes a
deployment to known good once the service has stayed healthy on it for
``known_good_after``. Rollback targets come from here.

Where a platform can say what a version ran as in immutable terms (the image ID of a docker
version's containers: tags move, IDs do not), the keeper records that *artifact* with each
completed deployment and pins the version to it: from then on every start of that version —
a restart, a scale-out, a rollback to it — runs exactly what that deployment ran, and once
the version proves good, what it proved good with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol

from phoenix_server.detection.health_tracking import ServiceHealthView
from phoenix_server.domain import ids
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.deployments import (
    Deployment,
    DeploymentReason,
    DeploymentStatus,
    known_good_versions,
    rollback_target,
)
from phoenix_server.domain.errors import StaleOwnerError, UnavailableError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.recovery.executing import durably

log = logging.getLogger("phoenix.recovery")

KNOWN_GOOD_CHECK = 1.0
"""Seconds between looks for deployments that have now run healthy long enough."""


class DeploymentRecorder(Protocol):
    async def save_deployment(self, deployment: Deployment) -> None: ...


class VersionKeeper:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        recorder: DeploymentRecorder,
        clock: Clock,
        health_of: Callable[[str], ServiceHealthView],
        artifact_of: Callable[[str, str], str | None] = lambda _service, _version: None,
    ) -> None:
        self._catalog = catalog
        self._recorder = recorder
        self._clock = clock
        self._health_of = health_of
        self._artifact_of = artifact_of
        """``(service, version)``: what the service's live instances of that version run,
        in immutable terms (None: the platform has no such notion, or none runs)."""
        self._current: dict[str, Deployment] = {}
        self._proven: dict[str, set[str]] = {}

    async def load(
        self,
        latest: dict[str, Deployment],
        proven: dict[str, set[str]],
        pins: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """Resume from the records: each service with versions runs its last deployed one
        (if it has none yet, the one its file starts with, recorded now as its initial one),
        and each version runs the artifact it was last pinned to."""
        self._proven = {name: set(found) for name, found in proven.items()}
        for name, pinned in (pins or {}).items():
            if name in self._catalog:
                spec = self._catalog.get(name)
                self._catalog.replace(replace(spec, pins={**spec.pins, **pinned}))
        for spec in list(self._catalog):
            if not spec.versions:
                continue
            last = latest.get(spec.name)
            if last is not None and spec.version(last.version) is not None:
                if not self._abandoned(last):
                    self._current[spec.name] = last
                    self._catalog.replace(replace(spec, deployed=last.version))
                    if last.artifact is not None:  # what the version has run since then
                        self._pin(spec.name, last.version, last.artifact)
                    continue
            version, detail = (
                spec.current_version or spec.versions[-1].name,
                ("the version the service file starts with"),
            )
            if last is not None and self._abandoned(last):
                assert last.previous_version is not None
                version = last.previous_version
                detail = (
                    f"back to {version}: deployment {last.id} of {last.version} "
                    f"{last.status.value} and was not rolled back"
                )
            first = Deployment(
                id=ids.new_id(ids.DEPLOYMENT),
                service=spec.name,
                version=version,
                previous_version=last.version if last else None,
                reason=DeploymentReason.INITIAL,
                status=DeploymentStatus.COMPLETED,
                started_at=self._after(last),
                ended_at=self._clock.now(),
                detail=detail,
            )
            try:
                await self._recorder.save_deployment(first)
            except StaleOwnerError:
                pass  # several replicas: the one that owns the service records its own
            self._current[spec.name] = first
            self._catalog.replace(replace(spec, deployed=first.version))

    def _abandoned(self, deployment: Deployment) -> bool:
        """A deploy that did not finish well, and nothing took its place: what ran before it
        (still declared) is what the service should run."""
        return (
            deployment.reason is DeploymentReason.DEPLOY
            and deployment.status in (DeploymentStatus.FAILED, DeploymentStatus.INTERRUPTED)
            and deployment.previous_version is not None
            and self._catalog.get(deployment.service).version(deployment.previous_version)
            is not None
        )

    def _after(self, last: Deployment | None) -> datetime:
        """Now, but strictly after ``last`` began: the newest record is the one in force,
        even if the clock stepped back."""
        now = self._clock.now()
        if last is not None and now <= last.started_at:
            return last.started_at + timedelta(milliseconds=1)
        return now

    # -- queries ----------------------------------------------------------------------------

    def current(self, service: str) -> Deployment | None:
        return self._current.get(service)

    def known_good(self, spec: ServiceSpec) -> list[str]:
        return known_good_versions(spec, self._proven.get(spec.name, ()))

    def proven(self, service: str) -> set[str]:
        return set(self._proven.get(service, ()))

    def rollback_target(self, spec: ServiceSpec) -> str | None:
        return rollback_target(spec, spec.current_version, self._proven.get(spec.name, ()))

    # -- changes ----------------------------------------------------------------------------

    async def begin(
        self,
        service: str,
        version: str,
        reason: DeploymentReason,
        *,
        deployment_id: str | None = None,
        recovery_id: str | None = None,
    ) -> tuple[Deployment, ServiceSpec]:
        """Record the move to ``version`` (durably, first), then make it the version the
        service runs. Returns the record and the service's spec naming the version."""
        spec = self._catalog.get(service)
        deployment = Deployment(
            id=deployment_id or ids.new_id(ids.DEPLOYMENT),
            service=service,
            version=version,
            previous_version=spec.current_version,
            reason=reason,
            status=DeploymentStatus.IN_PROGRESS,
            started_at=self._after(self._current.get(service)),
            recovery_id=recovery_id,
        )
        await durably(lambda: self._recorder.save_deployment(deployment), self._clock)
        moved = replace(self._catalog.get(service), deployed=version)
        self._catalog.replace(moved)
        self._current[service] = deployment
        return deployment, moved

    async def save(self, deployment: Deployment) -> None:
        """Write a changed record (progress, or its end); keep it if it is the current one.
        A deployment that completed records what its instances run (its artifact)."""
        if deployment.status is DeploymentStatus.COMPLETED and deployment.artifact is None:
            artifact = self._artifact_of(deployment.service, deployment.version)
            deployment = replace(deployment, artifact=artifact)
            if artifact is not None:
                self._pin(deployment.service, deployment.version, artifact)
        if self._current.get(deployment.service, deployment).id == deployment.id:
            self._current[deployment.service] = deployment
        await durably(lambda: self._recorder.save_deployment(deployment), self._clock)

    # -- known good -------------------------------------------------------------------------

    async def watch(self) -> None:
        """Promote deployments that have run healthy for their service's ``known_good_after``."""
        while True:
            await self._clock.sleep(KNOWN_GOOD_CHECK)
            for name, deployment in list(self._current.items()):
                try:
                    await self._check(name, deployment)
                except UnavailableError as exc:
                    log.warning("%s: cannot record known-good yet: %s", name, exc)

    async def _check(self, name: str, deployment: Deployment) -> None:
        if deployment.known_good_at is not None or deployment.status not in (
            DeploymentStatus.COMPLETED,
        ):
            return
        if name not in self._catalog:
            return
        if deployment.artifact is None and self._artifact_of(name, deployment.version):
            # Recorded before anything ran (the first start): record, and pin, what runs.
            await self.save(deployment)
            deployment = self._current.get(name, deployment)
        spec = self._catalog.get(name)
        declared = spec.version(deployment.version)
        if declared is not None and declared.known_good:
            # Declared known good: it is so from the moment it runs, no proving needed.
            at = deployment.ended_at or deployment.started_at
            await self._prove(replace(deployment, known_good_at=at))
            return
        health = self._health_of(name)
        if health.status is not ServiceStatus.HEALTHY or health.status_since is None:
            return
        since: datetime = max(health.status_since, deployment.ended_at or deployment.started_at)
        now = self._clock.now()
        if (now - since).total_seconds() < spec.known_good_after:
            return
        await self._prove(replace(deployment, known_good_at=now))
        log.info(
            "%s: %s is known good (healthy for %gs)",
            name,
            deployment.version,
            spec.known_good_after,
        )

    async def _prove(self, deployment: Deployment) -> None:
        """Record ``deployment`` known good, and pin what it ran to its version."""
        name, version = deployment.service, deployment.version
        # What it proved good with: what runs now (a restart since the deploy re-ran its pin).
        artifact = self._artifact_of(name, version) or deployment.artifact
        await self.save(replace(deployment, artifact=artifact))
        self._proven.setdefault(name, set()).add(version)
        if artifact is not None:
            self._pin(name, version, artifact)

    def _pin(self, name: str, version: str, artifact: str) -> None:
        """From now on, every start of ``version`` runs ``artifact``."""
        if name not in self._catalog:
            return
        spec = self._catalog.get(name)
        if spec.pins.get(version) != artifact:
            self._catalog.replace(replace(spec, pins={**spec.pins, version: artifact}))
            log.info("%s: %s pinned to %s", name, version, artifact)
