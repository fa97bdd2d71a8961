"""Fixtures of the store's integration tests: every test runs against a real SQLite file and
the real PostgreSQL server, each test in a database (or schema) of its own."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import text

from phoenix_server.store.database import Store
from phoenix_server.store.tables import Base
from tests.support import postgres_url

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh, empty schema on the test server: (URL whose search_path is it, schema name).

    Dropped with everything in it afterwards; the server's other schemas are never touched.
    """
    base = postgres_url()
    admin_url = base.replace("+psycopg", "")
    schema = f"phx_{uuid.uuid4().hex}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}", schema
    finally:
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'phoenix.db'}"


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, not yet migrated: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    with postgres_schema() as (url, _schema):
        yield url


@pytest.fixture(scope="module")
def migrated_postgres() -> Iterator[str]:
    """One migrated PostgreSQL schema for a test module: migrating one per test was most of
    the fast tier's time. Each test gets it emptied (see ``store``)."""
    with postgres_schema() as (url, _schema):
        store = Store(url)
        try:
            store.migrate()
        finally:
            store.close()
        yield url


def _emptied(store: Store) -> Store:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with store.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return store


@pytest.fixture
def postgres_store(migrated_postgres: str) -> Iterator[Store]:
    """A migrated, empty :class:`Store` on PostgreSQL only (leases and fencing are
    PostgreSQL's), closed after the test."""
    store = _emptied(Store(migrated_postgres))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated, empty :class:`Store` on each backend, closed after the test."""
    if request.param == "sqlite":
        store = Store(sqlite_url(tmp_path))
        store.migrate()
    else:
        store = _emptied(Store(request.getfixturevalue("migrated_postgres")))
    try:
        yield store
    finally:
        store.close()
