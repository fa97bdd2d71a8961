"""Claims as pure code on a clock the test moves: one holder per service, tokens that grow,
a forced takeover and its undoing, release listeners, and the crash-loop backoff."""

from __future__ import annotations

import pytest

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.errors import ConflictError, NotOwnerError, RecoveryInProgressError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.recovery.claims import Activity, Claim, LocalClaims
from tests.support import REPO

SPEC = parse_service_file(
    """services:
  - name: svc
    command: ["{python}", "-c", "pass"]
    health: {process: true}
    recovery: {backoff: {initial: 2s, max: 5s, reset_after: 10s}}
""",
    source="test",
    base_dir=REPO,
    default_interval=1.0,
).get("svc")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def claims(clock: Clock | None = None) -> LocalClaims:
    return LocalClaims(clock or Clock(), fleet_floor=0.5, fleet_floor_min=3)


def test_one_holder_at_a_time_and_the_refusal_names_it() -> None:
    ledger = claims()
    recovery = ledger.claim("svc", Activity.RECOVERY, "rec-1")
    with pytest.raises(RecoveryInProgressError) as refused:
        ledger.claim("svc", Activity.DEPLOY, "deployed (dep-1)")
    assert "rec-1" in refused.value.message
    ledger.release(recovery)
    deploy = ledger.claim("svc", Activity.DEPLOY, "deployed (dep-1)")
    with pytest.raises(ConflictError, match="service 'svc' is being deployed \\(dep-1\\)"):
        ledger.claim("svc", Activity.RECOVERY, "rec-2")
    assert ledger.holder("svc") == deploy and ledger.holder("other") is None
    assert ledger.held() == {"svc"}
    assert deploy.token > recovery.token


def test_a_forced_claim_takes_over_and_can_hand_the_service_back() -> None:
    ledger = claims()
    first = ledger.claim("svc", Activity.RECOVERY, "rec-1")
    forced = ledger.claim("svc", Activity.RECOVERY, "rec-2", replacing=first)
    assert not ledger.holds(first) and ledger.holds(forced)
    ledger.release(first)  # the superseded run ending later frees nothing
    assert ledger.holds(forced)
    ledger.release(forced, back_to=first)  # the forced one could not be recorded
    assert ledger.holder("svc") == first


def test_replacing_a_claim_that_has_ended_is_refused() -> None:
    ledger = claims()
    first = ledger.claim("svc", Activity.RECOVERY, "rec-1")
    ledger.release(first)
    with pytest.raises(ConflictError, match="has ended"):
        ledger.claim("svc", Activity.RECOVERY, "rec-2", replacing=first)


def test_a_relabelled_claim_is_the_same_claim_and_refusals_name_its_new_label() -> None:
    ledger = claims()
    first = ledger.claim("svc", Activity.RECOVERY, "rec-1")
    second = ledger.relabel(first, "rec-2")  # the run's next attempt
    assert ledger.holds(first) and ledger.holds(second) and second.token == first.token
    with pytest.raises(RecoveryInProgressError) as refused:
        ledger.claim("svc", Activity.DEPLOY, "deployed (dep-1)")
    assert "rec-2" in refused.value.message
    ledger.release(first)
    assert ledger.holder("svc") is None


def test_listeners_hear_every_release_but_not_a_hand_back() -> None:
    ledger = claims()
    heard: list[Claim] = []
    ledger.on_release(heard.append)
    first = ledger.claim("svc", Activity.SCALE_IN, "scaled in")
    forced = ledger.claim("svc", Activity.RECOVERY, "rec-2", replacing=first)
    ledger.release(forced, back_to=first)
    assert heard == []
    ledger.release(first)
    assert heard == [first] and ledger.holder("svc") is None


def test_crash_loop_backoff_doubles_and_resets_after_a_healthy_spell() -> None:
    clock = Clock()
    ledger = claims(clock)
    assert ledger.crash_loop_delay(SPEC) is None  # never recovered: act at once
    ledger.recovered("svc")
    clock.now = 3.0
    assert ledger.crash_loop_delay(SPEC) == 2.0
    ledger.recovered("svc")
    clock.now = 6.0
    assert ledger.crash_loop_delay(SPEC) == 4.0
    ledger.recovered("svc")
    clock.now = 9.0
    assert ledger.crash_loop_delay(SPEC) == 5.0  # capped at max
    ledger.recovered("svc")
    clock.now = 19.0  # ten seconds healthy: a fresh failure
    assert ledger.crash_loop_delay(SPEC) is None
    ledger.recovered("svc")
    clock.now = 20.0
    assert ledger.crash_loop_delay(SPEC) == 2.0


def test_the_budget_behind_the_claims_counts_spends_and_refunds() -> None:
    ledger = claims()
    before = ledger.budget_remaining(SPEC)
    ledger.spend(SPEC)
    ledger.spend(SPEC)
    ledger.refund(SPEC)
    assert ledger.budget_remaining(SPEC) == before - 1 and ledger.budget_left(SPEC)


class Leases:
    """Which services this replica owns, as a test sets it (the cluster's seam)."""

    def __init__(self, *owned: str) -> None:
        self.owned = set(owned)
        self.epoch = 1

    def owns(self, service: str) -> bool:
        return service in self.owned

    def owner_of(self, service: str) -> str | None:
        return "replica-1" if service in self.owned else "replica-2"

    def epoch_of(self, service: str) -> int | None:
        return self.epoch


def test_with_several_replicas_only_the_owner_claims_and_a_lost_lease_stops_the_holder() -> None:
    leases = Leases("svc")
    ledger = LocalClaims(Clock(), fleet_floor=0.5, fleet_floor_min=3, ownership=leases)
    with pytest.raises(NotOwnerError, match="owned by replica replica-2, not this one"):
        ledger.claim("other", Activity.RECOVERY, "rec-1")
    assert not ledger.acts_on("other") and ledger.acts_on("svc")
    held = ledger.claim("svc", Activity.RECOVERY, "rec-2")
    assert ledger.holds(held)
    leases.owned.clear()  # the lease ran out, or another replica took the service
    assert not ledger.holds(held), "the recovery stops at its next step"
    assert not ledger.acts_on("svc")
    with pytest.raises(NotOwnerError):
        ledger.claim("svc", Activity.DEPLOY, "deployed (dep-1)")


def test_a_lease_lost_and_taken_again_does_not_revive_a_claim_of_the_earlier_one() -> None:
    leases = Leases("svc")
    ledger = LocalClaims(Clock(), fleet_floor=0.5, fleet_floor_min=3, ownership=leases)
    old = ledger.claim("svc", Activity.RECOVERY, "rec-1")
    assert old.epoch == 1 and ledger.holds(old)
    leases.epoch = 3  # lost, another replica had it (2), and this one took it back
    assert not ledger.holds(old), "a run of epoch 1 must not go on under epoch 3"


class Statuses:
    """The two questions the fleet floor asks of the health tracker, as a test sets them."""

    def __init__(self, down: set[str]) -> None:
        self.down = down

    def status(self, service: str) -> ServiceStatus:
        return ServiceStatus.UNHEALTHY if service in self.down else ServiceStatus.HEALTHY

    def waiting_on(self, service: str) -> str | None:
        return None


def test_with_several_replicas_each_judges_the_fleet_floor_on_the_services_it_owns() -> None:
    names = [f"svc-{index}" for index in range(12)]
    entries = "".join(
        f'\n  - name: {name}\n    command: ["{{python}}", "-c", "pass"]\n'
        "    health: {process: true}\n"
        for name in names
    )
    fleet = parse_service_file(
        "services:" + entries, source="test", base_dir=REPO, default_interval=1.0
    )
    mine = Leases(*names[:4])
    ledger = LocalClaims(Clock(), fleet_floor=0.5, fleet_floor_min=3, ownership=mine)
    # This replica's own view broke: every service it owns is down, a third of the fleet.
    tracker = Statuses(set(names[:4]))
    began, down = ledger.check_fleet(fleet, tracker)  # type: ignore[arg-type]
    assert began and down == names[:4]
    assert "4 of 4 services this replica owns are unhealthy" in (ledger.fleet_pause or "")
    # Another replica's services failing are that replica's to judge.
    tracker.down = set(names[4:])
    assert ledger.check_fleet(fleet, tracker) == (False, [])  # type: ignore[arg-type]
    assert ledger.fleet_pause is None
    alone = LocalClaims(Clock(), fleet_floor=0.5, fleet_floor_min=3)
    tracker.down = set(names[:4])
    assert alone.check_fleet(fleet, tracker) == (False, names[:4]), "4 of 12: no pause"  # type: ignore[arg-type]
