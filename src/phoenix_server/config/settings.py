"""Phoenix's settings from the environment (and ``.env``), typed and validated once at start.

The names are the seed's (``PORT``, ``AUTO_RECOVERY``, ...) plus the ``PHOENIX_*`` keys
of API.md. A bad value refuses to start with one line per variable naming it and what
it expects (:func:`load_settings`).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from phoenix_server.config.tokens import configured_tokens
from phoenix_server.domain.errors import ConfigError, Problem
from phoenix_server.support.durations import parse_duration

Seconds = Annotated[float, BeforeValidator(parse_duration)]
ADVERTISED_MAX = 256
"""Characters of PHOENIX_ADVERTISE_URL (the member table's column)."""

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Host names a loopback-bound Phoenix always answers to."""


def _comma_list(value: object) -> object:
    """``a, b,c`` as ``("a", "b", "c")``; empty items (a trailing comma) are ignored."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


def _host_name(entry: str) -> str:
    """One ``PHOENIX_ALLOWED_HOSTS`` entry: a host name or address, no scheme, port or path."""
    name = entry.lower().removeprefix("[").removesuffix("]")
    if name == "*":
        return name
    if "/" in name or "@" in name or (name.count(":") == 1) or not name.strip("."):
        raise ValueError(f"expected host names such as phoenix.example.com, got {entry!r}")
    return name


def _proxy_network(entry: str) -> str:
    try:
        return str(ipaddress.ip_network(entry, strict=False))
    except ValueError:
        raise ValueError(
            f"expected IP addresses or networks such as 10.0.0.5 or 10.0.0.0/24, got {entry!r}"
        ) from None


HostNames = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class Settings(BaseSettings):
    """Every environment variable Phoenix reads (documented in docs/configuration.md)."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    port: int = Field(3051, ge=1, le=65535, validation_alias="PORT")
    """API port."""
    host: str = Field("127.0.0.1", validation_alias="PHOENIX_HOST")
    """Bind address; anything but loopback needs API tokens (or PHOENIX_INSECURE=1)."""
    env: Literal["development", "test", "staging", "production"] = Field(
        "development", validation_alias=AliasChoices("PHOENIX_ENV", "NODE_ENV")
    )
    """``production`` turns on JSON logs and refuses insecure settings."""
    auto_recovery: bool = Field(True, validation_alias="AUTO_RECOVERY")
    """Recover failed services without being asked; false: record failures, act only on triggers."""
    max_recovery_attempts: int = Field(3, ge=1, le=100, validation_alias="MAX_RECOVERY_ATTEMPTS")
    """Attempts per incident before Phoenix gives up and alerts."""
    recovery_timeout: Seconds = Field(300.0, gt=0, validation_alias="RECOVERY_TIMEOUT")
    """Longest one recovery attempt may run; also the cap on any step's timeout."""
    health_check_interval: Seconds = Field(30.0, gt=0, validation_alias="HEALTH_CHECK_INTERVAL")
    """Probe interval for services whose health section sets none."""
    alert_webhook: str | None = Field(None, validation_alias="ALERT_WEBHOOK")
    alert_webhook_secret: SecretStr | None = Field(None, validation_alias="ALERT_WEBHOOK_SECRET")
    alert_on_success: bool = Field(False, validation_alias="PHOENIX_ALERT_ON_SUCCESS")
    """Also alert when a recovery succeeds (failures always alert)."""
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    """SQLAlchemy URL (``sqlite:///var/phoenix.db``, ``postgresql://…``); default: SQLite in
    the data directory."""
    config_file: Path | None = Field(None, validation_alias="PHOENIX_CONFIG")
    """The service file (YAML)."""
    data_dir: Path = Field(Path("var"), validation_alias="PHOENIX_DATA_DIR")
    """Where the default SQLite database and the services' log files live."""
    installation_id: str | None = Field(None, validation_alias="PHOENIX_INSTALLATION_ID")
    """This installation's name in a shared database (default: kept in the data directory)."""
    cluster: bool = Field(False, validation_alias="PHOENIX_CLUSTER")
    """One of several replicas sharing ``DATABASE_URL`` (PostgreSQL): each service is owned
    by one live replica through a lease, taken over when its owner dies."""
    lease_seconds: Seconds = Field(10.0, ge=2, le=300, validation_alias="PHOENIX_LEASE_SECONDS")
    """How long a replica's leases last without renewal (takeover within about this long
    plus a heartbeat, never more than twice it)."""
    advertise_url: str | None = Field(None, validation_alias="PHOENIX_ADVERTISE_URL")
    """Where the other replicas reach this one's API (requests for the services it owns are
    forwarded there); default ``http://<PHOENIX_HOST>:<PORT>``."""
    playbooks_dir: Path | None = Field(None, validation_alias="PHOENIX_PLAYBOOKS_DIR")
    """A folder of playbook YAML files (``*.yaml``/``*.yml``), reloaded when they change."""
    alertmanager_label: str = Field(
        "service",
        min_length=1,
        max_length=128,
        pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
        validation_alias="PHOENIX_ALERTMANAGER_LABEL",
    )
    """The Alertmanager alert label that names the Phoenix service an alert is about."""
    registry_url: str | None = Field(None, validation_alias="PHOENIX_REGISTRY_URL")
    """A service registry (the API gateway's): JSON services to monitor besides the file's."""
    registry_interval: Seconds = Field(30.0, gt=0, validation_alias="PHOENIX_REGISTRY_INTERVAL")
    """Seconds between reads of the service registry."""
    max_concurrent_recoveries: int = Field(
        4, ge=1, le=1000, validation_alias="PHOENIX_MAX_CONCURRENT_RECOVERIES"
    )
    fleet_floor: float = Field(0.5, gt=0, le=1, validation_alias="PHOENIX_FLEET_FLOOR")
    """Pause automatic recovery while more than this share of the services is unhealthy."""
    fleet_floor_min: int = Field(3, ge=1, le=100_000, validation_alias="PHOENIX_FLEET_FLOOR_MIN")
    """…and at least this many services are."""
    alert_grace: Seconds = Field(120.0, gt=0, le=86_400, validation_alias="PHOENIX_ALERT_GRACE")
    """How long after a recovery the alert that reported the failure may still fire (on
    its way to resolving); a copy still firing later means the recovery did not fix it."""
    try_again_after: Seconds = Field(
        30.0, gt=0, le=86_400, validation_alias="PHOENIX_TRY_AGAIN_AFTER"
    )
    """After giving up on a service that is still failing, try again this long later (if
    its budget allows): the cause may have cleared."""
    keep_services: bool = Field(False, validation_alias="PHOENIX_KEEP_SERVICES")
    """On a clean shutdown leave local services running, to be adopted by the next start."""
    insecure: bool = Field(False, validation_alias="PHOENIX_INSECURE")
    api_tokens: SecretStr | None = Field(None, validation_alias="PHOENIX_API_TOKENS")
    tokens_file: Path | None = Field(None, validation_alias="PHOENIX_TOKENS_FILE")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", validation_alias="PHOENIX_LOG_LEVEL"
    )
    allowed_hosts: HostNames = Field((), validation_alias="PHOENIX_ALLOWED_HOSTS")
    """Host names the API answers to besides the loopback ones (``Host`` and ``Origin``
    headers); any other is refused (421), which defeats DNS rebinding. ``*``: any."""
    trusted_proxies: HostNames = Field((), validation_alias="PHOENIX_TRUSTED_PROXIES")
    """Addresses or networks of reverse proxies whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed; by default none, so no caller can choose the
    address the audit log records."""

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_host_name(entry) for entry in value)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_proxy_network(entry) for entry in value)

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_is_http(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        assert value is not None
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("advertise_url")
    @classmethod
    def _advertised_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        if len(value.strip()) > ADVERTISED_MAX:
            raise ValueError(f"longer than {ADVERTISED_MAX} characters")
        return value.strip().rstrip("/")

    @field_validator("registry_url")
    @classmethod
    def _registry_is_http(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        try:
            parts.port  # noqa: B018 - raises for a port out of range
        except ValueError as exc:
            raise ValueError(f"invalid port: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL with a host")
        return value.strip()

    @field_validator("log_level", "env", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'phoenix.db'}"

    @property
    def advertised_url(self) -> str:
        """Where the other replicas reach this one's API."""
        if self.advertise_url is not None:
            return self.advertise_url
        host = self.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run_dir(self) -> Path:
        """Routers' control sockets and saved configurations."""
        return self.data_dir / "run"

    @property
    def has_tokens(self) -> bool:
        return self.api_tokens is not None or self.tokens_file is not None

    @property
    def env_tokens(self) -> str | None:
        return self.api_tokens.get_secret_value() if self.api_tokens is not None else None

    @property
    def accepted_hosts(self) -> frozenset[str] | None:
        """The host names the API answers to; None: any (a public bind that names none)."""
        if "*" in self.allowed_hosts:
            return None
        if self.binds_loopback_only or self.allowed_hosts:
            return LOOPBACK_NAMES | frozenset(self.allowed_hosts)
        return None

    @property
    def proxy_options(self) -> dict[str, object]:
        """uvicorn's settings for forwarded headers: honoured from the trusted proxies only
        (uvicorn's own default trusts loopback, which lets any local caller choose its
        recorded address)."""
        if not self.trusted_proxies:
            return {"proxy_headers": False}
        return {"proxy_headers": True, "forwarded_allow_ips": list(self.trusted_proxies)}

    @property
    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


_ENV_NAMES = {
    name: (
        field.validation_alias
        if isinstance(field.validation_alias, str)
        else "PHOENIX_ENV"
        if name == "env"
        else name.upper()
    )
    for name, field in Settings.model_fields.items()
}


def service_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What supervised processes inherit: Phoenix's environment without Phoenix's own
    settings (its database URL, webhook secret, tokens), which are none of their business.
    ``NODE_ENV`` stays: services commonly read it themselves."""
    own = {name for name in _ENV_NAMES.values() if name != "NODE_ENV"} | {"PHOENIX_ENV"}
    return {
        name: value
        for name, value in environ.items()
        if name not in own and not name.startswith("PHOENIX_")
    }


def load_settings(**overrides: object) -> Settings:
    """Read and check the environment; raise ConfigError naming each bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else ""
            variable = _ENV_NAMES.get(field_name, field_name)
            if (
                variable == "PHOENIX_ENV"
                and "PHOENIX_ENV" not in os.environ
                and "NODE_ENV" in os.environ
            ):
                variable = "NODE_ENV"  # name the variable the operator actually set
            message = str(error["msg"]).removeprefix("Value error, ")
            shown = repr(error.get("input"))
            if shown not in message:
                message = f"{message} (got {shown})"
            problems.append(Problem(variable, message))
        raise ConfigError("invalid environment", problems) from None
    _check_security(settings)
    return settings


def _check_security(settings: Settings) -> None:
    """Safe by default: no API on a non-loopback address without explicit consent."""
    if settings.has_tokens:
        configured_tokens(settings.env_tokens, settings.tokens_file)  # refuses what it cannot use
    elif not settings.binds_loopback_only and not settings.insecure:
        raise ConfigError(
            "invalid environment",
            [
                Problem(
                    "PHOENIX_HOST",
                    f"refusing to serve an unauthenticated API on {settings.host}; add API "
                    "tokens (PHOENIX_API_TOKENS=name:role:token,… or PHOENIX_TOKENS_FILE), "
                    "bind to 127.0.0.1, or set PHOENIX_INSECURE=1 if the network is trusted",
                )
            ],
        )
    if settings.production and settings.insecure:
        raise ConfigError(
            "invalid environment",
            [Problem("PHOENIX_INSECURE", "not allowed when PHOENIX_ENV=production")],
        )
