"""config/servicefile.py: the service file parses into ServiceSpecs, and every mistake is located."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path

import pytest

from phoenix_server.config.servicefile import load_service_file, parse_service_file
from phoenix_server.domain import services as svc
from phoenix_server.domain.errors import ConfigError, Problem
from phoenix_server.support.sizes import parse_size

BASE = Path("/srv/phoenix")
EXAMPLE = """
services:
  - name: azora-db
    command: ["{python}", "-m", "db"]
  - name: azora-auth
    platform: local
    command: ["{python}", "-m", "examples.services.web", "--port", "{port}"]
    cwd: ./auth
    env: {LOG_LEVEL: info, WORKERS: 4, DEBUG: false}
    port: 8081
    health:
      http: "http://127.0.0.1:{port}/health"
      interval: 2s
      timeout: 1s
      failure_threshold: 2
    depends_on: [azora-db]
    replicas: {min: 1, max: 1}
    versions:
      - {name: v1, known_good: true}
      - {name: v2, env: {FEATURE_X: "1"}, command: [run, v2], cwd: v2dir}
    backup: {mode: hot}
    hooks: {data_migration: [migrate, --all], smoke: "curl -f http://127.0.0.1:{port}/"}
    actions:
      restart_connection_pool:
        http: {method: POST, url: "http://127.0.0.1:{port}/admin/pool/restart"}
    fallback: {status: 503, body: '{"error":"degraded"}', content_type: application/json}
    stop: {signal: SIGINT, grace: 3s}
    recovery:
      backoff: {initial: 1s, max: 5m, reset_after: 10s}
      budget: {attempts: 10, window: 1h}
"""


def parse(text: str, *, default_interval: float = 7.0, base: Path = BASE) -> svc.ServiceCatalog:
    return parse_service_file(
        textwrap.dedent(text),
        source="services.yaml",
        base_dir=base,
        default_interval=default_interval,
    )


def one(text: str, *, default_interval: float = 7.0, base: Path = BASE) -> svc.ServiceSpec:
    (service,) = list(parse(text, default_interval=default_interval, base=base))
    return service


def problems(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    assert caught.value.message == "services.yaml"
    return caught.value.problems


def only_problem(text: str) -> Problem:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def local(extra: str = "", name: str = "a", *, more: bool = False) -> str:
    """A minimal valid local service plus ``extra`` lines; ``more``: a further list item."""
    own = textwrap.dedent(extra).strip().splitlines()
    lines = [f"  - name: {name}"]
    if not any(line.startswith("command:") for line in own):
        lines.append("    command: [run]")
    lines += [f"    {line}" for line in own]
    return ("" if more else "services:\n") + "\n".join(lines) + "\n"


# --- the API.md example ------------------------------------------------------------------------


def test_example_parses_into_the_right_specs() -> None:
    catalog = parse(EXAMPLE)
    assert [s.name for s in catalog] == ["azora-db", "azora-auth"]
    auth = catalog.get("azora-auth")
    assert auth.platform is svc.PlatformKind.LOCAL
    assert auth.run.command == ("{python}", "-m", "examples.services.web", "--port", "{port}")
    assert auth.run.cwd == str(BASE / "auth")
    assert auth.run.env == {"LOG_LEVEL": "info", "WORKERS": "4", "DEBUG": "false"}
    assert auth.port == 8081
    assert auth.health == svc.HealthPolicy(
        check=svc.HttpCheck("http://127.0.0.1:{port}/health"),
        interval=2.0,
        timeout=1.0,
        failure_threshold=2,
        success_threshold=1,
        startup_timeout=30.0,
    )
    assert auth.depends_on == ("azora-db",)
    assert auth.replicas == svc.Replicas(1, 1)
    assert auth.versions == (
        svc.Version("v1", known_good=True),
        svc.Version("v2", command=("run", "v2"), env={"FEATURE_X": "1"}, cwd=str(BASE / "v2dir")),
    )
    assert auth.current_version == "v2"
    assert auth.backup == svc.Backup(mode="hot")
    assert auth.hooks == {
        "data_migration": ("migrate", "--all"),
        "smoke": ("curl", "-f", "http://127.0.0.1:{port}/"),
    }
    assert auth.actions == {
        "restart_connection_pool": svc.HttpAction(
            method="POST", url="http://127.0.0.1:{port}/admin/pool/restart"
        )
    }
    assert auth.fallback == svc.Fallback(503, '{"error":"degraded"}', "application/json")
    assert auth.stop == svc.StopPolicy(signal=signal.SIGINT, grace=3.0)
    assert auth.recovery == svc.RecoveryPolicy(
        backoff=svc.Backoff(initial=1.0, max=300.0, reset_after=10.0),
        budget=svc.Budget(attempts=10, window=3600.0),
    )


def test_defaults_of_a_minimal_local_service() -> None:
    db = parse(EXAMPLE).get("azora-db")
    assert db.health.check == svc.ProcessCheck()
    assert db.health.interval == 7.0
    assert db.health.timeout == 5.0
    assert (db.health.failure_threshold, db.health.success_threshold) == (3, 1)
    assert db.run.cwd == str(BASE)
    assert db.replicas == svc.Replicas(1, 1)
    assert (db.versions, db.backup, db.fallback, db.hooks, db.actions) == ((), None, None, {}, {})
    assert db.stop == svc.StopPolicy(signal=signal.SIGTERM, grace=10.0)
    assert db.recovery == svc.RecoveryPolicy()


def test_empty_file_is_an_empty_catalog() -> None:
    assert len(parse("")) == 0
    assert len(parse("services: []")) == 0


# --- health --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("health", "check"),
    [
        ("{http: 'http://h:{port}/'}", svc.HttpCheck("http://h:{port}/")),
        (
            "{http: {url: 'http://h/', method: HEAD, expect_status: [200, 204]}}",
            svc.HttpCheck("http://h/", "HEAD", (200, 204)),
        ),
        ("{tcp: '127.0.0.1:{port}'}", svc.TcpCheck("127.0.0.1:{port}")),
        ("{process: true}", svc.ProcessCheck()),
        ("{command: [check, --quick]}", svc.CommandCheck(("check", "--quick"))),
        ("{command: 'curl -f http://h/'}", svc.CommandCheck(("curl", "-f", "http://h/"))),
    ],
)
def test_health_check_types(health: str, check: svc.Check) -> None:
    assert one(local(f"port: 9000\nhealth: {health}")).health.check == check


def test_without_health_a_port_is_checked_by_tcp_else_the_process_is_watched() -> None:
    assert one(local("port: 9000")).health.check == svc.TcpCheck("127.0.0.1:{port}")
    assert one(local()).health.check == svc.ProcessCheck()


def test_health_durations_and_thresholds() -> None:
    health = one(
        local(
            "health: {interval: 500ms, timeout: 250ms, failure_threshold: 4,"
            " success_threshold: 2, startup_timeout: 1m}"
        )
    ).health
    assert (health.interval, health.timeout) == (0.5, 0.25)
    assert (health.failure_threshold, health.success_threshold) == (4, 2)
    assert health.startup_timeout == 60.0


@pytest.mark.parametrize(
    ("health", "default_interval", "interval", "timeout"),
    [
        ("{}", 30.0, 30.0, 5.0),
        ("{}", 3.0, 3.0, 3.0),
        ("{interval: 2s}", 30.0, 2.0, 2.0),
        ("{interval: 1m}", 3.0, 60.0, 5.0),
        ("{interval: 10, timeout: 8}", 3.0, 10.0, 8.0),
    ],
)
def test_interval_default_and_timeout_default(
    health: str, default_interval: float, interval: float, timeout: float
) -> None:
    policy = one(local(f"health: {health}"), default_interval=default_interval).health
    assert (policy.interval, policy.timeout) == (interval, timeout)


# --- other sections ------------------------------------------------------------------------------


def test_replicas_as_a_number_or_min_and_max() -> None:
    assert one(local("replicas: 1")).replicas == svc.Replicas(1, 1)
    assert one(local("replicas: 0")).replicas == svc.Replicas(0, 1)
    assert one(local("replicas: {min: 0, max: 1}")).replicas == svc.Replicas(0, 1)


def test_command_string_is_split_like_a_shell() -> None:
    spec = one("services:\n  - name: a\n    command: \"python -m x --msg 'a b'\"\n")
    assert spec.run.command == ("python", "-m", "x", "--msg", "a b")


def test_backup_with_its_own_command_and_cold_mode() -> None:
    backup = one(local("backup: {mode: cold, command: [standby], env: {ROLE: backup}}")).backup
    assert backup == svc.Backup(mode="cold", command=("standby",), env={"ROLE": "backup"})


def test_stop_signal_accepts_short_and_lowercase_names() -> None:
    assert one(local("stop: {signal: quit}")).stop.signal == signal.SIGQUIT
    assert one(local("stop: {signal: sigint}")).stop.signal == signal.SIGINT


def test_cwd_is_resolved_relative_to_the_base_dir(tmp_path: Path) -> None:
    spec = one(local("cwd: sub/../svc"), base=tmp_path)
    assert spec.run.cwd == str((tmp_path / "svc").resolve())
    absolute = one(local(f"cwd: {tmp_path / 'abs'}"), base=BASE)
    assert absolute.run.cwd == str(tmp_path / "abs")


def test_config_hash_is_stable_for_the_same_text() -> None:
    first = parse(EXAMPLE).get("azora-auth").config_hash
    assert first == parse(EXAMPLE).get("azora-auth").config_hash
    assert len(first) == 16


@pytest.mark.parametrize(
    ("old", "new"),
    [("LOG_LEVEL: info", "LOG_LEVEL: debug"), ("cwd: ./auth", "cwd: ./other")],
)
def test_config_hash_changes_with_what_shapes_the_process(old: str, new: str) -> None:
    assert old in EXAMPLE
    before = parse(EXAMPLE)
    after = parse(EXAMPLE.replace(old, new))
    assert before.get("azora-auth").config_hash != after.get("azora-auth").config_hash
    assert before.get("azora-db").config_hash == after.get("azora-db").config_hash


@pytest.mark.parametrize(
    ("old", "new"),
    [("failure_threshold: 2", "failure_threshold: 3"), ("grace: 3s", "grace: 4s")],
)
def test_config_hash_ignores_what_does_not(old: str, new: str) -> None:
    """Probe and stop settings do not change the running process: no restart for them."""
    assert old in EXAMPLE
    before = parse(EXAMPLE).get("azora-auth").config_hash
    assert before == parse(EXAMPLE.replace(old, new)).get("azora-auth").config_hash


def test_load_service_file_reads_and_resolves_against_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "services.yaml"
    path.write_text(local("cwd: app"), encoding="utf-8")
    catalog = load_service_file(path, default_interval=4.0)
    assert catalog.get("a").run.cwd == str((tmp_path / "app").resolve())
    assert catalog.get("a").health.interval == 4.0


def test_load_service_file_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as caught:
        load_service_file(path, default_interval=4.0)
    assert caught.value.message == str(path)
    (problem,) = caught.value.problems
    assert problem.path == ""
    assert "cannot read the file" in problem.message
    assert "No such file" in problem.message


# --- errors: the file as a whole -----------------------------------------------------------------

UNKNOWN_KEY = "unknown key (check its spelling against docs/configuration.md)"


def test_invalid_yaml_gives_line_and_column() -> None:
    problem = only_problem("services:\n  - name: a\n    command: [run\n")
    assert problem.path == "line 4, column 1"
    assert problem.message.startswith("not valid YAML: ")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string", "42"])
def test_not_a_mapping(text: str) -> None:
    assert only_problem(text) == Problem("", "expected a mapping with a 'services' list")


A, B = "services[0] (a).", "services[1] (b)."
EXTERNAL = "services:\n  - name: a\n    platform: external\n"
TWO_PORTS = local("port: 8080") + local("port: 8080", name="b", more=True)
ROUTER = "more than one replica needs Phoenix's router in front of them"
NO_PORT = "uses {port} but the service declares no port"
SHADOWS = "shadows a built-in playbook action; choose another name"
SINGLE_PROBLEMS = [
    ("servics: []", "servics", UNKNOWN_KEY),
    (local("comand: [x]"), A + "comand", UNKNOWN_KEY),
    (local("health: {intervall: 2s}"), A + "health.intervall", UNKNOWN_KEY),
    (local("health: {interval: soon}"), A + "health.interval", "500ms, 2s, 5m, 1h, got 'soon'"),
    (local() + local(more=True), "services[1] (a).name", "duplicate service name 'a'"),
    (TWO_PORTS, B + "port", "port 8080 is already used by 'a'"),
    (local("depends_on: [azora-db]"), A + "depends_on[0]", "unknown service 'azora-db'"),
    ("services:\n  - name: a\n", A + "command", "required for a local service"),
    (local("platform: external\nhealth: {http: 'http://x/'}"), A + "command", "does not start it"),
    (EXTERNAL, A + "health", "required for an external"),
    (
        EXTERNAL + "    health: {process: true}\n",
        A + "health.process",
        "an external service has no local process to watch",
    ),
    (local("platform: docker"), A + "image", "required for a docker service: the image"),
    (local("image: busybox"), A + "image", "only a docker service runs an image"),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {label: app=x}\n"
        "    image: busybox\n",
        A + "image",
        "Phoenix does not create or change a container it adopts",
    ),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {compose_project: shop}\n",
        A + "adopt",
        "with both compose_project and compose_service",
    ),
    (local("adopt: {label: app=x}"), A + "adopt", "only a docker service adopts containers"),
    (
        "services:\n  - name: a\n    platform: docker\n    image: busybox\n"
        "    resources: {nice: 5}\n",
        A + "resources.nice",
        "niceness applies to the processes of a local service",
    ),
    (
        local("platform: docker\nimage: busybox\nreplicas: 2"),
        A + "replicas",
        "more than one replica needs Phoenix's router in front of them: declare a port",
    ),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {label: app=x}\n"
        "    replicas: 2\n",
        A + "replicas",
        "Phoenix runs no more containers of a service it adopts than it found",
    ),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {label: app=x}\n"
        "    port: 8080\n    router: true\n",
        A + "router",
        "only services Phoenix runs (local commands, docker images) have its router",
    ),
    (
        local("zero_downtime: true"),
        A + "zero_downtime",
        "starting the replacement first needs Phoenix's router to switch traffic",
    ),
    (local("init: true"), A + "init", "only a docker service's container has Docker's init"),
    (
        local("container: {user: app}"),
        A + "container",
        "only a docker service has containers",
    ),
    (
        local("platform: docker\nimage: busybox\ncontainer: {volumes: [data]}"),
        A + "container.volumes[0]",
        "expected source:target[:ro], got 'data'",
    ),
    (
        local("platform: docker\nimage: busybox\ncontainer: {volumes: ['data:srv']}"),
        A + "container.volumes[0]",
        "the target must be a path in the container",
    ),
    (
        local("platform: docker\nimage: busybox\ncontainer: {volumes: ['d:/srv:rx']}"),
        A + "container.volumes[0]",
        "the mode must be ro or rw",
    ),
    (
        local("platform: docker\nimage: busybox\ncontainer: {labels: {phoenix.role: x}}"),
        A + "container.labels",
        "labels phoenix.* are Phoenix's own: phoenix.role",
    ),
    (
        local("platform: docker\nimage: busybox\ncontainer: {healthcheck: {command: []}}"),
        A + "container.healthcheck.command",
        "at least 1 item",
    ),
    (
        local("versions: [{name: v1, image: shop/web:1}]"),
        A + "versions[0].image",
        "only a docker or kubernetes version runs an image",
    ),
    (
        local("platform: docker\nimage: busybox\nversions: [{name: v1, cwd: /srv}]"),
        A + "versions[0].cwd",
        "a container's working directory is the image's",
    ),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {label: app=x}\n"
        "    versions: [{name: v1}]\n",
        A + "versions",
        "Phoenix does not change the image of a container it adopts",
    ),
    (
        "services:\n  - name: a\n    platform: docker\n    adopt: {label: app=x}\n    init: true\n",
        A + "init",
        "Phoenix does not create or change a container it adopts",
    ),
    (
        local("platform: docker\nimage: busybox\ncwd: /srv"),
        A + "cwd",
        "a container's working directory is the image's",
    ),
    (
        "services:\n  - name: a\n    platform: kubernetes\n    health: {http: 'http://{address}:80/'}\n",
        A + "kubernetes",
        "required for a kubernetes service: the workload that runs it",
    ),
    (
        local("port: 1\nhealth: {http: x, tcp: 'h:1'}"),
        A + "health",
        "choose one of http, tcp, process, command; got http, tcp",
    ),
    (local("health: {tcp: localhost}"), A + "health", "tcp: expected 'host:port', got 'localhost'"),
    (local("command: [run, '{port}']"), A + "command[1]", NO_PORT),
    (local("health: {tcp: 'h:{port}'}"), A + "health.tcp", NO_PORT),
    (local("replicas: 3"), A + "replicas", ROUTER),
    (local("replicas: {min: 1, max: 4}"), A + "replicas", ROUTER),
    (
        local("actions: {restart_service: {http: {url: 'http://x/'}}}"),
        A + "actions.restart_service",
        SHADOWS,
    ),
    (local("actions: {wait: {http: {url: 'http://x/'}}}"), A + "actions.wait", SHADOWS),
    (local("stop: {signal: SIGFOO}"), A + "stop.signal", "unknown signal 'SIGFOO'; expected e.g."),
]


@pytest.mark.parametrize(("text", "path", "message"), SINGLE_PROBLEMS)
def test_single_problem_is_located_and_explained(text: str, path: str, message: str) -> None:
    problem = only_problem(text)
    assert problem.path == path
    assert message in problem.message


def test_problem_path_names_the_service() -> None:
    problem = only_problem(local("health: {interval: soon}", name="azora-auth"))
    assert problem.path == "services[0] (azora-auth).health.interval"


@pytest.mark.parametrize("name", ["Azora", "a_", "-a", "has space", "x" * 64])
def test_bad_name_pattern(name: str) -> None:
    problem = only_problem(f"services:\n  - name: '{name}'\n    command: [run]\n")
    assert problem.path == f"services[0] ({name}).name"
    assert "lowercase letters, digits" in problem.message
    assert repr(name) in problem.message


def test_self_dependency() -> None:
    found = problems(local("depends_on: [a]"))
    assert Problem("services[0] (a).depends_on[0]", "a service cannot depend on itself") in found


def test_dependency_cycle_is_reported_with_its_path() -> None:
    text = (
        local("depends_on: [b]", name="a")
        + local("depends_on: [c]", name="b", more=True)
        + local("depends_on: [a]", name="c", more=True)
    )
    problem = only_problem(text)
    assert problem.message == "dependency cycle: a -> b -> c -> a"
    assert "(c).depends_on" in problem.path


def test_dependency_cycle_path_has_the_service_index() -> None:
    text = local("depends_on: [b]", name="a") + local("depends_on: [a]", name="b", more=True)
    assert only_problem(text).path.startswith("services[1] (b).depends_on")


# --- errors: platforms and checks ----------------------------------------------------------------


def test_external_with_health_but_no_check_is_refused() -> None:
    text = "services:\n  - name: e\n    platform: external\n    health: {interval: 2s}\n"
    with pytest.raises(ConfigError):
        parse(text)


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ("port: 1\ncommand: [run, '{prot}']", "services[0] (a).command[1]"),
        ("env: {URL: 'http://{host}/'}", "services[0] (a).env.URL"),
        ("health: {http: 'http://{host}/'}", "services[0] (a).health.http"),
        (
            "actions: {flush: {http: {url: 'http://{host}/'}}}",
            "services[0] (a).actions.flush.http.url",
        ),
    ],
)
def test_unknown_placeholder(extra: str, path: str) -> None:
    problem = only_problem(local(extra))
    assert problem.path == path
    assert problem.message.startswith("unknown placeholder '{")
    assert "known: {address}, {instance}, {name}, {port}, {python}, {version}" in problem.message


def test_unknown_placeholder_in_a_version_env() -> None:
    problem = only_problem(local("versions: [{name: v2, env: {X: '{prot}'}}]"))
    assert problem.path.startswith("services[0] (a).versions[0].env")


def test_replicas_min_greater_than_max_is_reported() -> None:
    found = problems(local("replicas: {min: 3, max: 2}"))
    assert any("min (3) is greater than max (2)" in p.message for p in found)


def test_replicas_min_greater_than_max_is_one_clean_problem() -> None:
    problem = only_problem(local("replicas: {min: 3, max: 2}"))
    assert problem == Problem("services[0] (a).replicas", "min (3) is greater than max (2)")


def test_a_docker_service_has_a_container_run_section() -> None:
    catalog = parse_service_file(
        "services:\n  - name: web\n    platform: docker\n    image: shop/web:1.4\n"
        "    command: [serve, --port, '{port}']\n    port: 8080\n    env: {MODE: fast}\n",
        source="test",
        base_dir=BASE,
        default_interval=1.0,
    )
    spec = catalog.get("web")
    assert spec.run == svc.ContainerRun(
        "shop/web:1.4", ("serve", "--port", "{port}"), {"MODE": "fast"}
    )
    assert spec.routed, "containers with a port sit behind Phoenix's router, as processes do"
    direct = parse_service_file(
        "services:\n  - name: web\n    platform: docker\n    image: shop/web:1.4\n"
        "    port: 8080\n    router: false\n",
        source="test",
        base_dir=BASE,
        default_interval=1.0,
    ).get("web")
    assert not direct.routed, "router: false: the one container listens on the port itself"
    other = parse_service_file(
        "services:\n  - name: web\n    platform: docker\n    image: shop/web:1.5\n"
        "    command: [serve, --port, '{port}']\n    port: 8080\n    env: {MODE: fast}\n",
        source="test",
        base_dir=BASE,
        default_interval=1.0,
    ).get("web")
    assert other.config_hash != spec.config_hash, "a new image is a new declaration"


def test_docker_versions_name_their_images() -> None:
    text = (
        "services:\n  - name: web\n    platform: docker\n    image: shop/web:1\n"
        "    versions: [{name: v1, image: shop/web:1, known_good: true}, {name: v2%s}]\n"
    )
    spec = parse_service_file(
        text % ", image: shop/web:2", source="t", base_dir=BASE, default_interval=1.0
    ).get("web")
    assert [(v.name, v.image) for v in spec.versions] == [
        ("v1", "shop/web:1"),
        ("v2", "shop/web:2"),
    ]
    other = parse_service_file(
        text % ", image: shop/web:3", source="t", base_dir=BASE, default_interval=1.0
    ).get("web")
    assert other.config_hash != spec.config_hash, "a version's new image is a new declaration"


def test_an_adopting_docker_service_names_the_labels_of_its_containers() -> None:
    def run_of(adopt: str) -> svc.RunSection | None:
        text = f"services:\n  - name: api\n    platform: docker\n    adopt: {adopt}\n"
        catalog = parse_service_file(text, source="t", base_dir=BASE, default_interval=1.0)
        return catalog.get("api").run

    assert run_of("{label: app=shop-api}") == svc.AdoptedContainers(("app=shop-api",))
    assert run_of("{compose_project: shop, compose_service: api}") == svc.AdoptedContainers(
        ("com.docker.compose.project=shop", "com.docker.compose.service=api")
    )


def test_several_problems_are_all_reported() -> None:
    text = textwrap.dedent(
        """
        services:
          - name: a
            depends_on: [ghost]
            platform: docker
          - name: b
            command: [run, '{bogus}']
            port: 80
          - name: c
            command: [run]
            port: 80
        """
    )
    paths = {p.path for p in problems(text)}
    assert paths == {
        "services[0] (a).depends_on[0]",
        "services[0] (a).image",
        "services[1] (b).command[1]",
        "services[2] (c).port",
    }


def test_several_shape_problems_are_all_reported() -> None:
    text = local("comand: [x]\nport: 70000\nhealth: {interval: soon}")
    assert {p.path for p in problems(text)} == {
        "services[0] (a).comand",
        "services[0] (a).port",
        "services[0] (a).health.interval",
    }


def test_shape_and_whole_file_problems_are_reported_together() -> None:
    text = local("port: 70000\ndepends_on: [ghost]")
    assert {p.path for p in problems(text)} == {
        "services[0] (a).port",
        "services[0] (a).depends_on[0]",
    }


@pytest.mark.parametrize(
    ("health", "path", "fragment"),
    [
        ('{http: "http://127.0.0.1:99999/health"}', "health.http", "invalid port"),
        ('{http: "ftp://files/health"}', "health.http", "http:// or https:// URL"),
        ('{http: "/health"}', "health.http", "with a host"),
        ('{tcp: "127.0.0.1:http"}', "health.tcp", "port 1-65535"),
        ('{tcp: "127.0.0.1:0"}', "health.tcp", "port 1-65535"),
        ("{interval: 100000000000}", "health.interval", "at most"),
        ("{interval: 400d}", "health.interval", "expected a duration"),
    ],
)
def test_addresses_and_durations_that_cannot_work_are_refused(
    health: str, path: str, fragment: str
) -> None:
    found = problems(local(f"port: 8080\nhealth: {health}"))
    assert [p.path for p in found] == [f"services[0] (a).{path}"]
    assert fragment in found[0].message


def test_addresses_with_placeholders_are_checked_once_filled() -> None:
    catalog = parse(local('port: 8080\nhealth: {http: "http://127.0.0.1:{port}/health"}'))
    assert catalog.get("a").health.check == svc.HttpCheck("http://127.0.0.1:{port}/health")


def test_versions_initial_version_and_known_good_after(tmp_path: Path) -> None:
    path = tmp_path / "phoenix.yaml"
    path.write_text(
        """services:
  - name: shop
    command: [run]
    version: v2
    known_good_after: 90s
    versions:
      - {name: v1, known_good: true}
      - {name: v2, env: {FEATURE_X: "1"}}
      - {name: v3, command: [run, --new]}
"""
    )
    [shop] = list(load_service_file(path, default_interval=2.0))
    assert shop.current_version == "v2" and shop.known_good_after == 90.0
    assert [(v.name, v.known_good) for v in shop.versions] == [
        ("v1", True),
        ("v2", False),
        ("v3", False),
    ]
    assert shop.versions[2].command == ("run", "--new")


def test_version_mistakes_are_named(tmp_path: Path) -> None:
    path = tmp_path / "phoenix.yaml"
    path.write_text(
        """services:
  - name: shop
    command: [run]
    version: v7
    versions: [{name: v1}, {name: v1}]
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_service_file(path, default_interval=2.0)
    problems = {p.path: p.message for p in caught.value.problems}
    assert problems["services[0] (shop).versions[1].name"] == "duplicate version 'v1'"
    assert problems["services[0] (shop).version"] == "unknown version 'v7'; declared: v1"


def test_resources_are_parsed_with_sizes_and_checked() -> None:
    found = problems(
        """services:
  - name: api
    command: [run]
    resources: {nice: 30, cpus: [4095], memory_max: 12parsecs}
  - name: ext
    platform: external
    health: {http: "http://ext.example/health"}
    resources: {nice: 1}
"""
    )
    by_path = {p.path: p.message for p in found}
    assert "less than or equal to 19" in by_path["services[0] (api).resources.nice"]
    assert "not available here" in by_path["services[0] (api).resources.cpus"]
    assert "unknown size unit 'parsecs'" in by_path["services[0] (api).resources.memory_max"]
    assert by_path["services[1] (ext).resources"] == (
        "resources apply to the processes of a local service only"
    )


def test_sizes() -> None:
    assert parse_size("512MB") == 512_000_000
    assert parse_size("1GiB") == parse_size("1g") == 1024**3
    assert parse_size(4096) == 4096
    for bad in ("0", "-1k", "lots", True):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_detection_rules_are_parsed_with_units() -> None:
    catalog = parse_service_file(
        """services:
  - name: api
    command: [run]
    detection:
      error_rate: {above: 0.25, for: 5s, hysteresis: 0.5}
      latency_p99: {above: 750ms, for: 1m}
      throughput: {above: 300, for: 10s}
      memory: {leak_window: 2m, min_growth: 0.5, limit: 2GiB}
""",
        source="s",
        base_dir=Path("/srv"),
        default_interval=1.0,
    )
    detection = catalog.get("api").detection
    assert detection.error_rate == svc.ThresholdRule("error_rate", 0.25, 5.0, 0.5)
    assert detection.latency_p99 == svc.ThresholdRule("latency_p99", 750.0, 60.0, 0.2)
    assert detection.throughput == svc.ThresholdRule("throughput", 300.0, 10.0, 0.2)
    assert (detection.leak_window, detection.leak_min_growth) == (120.0, 0.5)
    assert detection.memory_limit == 2 * 1024**3


def test_detection_mistakes_are_named() -> None:
    found = {
        p.path: p.message
        for p in problems(
            """services:
  - name: api
    command: [run]
    detection: {error_rate: {above: 0.2}, cpu: {above: 50, for: 1x}, memory: {leak_window: 1s}}
"""
        )
    }
    assert "required" in found["services[0] (api).detection.error_rate.for"]
    assert "expected a duration" in found["services[0] (api).detection.cpu.for"]
    assert "greater than or equal to 5" in found["services[0] (api).detection.memory.leak_window"]


def test_a_prometheus_source_is_checked_like_every_url() -> None:
    def found(metrics: str) -> list[str]:
        text = f"services:\n  - name: api\n    command: [run]\n    metrics: {metrics}\n"
        return [f"{p.path}: {p.message}" for p in problems(text)]

    where = "services[0] (api).metrics"
    bad_url = found('{prometheus: "ftp://{port}/metrics"}')
    assert any(m.startswith(f"{where}.prometheus: expected an http://") for m in bad_url)
    assert f"{where}.prometheus: uses {{port}} but the service declares no port" in bad_url
    shape = found('{prometheus: "http://127.0.0.1:9100/metrics", every: 0.1s, names: ["a b"]}')
    assert any(m.startswith(f"{where}.every:") and "0.5" in m for m in shape)
    assert any(m.startswith(f"{where}.names[0]:") for m in shape)


# --- environment variables (${NAME}, ${NAME:-default}) and port_offset --------------------------


def with_env(text: str, environ: dict[str, str]) -> svc.ServiceCatalog:
    return parse_service_file(
        textwrap.dedent(text),
        source="services.yaml",
        base_dir=BASE,
        default_interval=7.0,
        environ=environ,
    )


def env_problems(text: str, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        with_env(text, environ)
    assert caught.value.message == "services.yaml"
    return [str(problem) for problem in caught.value.problems]


ENV_FILE = """\
services:
  - name: api
    command: ["{python}", "-m", "app", "--token", "${API_TOKEN}", "--mode", "${MODE:-fast}"]
    env: {DB: "${DB_URL:-sqlite:///x.db}", GREETING: "hello ${WHO:-world}, it costs $$5"}
    port: ${API_PORT:-8081}
    replicas: ${REPLICAS:-1}
"""


def test_variables_are_filled_from_the_environment_with_defaults() -> None:
    [api] = with_env(ENV_FILE, {"API_TOKEN": "s3cret", "API_PORT": "9000", "REPLICAS": "3"})
    assert api.run.command == ("{python}", "-m", "app", "--token", "s3cret", "--mode", "fast")
    assert api.run.env == {"DB": "sqlite:///x.db", "GREETING": "hello world, it costs $5"}
    assert api.port == 9000
    assert api.replicas == svc.Replicas(3, 3)


def test_an_empty_variable_takes_the_default_and_a_set_one_wins() -> None:
    [api] = with_env(ENV_FILE, {"API_TOKEN": "", "MODE": "", "WHO": "Ada"})
    assert api.run.command[-3:] == ("", "--mode", "fast")
    assert api.run.env["GREETING"] == "hello Ada, it costs $5"
    assert api.port == 8081


def test_a_plain_value_is_typed_after_expansion_and_a_quoted_one_stays_text() -> None:
    """``port: ${P}`` is the number; a quoted value stays a string even when it looks like one."""
    text = """\
    services:
      - name: api
        command: [run]
        env: {COUNT: "${N}"}
        port: ${N}
        replicas:
          min: 1
          max: 2
          scale_in_below: ${LOW}
    """
    [api] = with_env(text, {"N": "8085", "LOW": "0.5"})
    assert (api.port, api.run.env, api.replicas.scale_in_below) == (8085, {"COUNT": "8085"}, 0.5)


def test_a_value_cannot_change_the_file_structure() -> None:
    """Expansion is on parsed values, so YAML in a variable is text, never new keys."""
    text = """\
    services:
      - name: api
        command: [run]
        env: {NOTE: "${NOTE}"}
    """
    [api] = with_env(text, {"NOTE": "x\n    port: 1\n  - name: evil"})
    assert api.run.env == {"NOTE": "x\n    port: 1\n  - name: evil"}
    assert api.port is None


def test_an_unset_variable_without_default_names_file_line_and_variable() -> None:
    found = env_problems(ENV_FILE, {})
    assert found == [
        "line 3, column 51: environment variable API_TOKEN is not set and has no default "
        "(set it, or write ${API_TOKEN:-value})"
    ]
    with pytest.raises(ConfigError) as caught:
        with_env(ENV_FILE, {})
    assert caught.value.lines()[0].startswith("services.yaml: line 3, column 51: ")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("${}", "invalid variable reference '${}'"),
        ("${1ST}", "invalid variable reference '${1ST}'"),
        ("${A B}", "invalid variable reference '${A B}'"),
        ("${A:default}", "invalid variable reference '${A:default}'"),
        ("${UNCLOSED", "'${' without a closing '}' (write $$ for a literal $)"),
    ],
)
def test_a_malformed_reference_is_named(value: str, message: str) -> None:
    text = f'services:\n  - name: api\n    command: [run]\n    env: {{X: "{value}"}}\n'
    (found,) = env_problems(text, {"A": "1"})
    assert found.startswith("line 4, column 14: " + message), found


def test_a_dollar_without_braces_and_an_anchor_used_twice_are_left_alone() -> None:
    """``$PORT`` is for a shell to expand; an alias is expanded once (``$$$$`` gives ``$$``, not ``$``)."""
    text = """\
    services:
      - name: api
        command: ["sh", "-c", "exec app --port $PORT"]
        env: {A: &cost "$$$$PRICE", B: *cost}
    """
    [api] = with_env(text, {"PRICE": "10"})
    assert api.run.command[-1] == "exec app --port $PORT"
    assert api.run.env == {"A": "$$PRICE", "B": "$$PRICE"}


def test_keys_are_never_expanded() -> None:
    text = 'services:\n  - name: api\n    command: [run]\n    env: {"${K}": v}\n'
    [api] = with_env(text, {"K": "X"})
    assert api.run.env == {"${K}": "v"}


OFFSET_FILE = """\
port_offset: ${PHOENIX_PORT_OFFSET:-0}
services:
  - name: web
    command: [run]
    port: 8081
  - name: db
    command: [run]
    port: 8090
  - name: worker
    command: [run]
"""


def test_port_offset_moves_every_declared_port_and_only_those() -> None:
    assert [s.port for s in with_env(OFFSET_FILE, {})] == [8081, 8090, None]
    moved = with_env(OFFSET_FILE, {"PHOENIX_PORT_OFFSET": "1000"})
    assert [s.port for s in moved] == [9081, 9090, None]
    literal = with_env(OFFSET_FILE.replace("${PHOENIX_PORT_OFFSET:-0}", "7"), {})
    assert [s.port for s in literal] == [8088, 8097, None]


def test_port_offset_changes_the_config_hash() -> None:
    """A moved port is a different process shape: the old instance is not adopted."""
    before = with_env(OFFSET_FILE, {}).get("web").config_hash
    after = with_env(OFFSET_FILE, {"PHOENIX_PORT_OFFSET": "1"}).get("web").config_hash
    assert before != after


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        ("abc", ["port_offset: expected a whole number of ports (0 or more), got 'abc'"]),
        ("1.5", ["port_offset: expected a whole number of ports (0 or more), got 1.5"]),
        ("true", ["port_offset: expected a whole number of ports (0 or more), got True"]),
        ("-1", ["port_offset: must be 0 or more, got -1"]),
        ("65535", ["port_offset: must be less than 65535, got 65535"]),
        (
            "57450",
            [
                "services[1] (db).port: 8090 + port_offset 57450 = 65540, over the highest "
                "port 65535; lower port_offset or this port"
            ],
        ),
    ],
)
def test_a_bad_port_offset_is_a_clear_error(offset: str, expected: list[str]) -> None:
    assert env_problems(OFFSET_FILE, {"PHOENIX_PORT_OFFSET": offset}) == expected


def test_port_offset_is_checked_with_the_rest_of_the_file() -> None:
    text = OFFSET_FILE.replace("${PHOENIX_PORT_OFFSET:-0}", "-2") + "  - name: web\n"
    found = env_problems(text, {})
    assert "port_offset: must be 0 or more, got -2" in found
    assert any(p.startswith("services[3] (web).") for p in found), found


def test_the_example_fleet_moves_with_one_variable() -> None:
    """``make run PORT_OFFSET=N`` moves every port of examples/phoenix.yaml by N."""
    path = Path(__file__).resolve().parents[2] / "examples" / "phoenix.yaml"
    default = load_service_file(path, default_interval=30.0, environ={})
    moved = load_service_file(path, default_interval=30.0, environ={"PHOENIX_PORT_OFFSET": "1000"})
    ports = {s.name: s.port for s in default if s.port is not None}
    assert ports, "the example declares ports"
    assert {s.name: s.port for s in moved if s.port is not None} == {
        name: port + 1000 for name, port in ports.items()
    }


def test_docker_engines_are_declared_by_name_and_named_by_services(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("pem")
    text = (
        "docker_engines:\n"
        "  edge: {host: 'tcp://10.0.0.5:2376', tls: {ca: ca.pem, cert: cert.pem, key: key.pem}}\n"
        "  other: {host: 'unix:///run/other.sock'}\n"
        "services:\n"
        "  - {name: far, platform: docker, image: shop/web:1, engine: edge}\n"
        "  - {name: near, platform: docker, image: shop/web:1}\n"
    )
    catalog = parse_service_file(text, source="t", base_dir=tmp_path, default_interval=1.0)
    far = catalog.get("far").engine
    assert far == svc.DockerEngine(
        "edge",
        "tcp://10.0.0.5:2376",
        str(tmp_path / "ca.pem"),
        str(tmp_path / "cert.pem"),
        str(tmp_path / "key.pem"),
    )
    assert catalog.get("near").engine is None


@pytest.mark.parametrize(
    ("engines", "service", "path", "message"),
    [
        (
            "  edge: {host: 'tcp://10.0.0.5:2376'}\n",
            "engine: edge",
            "docker_engines.edge.tls",
            "an engine over TCP needs TLS with a client certificate",
        ),
        (
            "  edge: {host: 'http://10.0.0.5'}\n",
            "engine: edge",
            "docker_engines.edge.host",
            "expected unix:///path/to/docker.sock or tcp://host:port",
        ),
        (
            "  edge: {host: 'tcp://h:2376', tls: {ca: nope.pem, cert: c.pem, key: k.pem}}\n",
            "engine: edge",
            "docker_engines.edge.tls.ca",
            "no such file:",
        ),
        (
            "  edge: {host: 'unix:///x.sock', port: 1}\n",
            "engine: edge",
            "docker_engines.edge.port",
            "unknown key (host, tls: {ca, cert, key})",
        ),
        ("  edge: {host: 'unix:///x.sock'}\n", "engine: nowhere", A + "engine", "unknown engine"),
    ],
)
def test_docker_engine_problems_are_located(
    engines: str, service: str, path: str, message: str
) -> None:
    text = (
        f"docker_engines:\n{engines}services:\n"
        f"  - name: a\n    platform: docker\n    image: busybox\n    {service}\n"
    )
    found = problems(text)
    assert any(p.path == path and message in p.message for p in found), found


def test_only_docker_services_name_an_engine() -> None:
    text = "docker_engines:\n  edge: {host: 'unix:///x.sock'}\nservices:\n" + local(
        "engine: edge"
    ).removeprefix("services:\n")
    problem = only_problem(text)
    assert problem.path == A + "engine"
    assert "only a docker service runs on a Docker engine" in problem.message


def test_a_docker_services_container_section() -> None:
    text = (
        "services:\n  - name: web\n    platform: docker\n    image: shop/web:1\n"
        "    container:\n      volumes: ['/srv/data:/data', 'cache:/cache:ro']\n"
        "      labels: {team: shop}\n      user: '1000:1000'\n"
        "      healthcheck: {command: [/bin/check, --quick], interval: 5s, retries: 2}\n"
    )
    spec = parse_service_file(text, source="t", base_dir=BASE, default_interval=1.0).get("web")
    run = spec.run
    assert isinstance(run, svc.ContainerRun)
    assert run.volumes == ("/srv/data:/data", "cache:/cache:ro")
    assert run.labels == {"team": "shop"} and run.user == "1000:1000"
    assert run.healthcheck == svc.ContainerHealthcheck(("/bin/check", "--quick"), 5.0, 30.0, 2)
    bare = parse_service_file(
        text.split("    container:")[0], source="t", base_dir=BASE, default_interval=1.0
    ).get("web")
    assert bare.config_hash != spec.config_hash, "the container section shapes the container"


def test_a_service_on_a_remote_engine_serves_its_port_itself(tmp_path: Path) -> None:
    """Phoenix's router runs on Phoenix's machine and forwards to its loopback: a service
    on an engine on another host is not routed, and what needs the router is refused."""
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("pem")
    engines = (
        "docker_engines:\n"
        "  far: {host: 'tcp://10.0.0.5:2376', tls: {ca: ca.pem, cert: cert.pem, key: key.pem}}\n"
        "  near: {host: 'tcp://127.0.0.1:2376', tls: {ca: ca.pem, cert: cert.pem, key: key.pem}}\n"
    )
    text = engines + (
        "services:\n"
        "  - {name: a, platform: docker, image: x, engine: far, port: 8080}\n"
        "  - {name: b, platform: docker, image: x, engine: near, port: 8081}\n"
    )
    catalog = parse_service_file(text, source="t", base_dir=tmp_path, default_interval=1.0)
    assert not catalog.get("a").routed and catalog.get("b").routed
    refused = engines + (
        "services:\n  - {name: a, platform: docker, image: x, engine: far, port: 8080,"
        " replicas: 2}\n"
    )
    with pytest.raises(ConfigError) as raised:
        parse_service_file(refused, source="t", base_dir=tmp_path, default_interval=1.0)
    [problem] = [p for p in raised.value.problems if p.path.endswith(".replicas")]
    assert "needs Phoenix's router, which runs on Phoenix's machine" in problem.message
