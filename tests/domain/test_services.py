"""domain/services.py: placeholder rendering, the service catalog, and instance liveness."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from phoenix_server.domain.errors import NotFoundError
from phoenix_server.domain.services import (
    PLACEHOLDERS,
    HealthPolicy,
    Instance,
    InstanceState,
    PlatformKind,
    ProcessCheck,
    ProcessRun,
    RenderContext,
    ServiceCatalog,
    ServiceSpec,
    Version,
    placeholders_in,
    render,
)

FULL = RenderContext(
    name="azora-auth", python="/usr/bin/python3", port=8081, version="v2", instance="azora-auth-1"
)
BARE = RenderContext(name="azora-auth", python="/usr/bin/python3")


def spec(name: str, depends_on: tuple[str, ...] = ()) -> ServiceSpec:
    return ServiceSpec(
        name=name,
        platform=PlatformKind.LOCAL,
        health=HealthPolicy(check=ProcessCheck(), interval=1.0, timeout=1.0, failure_threshold=3),
        run=ProcessRun(("run", name)),
        depends_on=depends_on,
    )


# --- render ------------------------------------------------------------------------------------


def test_render_fills_every_known_placeholder() -> None:
    template = "{python} -m app --port {port} --name {name} --version {version} --id {instance}"
    assert render(template, FULL) == (
        "/usr/bin/python3 -m app --port 8081 --name azora-auth --version v2 --id azora-auth-1"
    )


def test_render_repeats_a_placeholder_each_time_it_appears() -> None:
    assert render("{port}:{port}", FULL) == "8081:8081"


def test_render_missing_values_become_empty_strings() -> None:
    assert render("p={port} v={version} i={instance}", BARE) == "p= v= i="


@pytest.mark.parametrize(
    "template",
    ["{unknown}", "x{PORT}y", "{ port }", '{"a": 1}', "{}"],
)
def test_render_leaves_unknown_placeholders_alone(template: str) -> None:
    assert render(template, FULL) == template


def test_render_leaves_unknown_placeholders_alone_next_to_known_ones() -> None:
    assert render("{host}:{port}", FULL) == "{host}:8081"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{port", "{port"),
        ("abc{", "abc{"),
        ("{port}{", "8081{"),
        ("}{port}", "}8081"),
        ("{a {port}", "{a 8081"),
    ],
)
def test_render_braces_without_closing_are_kept_literally(template: str, expected: str) -> None:
    assert render(template, FULL) == expected


def test_render_empty_template_is_empty() -> None:
    assert render("", FULL) == ""


def test_render_context_values_cover_exactly_the_declared_placeholders() -> None:
    assert set(FULL.values()) == PLACEHOLDERS


# --- placeholders_in ---------------------------------------------------------------------------


def test_placeholders_in_finds_every_word() -> None:
    found = placeholders_in("{python} -m x --port {port} {name}/{bogus}")
    assert found == {"python", "port", "name", "bogus"}


def test_placeholders_in_counts_a_repeated_word_once() -> None:
    assert placeholders_in("{port}-{port}") == {"port"}


@pytest.mark.parametrize("template", ["", "no braces", "{unclosed", "closing only}", "}{"])
def test_placeholders_in_finds_nothing_without_a_closed_pair(template: str) -> None:
    assert placeholders_in(template) == set()


@pytest.mark.parametrize("template", ["{}", '{"a": 1}', "{not a word}", "{{port}}"])
def test_placeholders_in_ignores_braces_that_are_not_placeholders(template: str) -> None:
    assert placeholders_in(template) == set()


def test_doubled_braces_render_as_literal_braces() -> None:
    context = RenderContext(name="n", python="py", port=1)
    assert render('{{port}} {port} {"a": 1}', context) == '{port} 1 {"a": 1}'


def test_placeholders_in_stops_at_an_unclosed_brace_after_a_placeholder() -> None:
    assert placeholders_in("{port} then {open") == {"port"}


def test_placeholders_in_agrees_with_render_after_an_unclosed_brace() -> None:
    assert placeholders_in("{a {port}") == {"port"}


# --- ServiceCatalog ----------------------------------------------------------------------------


def test_catalog_keeps_file_order_and_size() -> None:
    catalog = ServiceCatalog([spec("b"), spec("a"), spec("c")])
    assert [s.name for s in catalog] == ["b", "a", "c"]
    assert len(catalog) == 3


def test_catalog_get_returns_the_named_service() -> None:
    auth = spec("azora-auth")
    catalog = ServiceCatalog([spec("azora-db"), auth])
    assert catalog.get("azora-auth") is auth


def test_catalog_get_unknown_raises_not_found_naming_the_service() -> None:
    catalog = ServiceCatalog([spec("azora-db")])
    with pytest.raises(NotFoundError) as caught:
        catalog.get("azora-missing")
    assert "azora-missing" in caught.value.message
    assert caught.value.code == "not_found"


def test_catalog_contains_by_name_only() -> None:
    catalog = ServiceCatalog([spec("azora-db")])
    assert "azora-db" in catalog
    assert "azora-auth" not in catalog
    assert 42 not in catalog


def test_empty_catalog() -> None:
    catalog = ServiceCatalog()
    assert len(catalog) == 0
    assert list(catalog) == []
    with pytest.raises(NotFoundError):
        catalog.get("anything")


def test_dependents_lists_services_declaring_the_dependency_in_order() -> None:
    catalog = ServiceCatalog(
        [
            spec("db"),
            spec("auth", depends_on=("db",)),
            spec("cache"),
            spec("web", depends_on=("cache", "db")),
        ]
    )
    assert [s.name for s in catalog.dependents("db")] == ["auth", "web"]
    assert [s.name for s in catalog.dependents("cache")] == ["web"]
    assert catalog.dependents("web") == []
    assert catalog.dependents("not-declared") == []


def test_current_version_is_the_newest_declared() -> None:
    plain = spec("a")
    versioned = ServiceSpec(
        name="b",
        platform=PlatformKind.LOCAL,
        health=plain.health,
        versions=(Version("v1", known_good=True), Version("v2")),
    )
    assert plain.current_version is None
    assert versioned.current_version == "v2"


# --- Instance.alive ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "alive"),
    [
        (InstanceState.STARTING, True),
        (InstanceState.RUNNING, True),
        (InstanceState.STOPPING, True),
        (InstanceState.STOPPED, False),
        (InstanceState.EXITED, False),
    ],
)
def test_instance_alive_per_state(state: InstanceState, alive: bool) -> None:
    instance = Instance(
        id="azora-auth-abc123",
        service="azora-auth",
        platform=PlatformKind.LOCAL,
        state=state,
        started_at=datetime(2025, 11, 25, 18, 0, tzinfo=UTC),
    )
    assert instance.alive is alive
