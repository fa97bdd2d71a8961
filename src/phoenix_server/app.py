"""Start-up wiring for ``phoenix serve``: settings → logging → service file → database →
socket → engine + API under uvicorn (uvloop). Everything that can be wrong with the
configuration is found before the port is bound or a single service is started.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import IO, Any

import uvicorn

from phoenix_server.api import front_door
from phoenix_server.api.app import create_api
from phoenix_server.api.health import health_json
from phoenix_server.config.servicefile import load_service_file
from phoenix_server.config.settings import Settings
from phoenix_server.domain.errors import ConfigError, Problem
from phoenix_server.domain.services import PlatformKind, ServiceCatalog
from phoenix_server.runtime import Runtime
from phoenix_server.store.database import Store
from phoenix_server.support.logsafe import Escaping
from phoenix_server.support.timefmt import iso_ms, utcnow

log = logging.getLogger("phoenix")

IDLE_SHARE_OF_LEASE = 0.25
"""With several replicas, a transaction left idle this share of the lease is ended by the
server: a paused replica cannot keep a lease row locked past takeover."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (``PHOENIX_ENV=production``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_ms(utcnow()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.production:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        # One record, one line: a newline or ESC from a caller's value cannot forge a line
        # or rewrite the terminal (JSON lines escape them already).
        handler.addFilter(Escaping())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)


def warn_about_access(settings: Settings) -> None:
    if settings.has_tokens:
        return
    if settings.insecure:
        log.warning(
            "INSECURE (PHOENIX_INSECURE=1): the API on %s has no authentication; anyone who "
            "reaches it can restart, deploy and change playbooks",
            settings.host,
        )
    else:
        log.info("no API tokens: serving loopback (%s) only", settings.host)


def load_catalog(settings: Settings) -> ServiceCatalog:
    if settings.config_file is None:
        log.warning("no service file (PHOENIX_CONFIG or --config): watching no services")
        return ServiceCatalog()
    return load_service_file(settings.config_file, default_interval=settings.health_check_interval)


def check_cluster(settings: Settings, catalog: ServiceCatalog, store: Store) -> None:
    """``PHOENIX_CLUSTER=1`` asks for what this version can share between replicas: a
    PostgreSQL database and services any replica can look after."""
    if not settings.cluster:
        return
    problems = []
    if store.dialect != "postgresql":
        problems.append(
            Problem(
                "PHOENIX_CLUSTER",
                f"replicas share their state through PostgreSQL, and DATABASE_URL is "
                f"{store.dialect}: set DATABASE_URL=postgresql://… (SQLite is for one Phoenix)",
            )
        )
    for spec in catalog:
        if spec.platform is PlatformKind.LOCAL and spec.replica is None:
            problems.append(
                Problem(
                    f"services.{spec.name}.replica",
                    "a local service runs on one machine: name the replica that runs it "
                    "(its PHOENIX_INSTALLATION_ID); only that one owns it",
                )
            )
        elif spec.platform is PlatformKind.DOCKER and spec.replica is None and spec.routed:
            problems.append(
                Problem(
                    f"services.{spec.name}.replica",
                    "a routed docker service's router runs on the machine of the replica "
                    "that owns it, and its clients connect there: name that replica (its "
                    "PHOENIX_INSTALLATION_ID), or set router: false (or run it on an engine "
                    "on another host) so that any replica may own it",
                )
            )
    if settings.registry_url is not None:
        problems.append(
            Problem(
                "PHOENIX_REGISTRY_URL",
                "a service registry is not shared between replicas in this version: "
                "declare the services in the service file",
            )
        )
    if problems:
        raise ConfigError("PHOENIX_CLUSTER=1 cannot run this configuration", problems)


def hold_sqlite(store: Store) -> IO[str] | None:
    """SQLite is for one Phoenix: take the database's lock file for the life of this
    process (the kernel lets it go when the process dies, however it dies), or say which
    process has it. Two Phoenixes on one file would each adopt, restart and record the
    other's services."""
    if store.dialect != "sqlite" or not store.url.database:
        return None
    path = Path(f"{store.url.database}.phoenix-lock")
    try:
        handle = path.open("a+")
    except OSError as exc:
        raise ConfigError(
            f"cannot open the SQLite lock file {path} ({exc.strerror}): Phoenix takes it to "
            "make sure it is alone on the database; let it write there, or remove the file"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(
            f"another Phoenix ({holder}) already uses the SQLite database "
            f"{store.url.database}: SQLite is for one Phoenix. Give this one its own "
            "PHOENIX_DATA_DIR, or run several replicas on PostgreSQL (DATABASE_URL="
            "postgresql://…, PHOENIX_CLUSTER=1)"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def bind(host: str, port: int) -> socket.socket:
    """Bind the API socket now, so a port in use is reported before any service starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is already in use; stop what holds it or set PORT"
        else:
            message = f"cannot listen on {host}:{port}: {exc.strerror}"
        raise ConfigError(message) from None
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def serve(settings: Settings) -> None:
    """Run Phoenix until SIGINT/SIGTERM; raises ConfigError for anything misconfigured."""
    configure_logging(settings)
    warn_about_access(settings)
    catalog = load_catalog(settings)
    store = Store(
        settings.effective_database_url,
        fenced=settings.cluster,
        idle_in_transaction=max(1.0, settings.lease_seconds * IDLE_SHARE_OF_LEASE)
        if settings.cluster
        else None,
    )
    lock: IO[str] | None = None
    try:
        check_cluster(settings, catalog, store)
        lock = hold_sqlite(store)
        store.migrate()
        front_door.raise_descriptor_limit()
        sock = bind(settings.host, settings.port)
        runtime = Runtime(settings, catalog, store)
        app = create_api(runtime)
        protocol = front_door.guarded_protocol(
            front_door.default_limits(),
            lambda: health_json(runtime),
            accepted_hosts=settings.accepted_hosts,
        )
        runtime.api_problems = lambda: front_door.problems(protocol)
        config = uvicorn.Config(
            app,
            loop="uvloop",
            http=protocol,
            lifespan="on",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            **settings.proxy_options,  # type: ignore[arg-type]
        )
        log.info(
            "Phoenix listening on http://%s:%d (API docs at /docs), database %s",
            settings.host,
            settings.port,
            store.url.render_as_string(hide_password=True),
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        store.close()
        if lock is not None:
            lock.close()
