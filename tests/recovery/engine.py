"""Driving the engine in one process for the recovery tests: a :class:`Runtime` on real
services, real probes and real SQLite, and waits on what it records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from phoenix_server.config.servicefile import parse_service_file
from phoenix_server.config.settings import load_settings
from phoenix_server.domain.errors import NotFoundError
from phoenix_server.domain.health import ServiceStatus
from phoenix_server.domain.recoveries import Recovery
from phoenix_server.runtime import Runtime
from phoenix_server.store import recoveries
from phoenix_server.store.database import Store
from tests.support import REPO, eventually


@asynccontextmanager
async def engine(
    tmp_path: Path, services: str, *, prelude: str = "", **env: str
) -> AsyncIterator[Runtime]:
    """A started Runtime on ``services`` (service-file entries; ``prelude``: top-level
    sections before them, such as ``docker_engines``)."""
    settings = load_settings(
        PHOENIX_DATA_DIR=str(tmp_path / "var"),
        MAX_RECOVERY_ATTEMPTS=env.pop("MAX_RECOVERY_ATTEMPTS", "3"),
        AUTO_RECOVERY=env.pop("AUTO_RECOVERY", "true"),
        **env,
    )
    catalog = parse_service_file(
        prelude + "services:\n" + services, source="test", base_dir=REPO, default_interval=1.0
    )
    store = Store(settings.effective_database_url)
    store.migrate()
    runtime = Runtime(settings, catalog, store)
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        store.close()


async def healthy(runtime: Runtime, name: str, timeout: float = 15) -> None:
    await eventually(
        lambda: runtime.tracker.status(name) is ServiceStatus.HEALTHY,
        timeout=timeout,
        message=f"{name} healthy",
    )


def live_pid(runtime: Runtime, name: str) -> int:
    pids = [i.pid for i in runtime.local.instances(name) if i.alive and i.pid]
    assert len(pids) == 1, runtime.local.instances(name)
    return pids[0]


async def history(runtime: Runtime, **where: object) -> list[Recovery]:
    items, _ = await runtime.store.read(
        recoveries.list_recoveries,
        where=recoveries.RecoveryFilter(**where),  # type: ignore[arg-type]
        limit=100,
        offset=0,
    )
    return items


async def finished(runtime: Runtime, recovery_id: str, timeout: float = 20) -> Recovery:
    async def check() -> Recovery | None:
        try:
            recovery = await runtime.store.read(recoveries.get_recovery, recovery_id)
        except NotFoundError:
            return None  # started, not written yet
        return recovery if recovery.status.terminal else None

    return await eventually(check, timeout=timeout, interval=0.05, message=f"{recovery_id} ends")
