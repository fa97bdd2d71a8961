"""Strategies as plain functions that *plan*: a service in, a list of steps (data) out.

Planning does no I/O and needs no event loop, so every plan can be tested on its own;
the executor carries the steps out. Register a planner in :data:`PLANNERS`.
"""

from __future__ import annotations

from collections.abc import Callable

from phoenix_server.domain.recoveries import PlannedStep, Strategy
from phoenix_server.domain.services import ServiceSpec

Planner = Callable[[ServiceSpec], list[PlannedStep]]

STOP_MARGIN = 15.0
"""Seconds beyond the stop grace period for SIGKILL and reaping."""
START_TIMEOUT = 30.0
TRAFFIC_TIMEOUT = 10.0


def plan_restart(service: ServiceSpec) -> list[PlannedStep]:
    """Graceful shutdown → clean start → health verification → traffic restored."""
    return [
        PlannedStep("Graceful shutdown", "stop_instances", service.stop.grace + STOP_MARGIN),
        PlannedStep(
            "Service restart",
            "start_instances",
            START_TIMEOUT,
            params={"count": max(1, service.replicas.min)},
        ),
        PlannedStep("Health verification", "verify_health", service.health.startup_timeout),
        PlannedStep("Traffic restoration", "restore_traffic", TRAFFIC_TIMEOUT),
    ]


PLANNERS: dict[Strategy, Planner] = {Strategy.RESTART: plan_restart}
"""The planner of each strategy Phoenix can carry out."""

DEFAULT_ESTIMATES: dict[Strategy, float] = {
    Strategy.RESTART: 10.0,
    Strategy.ROLLBACK: 60.0,
    Strategy.SCALE: 30.0,
    Strategy.FAILOVER: 15.0,
    Strategy.CIRCUIT_BREAK: 60.0,
}
"""Seconds quoted as ``estimatedDuration`` until a service has its own history."""
