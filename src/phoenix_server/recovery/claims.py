"""Claims: who is changing a service now, and how much more Phoenix may do to it.

Every part of Phoenix that changes a service — a recovery, a deploy, a scale-in — claims it
first and releases the claim when done; while one holds it, nothing else starts on it. A
claim carries a *token* that grows with every claim of the service, so a holder can ask
whether its claim is still the current one (:meth:`Claims.holds`) before it acts again.

Behind the same interface sit the other limits on acting: the recovery budgets, the
crash-loop backoff and the fleet floor (see ``guards``). They are the state several
Phoenix replicas must share, so they live with the claims: :class:`LocalClaims` keeps them
in this process. With several replicas on one database, each service is owned by one of them
through a lease (``runtime.cluster``): given that :class:`Ownership`, the claims refuse a
service this replica does not own, and a claim stops holding the moment the lease is lost,
so a recovery in progress stops at its next step; the database refuses its records (the
lease's epoch is a fencing token, see ``store.cluster``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from phoenix_server.detection.health_tracking import HealthTracker
from phoenix_server.domain.errors import ConflictError, NotOwnerError, RecoveryInProgressError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.services import ServiceCatalog, ServiceSpec
from phoenix_server.recovery.guards import FleetFloor, RecoveryBudgets


class Activity(StrEnum):
    RECOVERY = "recovery"
    DEPLOY = "deploy"
    SCALE_IN = "scale-in"


@dataclass(frozen=True)
class Claim:
    service: str
    activity: Activity
    label: str = field(compare=False)
    """A recovery's id (its current attempt's); for the others, what completes "service
    'x' is being …" (``deployed (dep-…)``, ``scaled in``). Not part of the claim's identity:
    :meth:`Claims.relabel` changes it."""
    token: int
    """Grows with every claim: the later claim of a service always has the larger one."""
    epoch: int | None = field(default=None, compare=False)
    """With several replicas, the service's lease epoch it was taken under: once the lease
    is lost, or lost and taken again (a later epoch), the claim no longer holds."""


ReleaseListener = Callable[[Claim], None]


class Ownership(Protocol):
    """Which services this replica may act on now (several replicas share the fleet)."""

    def owns(self, service: str) -> bool:
        """This replica holds the service's lease, renewed recently enough to act on."""
        ...

    def owner_of(self, service: str) -> str | None:
        """The replica that owns ``service`` as last seen (None: no one)."""
        ...

    def epoch_of(self, service: str) -> int | None:
        """The epoch of this replica's lease of ``service`` (the last it held, if lost)."""
        ...


class Claims(Protocol):
    # -- who acts ---------------------------------------------------------------------------

    def claim(
        self, service: str, activity: Activity, label: str, *, replacing: Claim | None = None
    ) -> Claim:
        """Claim ``service``, or say who holds it: a recovery's claim is
        ``RecoveryInProgressError`` (409 naming it), any other a ``ConflictError``.
        ``replacing``: the holder's claim, taken over (a forced trigger supersedes the
        running recovery; it must still be the holder)."""
        ...

    def release(self, claim: Claim, *, back_to: Claim | None = None) -> None:
        """Let go of ``claim`` if it is still the holder (a later claim is left alone);
        ``back_to``: hand the service back to the claim it replaced (a forced trigger that
        could not be recorded)."""
        ...

    def relabel(self, claim: Claim, label: str) -> Claim:
        """The same claim, saying what it is for now (a recovery's next attempt), so that a
        refusal names what actually holds the service."""
        ...

    def holder(self, service: str) -> Claim | None: ...

    def held(self) -> set[str]:
        """The services some claim holds now."""
        ...

    def holds(self, claim: Claim) -> bool:
        """``claim`` is still the service's current claim (it may act)."""
        ...

    def acts_on(self, service: str) -> bool:
        """This Phoenix may act on ``service`` at all (with several replicas: it owns it)."""
        ...

    def on_release(self, listener: ReleaseListener) -> None:
        """Call ``listener`` with every claim released (the orchestrator looks again)."""
        ...

    # -- how much more ----------------------------------------------------------------------

    def note_health(self, spec: ServiceSpec, status: ServiceStatus) -> None:
        """A look at the service's status (a failure after long enough healthy resets its
        budget)."""
        ...

    def budget_left(self, spec: ServiceSpec) -> bool: ...

    def budget_remaining(self, spec: ServiceSpec) -> int: ...

    def spend(self, spec: ServiceSpec) -> None:
        """An automatic attempt starts: it counts against the budget."""
        ...

    def refund(self, spec: ServiceSpec) -> None:
        """The last attempt never got to try (the machine was out of resources)."""
        ...

    def budget_reason(self, spec: ServiceSpec) -> str: ...

    def first_budget_alert(self, spec: ServiceSpec) -> bool:
        """True the first time the spent budget is reported (until it resets)."""
        ...

    def healthy_for(self, service: str) -> float | None:
        """Seconds the service has been seen healthy, if it is."""
        ...

    def recovered(self, service: str) -> None:
        """The service just came back healthy from a recovery (crash-loop clock starts)."""
        ...

    def crash_loop_delay(self, spec: ServiceSpec) -> float | None:
        """The service fails again: None if its last recovery is ``reset_after`` behind it
        (act at once), else the backoff to wait, doubling with each quick failure in a row."""
        ...

    def check_fleet(
        self, catalog: ServiceCatalog, tracker: HealthTracker
    ) -> tuple[bool, list[str]]:
        """The fleet floor now: (did a pause just begin, the services down on their own)."""
        ...

    @property
    def fleet_pause(self) -> str | None:
        """Why automatic recovery is paused by the fleet floor, while it is."""
        ...


class LocalClaims:
    """Claims and limits of one Phoenix, in memory (the state is this process's alone)."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        fleet_floor: float,
        fleet_floor_min: int,
        ownership: Ownership | None = None,
    ) -> None:
        self._monotonic = monotonic
        self._ownership = ownership
        """None: one Phoenix, which owns every service."""
        self._holders: dict[str, Claim] = {}
        self._tokens = itertools.count(1)
        self._listeners: list[ReleaseListener] = []
        self._budgets = RecoveryBudgets(monotonic)
        self._floor = FleetFloor(fleet_floor, fleet_floor_min)
        self._recovered_at: dict[str, float] = {}
        """Monotonic time each service last came back healthy from a recovery."""
        self._quick_failures: dict[str, int] = {}
        """Failures in a row that came sooner than ``reset_after`` after a recovery."""

    # -- who acts ---------------------------------------------------------------------------

    def claim(
        self, service: str, activity: Activity, label: str, *, replacing: Claim | None = None
    ) -> Claim:
        if self._ownership is not None and not self._ownership.owns(service):
            owner = self._ownership.owner_of(service)
            raise NotOwnerError(
                f"service '{service}' is owned by "
                f"{f'replica {owner}' if owner else 'no replica right now'}, not this one: "
                "only its owner acts on it"
            )
        current = self._holders.get(service)
        if current is not None and current != replacing:
            if current.activity is Activity.RECOVERY:
                raise RecoveryInProgressError(service, current.label)
            raise ConflictError(f"service '{service}' is being {current.label}; wait for it")
        if current is None and replacing is not None:
            raise ConflictError(f"service '{service}': the claim to replace has ended")
        epoch = self._ownership.epoch_of(service) if self._ownership is not None else None
        claim = Claim(service, activity, label, next(self._tokens), epoch)
        self._holders[service] = claim
        return claim

    def release(self, claim: Claim, *, back_to: Claim | None = None) -> None:
        if self._holders.get(claim.service) != claim:
            return
        if back_to is not None:
            self._holders[claim.service] = back_to
            return
        del self._holders[claim.service]
        for listener in self._listeners:
            listener(claim)

    def relabel(self, claim: Claim, label: str) -> Claim:
        relabelled = replace(claim, label=label)
        if self._holders.get(claim.service) == claim:
            self._holders[claim.service] = relabelled
        return relabelled

    def holder(self, service: str) -> Claim | None:
        return self._holders.get(service)

    def held(self) -> set[str]:
        return set(self._holders)

    def acts_on(self, service: str) -> bool:
        return self._ownership is None or self._ownership.owns(service)

    def holds(self, claim: Claim) -> bool:
        ownership = self._ownership
        if ownership is not None and (
            not ownership.owns(claim.service) or ownership.epoch_of(claim.service) != claim.epoch
        ):
            # The lease is lost (or was lost and taken again since, under a later epoch):
            # whatever holds the claim must stop acting.
            return False
        return self._holders.get(claim.service) == claim

    def on_release(self, listener: ReleaseListener) -> None:
        self._listeners.append(listener)

    # -- how much more ----------------------------------------------------------------------

    def note_health(self, spec: ServiceSpec, status: ServiceStatus) -> None:
        self._budgets.note_health(spec, status)

    def budget_left(self, spec: ServiceSpec) -> bool:
        return self._budgets.left(spec)

    def budget_remaining(self, spec: ServiceSpec) -> int:
        return self._budgets.remaining(spec)

    def spend(self, spec: ServiceSpec) -> None:
        self._budgets.spend(spec)

    def refund(self, spec: ServiceSpec) -> None:
        self._budgets.refund(spec)

    def budget_reason(self, spec: ServiceSpec) -> str:
        return self._budgets.reason(spec)

    def first_budget_alert(self, spec: ServiceSpec) -> bool:
        return self._budgets.first_alert(spec)

    def healthy_for(self, service: str) -> float | None:
        return self._budgets.healthy_for(service)

    def recovered(self, service: str) -> None:
        self._recovered_at[service] = self._monotonic()

    def crash_loop_delay(self, spec: ServiceSpec) -> float | None:
        backoff = spec.recovery.backoff
        recovered_at = self._recovered_at.get(spec.name)
        if recovered_at is None or self._monotonic() - recovered_at >= backoff.reset_after:
            self._quick_failures[spec.name] = 0
            return None
        self._quick_failures[spec.name] = self._quick_failures.get(spec.name, 0) + 1
        return backoff.delay(self._quick_failures[spec.name])

    def check_fleet(
        self, catalog: ServiceCatalog, tracker: HealthTracker
    ) -> tuple[bool, list[str]]:
        owned = self._ownership
        return self._floor.check(catalog, tracker, owned.owns if owned is not None else None)

    @property
    def fleet_pause(self) -> str | None:
        return self._floor.pause
