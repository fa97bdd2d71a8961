"""detection/health_tracking.py: thresholds, start-up grace, aggregation, and transitions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.clock import ManualClock
from phoenix_server.domain.health import (
    HealthTransition,
    Observation,
    ObservationKind,
    ServiceStatus,
)

HEALTHY, DEGRADED = ServiceStatus.HEALTHY, ServiceStatus.DEGRADED
UNHEALTHY, UNKNOWN = ServiceStatus.UNHEALTHY, ServiceStatus.UNKNOWN
SERVICES = """
services:
  - name: web
    command: [run, web]
    health: {process: true, interval: 1s, failure_threshold: 3, success_threshold: 2,
             startup_timeout: 10s}
  - name: ext
    platform: external
    health: {http: "http://ext.example/health", interval: 1s, failure_threshold: 2,
             startup_timeout: 10s}
"""


class World:
    """A tracker on a manual clock, with shorthands for the observations Phoenix makes."""

    def __init__(self, services: str = SERVICES) -> None:
        catalog = parse_service_file(
            services, source="s.yaml", base_dir=Path("/srv"), default_interval=1.0
        )
        self.clock = ManualClock()
        self.tracker = HealthTracker(catalog, self.clock)
        self.heard: list[HealthTransition] = []
        self.tracker.subscribe(self.heard.append)

    def send(
        self,
        kind: ObservationKind,
        target: str,
        *,
        ok: bool = False,
        service: str = "web",
        detail: str = "",
        latency: float | None = None,
    ) -> HealthTransition | None:
        return self.tracker.observe(
            Observation(service, target, kind, self.clock.now(), ok, detail, latency)
        )

    def probe(
        self,
        target: str,
        ok: bool,
        *,
        service: str = "web",
        detail: str = "",
        latency: float | None = None,
    ) -> HealthTransition | None:
        return self.send(
            ObservationKind.PROBE, target, ok=ok, service=service, detail=detail, latency=latency
        )

    def probes(self, target: str, ok: bool, count: int, *, service: str = "web") -> None:
        """``count`` probes one second apart (the clock moves after each)."""
        for _ in range(count):
            self.probe(target, ok, service=service)
            self.clock.advance(1)

    def status(self, service: str = "web") -> ServiceStatus:
        return self.tracker.status(service)


@pytest.fixture
def world() -> World:
    return World()


def started_and_healthy(world: World, target: str = "web-1") -> None:
    world.send(ObservationKind.STARTED, target)
    world.probe(target, True)
    assert world.status() is HEALTHY


# --- thresholds --------------------------------------------------------------------------------


def test_starts_unknown_and_first_pass_is_healthy(world: World) -> None:
    assert world.status() is UNKNOWN
    assert world.send(ObservationKind.STARTED, "web-1") is None
    transition = world.probe("web-1", True)
    assert transition is not None
    assert (transition.previous, transition.current) == (UNKNOWN, HEALTHY)
    assert world.status() is HEALTHY


def test_failure_threshold_consecutive_failures_make_it_unhealthy(world: World) -> None:
    started_and_healthy(world)
    world.probes("web-1", False, 2)
    assert world.status() is HEALTHY
    transition = world.probe("web-1", False, detail="connection refused")
    assert transition is not None
    assert (transition.previous, transition.current) == (HEALTHY, UNHEALTHY)
    assert transition.certain is False
    assert transition.reason == "connection refused"
    assert transition.evidence == ("web-1: unhealthy (connection refused)",)


def test_a_success_resets_the_failure_count(world: World) -> None:
    started_and_healthy(world)
    world.probes("web-1", False, 2)
    world.probe("web-1", True)
    world.probes("web-1", False, 2)
    assert world.status() is HEALTHY


def test_success_threshold_consecutive_passes_to_recover(world: World) -> None:
    started_and_healthy(world)
    world.probes("web-1", False, 3)
    assert world.status() is UNHEALTHY
    world.probe("web-1", True)
    assert world.status() is UNHEALTHY
    world.probe("web-1", False)
    world.probe("web-1", True)
    assert world.status() is UNHEALTHY
    world.probe("web-1", True)
    assert world.status() is HEALTHY


def test_process_exit_is_unhealthy_at_once_and_certain(world: World) -> None:
    started_and_healthy(world)
    transition = world.send(ObservationKind.EXIT, "web-1", detail="exit code -9")
    assert transition is not None
    assert (transition.previous, transition.current) == (HEALTHY, UNHEALTHY)
    assert transition.certain is True
    assert transition.reason == "exit code -9"
    assert world.tracker.view("web").targets == {"web-1": UNHEALTHY}


def test_exit_during_start_up_is_not_graced(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    transition = world.send(ObservationKind.EXIT, "web-1")
    assert transition is not None and transition.certain is True
    assert world.status() is UNHEALTHY


def test_exit_of_an_unknown_target_is_ignored(world: World) -> None:
    started_and_healthy(world)
    assert world.send(ObservationKind.EXIT, "web-404") is None
    assert world.status() is HEALTHY


def test_observation_of_an_undeclared_service_is_ignored(world: World) -> None:
    assert world.probe("x", False, service="nope") is None
    assert world.heard == []


# --- start-up grace ----------------------------------------------------------------------------


def test_failures_during_start_up_do_not_count(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    world.probes("web-1", False, 9)  # 9 seconds of a 10 s start-up window
    assert world.status() is UNKNOWN
    assert world.heard == []


def test_failures_after_start_up_count(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    world.clock.advance(10)
    world.probes("web-1", False, 2)
    assert world.status() is UNKNOWN
    world.probe("web-1", False)
    assert world.status() is UNHEALTHY


def test_a_target_failing_through_start_up_is_unhealthy_once_it_ends(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    world.probes("web-1", False, 10)
    world.probes("web-1", False, 3)
    assert world.status() is UNHEALTHY


def test_an_adopted_target_gets_no_grace(world: World) -> None:
    world.send(ObservationKind.ADOPTED, "web-1")
    world.probes("web-1", False, 2)
    assert world.status() is UNKNOWN
    world.probe("web-1", False)
    assert world.status() is UNHEALTHY


def test_grace_ends_once_the_target_was_healthy(world: World) -> None:
    started_and_healthy(world)
    world.probes("web-1", False, 3)  # still inside the 10 s window
    assert world.status() is UNHEALTHY


# --- aggregation -------------------------------------------------------------------------------


def test_one_healthy_one_unhealthy_is_degraded(world: World) -> None:
    started_and_healthy(world, "web-1")
    started_and_healthy(world, "web-2")
    world.send(ObservationKind.EXIT, "web-2")
    assert world.status() is DEGRADED
    assert world.tracker.view("web").targets == {"web-1": HEALTHY, "web-2": UNHEALTHY}
    world.send(ObservationKind.EXIT, "web-1")
    assert world.status() is UNHEALTHY


def test_all_targets_removed_after_having_some_is_unhealthy(world: World) -> None:
    started_and_healthy(world)
    transition = world.send(ObservationKind.REMOVED, "web-1")
    assert transition is not None
    assert (transition.current, transition.reason) == (UNHEALTHY, "removed")
    assert world.tracker.view("web").targets == {}


def test_only_fresh_instances_after_serving_is_unhealthy(world: World) -> None:
    started_and_healthy(world, "web-1")
    world.send(ObservationKind.STARTED, "web-2")
    assert world.status() is HEALTHY
    world.send(ObservationKind.REMOVED, "web-1")
    assert world.status() is UNHEALTHY
    world.probe("web-2", True)
    assert world.status() is HEALTHY


def test_traffic_switched_to_instances_found_running_keeps_the_status_until_probed(
    world: World,
) -> None:
    """A failback: the pods now serving ran already (adopted, not started). The moment
    between the old pods' removal and the first probe of the new is no outage (it opened an
    incident, and a failover, when that probe was slow)."""
    started_and_healthy(world, "web-1")
    world.send(ObservationKind.ADOPTED, "web-2")
    assert world.send(ObservationKind.REMOVED, "web-1") is None
    assert world.status() is HEALTHY
    world.probes("web-2", False, 2)
    assert world.status() is HEALTHY  # two failures of three: not yet
    world.probe("web-2", False)
    assert world.status() is UNHEALTHY


def test_only_fresh_instances_at_boot_is_unknown(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    world.send(ObservationKind.STARTED, "web-2")
    assert world.status() is UNKNOWN
    assert world.heard == []


def test_a_probe_racing_a_removal_is_ignored(world: World) -> None:
    started_and_healthy(world)
    world.send(ObservationKind.REMOVED, "web-1")
    assert world.probe("web-1", True) is None
    assert world.tracker.view("web").targets == {}


# --- external services -------------------------------------------------------------------------


def test_external_probe_registers_the_service_itself(world: World) -> None:
    transition = world.probe("ext", True, service="ext")
    assert transition is not None and transition.current is HEALTHY
    assert world.tracker.view("ext").targets == {"ext": HEALTHY}
    world.probes("ext", False, 2, service="ext")
    assert world.status("ext") is UNHEALTHY


def test_external_probe_with_another_target_name_is_ignored(world: World) -> None:
    assert world.probe("ext-1", True, service="ext") is None
    assert world.tracker.view("ext").targets == {}


def test_an_external_service_down_from_the_start_gets_no_grace(world: World) -> None:
    # Phoenix did not start it: the threshold applies from the first probe.
    world.probe("ext", False, service="ext")
    assert world.status("ext") is UNKNOWN
    transition = world.probe("ext", False, service="ext", detail="503")
    assert transition is not None
    assert (transition.previous, transition.current) == (UNKNOWN, UNHEALTHY)
    assert transition.evidence == ("ext: unhealthy (503)",)


# --- listeners and views -----------------------------------------------------------------------


def test_listeners_hear_every_transition_and_only_transitions(world: World) -> None:
    other: list[HealthTransition] = []
    world.tracker.subscribe(other.append)
    started_and_healthy(world)
    world.probes("web-1", True, 3)
    world.send(ObservationKind.EXIT, "web-1")
    assert [(t.previous, t.current) for t in world.heard] == [
        (UNKNOWN, HEALTHY),
        (HEALTHY, UNHEALTHY),
    ]
    assert other == world.heard
    assert all(t.service == "web" for t in world.heard)


def test_view_fields(world: World) -> None:
    world.send(ObservationKind.STARTED, "web-1")
    view = world.tracker.view("web")
    assert (view.status, view.last_check, view.uptime, view.latency_p50) == (
        UNKNOWN,
        None,
        None,
        None,
    )
    became_healthy = world.clock.now()
    world.probe("web-1", True, latency=0.010)
    world.clock.advance(1)
    world.probe("web-1", True, latency=0.030)
    world.clock.advance(1)
    world.probe("web-1", False, latency=5.0, detail="timeout")
    world.clock.advance(1)
    last = world.clock.now()
    world.probe("web-1", True, latency=0.020)
    view = world.tracker.view("web")
    assert view.name == "web"
    assert view.status is HEALTHY
    assert view.status_since == became_healthy
    assert view.reason == "probe"
    assert view.last_check == last
    assert view.latency_p50 == pytest.approx(0.020)
    assert view.uptime == 100.0
    assert view.targets == {"web-1": HEALTHY}


def test_view_uptime_follows_the_transitions(world: World) -> None:
    started_and_healthy(world)
    world.clock.advance(3600)
    world.send(ObservationKind.EXIT, "web-1")
    world.clock.advance(3600)
    assert world.tracker.view("web").uptime == 50.0


def test_seed_uptime_replays_history(world: World) -> None:
    now = world.clock.now()
    world.tracker.seed_uptime(
        "web",
        [
            (now - timedelta(hours=4), HEALTHY),
            (now - timedelta(hours=3), UNKNOWN),
            (now - timedelta(hours=2), UNHEALTHY),
            (now - timedelta(hours=1), DEGRADED),
        ],
    )
    # healthy 1h, unobserved 1h, unhealthy 1h, degraded (serving) 1h
    assert world.tracker.view("web").uptime == pytest.approx(66.667)


def test_mark_unobserved_closes_the_interval(world: World) -> None:
    started_and_healthy(world)
    world.clock.advance(3600)
    world.tracker.mark_unobserved(world.clock.now())
    world.clock.advance(7200)
    world.send(ObservationKind.STARTED, "web-2")
    world.send(ObservationKind.REMOVED, "web-1")
    world.clock.advance(3600)
    # serving 1h, unobserved 2h, then not serving 1h
    assert world.tracker.view("web").uptime == 50.0


# --- failures explained by a dependency --------------------------------------------------------

CHAIN = """
services:
  - name: db
    command: [run, db]
    health: {process: true, interval: 1s, timeout: 1s, failure_threshold: 1}
  - name: api
    command: [run, api]
    depends_on: [db]
    health: {process: true, interval: 1s, timeout: 1s, failure_threshold: 1}
  - name: front
    command: [run, front]
    depends_on: [api]
    health: {process: true, interval: 1s, timeout: 1s, failure_threshold: 1}
"""


@pytest.fixture
def chain() -> World:
    world = World(CHAIN)
    for name in ("db", "api", "front"):
        world.send(ObservationKind.STARTED, f"{name}-1", service=name)
        world.probe(f"{name}-1", True, service=name)
    world.clock.advance(60)
    return world


def test_a_failure_is_blamed_on_the_failing_dependency_at_the_root(chain: World) -> None:
    chain.probe("db-1", False, service="db")
    chain.probe("api-1", False, service="api")
    chain.probe("front-1", False, service="front")
    assert [chain.status(n) for n in ("db", "api", "front")] == [UNHEALTHY] * 3
    assert chain.tracker.waiting_on("db") is None, "the root's failure is its own"
    assert chain.tracker.waiting_on("api") == "db"
    assert chain.tracker.waiting_on("front") == "db"
    assert chain.tracker.failing_checks("api")


def test_a_crash_is_a_services_own_failure_whatever_its_dependencies_do(chain: World) -> None:
    chain.probe("db-1", False, service="db")
    chain.send(ObservationKind.EXIT, "api-1", service="api")
    assert chain.status("api") is UNHEALTHY
    assert not chain.tracker.failing_checks("api")
    assert chain.tracker.waiting_on("api") is None


def test_a_dependency_just_back_gives_its_callers_a_moment_then_blames_them(
    chain: World,
) -> None:
    chain.probe("db-1", False, service="db")
    chain.probe("api-1", False, service="api")
    chain.probe("db-1", True, service="db")
    assert chain.status("db") is HEALTHY
    # Grace: interval x (success_threshold + 1) + timeout = 3 s to see db back.
    assert chain.tracker.waiting_on("api") == "db"
    chain.clock.advance(3.5)
    assert chain.tracker.waiting_on("api") is None, "still failing: its own problem now"


def test_healthy_dependencies_explain_nothing(chain: World) -> None:
    chain.probe("api-1", False, service="api")
    assert chain.status("api") is UNHEALTHY and chain.tracker.waiting_on("api") is None
    assert chain.tracker.detection_time("db") == 2.0


def test_a_platforms_unhealthy_verdict_holds_against_passing_probes_until_it_changes() -> None:
    """Docker's HEALTHCHECK says unhealthy: at once (Docker already retried), and Phoenix's
    own passing probes do not overrule it; its 'healthy' lets the probes decide again."""
    world = World()
    world.send(ObservationKind.STARTED, "w1")
    world.probes("w1", True, 2)
    assert world.status() is HEALTHY
    transition = world.send(
        ObservationKind.VERDICT, "w1", detail="w1: Docker's HEALTHCHECK says unhealthy"
    )
    assert transition is not None and transition.current is UNHEALTHY
    assert "HEALTHCHECK says unhealthy" in world.tracker.view("web").reason
    world.probes("w1", True, 3)
    assert world.status() is UNHEALTHY, "passing probes do not overrule the verdict"
    world.send(ObservationKind.VERDICT, "w1", ok=True, detail="w1: HEALTHCHECK passes")
    world.probes("w1", True, 2)
    assert world.status() is HEALTHY


def test_a_verdict_on_a_service_already_unhealthy_becomes_its_reason() -> None:
    world = World()
    world.send(ObservationKind.STARTED, "w1")
    world.probes("w1", True, 2)
    world.send(ObservationKind.EXIT, "w1", detail="w1 exited with code 1")
    assert world.status() is UNHEALTHY
    world.send(ObservationKind.STARTED, "w2")  # restarted by someone else: still unhealthy
    world.send(ObservationKind.VERDICT, "w2", detail="w2: a crash loop")
    view = world.tracker.view("web")
    assert view.status is UNHEALTHY and view.reason == "w2: a crash loop"
