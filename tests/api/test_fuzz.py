"""The whole API fuzzed from its own OpenAPI document with schemathesis, over real HTTP.

One real ``phoenix serve`` with a monitor-only external service (``ledger``) and one local
example web service (``web``, two versions) under ``AUTO_RECOVERY=false``: fuzzed triggers,
deploys and playbook runs reach the local platform's code but restart nothing except that
one example process, which Phoenix stops on the way out. A playbook, a recovery and an
incident are made first, and schemathesis dictionaries put their ids (and the service and
version names) into half the generated requests, so the fuzz goes past the 404s.

Every operation gets ``EXAMPLES`` schema-valid requests and ``EXAMPLES`` invalid ones
(hypothesis, derandomized: the same requests on every run, but for the seeded ids; what
Phoenix answers may still differ, e.g. a 409 while an earlier trigger's restart runs).
Each answer must be:

* never a 5xx (``not_a_server_error``);
* a 4xx in the envelope of docs/api.md, with a message, for a 422 every problem in
  ``details`` with its path and message, and a 404 naming what it did not find
  (:func:`error_envelope`);
* a declared status, with the declared content type and a body matching the declared
  schema (``status_code_conformance``, ``content_type_conformance``,
  ``response_schema_conformance``); invalid input is never accepted
  (``negative_data_rejection``).

The generator sends only what UTF-8 can carry, so :func:`test_inputs_the_generator_never_makes`
adds bodies it never makes (half a surrogate pair, bytes that are not UTF-8, nesting too
deep to parse, times UTC cannot hold): each was a 500 or a vague 400 before.

Left out: ``positive_data_acceptance``. The schema cannot say which names exist, so a
schema-valid request for an unknown service or id is rightly a 404, or a 422 naming it
(``/api/events``), and a playbook body is an open object in the schema that
``config.playbooks`` validates as a whole (its 422s are checked by the envelope check).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support import PhoenixServer, envelope_error, free_port, wait_until, web_service_yaml

pytestmark = pytest.mark.e2e

EXAMPLES = int(os.environ.get("PHOENIX_FUZZ_EXAMPLES", "40"))
"""Per operation and per mode (schema-valid, invalid); raise it for a longer hunt."""
VERSIONS = """    versions:
      - {name: v1, known_good: true}
      - {name: v2, env: {FEATURE_X: "1"}}
"""


def error_envelope(ctx: Any, response: Any, case: Case) -> bool | None:
    """A 4xx is API.md's envelope: ``success: false`` and an error with a code, a message
    that says what is wrong, and for a 422 each problem with its path; a 404 names what it
    did not find."""
    status = response.status_code
    if not 400 <= status < 500:
        return None
    error = envelope_error(status, response.json())
    if status == 404:
        assert error["message"].startswith("no such endpoint") or any(
            name in error["message"] for name in sent_names(case) if name
        ), f"a 404 names what it did not find: {error}"
    return None


def sent_names(case: Case) -> list[str]:
    """The strings a request names things with: path and query parameters, body fields
    (invalid queries nest lists and objects, sent as repeated parameters)."""
    path = [unquote(str(value)) for value in (case.path_parameters or {}).values()]
    return [*path, *strings_in(case.query), *strings_in(case.body)]


def strings_in(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


CHECKS = [
    not_a_server_error,
    error_envelope,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@dataclass
class Seeds:
    """Things that exist before the fuzz starts, for the dictionaries."""

    services: list[str]
    playbooks: list[str] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("fuzz")
    config = root / "phoenix.yaml"
    config.write_text(
        "services:"
        + web_service_yaml("web", free_port(), extra=VERSIONS)
        + f"""
  - name: ledger
    platform: external
    health: {{http: "http://127.0.0.1:{free_port()}/health", interval: 1s, timeout: 200ms}}
"""
    )
    server = PhoenixServer(config, root / "var", env={"AUTO_RECOVERY": "false"})
    try:
        server.start()
        wait_until(lambda: server.status_of("web") == "healthy", timeout=20, message="web healthy")
        yield server
    finally:
        server.close()


def seed(phoenix: PhoenixServer) -> Seeds:
    seeds = Seeds(services=["web", "ledger"])
    playbook = phoenix.post(
        "/api/playbooks",
        json={
            "name": "fuzz drill",
            "service": "web",
            "triggers": [{"type": "error_rate", "threshold": 0.5, "duration": 60}],
            "steps": [{"action": "verify_health", "timeout": 5}],
        },
    )
    assert playbook.status_code == 201, playbook.text
    seeds.playbooks.append(playbook.json()["playbookId"])
    trigger = phoenix.post(
        "/api/recovery/trigger", json={"service": "web", "strategy": "restart", "reason": "fuzz"}
    )
    assert trigger.status_code == 202, trigger.text
    seeds.recoveries.append(phoenix.finished(trigger.json()["recoveryId"])["id"])
    event = phoenix.post(
        "/api/events",
        json={"events": [{"service": "ledger", "kind": "failure", "recover": False, "id": "fz"}]},
    )
    assert event.status_code == 200, event.text
    seeds.incidents.append(event.json()["results"][0]["incidentId"])
    return seeds


def load_schema(phoenix: PhoenixServer, seeds: Seeds) -> Any:
    half = 0.5
    config = schemathesis.Config.from_dict(
        {
            "request-timeout": 15,
            "dictionaries": {
                "services": {"values": seeds.services},
                "versions": {"values": ["v1", "v2"]},
                "playbooks": {"values": seeds.playbooks},
                "recoveries": {"values": seeds.recoveries},
                "incidents": {"values": seeds.incidents},
            },
            "parameters": {
                **{
                    key: {"dictionary": "services", "probability": half}
                    for key in (
                        "path.name",
                        "query.service",
                        "body.service",
                        "body.events[*].service",
                    )
                },
                "body.version": {"dictionary": "versions", "probability": half},
                "path.playbook_id": {"dictionary": "playbooks", "probability": half},
                "path.recovery_id": {"dictionary": "recoveries", "probability": half},
                "path.incident_id": {"dictionary": "incidents", "probability": half},
            },
        }
    )
    return schemathesis.openapi.from_url(f"{phoenix.url}/openapi.json", config=config)


@dataclass
class Run:
    examples: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    no_invalid_input: list[str] = field(default_factory=list)


def fuzz(operation: Any, mode: GenerationMode, run: Run, session: requests.Session) -> None:
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def one(case: Case) -> None:
        run.examples[operation.label] += 1
        try:
            response = case.call(session=session, timeout=15)
        except requests.RequestException as exc:
            run.failures.setdefault((operation.label, "transport"), f"{exc!r}")
            return
        run.statuses[response.status_code] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:
            what = f"{mode.value} {response.status_code} {type(exc).__name__}"
            run.failures.setdefault((operation.label, what), str(exc))

    try:
        one()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        run.no_invalid_input.append(operation.label)  # every value of its inputs is valid


def test_every_operation_survives_the_fuzz(phoenix: PhoenixServer) -> None:
    schema = load_schema(phoenix, seed(phoenix))
    # The event stream never ends by design: its auth and first event are tested in
    # tests/web/test_dashboard.py.
    operations = [
        op
        for op in (result.ok() for result in schema.get_all_operations())
        if op.path != "/api/stream"
    ]
    # Deletions last, so the seeded playbook is there for the operations that use it.
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")
    run = Run()
    started = time.monotonic()
    with requests.Session() as session:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                fuzz(operation, mode, run, session)
    elapsed = time.monotonic() - started
    print(
        f"\nfuzzed {len(operations)} operations with {run.examples.total()} requests "
        f"in {elapsed:.1f}s; statuses {dict(sorted(run.statuses.items()))}; "
        f"no invalid input possible for {len(run.no_invalid_input)}"
    )
    assert phoenix.process is not None and phoenix.process.poll() is None, phoenix.log()[-3000:]
    assert len(operations) >= 26 and all(run.examples[op.label] for op in operations)
    report = "\n\n".join(
        f"=== {label} [{what}]\n{message}" for (label, what), message in run.failures.items()
    )
    assert not run.failures, f"{len(run.failures)} distinct failure(s):\n\n{report}"


SURROGATE = "\\udc00"
"""Half a surrogate pair, as JSON may escape it: valid JSON, not valid Unicode. The
generator never makes one (it sends only what UTF-8 can carry), so these are written out."""
ALERT = '{"version": "4", "alerts": [{"status": "firing", "labels": {"service": "ledger", %s}%s}]}'


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/api/recovery/trigger", b'{"service": "\xff"}', 400, "not UTF-8"),
        ("/api/events", b"[" * 100_000 + b"]" * 100_000, 400, "nested too deeply"),
        ("/api/playbooks", b'{"priority": ' + b"9" * 5000 + b"}", 400, "digits"),
        (
            "/api/playbooks",
            b'{"name": "n", "service": "%s", "triggers": [{"type": "manual"}], '
            b'"steps": [{"action": "notify"}]}' % SURROGATE.encode(),
            422,
            "service: unknown service '\\udc00'",
        ),
        (
            "/api/metrics",
            b'{"service": "ledger", "samples": [{"metric": "m", "value": 1, '
            b'"timestamp": "0001-01-01T00:00:00+14:00"}]}',
            422,
            "samples[0].timestamp: out of range once converted to UTC",
        ),
        (
            "/api/alerts/alertmanager",
            (ALERT % (f'"alertname": "{SURROGATE}"', "")).encode(),
            200,
            "labels.alertname: not valid Unicode",
        ),
        (
            "/api/alerts/alertmanager",
            (ALERT % ('"alertname": "a"', ', "startsAt": "0001-01-01T00:00:00+14:00"')).encode(),
            200,
            "startsAt: out of range once converted to UTC",
        ),
        ("/api/recovery/trigger", b'{"service": "ledger"}', 422, "service: Phoenix cannot act"),
        (
            # PostgreSQL cannot hold a NUL: the whole payload used to be refused (a 4xx that
            # Alertmanager re-sends forever); now only that alert is ignored.
            "/api/alerts/alertmanager",
            (ALERT % ('"alertname": "a\\u0000b"', "")).encode(),
            200,
            "labels.alertname: contains a NUL character",
        ),
        (
            "/api/events",
            b'{"events": [{"service": "ledger", "kind": "failure", "message": "a\\u0000b"}]}',
            422,
            "events[0].message: contains a NUL character",
        ),
    ],
    ids=[
        "invalid-utf8",
        "deep-nesting",
        "huge-integer",
        "surrogate-quoted-back",
        "time-before-year-1-in-utc",
        "surrogate-in-alert",
        "alert-time-out-of-range",
        "unsupported-strategy-names-its-field",
        "nul-in-alert",
        "nul-in-event",
    ],
)
def test_inputs_the_generator_never_makes(
    phoenix: PhoenixServer, path: str, body: bytes, status: int, expected: str
) -> None:
    """Each is a clear answer naming the problem, never a 500 (each was one, or a 422
    without details, before)."""
    response = phoenix.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    if status >= 400:
        error = envelope_error(status, response.json())
        said = error["message"] + "".join(
            f"; {d['path']}: {d['message']}" for d in error["details"]
        )
    else:
        said = "; ".join(r["reason"] for r in response.json()["results"])
    assert expected in said, said
