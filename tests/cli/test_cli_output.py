"""The CLI's pure parts: the one line an error answer becomes, plain tables, durations, and
what ``playbooks apply`` sends for a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from phoenix_server.cli.client import refusal, shown_url, target
from phoenix_server.cli.errors import USAGE, CliError
from phoenix_server.cli.output import Column, plain_table, seconds
from phoenix_server.cli.playbooks import playbook_defaults, read_documents, same_playbook


def envelope(message: str, *details: tuple[str, str], code: str = "invalid") -> dict[str, object]:
    return {
        "success": False,
        "error": {
            "code": code,
            "message": message,
            "details": [{"path": p, "message": m} for p, m in details],
        },
    }


def test_an_error_is_its_message_with_the_details_it_does_not_already_say() -> None:
    body = envelope(
        "invalid playbook",
        ("steps[1].condition", "unknown condition 'x'"),
        ("triggers[0].threshold", "required"),
        ("a", "1"),
        ("b", "2"),
    )
    assert refusal(422, body) == (
        "invalid playbook (steps[1].condition: unknown condition 'x'; "
        "triggers[0].threshold: required; a: 1; and 1 more)"
    )
    said = envelope("invalid request: service: required", ("service", "required"))
    assert refusal(422, said) == "invalid request: service: required"
    path_only = envelope(
        "'web' runs v1: nothing older", ("strategy", "'web' runs v1: nothing older")
    )
    assert refusal(422, path_only) == "'web' runs v1: nothing older (at strategy)"


def test_refusals_say_what_to_do_next() -> None:
    assert refusal(401, envelope("an API token is required")).endswith(
        "; set PHOENIX_TOKEN to an API token of this Phoenix"
    )
    running = {**envelope("busy", code="recovery_in_progress"), "recoveryId": "rec-1"}
    assert "phoenix recovery rec-1" in refusal(409, running)


def test_a_url_must_be_http_and_never_shows_a_password() -> None:
    assert target("http://127.0.0.1:3051/", {"PHOENIX_TOKEN": " t "}).token == "t"
    assert target("http://h:1", {}).token is None
    with pytest.raises(CliError) as refused:
        target("127.0.0.1:3051", {})
    assert refused.value.exit_code == USAGE
    assert shown_url("https://ops:secret@phoenix:8443/x") == "https://ops:***@phoenix:8443/x"


def test_plain_tables_align_and_mark_nothing() -> None:
    columns = [Column("Name"), Column("Took", right=True), Column("Note")]
    assert plain_table(columns, [["a", "1.00s", ""], ["longer", "12.5s", "two  words"]]) == [
        "NAME     TOOK  NOTE",
        "a       1.00s  -",
        "longer  12.5s  two words",
    ]
    assert [seconds(v) for v in (None, 0.314, 12.44, 65, 7322)] == [
        "-",
        "0.31s",
        "12.4s",
        "1m 05s",
        "2h 02m",
    ]


def test_apply_sends_a_whole_playbook_and_knows_an_unchanged_one(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "playbooks:\n"
        "  - {name: A, triggers: [{type: manual}], steps: [{action: wait, seconds: 2s}]}\n"
        "  - {name: B, triggers: [{type: manual}], steps: [{action: notify}], priority: 3}\n"
    )
    [(first, a), (second, _)] = read_documents(path)
    assert (first, second) == ("playbooks[0].", "playbooks[1].")
    assert playbook_defaults() == {
        "service": None,
        "description": "",
        "status": "active",
        "priority": 0,
    }
    stored = {
        "id": "pb-1",
        "name": "A",
        "service": None,
        "description": "",
        "status": "active",
        "priority": 0,
        "triggers": [{"type": "manual"}],
        "steps": [{"action": "wait", "condition": "always", "seconds": 2.0}],
        "version": 4,
    }
    assert same_playbook(a, stored)
    assert not same_playbook(a, {**stored, "status": "disabled"})
    assert not same_playbook({"name": "A"}, stored)  # not a playbook: the server will say why
