"""The database door: URLs, migrations, SQLite's settings, and driver errors translated."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import insert, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from phoenix_server.domain.errors import ConfigError, ConflictError, UnavailableError
from phoenix_server.domain.incidents import FailureType, Incident, IncidentStatus
from phoenix_server.store import incidents, playbooks
from phoenix_server.store.database import MIGRATIONS, Store, normalize_url
from phoenix_server.store.tables import AuditRow, Base, IncidentRow
from tests.store.conftest import postgres_schema, sqlite_url
from tests.support import free_port

TABLES = {
    "alerts",
    "cluster_members",
    "audit_log",
    "deployments",
    "health_events",
    "incidents",
    "instances",
    "playbooks",
    "recoveries",
    "recovery_steps",
    "report_keys",
    "service_leases",
    "uptime_baselines",
}


def head_revision() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def current_revision(store: Store) -> str | None:
    with store.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


# -- normalize_url ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "driver", "database"),
    [
        ("postgresql://phoenix@db.example:5433/phoenix", "postgresql+psycopg", "phoenix"),
        ("postgres://phoenix:secret@db.example/phoenix", "postgresql+psycopg", "phoenix"),
        ("postgresql+psycopg2://db.example/phoenix", "postgresql+psycopg", "phoenix"),
        ("sqlite:///var/phoenix.db", "sqlite+pysqlite", "var/phoenix.db"),
        ("sqlite:////srv/phoenix/phoenix.db", "sqlite+pysqlite", "/srv/phoenix/phoenix.db"),
    ],
)
def test_normalize_url_picks_the_driver(raw: str, driver: str, database: str) -> None:
    url = normalize_url(raw)
    assert url.drivername == driver
    assert url.database == database


def test_normalize_url_keeps_credentials_host_and_options() -> None:
    url = normalize_url(
        "postgres://phoenix:s3cret@db.example:5433/phoenix?options=-csearch_path%3Dphx_1"
    )
    assert (url.username, url.password, url.host, url.port) == (
        "phoenix",
        "s3cret",
        "db.example",
        5433,
    )
    assert dict(url.query) == {"options": "-csearch_path=phx_1"}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("sqlite:///:memory:", "in-memory"),
        ("sqlite://", "in-memory"),
        ("mysql://phoenix@db.example/phoenix", "'mysql'"),
        ("mongodb://db.example/phoenix", "'mongodb'"),
        ("not a url", "not a database URL"),
        ("", "not a database URL"),
    ],
)
def test_normalize_url_refuses_with_the_variable_named(raw: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        normalize_url(raw)
    assert [problem.path for problem in caught.value.problems] == ["DATABASE_URL"]
    assert says in caught.value.problems[0].message
    assert caught.value.lines()[0].startswith("invalid environment: DATABASE_URL: ")


# -- migrations ---------------------------------------------------------------------------


def test_migrations_create_every_table_at_the_head_revision(store: Store) -> None:
    assert TABLES | {"alembic_version"} <= set(inspect(store.engine).get_table_names())
    assert current_revision(store) == head_revision()


def test_migrate_twice_is_harmless(store: Store) -> None:
    opened = _incident("inc-kept")
    store.run_sync(incidents.save_incident, opened)

    store.migrate()
    store.migrate()

    assert current_revision(store) == head_revision()
    assert store.run_sync(incidents.get_incident, "inc-kept") == opened
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_migrations_match_the_models(store: Store) -> None:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


@pytest.mark.postgres
def test_postgresql_schema_from_search_path_holds_everything() -> None:
    with postgres_schema() as (url, schema):
        store = Store(url)
        try:
            assert dict(store.url.query) == {"options": f"-csearch_path={schema}"}
            store.migrate()
            with store.engine.connect() as connection:
                assert connection.execute(text("SELECT current_schema()")).scalar() == schema
                tables = connection.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = :schema"
                    ),
                    {"schema": schema},
                ).scalars()
                in_schema = set(tables)
        finally:
            store.close()
    assert in_schema == TABLES | {"alembic_version"}


# -- SQLite settings ----------------------------------------------------------------------


def test_sqlite_runs_in_wal_with_full_sync_and_foreign_keys(tmp_path: Path) -> None:
    store = Store(sqlite_url(tmp_path / "nested" / "dir"))
    try:
        store.migrate()
        with store.engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            }
    finally:
        store.close()
    assert pragma == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 10000,
    }
    database = tmp_path / "nested" / "dir" / "phoenix.db"
    with sqlite3.connect(database) as raw:  # WAL is a property of the file itself
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _audited(path: str) -> Callable[[Session], object]:
    def write(session: Session) -> object:
        return session.execute(
            insert(AuditRow).values(
                id=path, at=datetime.now(UTC), actor="a", method="POST", path=path, status=200
            )
        )

    return write


async def test_a_deleted_sqlite_file_is_written_again_with_everything_in_it(
    tmp_path: Path,
) -> None:
    """``rm -rf`` of the data directory under a running Phoenix: the open database still
    works but lives in a deleted file. It is written again, and later writes land in it."""
    directory = tmp_path / "data"
    store = Store(sqlite_url(directory))
    try:
        store.migrate()
        assert await store.rebuild_if_deleted() is None  # nothing to do
        await store.write(_audited("/before"))
        for entry in directory.iterdir():
            entry.unlink()
        directory.rmdir()
        said = await store.rebuild_if_deleted()
        assert said is not None and "written again" in said and store.rebuilt_at is not None
        await store.write(_audited("/after"))
    finally:
        store.close()
    with sqlite3.connect(directory / "phoenix.db") as raw:
        paths = sorted(row[0] for row in raw.execute("SELECT path FROM audit_log"))
    assert paths == ["/after", "/before"]


async def test_no_connection_opens_an_empty_database_where_the_deleted_file_was(
    tmp_path: Path,
) -> None:
    """Between the deletion and the rebuild, a new connection (the pool grows under load)
    would have created an empty file: reads said "no such table", writes went into it and
    the rebuild, seeing a file there, never ran. It is refused (503) instead."""
    directory = tmp_path / "data"
    store = Store(sqlite_url(directory))
    try:
        store.migrate()
        await store.write(_audited("/before"))
        held = store.engine.connect()  # the pool's connection to the deleted file
        for entry in directory.iterdir():
            entry.unlink()
        with pytest.raises(OperationalError, match="unable to open database file"):
            store.engine.connect()  # a second, new connection
        assert not (directory / "phoenix.db").exists()
        held.close()
        said = await store.rebuild_if_deleted()
        assert said is not None and "written again" in said
        await store.write(_audited("/after"))
    finally:
        store.close()
    with sqlite3.connect(directory / "phoenix.db") as raw:
        paths = sorted(row[0] for row in raw.execute("SELECT path FROM audit_log"))
    assert paths == ["/after", "/before"]


# -- errors -------------------------------------------------------------------------------


@pytest.fixture
def unreachable() -> Iterator[Store]:
    store = Store(f"postgresql://127.0.0.1:{free_port()}/phoenix?connect_timeout=3")
    try:
        yield store
    finally:
        store.close()


def test_migrate_on_an_unreachable_postgresql_is_unavailable(unreachable: Store) -> None:
    with pytest.raises(UnavailableError, match="database unavailable"):
        unreachable.migrate()


async def test_reads_and_writes_on_an_unreachable_postgresql_are_unavailable(
    unreachable: Store,
) -> None:
    with pytest.raises(UnavailableError, match="database unavailable"):
        await unreachable.read(playbooks.count_active)
    with pytest.raises(UnavailableError, match="database unavailable"):
        await unreachable.write(incidents.save_incident, _incident("inc-1"))
    with pytest.raises(UnavailableError, match="database unavailable"):
        unreachable.run_sync(playbooks.count_active)


def _incident(incident_id: str) -> Incident:
    return Incident(
        id=incident_id,
        service="azora-auth",
        failure_type=FailureType.SERVICE_DOWN,
        status=IncidentStatus.OPEN,
        detected_at=datetime(2025, 11, 25, 18, 0, tzinfo=UTC),
    )


def _insert_twice(session: Session, incident_id: str) -> None:
    values = {
        "id": incident_id,
        "service": "azora-auth",
        "failure_type": "service_down",
        "status": "open",
        "source": "detected",
        "summary": "",
        "evidence": [],
        "detected_at": _incident(incident_id).detected_at,
        "false_positive": False,
    }
    session.execute(insert(IncidentRow).values(values))
    session.execute(insert(IncidentRow).values({**values, "summary": "again"}))


async def test_an_integrity_error_becomes_a_conflict_and_rolls_back(store: Store) -> None:
    await store.write(incidents.save_incident, _incident("inc-before"))

    with pytest.raises(ConflictError, match="conflicts with an existing record"):
        await store.write(_insert_twice, "inc-dup")

    found, total = await store.read(
        incidents.list_incidents, service=None, status=None, limit=10, offset=0
    )
    assert ([i.id for i in found], total) == (["inc-before"], 1)
    await store.write(incidents.save_incident, _incident("inc-after"))  # the writer still works
    assert (await store.read(incidents.get_incident, "inc-after")).id == "inc-after"


def _thread_name(_session: Session) -> str:
    return threading.current_thread().name


async def test_writes_run_in_the_single_writer_thread_reads_in_the_pool(store: Store) -> None:
    writers = {await store.write(_thread_name) for _ in range(5)}
    reader = await store.read(_thread_name)

    assert len(writers) == 1
    assert writers.pop().startswith("phoenix-db-writer")
    assert reader.startswith("phoenix-db-reader")
