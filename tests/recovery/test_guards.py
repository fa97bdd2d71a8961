"""The recovery budget's bookkeeping on a clock the test moves: attempts per window, the
window sliding, one alert per spent budget, and the reset after a healthy spell."""

from __future__ import annotations

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.recovery.guards import RecoveryBudgets
from tests.support import REPO

SPEC = parse_service_file(
    """services:
  - name: svc
    command: ["{python}", "-c", "pass"]
    health: {process: true}
    recovery: {backoff: {reset_after: 10s}, budget: {attempts: 2, window: 60s}}
""",
    source="test",
    base_dir=REPO,
    default_interval=1.0,
).get("svc")


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_attempts_per_window_then_the_window_slides() -> None:
    clock = Clock()
    budgets = RecoveryBudgets(clock)
    for _ in range(2):
        assert budgets.left(SPEC)
        budgets.spend(SPEC)
        clock.now += 1
    assert not budgets.left(SPEC)
    assert "2 attempt(s) within 60s" in budgets.reason(SPEC)
    assert budgets.first_alert(SPEC) and not budgets.first_alert(SPEC)
    clock.now = 60.5  # the first attempt left the window
    assert budgets.left(SPEC)


def test_a_healthy_spell_of_reset_after_gives_the_budget_back() -> None:
    clock = Clock()
    budgets = RecoveryBudgets(clock)
    budgets.spend(SPEC)
    budgets.spend(SPEC)
    budgets.first_alert(SPEC)
    budgets.note_health(SPEC, ServiceStatus.HEALTHY)
    clock.now = 5.0
    budgets.note_health(SPEC, ServiceStatus.UNHEALTHY)  # healthy only 5 s: still spent
    assert not budgets.left(SPEC)
    budgets.note_health(SPEC, ServiceStatus.HEALTHY)
    clock.now = 16.0
    assert budgets.healthy_for("svc") == 11.0
    budgets.note_health(SPEC, ServiceStatus.UNHEALTHY)  # after 11 s healthy: reset
    assert budgets.left(SPEC) and budgets.first_alert(SPEC)
    assert budgets.healthy_for("svc") is None
