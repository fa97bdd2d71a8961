"""config/settings.py: load_settings() from the environment and from .env."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from phoenix_server.config.settings import load_settings
from phoenix_server.config.tokens import configured_tokens
from phoenix_server.domain.auth import TokenRegistry
from phoenix_server.domain.errors import ConfigError

VARIABLES = (
    "PORT",
    "NODE_ENV",
    "PHOENIX_ENV",
    "AUTO_RECOVERY",
    "MAX_RECOVERY_ATTEMPTS",
    "RECOVERY_TIMEOUT",
    "HEALTH_CHECK_INTERVAL",
    "ALERT_WEBHOOK",
    "ALERT_WEBHOOK_SECRET",
    "DATABASE_URL",
    "PHOENIX_HOST",
    "PHOENIX_CONFIG",
    "PHOENIX_DATA_DIR",
    "PHOENIX_MAX_CONCURRENT_RECOVERIES",
    "PHOENIX_KEEP_SERVICES",
    "PHOENIX_INSECURE",
    "PHOENIX_API_TOKENS",
    "PHOENIX_TOKENS_FILE",
    "PHOENIX_LOG_LEVEL",
    "PHOENIX_REGISTRY_URL",
    "PHOENIX_REGISTRY_INTERVAL",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No inherited variable and no .env of the repository may leak into a test."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def config_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigError:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    return caught.value


# --- defaults and values -----------------------------------------------------------------------


def test_defaults() -> None:
    settings = load_settings()
    assert settings.port == 3051
    assert settings.env == "development"
    assert settings.production is False
    assert settings.auto_recovery is True
    assert settings.max_recovery_attempts == 3
    assert settings.recovery_timeout == 300.0
    assert settings.health_check_interval == 30.0
    assert settings.alert_webhook is None
    assert settings.alert_webhook_secret is None
    assert settings.database_url is None
    assert settings.host == "127.0.0.1"
    assert settings.config_file is None
    assert settings.data_dir == Path("var")
    assert settings.insecure is False
    assert settings.keep_services is False
    assert settings.log_level == "info"
    assert settings.registry_url is None
    assert settings.registry_interval == 30.0


def test_each_seed_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("AUTO_RECOVERY", "false")
    monkeypatch.setenv("MAX_RECOVERY_ATTEMPTS", "7")
    monkeypatch.setenv("RECOVERY_TIMEOUT", "120")
    monkeypatch.setenv("HEALTH_CHECK_INTERVAL", "15")
    monkeypatch.setenv("ALERT_WEBHOOK", "https://alerts.azora.world/webhook")
    settings = load_settings()
    assert settings.port == 8080
    assert settings.auto_recovery is False
    assert settings.max_recovery_attempts == 7
    assert settings.recovery_timeout == 120.0
    assert settings.health_check_interval == 15.0
    assert settings.alert_webhook == "https://alerts.azora.world/webhook"


def test_each_phoenix_variable_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PHOENIX_HOST", "::1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/phoenix")
    monkeypatch.setenv("PHOENIX_CONFIG", "services.yaml")
    monkeypatch.setenv("PHOENIX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PHOENIX_MAX_CONCURRENT_RECOVERIES", "9")
    monkeypatch.setenv("PHOENIX_KEEP_SERVICES", "1")
    monkeypatch.setenv("PHOENIX_ALERT_GRACE", "5m")
    monkeypatch.setenv("PHOENIX_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", "s3cret")
    settings = load_settings()
    assert settings.host == "::1"
    assert settings.database_url == "postgresql://db.example/phoenix"
    assert settings.effective_database_url == "postgresql://db.example/phoenix"
    assert settings.config_file == Path("services.yaml")
    assert settings.data_dir == tmp_path / "data"
    assert settings.log_dir == tmp_path / "data" / "logs"
    assert settings.max_concurrent_recoveries == 9
    assert settings.keep_services is True
    assert settings.alert_grace == 300.0
    assert settings.log_level == "debug"
    assert settings.alert_webhook_secret is not None
    assert settings.alert_webhook_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_the_service_registry_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_REGISTRY_URL", "https://gateway.internal:8443/registry")
    monkeypatch.setenv("PHOENIX_REGISTRY_INTERVAL", "2m")
    settings = load_settings()
    assert settings.registry_url == "https://gateway.internal:8443/registry"
    assert settings.registry_interval == 120.0
    monkeypatch.setenv("PHOENIX_REGISTRY_URL", "")
    assert load_settings().registry_url is None


def test_empty_alert_webhook_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALERT_WEBHOOK", "")
    assert load_settings().alert_webhook is None


def test_dotenv_in_the_working_directory_is_read(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text(
        "PORT=4001\nNODE_ENV=test\nAUTO_RECOVERY=false\nRECOVERY_TIMEOUT=2m\n", encoding="utf-8"
    )
    settings = load_settings()
    assert settings.port == 4001
    assert settings.env == "test"
    assert settings.auto_recovery is False
    assert settings.recovery_timeout == 120.0


def test_environment_wins_over_dotenv(
    clean_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_environment / ".env").write_text("PORT=4001\n", encoding="utf-8")
    monkeypatch.setenv("PORT", "4002")
    assert load_settings().port == 4002


def test_a_bad_value_in_dotenv_is_named(clean_environment: Path) -> None:
    (clean_environment / ".env").write_text("MAX_RECOVERY_ATTEMPTS=none\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [p.path for p in caught.value.problems] == ["MAX_RECOVERY_ATTEMPTS"]


# --- environment name --------------------------------------------------------------------------


def test_phoenix_env_wins_over_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ENV", "test")
    monkeypatch.setenv("PHOENIX_ENV", "staging")
    assert load_settings().env == "staging"


def test_node_env_alone_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    settings = load_settings()
    assert settings.env == "production"
    assert settings.production is True


def test_environment_name_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOENIX_ENV", "Production")
    assert load_settings().env == "production"


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("45", 45.0), ("1.5", 1.5)],
)
@pytest.mark.parametrize("variable", ["RECOVERY_TIMEOUT", "HEALTH_CHECK_INTERVAL"])
def test_durations(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, seconds: float
) -> None:
    monkeypatch.setenv(variable, text)
    assert getattr(load_settings(), variable.lower()) == pytest.approx(seconds)


# --- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "hint", "shown"),
    [
        ("PORT", "abc", "integer", "'abc'"),
        ("PORT", "70000", "65535", "'70000'"),
        ("PORT", "0", "greater than or equal to 1", "'0'"),
        ("MAX_RECOVERY_ATTEMPTS", "0", "greater than or equal to 1", "'0'"),
        ("AUTO_RECOVERY", "maybe", "boolean", "'maybe'"),
        ("RECOVERY_TIMEOUT", "soon", "500ms", "'soon'"),
        ("RECOVERY_TIMEOUT", "0", "greater than 0", "got 0"),
        ("HEALTH_CHECK_INTERVAL", "-1", "duration", "'-1'"),
        ("HEALTH_CHECK_INTERVAL", "5 minutes", "duration", "'5 minutes'"),
        ("ALERT_WEBHOOK", "ftp://x", "http", "'ftp://x'"),
        ("PHOENIX_REGISTRY_URL", "ftp://gw/registry", "http", "'ftp://gw/registry'"),
        ("PHOENIX_REGISTRY_URL", "gateway:8080", "with a host", "'gateway:8080'"),
        ("PHOENIX_REGISTRY_URL", "http://gw:99999/", "port", "'http://gw:99999/'"),
        ("PHOENIX_REGISTRY_INTERVAL", "often", "duration", "'often'"),
        ("PHOENIX_REGISTRY_INTERVAL", "0", "greater than 0", "got 0"),
        ("PHOENIX_ENV", "prod", "production", "'prod'"),
        ("PHOENIX_LOG_LEVEL", "loud", "debug", "'loud'"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, hint: str, shown: str
) -> None:
    error = config_error(monkeypatch, **{variable: value})
    assert [p.path for p in error.problems] == [variable]
    (line,) = error.lines()
    assert line.startswith(f"invalid environment: {variable}: ")
    assert hint in line
    assert shown in line


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(
        monkeypatch, PORT="abc", MAX_RECOVERY_ATTEMPTS="0", ALERT_WEBHOOK="ftp://x"
    )
    assert sorted(p.path for p in error.problems) == [
        "ALERT_WEBHOOK",
        "MAX_RECOVERY_ATTEMPTS",
        "PORT",
    ]
    assert len(error.lines()) == 3


def test_bad_node_env_names_node_env(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, NODE_ENV="prod")
    assert "NODE_ENV" in error.lines()[0]


def test_bad_duration_message_states_the_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, RECOVERY_TIMEOUT="soon")
    assert error.lines()[0].count("'soon'") == 1


# --- security ----------------------------------------------------------------------------------


def test_non_loopback_host_without_insecure_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, PHOENIX_HOST="0.0.0.0")
    (problem,) = error.problems
    assert problem.path == "PHOENIX_HOST"
    assert "0.0.0.0" in problem.message
    assert "PHOENIX_INSECURE=1" in problem.message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_consent(monkeypatch: pytest.MonkeyPatch, host: str) -> None:
    monkeypatch.setenv("PHOENIX_HOST", host)
    settings = load_settings()
    assert settings.host == host
    assert settings.binds_loopback_only is True


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "phoenix.internal"])
def test_non_loopback_host_allowed_with_insecure(
    monkeypatch: pytest.MonkeyPatch, host: str
) -> None:
    monkeypatch.setenv("PHOENIX_HOST", host)
    monkeypatch.setenv("PHOENIX_INSECURE", "1")
    settings = load_settings()
    assert settings.host == host
    assert settings.insecure is True
    assert settings.binds_loopback_only is False


def test_production_refuses_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    error = config_error(monkeypatch, PHOENIX_ENV="production", PHOENIX_INSECURE="1")
    (problem,) = error.problems
    assert problem.path == "PHOENIX_INSECURE"
    assert "production" in problem.message


def test_production_refuses_a_public_host_even_with_insecure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = config_error(
        monkeypatch, PHOENIX_ENV="production", PHOENIX_INSECURE="1", PHOENIX_HOST="0.0.0.0"
    )
    assert [p.path for p in error.problems] == ["PHOENIX_INSECURE"]


SECRET = "s3cr3t-token-0123456789"


@pytest.mark.parametrize(
    ("value", "path", "says"),
    [
        ("admin:abc123", "PHOENIX_API_TOKENS[0]", "expected name:role:token"),
        ("ci:root:" + SECRET, "PHOENIX_API_TOKENS[0]", "unknown role 'root'"),
        ("ci:viewer:short", "PHOENIX_API_TOKENS[0]", "shorter than 16"),
        ("a:viewer:" + SECRET + ",b:admin:" + SECRET, "token", "given twice"),
        ("a:viewer:" + SECRET + "1,a:admin:" + SECRET, "name", "more than once: a"),
    ],
)
def test_bad_api_tokens_are_refused_without_echoing_them(
    monkeypatch: pytest.MonkeyPatch, value: str, path: str, says: str
) -> None:
    error = config_error(monkeypatch, PHOENIX_API_TOKENS=value)
    (problem,) = error.problems
    assert problem.path == path and says in problem.message
    assert SECRET not in " ".join(error.lines()) and "abc123" not in " ".join(error.lines())


def test_tokens_allow_a_public_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    tokens.write_text(
        f"tokens:\n  - {{name: ci, role: operator, sha256: {digest}}}\n"
        f"  - {{name: alice, role: admin, token: {SECRET}x}}\n"
    )
    monkeypatch.setenv("PHOENIX_HOST", "0.0.0.0")
    monkeypatch.setenv("PHOENIX_TOKENS_FILE", str(tokens))
    settings = load_settings()
    assert settings.has_tokens and not settings.binds_loopback_only
    found = configured_tokens(settings.env_tokens, settings.tokens_file)
    assert [(t.name, t.role.value) for t in found] == [("ci", "operator"), ("alice", "admin")]
    assert TokenRegistry(found).holder(SECRET) == found[0]
    assert TokenRegistry(found).holder(SECRET + "y") is None
    assert SECRET not in repr(found)


def test_a_broken_tokens_file_names_each_problem(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        "tokens:\n  - {name: ci, role: boss, token: x}\n  - {name: b, role: viewer}\n"
        "  - {name: c, role: admin, sha256: nothex, extra: 1}\n"
    )
    error = config_error(monkeypatch, PHOENIX_TOKENS_FILE=str(tokens))
    paths = [p.path for p in error.problems]
    assert paths == [
        "tokens[0].role",
        "tokens[0].token",
        "tokens[1]",
        "tokens[2]",
        "tokens[2].sha256",
    ], error.problems
    missing = config_error(monkeypatch, PHOENIX_TOKENS_FILE=str(tmp_path / "none.yaml"))
    assert "cannot read tokens file" in missing.message


# --- database ----------------------------------------------------------------------------------


def test_default_database_is_sqlite_in_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PHOENIX_DATA_DIR", str(tmp_path / "state"))
    settings = load_settings()
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'state' / 'phoenix.db'}"


def test_default_database_with_default_data_dir() -> None:
    assert load_settings().effective_database_url == "sqlite:///var/phoenix.db"


def test_database_url_wins_over_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PHOENIX_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    assert load_settings().effective_database_url == "sqlite:///elsewhere.db"


def test_services_do_not_inherit_phoenixs_own_settings() -> None:
    from phoenix_server.config.settings import service_environment

    inherited = service_environment(
        {
            "PATH": "/usr/bin",
            "NODE_ENV": "production",
            "DATABASE_URL": "postgresql://phoenix:secret@db/phoenix",
            "ALERT_WEBHOOK_SECRET": "s3cret",
            "ALERT_WEBHOOK": "https://hooks.example/x",
            "PHOENIX_API_TOKENS": "admin:token",
            "PHOENIX_SOMETHING_NEW": "x",
            "PORT": "3051",
            "AUTO_RECOVERY": "true",
            "LANG": "C.UTF-8",
        }
    )
    assert inherited == {"PATH": "/usr/bin", "NODE_ENV": "production", "LANG": "C.UTF-8"}
