"""Engines, sessions and migrations for SQLite (embedded default) and PostgreSQL.

Every database failure a user can cause (missing file, lock, refused connection, schema not
migrated) leaves here as `StorageUnavailable` with one clear line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.orm import Session, sessionmaker

from stockade.core.errors import InvalidInput, StorageUnavailable

__all__ = [
    "Database",
    "describe_url",
    "is_outage",
    "storage_errors",
]

MIGRATIONS = Path(__file__).with_name("migrations")


def describe_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


# PostgreSQL SQLSTATEs: connection exception, insufficient resources, operator intervention
# (shutdown), lock not available; and a missing schema, table or database (not migrated).
_OUTAGE_CLASSES = frozenset({"08", "53", "57"})
_OUTAGE_STATES = frozenset({"55P03", "42P01", "3F000", "3D000"})


def is_outage(exc: DBAPIError) -> bool:
    """Whether a driver error means the database is unreachable, busy or without its schema
    (an outage to wait out or migrate), rather than a bug in the statement."""
    if isinstance(exc, OperationalError) or exc.connection_invalidated:
        return True
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or "")
    return sqlstate[:2] in _OUTAGE_CLASSES or sqlstate in _OUTAGE_STATES


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Translate outages into `StorageUnavailable` with a one-line reason."""
    try:
        yield
    except DataError as exc:
        # A value the database cannot store (NUL in PostgreSQL text, an out-of-range
        # number): the caller's input, not an outage and not a bug.
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else "value refused"
        raise InvalidInput(f"the database refused a value: {reason}") from exc
    except DBAPIError as exc:
        if not is_outage(exc):
            raise
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if exc.connection_invalidated:
            reason = "connection lost"
        elif "locked" in reason:
            reason = f"{reason} (another process holds a write lock; retry)"
        raise StorageUnavailable(f"database {describe_url(url)}: {reason}") from exc


class Database:
    """One engine and session factory per URL."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StorageUnavailable(f"invalid database URL {url!r}: {exc}") from exc
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.dialect == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:":
                folder = Path(database).expanduser().absolute().parent
                if not folder.is_dir():
                    raise StorageUnavailable(
                        f"database {describe_url(url)}: directory {folder} does not exist "
                        "(run `stockade init`)"
                    )
            kwargs["connect_args"] = {"timeout": 5.0, "check_same_thread": False}
        elif self.dialect == "postgresql":
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"connect_timeout": 5}
        try:
            self.engine: Engine = create_engine(url, **kwargs)
        except (NoSuchModuleError, ArgumentError, ImportError) as exc:
            raise StorageUnavailable(
                f"unsupported database URL {describe_url(url)}: {exc}"
            ) from exc
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        elif self.dialect == "postgresql":
            event.listen(self.engine, "connect", _postgres_timeouts)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._migrated = False
        self._lock = threading.Lock()

    # -- sessions ---------------------------------------------------------------------
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed on success, rolled back on any error."""
        with storage_errors(self.url):
            session = self._sessions()
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    # -- migrations -------------------------------------------------------------------
    def alembic_config(self) -> AlembicConfig:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        cfg.attributes["engine"] = self.engine
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision` (idempotent)."""
        with storage_errors(self.url), self._lock:
            command.upgrade(self.alembic_config(), revision)
            self._migrated = True

    def current_revision(self) -> str | None:
        with storage_errors(self.url), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str | None:
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def require_migrated(self) -> None:
        """Refuse to work on a database that is not at the latest migration."""
        if self._migrated:
            return
        current = self.current_revision()
        head = self.head_revision()
        if current != head:
            state = "not initialised" if current is None else f"at revision {current}"
            raise StorageUnavailable(
                f"database {describe_url(self.url)} is {state}, expected {head}: "
                "run `stockade db upgrade` (or `stockade init`)"
            )
        self._migrated = True

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's "begin" event issues BEGIN itself,
    # which is the documented way to get correct transactional behaviour from pysqlite.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _postgres_timeouts(dbapi_connection: Any, _record: Any) -> None:
    # Wait at most as long as SQLite's busy timeout for a lock, then fail clearly.
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '5s'")
    dbapi_connection.autocommit = autocommit


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN so two writers queue on busy_timeout instead of one
    # failing halfway with "database is locked" after it has read.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
