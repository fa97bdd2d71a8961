"""Step handlers of the plans for workloads that a cluster runs (Kubernetes): each asks the
API for one change, and ``await_rollout`` watches the rollout the change caused until the
controller reports it done — the pods of the new revision updated and available, none of
the old ones left — or stuck (a progress deadline passed, new pods that cannot run).

The pods ``await_rollout`` finds are the attempt's fresh instances: the health verification
that follows probes exactly them.
"""

from __future__ import annotations

import asyncio

from phoenix_server.domain.recoveries import PlannedStep
from phoenix_server.platforms.base import (
    TRAFFIC_SELECTION,
    WORKLOADS,
    Rollout,
    TrafficSelection,
    Workloads,
)
from phoenix_server.recovery.actions import HANDLERS, Handler, StepContext, StepOutcome


def _workloads(ctx: StepContext) -> Workloads:
    return WORKLOADS.require(ctx.platform, ctx.service)


async def replace_instances(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    names = step.params.get("instances")
    assert isinstance(names, list | tuple)
    ids = [str(name) for name in names]
    live = {i.id for i in ctx.platform.instances(ctx.service.name)}
    gone = [name for name in ids if name not in live]
    present = [name for name in ids if name in live]
    if not present:
        return StepOutcome(True, f"already gone: {', '.join(gone)}")
    detail = await _workloads(ctx).replace_instances(ctx.service, present)
    return StepOutcome(True, detail + (f" ({', '.join(gone)} already gone)" if gone else ""))


async def restart_workload(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    return StepOutcome(True, await _workloads(ctx).restart_workload(ctx.service))


async def roll_to(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    version = str(step.params["version"])
    return StepOutcome(True, await _workloads(ctx).roll_to(ctx.service, version))


async def scale_workload(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    replicas = step.params["replicas"]
    assert isinstance(replicas, int)
    return StepOutcome(True, await _workloads(ctx).scale_workload(ctx.service, replicas))


async def await_rollout(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Until the controller reports the rollout complete (or stuck): its pods are then the
    ones the next verification probes."""
    workloads = _workloads(ctx)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    replaced = {
        (str(pair[0]), str(pair[1]))
        for pair in _listed(step.params.get("replaced"))
        if isinstance(pair, list | tuple) and len(pair) == 2
    }
    replicas = step.params.get("replicas")
    wanted = replicas if isinstance(replicas, int) else 0

    def complete(rollout: Rollout) -> bool:
        # A pod deletion does not move the Deployment's generation: its status may still
        # be the one from before, so the replacements themselves must be there.
        pods = {(i.id, i.started_at.isoformat()) for i in rollout.instances}
        return (
            rollout.done
            and rollout.replicas >= wanted
            and len(pods) >= rollout.replicas
            and not pods & replaced
        )

    rollout = await workloads.rollout(ctx.service)
    while not complete(rollout) and rollout.failed is None:
        left = deadline - loop.time()
        if left <= 0:
            return StepOutcome(False, f"rollout not done in {timeout:g}s: {rollout.detail}", True)
        try:
            async with asyncio.timeout(min(left, ROLLOUT_POLL)):
                rollout = await workloads.wait_for_rollout(ctx.service)
        except TimeoutError:
            # Nothing moved meanwhile: ask the API itself (a watch may lag or be down).
            rollout = await workloads.rollout(ctx.service)
    if rollout.failed is not None:
        return StepOutcome(False, f"rollout failed: {rollout.failed} ({rollout.detail})")
    ctx.fresh = list(rollout.instances)
    return StepOutcome(True, f"rollout complete: {rollout.detail}")


def _traffic(ctx: StepContext) -> TrafficSelection:
    return TRAFFIC_SELECTION.require(ctx.platform, ctx.service)


async def switch_traffic(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    role = str(step.params["role"])
    detail = await _traffic(ctx).switch_traffic(ctx.service, role)
    ctx.fresh = [i for i in ctx.platform.instances(ctx.service.name) if i.alive]
    return StepOutcome(True, detail)


async def open_circuit(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    names = step.params.get("instances") or []
    assert isinstance(names, list | tuple)
    detail = await _traffic(ctx).open_circuit(ctx.service, [str(n) for n in names])
    return StepOutcome(True, detail)


async def close_circuit(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    return StepOutcome(True, await _traffic(ctx).close_circuit(ctx.service))


def _listed(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


ROLLOUT_POLL = 2.0
"""Seconds without a watched change before the rollout's state is read from the API."""

WORKLOAD_HANDLERS: dict[str, Handler] = {
    "replace_instances": replace_instances,
    "restart_workload": restart_workload,
    "roll_to": roll_to,
    "scale_workload": scale_workload,
    "await_rollout": await_rollout,
    "switch_traffic": switch_traffic,
    "open_circuit": open_circuit,
    "close_circuit": close_circuit,
}

STEP_HANDLERS: dict[str, Handler] = {**HANDLERS, **WORKLOAD_HANDLERS}
"""Every action a planned step may name, on any platform."""
