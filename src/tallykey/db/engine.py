"""The one engine and session factory, with SQLite tuned for an embedded store (WAL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tallykey.errors import ValidationFailed


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


WRITE = "tallykey_write"


def _take_over_transactions(dbapi_connection: Any, record: Any) -> None:
    """pysqlite begins transactions lazily, at the first write, so a read-then-write unit
    of work is not isolated. Let SQLAlchemy say BEGIN itself (see `_begin`)."""
    _tune_sqlite(dbapi_connection, record)
    dbapi_connection.isolation_level = None


def _begin(connection: Connection) -> None:
    """Write transactions take SQLite's write lock up front (BEGIN IMMEDIATE), so a check
    followed by a write (last admin, double revoke, rotation generation) is serialised."""
    immediate = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _holds_nul(parameters: Any) -> bool:
    if isinstance(parameters, str):
        return "\x00" in parameters
    if isinstance(parameters, dict):
        return any(_holds_nul(value) for value in parameters.values())
    if isinstance(parameters, list | tuple):
        return any(_holds_nul(value) for value in parameters)
    return False


def _refuse_nul(_conn: Any, _cursor: Any, _statement: str, parameters: Any, _context: Any,
                _executemany: bool) -> None:
    """PostgreSQL text cannot hold U+0000 (the driver fails with a DataError, which would
    be a 500). Any NUL in a search, id or field is the caller's error, on every backend."""
    if _holds_nul(parameters):
        raise ValidationFailed("The request contains a NUL character (U+0000), which no "
                               "name, id, search or other text may contain.",
                               "Remove the NUL character and send the request again.")


def build_engine(url: str) -> Engine:
    """An engine for `url`; for SQLite the data directory is created first."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _take_over_transactions)
        event.listen(engine, "begin", _begin)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


VERDICT_CHANGED = "tallykey.verdict_changed"


class Database:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = build_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: Called after a transaction that announced a verdict-affecting change commits,
        #: so verifiers in this process apply it before the caller gets its answer.
        self.after_verdict_change: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: everything in it lands together or not at all."""
        with self._sessions() as session:
            with session.begin():
                session.connection(execution_options={WRITE: True})
                yield session
            if session.info.get(VERDICT_CHANGED):
                for hook in self.after_verdict_change:
                    hook()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only."""
        with self._sessions() as session:
            yield session

    def raw_connection(self) -> Any:
        """A new driver-level connection outside the pool, tuned like pooled ones."""
        dialect = self.engine.dialect
        args, kwargs = dialect.create_connect_args(self.engine.url)
        connection = dialect.connect(*args, **kwargs)
        if dialect.name == "sqlite":
            _tune_sqlite(connection, None)
        return connection

    def dispose(self) -> None:
        self.engine.dispose()
