"""The shipped Prometheus rules and Alertmanager configuration pass the real tools' checks
(Debian's promtool and amtool). That every Phoenix metric they name is exported is checked
against a running Phoenix in tests/e2e/test_prometheus_stack_e2e.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support import REPO, prometheus_program

pytestmark = pytest.mark.e2e  # starts real processes

RULES = sorted((REPO / "examples" / "prometheus").glob("*.yml"))
ALERTMANAGER = REPO / "examples" / "alertmanager" / "alertmanager.yml"


@pytest.mark.parametrize("rules", RULES, ids=lambda p: p.name)
def test_promtool_accepts_the_example_rules(rules: Path) -> None:
    checked = subprocess.run(
        [prometheus_program("promtool"), "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_amtool_accepts_the_example_alertmanager_configuration() -> None:
    checked = subprocess.run(
        [prometheus_program("amtool"), "check-config", str(ALERTMANAGER)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout and "2 receivers" in checked.stdout
