"""The one engine and session factory, with SQLite tuned for an embedded store (WAL)."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tallykey.errors import StoreUnavailable, ValidationFailed

#: The unit of work open in this thread or task (`Database.transaction`), which a nested
#: `transaction()` or `reading()` of the same database joins.
_unit_of_work: ContextVar[Session | None] = ContextVar("tallykey_unit_of_work", default=None)
_OWNER = "tallykey.database"

DEFAULT_CONNECT_TIMEOUT = 2
DEFAULT_STATEMENT_TIMEOUT = 5.0
#: Driver errors that mean "the store cannot serve this now", not "this request is wrong".
_DRIVER_OUTAGES: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError, psycopg.OperationalError, psycopg.InterfaceError,
    psycopg.errors.ReadOnlySqlTransaction)
_SQLALCHEMY_OUTAGES: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
    sa_exc.DisconnectionError)


def store_outage(error: BaseException) -> StoreUnavailable | None:
    """The `StoreUnavailable` an exception from the database layer amounts to, or None
    when it is not an outage (a bug or a constraint violation stays what it is).

    The message says which outage it is (unreachable, timed out, full, read-only) and
    never repeats the driver's text, which can hold connection parameters."""
    if isinstance(error, StoreUnavailable):
        return error
    cause: BaseException = error
    if isinstance(error, sa_exc.DBAPIError):
        cause = error.orig if isinstance(error.orig, BaseException) else error
        outage = (isinstance(error, _SQLALCHEMY_OUTAGES) or error.connection_invalidated
                  or isinstance(cause, _DRIVER_OUTAGES))
    else:
        outage = isinstance(error, _SQLALCHEMY_OUTAGES + _DRIVER_OUTAGES)
    if not outage:
        return None
    text = str(cause).lower()
    sqlite_error = str(getattr(cause, "sqlite_errorname", ""))
    if sqlite_error == "SQLITE_CANTOPEN":
        return StoreUnavailable(
            "The token store is read-only or cannot be opened, so nothing can be changed "
            "right now.", "Check that the data directory exists and is writable "
            "(TALLYKEY_DATA_DIR). Try again in 30 seconds.", retry_after=30)
    if (isinstance(cause, psycopg.errors.DiskFull) or sqlite_error == "SQLITE_FULL"
            or "disk is full" in text or "no space left" in text
            or getattr(cause, "errno", None) == errno.ENOSPC):
        return StoreUnavailable(
            "The token store is out of disk space, so nothing can be changed right now.",
            "Ask the operator to free disk space; verification of known tokens goes on. "
            "Try again in 30 seconds.", retry_after=30)
    if (sqlite_error.startswith("SQLITE_READONLY") or "read-only" in text
            or isinstance(cause, psycopg.errors.ReadOnlySqlTransaction)
            or getattr(cause, "errno", None) in (errno.EROFS, errno.EACCES)):
        return StoreUnavailable(
            "The token store is read-only, so nothing can be changed right now.",
            "Ask the operator to make the data directory (or database) writable; "
            "verification of known tokens goes on. Try again in 30 seconds.",
            retry_after=30)
    if isinstance(cause, psycopg.errors.TransactionRollback):
        return StoreUnavailable("The token store was busy with a conflicting change; "
                                "nothing was changed.", retry_after=1)
    if isinstance(cause, psycopg.errors.QueryCanceled) or "timeout" in text \
            or "locked" in text or isinstance(error, sa_exc.TimeoutError):
        return StoreUnavailable("The token store did not answer in time.")
    return StoreUnavailable("The token store cannot be reached right now.")


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn database outages raised inside the block into `StoreUnavailable`."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as error:
        outage = store_outage(error)
        if outage is None:
            raise
        raise outage from error


def _tune_sqlite(dbapi_connection: Any, _record: Any,
                 busy_ms: int = int(DEFAULT_STATEMENT_TIMEOUT * 1000)) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
    cursor.close()


WRITE = "tallykey_write"


def _take_over_transactions(dbapi_connection: Any, record: Any, busy_ms: int) -> None:
    """pysqlite begins transactions lazily, at the first write, so a read-then-write unit
    of work is not isolated. Let SQLAlchemy say BEGIN itself (see `_begin`)."""
    _tune_sqlite(dbapi_connection, record, busy_ms)
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


def postgres_connect_args(connect_timeout: int, statement_timeout: float) -> dict[str, Any]:
    """libpq settings every PostgreSQL connection gets: a bounded connect, a bounded
    statement, no transaction left idle for long, and TCP keepalives so a vanished
    server is noticed."""
    statement_ms = int(statement_timeout * 1000)
    return {
        "connect_timeout": max(2, connect_timeout),  # libpq treats 1 as 2
        "options": (f"-c statement_timeout={statement_ms} "
                    f"-c lock_timeout={statement_ms} "
                    f"-c idle_in_transaction_session_timeout={max(statement_ms * 6, 30_000)}"),
        "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
        "keepalives_count": 3,
    }


def build_engine(url: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT) -> Engine:
    """An engine for `url`; for SQLite the data directory is created first. Connecting,
    waiting for a pooled connection and each statement are all bounded in time."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False},
                               pool_timeout=connect_timeout)
        event.listen(engine, "connect", partial(
            _take_over_transactions, busy_ms=int(statement_timeout * 1000)))
        event.listen(engine, "begin", _begin)
    else:
        engine = create_engine(
            url, pool_pre_ping=True, pool_size=10, max_overflow=20,
            pool_timeout=connect_timeout,
            connect_args=postgres_connect_args(connect_timeout, statement_timeout))
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


VERDICT_CHANGED = "tallykey.verdict_changed"


class Database:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, url: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT) -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.engine = build_engine(url, connect_timeout, statement_timeout)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: Called after a transaction that announced a verdict-affecting change commits,
        #: so verifiers in this process apply it before the caller gets its answer.
        self.after_verdict_change: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: everything in it lands together or not at all. A database
        outage inside it raises `StoreUnavailable` (and nothing lands).

        Opened inside another unit of work of this database (in the same thread or task),
        it joins that one, as a savepoint: its work lands when the outer one commits, and
        an error inside it undoes its own part only. So an adapter or a service can make
        several service calls one atomic change by wrapping them."""
        outer = _unit_of_work.get()
        if outer is not None and outer.info.get(_OWNER) is self:
            with store_errors(), outer.begin_nested():
                yield outer
            return
        with store_errors(), self._sessions() as session:
            session.info[_OWNER] = self
            joined = _unit_of_work.set(session)
            try:
                with session.begin():
                    session.connection(execution_options={WRITE: True})
                    yield session
            finally:
                _unit_of_work.reset(joined)
            if session.info.get(VERDICT_CHANGED):
                for hook in self.after_verdict_change:
                    hook()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only; an outage raises `StoreUnavailable`. Inside a unit of
        work of this database it is that unit's session, so reads see its writes."""
        outer = _unit_of_work.get()
        if outer is not None and outer.info.get(_OWNER) is self:
            yield outer
            return
        with store_errors(), self._sessions() as session:
            yield session

    def raw_connection(self, autocommit: bool = False) -> Any:
        """A new driver-level connection outside the pool, tuned and time-bounded like
        pooled ones. An outage raises `StoreUnavailable`."""
        dialect = self.engine.dialect
        args, kwargs = dialect.create_connect_args(self.engine.url)
        with store_errors():
            if dialect.name == "sqlite":
                connection = dialect.connect(*args, **kwargs)
                _tune_sqlite(connection, None, int(self.statement_timeout * 1000))
                if autocommit:
                    connection.isolation_level = None
            else:
                kwargs.update(postgres_connect_args(self.connect_timeout,
                                                    self.statement_timeout))
                connection = dialect.connect(*args, **kwargs)
                connection.autocommit = autocommit
        return connection

    def dispose(self) -> None:
        self.engine.dispose()
