"""Deploys: an operator rolls a service to one of its declared versions.

A deploy holds the service (no recovery starts meanwhile), records the move before it
acts, replaces the instances one at a time behind the router (the rollback plan without
its data migration), and validates: health, then the smoke hook if declared. Each step is
written to the deployment's record as it starts and ends. A version that fails validation
is rolled back at once to the version that ran before it (a rollback recovery, in the
history like any other).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

from phoenix_server.domain import ids
from phoenix_server.domain.deployments import Deployment, DeploymentReason, DeploymentStatus
from phoenix_server.domain.errors import InvalidRequestError, PhoenixError, Problem
from phoenix_server.domain.recoveries import RecoveryTrigger, Step, Strategy
from phoenix_server.domain.services import ServiceCatalog
from phoenix_server.platforms.base import PlatformRegistry
from phoenix_server.recovery.claims import Activity, Claim
from phoenix_server.recovery.executing import Executor, planned_steps, stopped_steps
from phoenix_server.recovery.orchestrating import Orchestrator
from phoenix_server.recovery.strategies import PlanInput, plan_deploy_for
from phoenix_server.recovery.versions import VersionKeeper
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.recovery")


class _DeploymentSteps:
    """A deploy's steps, written into its deployment record as each starts and ends."""

    def __init__(self, versions: VersionKeeper, deployment: Deployment, steps: list[Step]) -> None:
        self._versions = versions
        self._deployment = deployment
        self.steps = steps

    def set(self, step: Step) -> None:
        self.steps[step.position] = step

    async def flush(self) -> None:
        await self._versions.save(replace(self._deployment, steps=tuple(self.steps)))


class Deployer:
    def __init__(
        self,
        *,
        catalog: ServiceCatalog,
        platforms: PlatformRegistry,
        versions: VersionKeeper,
        orchestrator: Orchestrator,
        executor: Executor,
    ) -> None:
        self._catalog = catalog
        self._platforms = platforms
        self._versions = versions
        self._orchestrator = orchestrator
        self._claims = orchestrator.claims
        self._executor = executor
        self._tasks = SupervisedTasks("deploy")

    @property
    def tasks(self) -> SupervisedTasks:
        """Its background tasks (their deaths are reported by /health)."""
        return self._tasks

    async def close(self) -> None:
        await self._tasks.close(timeout=10.0)

    async def deploy(self, service: str, version: str) -> tuple[Deployment, bool]:
        """Start rolling ``service`` to ``version``; the deployment is recorded before this
        returns. Returns it and whether anything changes (False: it already runs it)."""
        spec = self._catalog.get(service)
        if not spec.versions:
            message = (
                f"service '{service}' declares no versions to deploy "
                "(add a versions: list to its service file)"
            )
            raise InvalidRequestError(message, [Problem("version", message)])
        if spec.version(version) is None:
            declared = ", ".join(v.name for v in spec.versions)
            message = f"unknown version '{version}' of '{service}'; declared: {declared}"
            raise InvalidRequestError(message, [Problem("version", message)])
        current = self._versions.current(service)
        if (
            current is not None
            and current.version == version
            and current.status is DeploymentStatus.COMPLETED
        ):
            return current, False
        deployment_id = ids.new_id(ids.DEPLOYMENT)
        claim = self._claims.claim(service, Activity.DEPLOY, f"deployed ({deployment_id})")
        try:
            deployment, _ = await self._versions.begin(
                service, version, DeploymentReason.DEPLOY, deployment_id=deployment_id
            )
        except BaseException:
            self._claims.release(claim)
            raise
        log.info("%s: deploying %s (%s)", service, version, deployment.id)
        self._tasks.spawn(self._run(deployment, claim), name=f"deploy-{service}")
        return deployment, True

    async def _run(self, deployment: Deployment, claim: Claim) -> None:
        name = deployment.service
        try:
            deployment = await self._carry_out(deployment)
        except Exception as exc:
            # A bug, or the database gone for longer than a step may wait: never leave the
            # record in progress and the service half-deployed without a word.
            log.exception("%s: deployment %s stopped by an error", name, deployment.id)
            deployment = replace(
                deployment,
                status=DeploymentStatus.FAILED,
                ended_at=self._executor.context_for(self._catalog.get(name)).clock.now(),
                detail=f"stopped by an error: {exc}",
            )
            try:
                await self._versions.save(deployment)
            except Exception:
                log.exception("%s: could not record that %s failed", name, deployment.id)
        finally:
            self._claims.release(claim)
        if deployment.status is DeploymentStatus.FAILED:
            await self._roll_back_failed(deployment)

    async def _carry_out(self, deployment: Deployment) -> Deployment:
        spec = self._catalog.get(deployment.service)
        platform = self._platforms.for_service(spec)
        given = PlanInput(spec, tuple(platform.instances(spec.name)), version=deployment.version)
        plan = plan_deploy_for(given)
        ctx = self._executor.context_for(spec)
        clock = ctx.clock
        progress = _DeploymentSteps(
            self._versions, deployment, planned_steps(plan, self._executor.recovery_timeout)
        )
        try:
            ran = await self._executor.run_steps(
                f"{deployment.id} {deployment.service}", plan, ctx, progress
            )
        except asyncio.CancelledError:
            ended = clock.now()
            stopped = replace(
                deployment,
                status=DeploymentStatus.INTERRUPTED,
                ended_at=ended,
                detail="Phoenix stopped while it ran",
                steps=stopped_steps(progress.steps, ended),
            )
            await asyncio.shield(self._versions.save(stopped))
            raise
        failed = ran.aborted_by
        if failed is None:
            status, detail = DeploymentStatus.COMPLETED, f"{deployment.version} deployed"
        else:
            status = DeploymentStatus.FAILED
            detail = f"step '{failed.name}' {failed.status.value}: {failed.detail}"
        finished = replace(
            deployment,
            status=status,
            ended_at=clock.now(),
            detail=detail,
            steps=tuple(progress.steps),
        )
        await self._versions.save(finished)
        log.info("%s: deployment %s %s: %s", spec.name, deployment.id, status.value, detail)
        return finished

    async def _roll_back_failed(self, deployment: Deployment) -> None:
        """Back to what ran before the failed version: it was serving a moment ago."""
        spec = self._catalog.get(deployment.service)
        target = deployment.previous_version
        if target is None or spec.version(target) is None:
            log.error(
                "%s: %s failed and no earlier version is declared to go back to; "
                "leaving it to detection and recovery",
                spec.name,
                deployment.version,
            )
            return
        reason = f"deployment {deployment.id} of {deployment.version} failed: {deployment.detail}"
        try:
            recovery = await self._orchestrator.trigger(
                service=spec.name,
                strategy=Strategy.ROLLBACK,
                reason=reason,
                force=False,
                trigger=RecoveryTrigger.AUTOMATIC,
                policy_reason=f"a failed deploy goes back to what ran before it ({target})",
                rollback_to=target,
            )
        except PhoenixError as exc:
            log.error("%s: could not roll back the failed deploy: %s", spec.name, exc.message)
            return
        await self._versions.save(
            replace(deployment, detail=f"{deployment.detail}; rolling back by {recovery.id}")
        )
