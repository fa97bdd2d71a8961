"""The database door: engine set-up, migrations, and async access to sync SQLAlchemy.

Repositories are plain sync functions ``fn(session, *, ...)``. :meth:`Store.write` runs one
in the single writer thread inside a transaction; :meth:`Store.read` runs one in a small
reader pool. One writer is deliberate: SQLite serialises writers anyway, and several
connections fighting for its lock are what makes the latency tail (MEASURED.md: sync
SQLAlchemy in threads 1,790 req/s against 850 for the async engine). WAL lets readers
proceed while the writer commits; ``synchronous=FULL`` makes every acknowledged write
survive a power cut, not just a crash. Driver errors become ``UnavailableError`` (503)
or ``ConflictError`` (409) here.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from phoenix_server.domain.errors import (
    ConfigError,
    ConflictError,
    InvalidRequestError,
    Problem,
    StaleOwnerError,
    UnavailableError,
)

log = logging.getLogger("phoenix.store")

STALE_EPOCH_SQLSTATE = "PX001"
"""What the fencing trigger of migration 0010 raises (a class PostgreSQL leaves to us)."""

P = ParamSpec("P")
T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x50484F454E4958  # "PHOENIX"
STATEMENT_TIMEOUT_MS = 15_000


def normalize_url(raw: str) -> URL:
    """A plain ``postgresql://`` or ``sqlite:///`` URL with the driver Phoenix uses."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(
            "invalid environment",
            [
                Problem(
                    "DATABASE_URL",
                    f"not a database URL: {raw!r}; expected e.g. "
                    "sqlite:///var/phoenix.db or postgresql://user@host/db",
                )
            ],
        ) from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError(
                "invalid environment",
                [
                    Problem(
                        "DATABASE_URL",
                        "an in-memory SQLite database would lose every record; "
                        "give a file path such as sqlite:///var/phoenix.db",
                    )
                ],
            )
        return url.set(drivername="sqlite+pysqlite")
    raise ConfigError(
        "invalid environment",
        [Problem("DATABASE_URL", f"unsupported database {backend!r}; use sqlite or postgresql")],
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _never_create_again(engine: Engine, path: Path) -> None:
    """Once the SQLite file has been opened, later connections open it only if it exists.
    SQLite creates a missing file on connect: after the data directory was deleted, a
    connection opened before the file is written again would see an empty database ("no
    such table") and its writes would be lost. Refused instead, it says the database is
    unavailable (503) until :meth:`Store.rebuild_if_deleted` has written the file again."""
    existing_only = "file:" + quote(str(path.absolute()), safe="/") + "?mode=rw"
    opened = False

    def on_connect(_dbapi_connection: Any, _record: Any) -> None:
        nonlocal opened
        opened = True

    def do_connect(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if opened:
            cargs[:] = [existing_only]
            cparams["uri"] = True

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "do_connect", do_connect)


def _postgres_session(
    dbapi_connection: Any, _record: Any, *, fenced: bool = False, idle_ms: int | None = None
) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        if idle_ms is not None:
            # A replica paused mid-transaction (SIGSTOP, a long GC) would hold its row
            # locks — a lease's among them — for as long as it sleeps: the server ends
            # such a transaction instead, and the others can take the lease over.
            cursor.execute(f"SET idle_in_transaction_session_timeout = {idle_ms}")
        if fenced:
            # This replica's writes for a leased service must carry an epoch (see the fencing
            # trigger of migration 0010): one that forgot it is refused, not let through.
            cursor.execute("SET phoenix.fenced = 'on'")
    dbapi_connection.commit()


class Store:
    def __init__(
        self,
        raw_url: str,
        *,
        readers: int = 4,
        fenced: bool = False,
        idle_in_transaction: float | None = None,
    ) -> None:
        """``fenced``: this is one replica of several (PostgreSQL only); its writes for a
        leased service without an epoch are refused by the database.
        ``idle_in_transaction``: seconds after which the server ends a transaction this
        process left open without a word (it was paused)."""
        self.url = normalize_url(raw_url)
        idle_ms = None if idle_in_transaction is None else max(1, int(idle_in_transaction * 1000))
        self.engine: Engine = self._create_engine(self.url, fenced=fenced, idle_ms=idle_ms)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="phoenix-db-writer")
        self.write_problem: tuple[datetime, str] | None = None
        """Since when, and why, the database refuses writes (None: the last one worked)."""
        self.rebuilt_at: datetime | None = None
        """When the SQLite file was last written again after being deleted (see
        :meth:`rebuild_if_deleted`)."""
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="phoenix-db-reader")
        self._apart = ThreadPoolExecutor(1, thread_name_prefix="phoenix-db-lease")
        """For the lease heartbeat: never queued behind the writer's backlog."""

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _create_engine(url: URL, *, fenced: bool, idle_ms: int | None) -> Engine:
        if url.get_backend_name() == "sqlite":
            assert url.database is not None
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
            event.listen(engine, "connect", _sqlite_pragmas)
            if not url.database.startswith("file:") and "uri" not in url.query:
                _never_create_again(engine, Path(url.database))  # (a URI names its own mode)
            return engine
        engine = create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            # A partitioned database must fail fast, not hang Phoenix for minutes of TCP retries.
            connect_args={
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                # Keepalives do not fire while a query waits for its answer: this does.
                "tcp_user_timeout": 10_000,
            },
        )
        event.listen(
            engine,
            "connect",
            functools.partial(_postgres_session, fenced=fenced, idle_ms=idle_ms),
        )
        return engine

    async def rebuild_if_deleted(self) -> str | None:
        """If the SQLite file was deleted while Phoenix runs (its data directory removed,
        say), write it again from the open connection and reconnect to it; say what was
        done (None: nothing to do). Until then every write went to a file no one could open
        again, lost at the next start. Runs in the writer thread, so no write is lost
        between the copy and the reconnection."""
        if self.dialect != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._rebuild_if_deleted)

    def _rebuild_if_deleted(self) -> str | None:
        assert self.url.database is not None
        path = Path(self.url.database)
        if path.exists():
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT"
            ) as connection:
                connection.exec_driver_sql("VACUUM INTO ?", (str(path),))
        except (OSError, DBAPIError) as exc:
            reason = _reason(exc) if isinstance(exc, DBAPIError) else str(exc)
            problem = f"the database file {path} was deleted and cannot be written again: {reason}"
            if self.write_problem is None:
                self.write_problem = (datetime.now(UTC), problem)
            raise UnavailableError(problem) from None
        self.engine.dispose()  # new connections open the file just written
        self.rebuilt_at = datetime.now(UTC)
        message = (
            f"the database file {path} was deleted while Phoenix ran; it was written again "
            "from the open database, with everything recorded so far"
        )
        log.warning("%s", message)
        return message

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; run at start)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        try:
            with self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    # Replicas starting together take turns; the second finds nothing to do.
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as exc:
            raise UnavailableError(f"database unavailable: {_reason(exc)}") from None

    async def write(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Run ``fn(session, ...)`` in the writer thread, in one committed transaction."""
        try:
            result = await self._run(self._writer, fn, True, *args, **kwargs)
        except UnavailableError as exc:
            if self.write_problem is None:
                self.write_problem = (datetime.now(UTC), exc.message)
            raise
        self.write_problem = None
        return result

    async def write_apart(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like :meth:`write`, in a thread of its own: what must happen on time (the lease
        heartbeat) never waits behind the writer's queue."""
        return await self._run(self._apart, fn, True, *args, **kwargs)

    async def read(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return await self._run(self._readers, fn, False, *args, **kwargs)

    def run_sync(
        self, fn: Callable[Concatenate[Session, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """The same transaction wrapper, called directly (tests and scripts)."""
        return self._transaction(fn, True, *args, **kwargs)

    async def _run(
        self,
        pool: ThreadPoolExecutor,
        fn: Callable[Concatenate[Session, P], T],
        commit: bool,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(self._transaction, fn, commit, *args, **kwargs)
        context = contextvars.copy_context()
        return await loop.run_in_executor(pool, context.run, call)

    def _transaction(
        self,
        fn: Callable[Concatenate[Session, P], T],
        commit: bool,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        try:
            with self._sessions() as session:
                result = fn(session, *args, **kwargs)
                if commit:
                    session.commit()
                return result
        except DBAPIError as exc:
            translated = _translated(exc)
            if translated is exc:
                raise
            raise translated from None

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self._apart.shutdown(wait=True)
        self.engine.dispose()


def _translated(exc: DBAPIError) -> Exception:
    """The Phoenix error a driver error means (``exc`` itself: a bug, left as it is)."""
    if getattr(exc.orig, "sqlstate", None) == STALE_EPOCH_SQLSTATE:
        # The fencing trigger: the write's epoch is no longer the service's lease's.
        return StaleOwnerError(f"refused by the database: {_reason(exc)}")
    if isinstance(exc, IntegrityError):
        return ConflictError(f"conflicts with an existing record: {_reason(exc)}")
    if isinstance(exc, DataError):
        # A value the schema cannot hold (too long, out of range) that slipped past
        # validation: the client's input, so a 422 naming it rather than a 500.
        return InvalidRequestError(f"value not accepted: {_reason(exc)}")
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        log.warning("database unavailable: %s", _reason(exc))
        return UnavailableError(f"database unavailable: {_reason(exc)}")
    return exc


def _reason(exc: DBAPIError) -> str:
    return str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
