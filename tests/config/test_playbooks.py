"""config/playbooks.py: playbook documents validated against a catalog, each problem located."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from phoenix_server.config.playbooks import (
    problem_path,
    to_document,
    to_playbook,
    validate_playbook,
)
from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.domain.errors import InvalidRequestError, Problem
from phoenix_server.domain.playbooks import (
    Playbook,
    PlaybookSource,
    PlaybookStatus,
    TriggerType,
)
from phoenix_server.domain.recoveries import StepCondition
from phoenix_server.domain.services import ServiceCatalog

SERVICES = """
services:
  - name: azora-education
    command: [run, education]
    port: 8090
    actions:
      restart_connection_pool:
        http: {url: "http://127.0.0.1:{port}/admin/pool/restart"}
  - name: azora-auth
    command: [run, auth]
"""
CATALOG = parse_service_file(SERVICES, source="s.yaml", base_dir=Path("/srv"), default_interval=5)
SEED: dict[str, Any] = {
    "name": "Database Connection Recovery",
    "service": "azora-education",
    "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60}],
    "steps": [
        {"action": "restart_connection_pool", "timeout": 30},
        {"action": "restart_service", "timeout": 60, "condition": "if_previous_failed"},
    ],
}
WHEN = datetime(2025, 11, 25, 18, 0, tzinfo=UTC)
CONDITIONS = "always, if_previous_failed, if_previous_succeeded, if_healthy, if_unhealthy"


def validate(data: object, *, allow_commands: bool = False, recovery_timeout: float = 300.0) -> Any:
    return validate_playbook(
        data, catalog=CATALOG, recovery_timeout=recovery_timeout, allow_commands=allow_commands
    )


def seed(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(SEED)
    doc.update(changes)
    return doc


def problems_of(data: object, **kwargs: Any) -> list[Problem]:
    with pytest.raises(InvalidRequestError) as caught:
        validate(data, **kwargs)
    assert caught.value.message == "invalid playbook"
    assert caught.value.code == "invalid"
    return caught.value.problems


def only_problem(data: object, **kwargs: Any) -> Problem:
    found = problems_of(data, **kwargs)
    assert len(found) == 1, found
    return found[0]


def as_playbook(data: object, **kwargs: Any) -> Playbook:
    return to_playbook(
        validate(data, **kwargs),
        playbook_id="pb-0123456789ab",
        created_at=WHEN,
        updated_at=WHEN,
        version=1,
        source=PlaybookSource.API,
    )


# --- the seed playbook -------------------------------------------------------------------------


def test_seed_playbook_validates() -> None:
    doc = validate(SEED)
    assert doc.name == "Database Connection Recovery"
    assert doc.service == "azora-education"
    assert doc.status is PlaybookStatus.ACTIVE
    assert [(t.type, t.threshold, t.duration) for t in doc.triggers] == [
        (TriggerType.ERROR_RATE, 0.1, 60.0)
    ]
    assert [(s.action, s.timeout, s.condition) for s in doc.steps] == [
        ("restart_connection_pool", 30.0, StepCondition.ALWAYS),
        ("restart_service", 60.0, StepCondition.IF_PREVIOUS_FAILED),
    ]


def test_seed_playbook_becomes_a_playbook() -> None:
    playbook = as_playbook(SEED)
    assert playbook.id == "pb-0123456789ab"
    assert playbook.source is PlaybookSource.API
    assert (playbook.created_at, playbook.version) == (WHEN, 1)
    assert playbook.triggers[0].type is TriggerType.ERROR_RATE
    assert playbook.triggers[0].threshold == 0.1
    assert [s.action for s in playbook.steps] == ["restart_connection_pool", "restart_service"]
    assert playbook.steps[1].condition is StepCondition.IF_PREVIOUS_FAILED


def test_seed_document_round_trips() -> None:
    document = to_document(as_playbook(SEED))
    assert document == {
        "name": "Database Connection Recovery",
        "service": "azora-education",
        "description": "",
        "status": "active",
        "priority": 0,
        "triggers": [{"type": "error_rate", "threshold": 0.1, "duration": 60.0}],
        "steps": [
            {"action": "restart_connection_pool", "timeout": 30.0, "condition": "always"},
            {"action": "restart_service", "timeout": 60.0, "condition": "if_previous_failed"},
        ],
    }
    assert validate(document) == validate(SEED)


def test_every_parameter_round_trips() -> None:
    data = seed(
        description="pool, then restart",
        status="disabled",
        priority=5,
        triggers=[
            {"type": "latency", "threshold": 500, "percentile": 99, "duration": "2m"},
            {"type": "failure_type", "failureType": "memory_leak"},
            {"type": "alert", "alert": "HighErrorRate"},
            {"type": "service_down"},
        ],
        steps=[
            {"action": "restart_connection_pool", "name": "Pool", "timeout": "30s"},
            {"action": "wait", "seconds": "500ms", "condition": "if_unhealthy"},
            {"action": "http_request", "url": "http://h/x", "method": "POST", "body": "{}"},
            {"action": "notify", "message": "pool restarted"},
            {"action": "scale", "replicas": 2, "condition": "if_healthy"},
            {"action": "run_command", "command": ["echo", "hi"]},
        ],
    )
    first = validate(data, allow_commands=True)
    playbook = as_playbook(data, allow_commands=True)
    assert playbook.triggers[0].params == {"percentile": 99}
    assert playbook.triggers[1].params == {"failureType": "memory_leak"}
    assert playbook.triggers[2].params == {"alert": "HighErrorRate"}
    assert playbook.steps[1].params == {"seconds": 0.5}
    assert playbook.steps[2].params == {"url": "http://h/x", "method": "POST", "body": "{}"}
    document = to_document(playbook)
    assert document["triggers"][0] == {
        "type": "latency",
        "threshold": 500.0,
        "duration": 120.0,
        "percentile": 99,
    }
    assert document["steps"][0] == {
        "action": "restart_connection_pool",
        "name": "Pool",
        "timeout": 30.0,
        "condition": "always",
    }
    assert validate(document, allow_commands=True) == first


def test_an_unbound_playbook_may_use_an_action_any_service_declares() -> None:
    assert validate(seed(service=None)).service is None


def test_run_command_allowed_in_operator_files() -> None:
    data = seed(steps=[{"action": "run_command", "command": ["./fix.sh"]}])
    assert validate(data, allow_commands=True).steps[0].command == ["./fix.sh"]


def test_problem_path_formats_locations() -> None:
    assert problem_path(("steps", 1, "condition")) == "steps[1].condition"
    assert problem_path(("name",)) == "name"
    assert problem_path(()) == ""


# --- problems ----------------------------------------------------------------------------------


def test_unknown_condition_lists_expected_values() -> None:
    data = seed()
    data["steps"][1]["condition"] = "if_prev_failed"
    assert only_problem(data) == Problem(
        "steps[1].condition", f"unknown condition 'if_prev_failed'; expected one of {CONDITIONS}"
    )


def test_unknown_trigger_type() -> None:
    problem = only_problem(seed(triggers=[{"type": "error_ratio", "threshold": 0.1}]))
    assert problem.path == "triggers[0].type"
    assert problem.message.startswith("unknown type 'error_ratio'; expected one of error_rate,")
    assert "service_down" in problem.message


def test_unknown_action() -> None:
    data = seed()
    data["steps"][1]["action"] = "reboot"
    problem = only_problem(data)
    assert problem.path == "steps[1].action"
    assert "unknown action 'reboot'" in problem.message
    assert "restart_service" in problem.message
    assert "service 'azora-education'" in problem.message


def test_named_action_not_declared_by_the_bound_service() -> None:
    problem = only_problem(seed(service="azora-auth"))
    assert problem.path == "steps[0].action"
    assert "unknown action 'restart_connection_pool'" in problem.message
    assert "not declared by service 'azora-auth'" in problem.message


def test_run_command_refused_from_the_api() -> None:
    data = seed(steps=[{"action": "run_command", "command": ["rm", "-rf", "/"]}])
    problem = only_problem(data)
    assert problem.path == "steps[0].action"
    assert "run_command is allowed only in playbooks loaded from the operator's files" == (
        problem.message
    )


def test_timeout_over_recovery_timeout() -> None:
    assert only_problem(SEED, recovery_timeout=45) == Problem(
        "steps[1].timeout", "60s exceeds RECOVERY_TIMEOUT (45s)"
    )


def test_timeout_equal_to_recovery_timeout_is_allowed() -> None:
    assert validate(SEED, recovery_timeout=60).steps[1].timeout == 60.0


def test_unknown_service() -> None:
    assert only_problem(seed(service="azora-nope")) == Problem(
        "service", "unknown service 'azora-nope' (known: azora-education, azora-auth)"
    )


@pytest.mark.parametrize(
    ("trigger", "path", "message"),
    [
        ({"type": "error_rate"}, "threshold", "required for error_rate (a fraction"),
        ({"type": "error_rate", "threshold": 1.5}, "threshold", "(0 to 1), got 1.5"),
        ({"type": "error_rate", "threshold": -0.1}, "threshold", "(0 to 1), got -0.1"),
        ({"type": "latency"}, "threshold", "required for latency (milliseconds)"),
        ({"type": "service_down", "threshold": 1}, "threshold", "service_down takes no threshold"),
        ({"type": "failure_type"}, "failureType", "required for a failure_type trigger"),
        ({"type": "alert"}, "alert", "required: the Alertmanager alert name"),
        (
            {"type": "error_rate", "threshold": 0.1, "percentile": 99},
            "percentile",
            "only latency triggers take a percentile",
        ),
        ({"type": "failure_type", "failureType": "oom"}, "failureType", "unknown failureType"),
        ({"type": "service_down", "colour": "red"}, "colour", "unknown field"),
    ],
)
def test_trigger_problems(trigger: dict[str, Any], path: str, message: str) -> None:
    problem = only_problem(seed(triggers=[{"type": "service_down"}, trigger]))
    assert problem.path == f"triggers[1].{path}"
    assert message in problem.message


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ({"action": "restart_service", "seconds": 5}, "seconds", "of action 'restart_service'"),
        ({"action": "wait"}, "seconds", "required for action 'wait'"),
        ({"action": "http_request"}, "url", "required for action 'http_request'"),
        ({"action": "run_command"}, "command", "required for action 'run_command'"),
        ({"action": "notify", "url": "http://h/"}, "url", "not a parameter of action 'notify'"),
        ({"action": "wait", "seconds": "soon"}, "seconds", "500ms, 2s, 5m, 1h"),
        ({"action": "restart_service", "timeout": 0}, "timeout", "greater than 0"),
        ({"action": "restart_service", "retries": 2}, "retries", "unknown field"),
    ],
)
def test_step_problems(step: dict[str, Any], path: str, message: str) -> None:
    problem = only_problem(seed(steps=[SEED["steps"][0], step]), allow_commands=True)
    assert problem.path == f"steps[1].{path}"
    assert message in problem.message


@pytest.mark.parametrize("condition", ["if_previous_failed", "if_previous_succeeded"])
def test_previous_step_condition_on_the_first_step(condition: str) -> None:
    problem = only_problem(seed(steps=[{"action": "restart_service", "condition": condition}]))
    assert problem == Problem(
        "steps[0].condition", f"{condition} on the first step has no previous step"
    )


@pytest.mark.parametrize("field", ["steps", "triggers"])
def test_empty_steps_or_triggers(field: str) -> None:
    problem = only_problem(seed(**{field: []}))
    assert problem.path == field
    assert "at least 1 item" in problem.message


def test_unknown_top_level_field() -> None:
    assert only_problem(seed(owner="ops")) == Problem("owner", "unknown field")


@pytest.mark.parametrize("name", ["", "   "])
def test_name_empty_or_whitespace(name: str) -> None:
    problem = only_problem(seed(name=name))
    assert problem.path == "name"
    assert "at least 1 character" in problem.message


def test_name_missing() -> None:
    data = seed()
    del data["name"]
    assert only_problem(data) == Problem("name", "required")


def test_name_is_stripped() -> None:
    assert validate(seed(name="  Pool recovery  ")).name == "Pool recovery"


def test_unknown_status() -> None:
    assert only_problem(seed(status="paused")) == Problem(
        "status", "unknown status 'paused'; expected one of active, disabled"
    )


def test_not_a_mapping() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        validate_playbook(
            ["not", "a", "playbook"],
            catalog=ServiceCatalog(),
            recovery_timeout=300,
            allow_commands=False,
        )
    assert [p.path for p in caught.value.problems] == [""]


def test_several_meaning_problems_are_all_reported() -> None:
    data = seed(
        service="azora-nope",
        triggers=[{"type": "error_rate", "threshold": 2}, {"type": "alert"}],
        steps=[{"action": "wait", "condition": "if_previous_failed", "timeout": 900}],
    )
    assert {p.path for p in problems_of(data)} == {
        "service",
        "triggers[0].threshold",
        "triggers[1].alert",
        "steps[0].seconds",
        "steps[0].timeout",
        "steps[0].condition",
    }


def test_several_shape_problems_are_all_reported() -> None:
    data = seed(name="", triggers=[{"type": "nope"}], steps=[{"action": "wait", "bogus": 1}])
    assert {p.path for p in problems_of(data)} == {
        "name",
        "triggers[0].type",
        "steps[0].bogus",
        "steps[0].seconds",  # the step's meaning is checked despite its unknown field
    }


def test_four_faults_in_different_passes_are_reported_at_once() -> None:
    """Each item with a shape fault used to be set aside whole, hiding its meaning faults:
    a body with four faults answered two."""
    data = seed(
        triggers=[{"type": "error_rate", "threshold": 5, "bogus": 1}],
        steps=[{"action": "zap", "condition": "weird", "timeout": 900}],
    )
    problems = {p.path: p.message for p in problems_of(data)}
    assert set(problems) == {
        "triggers[0].bogus",  # shape
        "triggers[0].threshold",  # meaning, of the same trigger
        "steps[0].condition",  # shape
        "steps[0].action",  # meaning, of the same step
        "steps[0].timeout",  # meaning, of the same step
    }
    assert "unknown action 'zap'" in problems["steps[0].action"]
    assert "exceeds RECOVERY_TIMEOUT" in problems["steps[0].timeout"]


def test_a_field_of_the_wrong_shape_is_not_also_called_missing() -> None:
    data = seed(steps=[{"action": "wait", "seconds": "soon", "condition": "weird"}])
    problems = problems_of(data)
    assert sorted(p.path for p in problems) == ["steps[0].condition", "steps[0].seconds"]
    assert "required" not in next(p.message for p in problems if p.path == "steps[0].seconds")


def test_shape_and_meaning_problems_are_reported_together() -> None:
    data = seed(service="azora-nope")
    data["steps"][1]["condition"] = "if_prev_failed"
    assert {p.path for p in problems_of(data)} == {"service", "steps[1].condition"}
