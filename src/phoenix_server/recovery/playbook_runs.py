"""Playbooks as plans: each declared step becomes one recorded step, run by a handler.

A step naming a strategy (``restart_service``, ``rollback``, ``scale``, ``failover``,
``circuit_break``) runs that strategy's whole plan inside the one step (its sub-steps are
told in the step's detail), so a playbook's conditions see one result per declared step.
``http_request`` and the service's named actions call the service's own endpoints (each
instance's, when the URL names ``{port}``); ``notify`` records a message; ``run_command``
(only in playbooks from the operator's files) runs a command where the service runs.
Unlike a strategy plan, a failed step does not stop the run: the conditions of the
steps after it decide. The run ends with a health verification, which is its verdict.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp

from phoenix_server.domain.errors import UnsupportedStrategyError
from phoenix_server.domain.playbooks import BuiltinAction, Playbook, PlaybookStep
from phoenix_server.domain.recoveries import PlannedStep, StepCondition, Strategy
from phoenix_server.domain.services import (
    HttpAction,
    Instance,
    InstanceState,
    RenderContext,
    ServiceSpec,
    placeholders_in,
    render,
)
from phoenix_server.recovery.actions import Handler, StepContext, StepOutcome
from phoenix_server.recovery.strategies import (
    HOOK_TIMEOUT,
    TRAFFIC_TIMEOUT,
    Plan,
    PlanInput,
    plan_for,
)
from phoenix_server.recovery.workload_actions import STEP_HANDLERS

log = logging.getLogger("phoenix.recovery")

STRATEGY_OF: dict[str, Strategy] = {
    BuiltinAction.RESTART_SERVICE: Strategy.RESTART,
    BuiltinAction.ROLLBACK: Strategy.ROLLBACK,
    BuiltinAction.SCALE: Strategy.SCALE,
    BuiltinAction.FAILOVER: Strategy.FAILOVER,
    BuiltinAction.CIRCUIT_BREAK: Strategy.CIRCUIT_BREAK,
}
HTTP_TIMEOUT = 10.0
STRATEGY_TIMEOUT = 120.0


def uses_strategies(playbook: Playbook) -> bool:
    """A step of ``playbook`` runs one of the five strategies (which the service's platform
    must support); without one it only calls the service's endpoints and waits."""
    return any(step.action in STRATEGY_OF for step in playbook.steps)


def main_strategy(playbook: Playbook) -> Strategy:
    """The strategy a playbook's run is filed under: its first strategy step's (restart for
    a playbook of endpoint calls only, which is what they stand in for)."""
    for step in playbook.steps:
        if step.action in STRATEGY_OF:
            return STRATEGY_OF[step.action]
    return Strategy.RESTART


def _step_name(step: PlaybookStep) -> str:
    return step.name or step.action.replace("_", " ").capitalize()


def _timeout(step: PlaybookStep, service: ServiceSpec) -> float:
    if step.timeout is not None:
        return step.timeout
    if step.action in STRATEGY_OF:
        return STRATEGY_TIMEOUT
    if step.action == BuiltinAction.VERIFY_HEALTH:
        return service.health.startup_timeout
    if step.action == BuiltinAction.WAIT:
        return float(str(step.params.get("seconds", 0))) + TRAFFIC_TIMEOUT
    if step.action == BuiltinAction.RUN_COMMAND:
        return HOOK_TIMEOUT
    return HTTP_TIMEOUT


def plan_playbook(playbook: Playbook, service: ServiceSpec) -> Plan:
    """The recorded steps of one run of ``playbook`` for ``service``, then the verdict."""
    steps: list[PlannedStep] = []
    for index, step in enumerate(playbook.steps):
        params: dict[str, object] = dict(step.params)
        action = step.action
        if action in STRATEGY_OF:
            params["strategy"] = STRATEGY_OF[action].value
            action = "run_strategy"
        elif action == BuiltinAction.HTTP_REQUEST:
            action = "http_request"
        elif action not in {a.value for a in BuiltinAction}:
            params["named"] = action  # one of the service's declared actions
            action = "http_request"
        steps.append(
            PlannedStep(
                _step_name(step),
                action,
                _timeout(step, service),
                condition=step.condition,
                params={**params, "playbook_step": index},
                abort_on_failure=False,
            )
        )
    steps.append(
        PlannedStep(
            "Outcome: health verification",
            "verify_health",
            service.health.startup_timeout,
            condition=StepCondition.ALWAYS,
            abort_on_failure=False,
        )
    )
    return Plan(tuple(steps))


# -- handlers -----------------------------------------------------------------------------------


async def run_strategy(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """A strategy's whole plan as one playbook step; its sub-steps' results in the detail."""
    strategy = Strategy(str(step.params["strategy"]))
    service = ctx.service
    version: str | None = None
    if strategy is Strategy.ROLLBACK:
        if ctx.prepare_rollback is None:
            return StepOutcome(False, "rollback is not available in this run")
        service, version = await ctx.prepare_rollback()
    instances = tuple(ctx.platform.instances(service.name))
    given = PlanInput(service, instances, version=version)
    if strategy is Strategy.SCALE and "replicas" in step.params:
        wanted = int(str(step.params["replicas"]))
        live = sum(1 for i in instances if i.alive)
        if wanted <= live:
            return StepOutcome(True, f"scale: already {live} replica(s); {wanted} asked")
        given = PlanInput(
            replace(
                service,
                replicas=replace(service.replicas, step=max(1, wanted - live)),
            ),
            instances,
        )
    plan = plan_for(strategy, given)
    sub = replace(ctx, service=given.service)
    deadline = ctx.clock.monotonic() + timeout
    told: list[str] = []
    for planned in plan.steps:
        remaining = deadline - ctx.clock.monotonic()
        if remaining <= 0:
            return StepOutcome(False, "; ".join([*told, f"{planned.name}: no time left"]), True)
        try:
            async with asyncio.timeout(remaining):
                outcome = await STEP_HANDLERS[planned.action](
                    sub, planned, min(planned.timeout, remaining)
                )
        except TimeoutError:
            return StepOutcome(False, "; ".join([*told, f"{planned.name}: timed out"]), True)
        told.append(f"{planned.name}: {'ok' if outcome.ok else 'failed'} ({outcome.detail})")
        if not outcome.ok and planned.abort_on_failure:
            _carry_back(ctx, sub)
            return StepOutcome(False, "; ".join(told), outcome.timed_out)
    _carry_back(ctx, sub)
    return StepOutcome(True, f"{strategy.value}: " + "; ".join(told))


def _carry_back(ctx: StepContext, sub: StepContext) -> None:
    """What the strategy's steps learnt (downtime, verification, integrity) is the run's."""
    ctx.fresh = sub.fresh
    ctx.down_since = sub.down_since
    ctx.back_at = sub.back_at
    ctx.verified_at = sub.verified_at
    ctx.integrity = sub.integrity


def _own_endpoint(url: str, service: ServiceSpec, ports: set[int]) -> bool:
    """A playbook calls only the service's own endpoints: on loopback or the service's host,
    and on its public port or one of its instances' ports."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    host = parts.hostname
    if host is None or port not in ports:
        return False
    if host in ("localhost", service.host):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def http_request(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Call the service's own endpoint (a named action of the service, or a URL); a URL
    naming ``{port}`` is called on every running instance, and all must answer as expected."""
    service = ctx.service
    named = step.params.get("named")
    if named is not None:
        action = service.actions.get(str(named))
        if action is None:
            return StepOutcome(False, f"service '{service.name}' declares no action '{named}'")
    else:
        action = HttpAction(
            method=str(step.params.get("method") or "POST"),
            url=str(step.params["url"]),
            body=str(step.params["body"]) if step.params.get("body") is not None else None,
        )
    ports: list[int | None] = [service.port]
    if "port" in placeholders_in(action.url):
        ports = [
            i.port
            for i in ctx.platform.instances(service.name)
            if i.state is InstanceState.RUNNING and i.port is not None
        ]
        if not ports:
            return StepOutcome(False, "no running instance to call")
    own_ports = {i.port for i in ctx.platform.instances(service.name) if i.port is not None}
    if service.port is not None:
        own_ports.add(service.port)
    results = []
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        for port in ports:
            url = render(action.url, RenderContext(name=service.name, python="", port=port))
            if not _own_endpoint(url, service, own_ports):
                return StepOutcome(
                    False,
                    f"refused {url}: a playbook calls only the service's own endpoints "
                    "(loopback or its host, on its port or its instances')",
                )
            try:
                async with session.request(
                    action.method,
                    url,
                    data=action.body,
                    headers=dict(action.headers),
                    allow_redirects=False,  # a redirect must not lead it elsewhere
                ) as answer:
                    await answer.read()
                    low, high = action.expect_status
                    ok = low <= answer.status <= high
                    results.append((ok, f"{action.method} {url} → {answer.status}"))
            except (aiohttp.ClientError, OSError) as exc:
                results.append((False, f"{action.method} {url}: {exc.__class__.__name__}"))
    return StepOutcome(all(ok for ok, _ in results), "; ".join(text for _, text in results))


async def notify(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    message = str(step.params.get("message") or f"playbook step for {ctx.service.name}")
    log.warning("%s: playbook notice: %s", ctx.service.name, message)
    return StepOutcome(True, f"noted: {message}")


async def run_command(ctx: StepContext, step: PlannedStep, timeout: float) -> StepOutcome:
    """Only playbooks from the operator's files reach here (validation refuses it for API
    playbooks); the command runs where the service runs, like its hooks."""
    argv = step.params.get("command")
    if not isinstance(argv, list | tuple) or not argv:
        return StepOutcome(False, "no command to run")
    ok, detail = await ctx.hooks.run_hook(ctx.service, [str(a) for a in argv], timeout)
    return StepOutcome(ok, detail)


PLAYBOOK_HANDLERS: dict[str, Handler] = {
    **STEP_HANDLERS,
    "run_strategy": run_strategy,
    "http_request": http_request,
    "notify": notify,
    "run_command": run_command,
}
"""Every action a strategy plan or a playbook plan may name."""


# -- dry run ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPreview:
    position: int
    name: str
    action: str
    condition: StepCondition
    timeout: float
    would: str
    """``run``, ``skip``, or ``depends`` (on the steps before it)."""
    why: str
    plan: tuple[str, ...] = ()
    """For a strategy step: the steps of the strategy's plan for the service as it is now."""


def preview(
    playbook: Playbook,
    service: ServiceSpec,
    instances: tuple[Instance, ...],
    *,
    serving: bool,
    rollback_to: str | None,
) -> list[StepPreview]:
    """What a run would do now, acting on nothing: which steps run, which are skipped and
    why, which depend on how earlier steps end, and what each strategy step would do."""
    plan = plan_playbook(playbook, service)
    previews = []
    for position, planned in enumerate(plan.steps):
        condition = planned.condition
        if condition is StepCondition.ALWAYS:
            would, why = "run", "always"
        elif condition in (StepCondition.IF_HEALTHY, StepCondition.IF_UNHEALTHY):
            runs = serving if condition is StepCondition.IF_HEALTHY else not serving
            now = "serving" if serving else "not serving"
            would = "run" if runs else "skip"
            why = f"{condition.value}: the service is {now} now (checked again when it runs)"
        elif position == 0:
            runs = condition is StepCondition.IF_PREVIOUS_SUCCEEDED
            would = "run" if runs else "skip"
            why = f"{condition.value}: nothing runs before the first step"
        else:
            would, why = "depends", f"{condition.value}: on how step {position} ends"
        sub: tuple[str, ...] = ()
        if planned.action == "run_strategy":
            strategy = Strategy(str(planned.params["strategy"]))
            if strategy is Strategy.ROLLBACK and rollback_to is None:
                why += "; no known-good version to roll back to: this step would fail"
            else:
                given = PlanInput(service, instances, version=rollback_to)
                try:
                    sub = tuple(s.name for s in plan_for(strategy, given).steps)
                except UnsupportedStrategyError as exc:
                    why += f"; this step would fail: {exc.message}"
        previews.append(
            StepPreview(
                position, planned.name, planned.action, condition, planned.timeout, would, why, sub
            )
        )
    return previews
