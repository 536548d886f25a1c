"""The one engine and session factory, with SQLite tuned for an embedded store (WAL)."""

from __future__ import annotations

import contextlib
import errno
import select
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial
from pathlib import Path
from typing import Any, NoReturn

import psycopg
from psycopg.waiting import READY_NONE, READY_R, READY_W, WAIT_R, WAIT_RW, WAIT_W
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
#: The client-side deadline of one statement once the store is known to be unresponsive
#: (a feed read or another statement missed its deadline moments ago): in-flight waits
#: older than this are abandoned, so no request outlives the 2 s budget of SPEC §10.
UNRESPONSIVE_DEADLINE = 1.0
#: The client waits this much longer than the server's `statement_timeout` before it
#: gives up on a statement itself (the server normally cancels it first).
DEADLINE_MARGIN = 1.0
#: After a statement missed its client-side deadline, new units of work fail at once
#: (503) for this long, unless a successful read closes the breaker earlier.
BREAKER_SECONDS = 1.0
#: How often a waiting statement looks at its deadline.
_WAIT_SLICE = 0.05
_POLL_READ = select.POLLIN | select.POLLERR | select.POLLHUP
_POLL_EVENTS = {WAIT_R: _POLL_READ, WAIT_W: select.POLLOUT | select.POLLERR,
                WAIT_RW: _POLL_READ | select.POLLOUT}
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


class Breaker:
    """Says whether the store answered lately. A statement that missed its deadline (or
    a failed feed read) opens it: new units of work then fail at once with 503 and the
    statements already waiting give up after `UNRESPONSIVE_DEADLINE`, until a
    successful read closes it or `BREAKER_SECONDS` pass."""

    def __init__(self) -> None:
        self.open_until = 0.0

    def is_open(self) -> bool:
        return time.monotonic() < self.open_until

    def trip(self, seconds: float = BREAKER_SECONDS) -> None:
        self.open_until = max(self.open_until, time.monotonic() + seconds)

    def close(self) -> None:
        self.open_until = 0.0


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait on the server (statement, fetch, commit,
    rollback, ping) has a client-side deadline. `statement_timeout` acts in the server
    only: a frozen server, or a partition that holds bytes, never answers, and TCP
    keepalives are answered by the kernel. Past the deadline the connection is closed
    (its state is unknown) and an `OperationalError` is raised, which the engine
    treats as a lost connection and the services as `StoreUnavailable`."""

    #: Seconds one wait may last while the store answers; set per connection.
    deadline: float = DEFAULT_STATEMENT_TIMEOUT + DEADLINE_MARGIN
    #: The database's breaker (a subclass per database carries it, see `bounded_class`).
    breaker: Breaker | None = None

    @classmethod
    def _connect_gen(cls, conninfo: str = "") -> Any:
        """psycopg's connection attempt (bounded by libpq's `connect_timeout`, at least
        2 s), given up sooner once the breaker is open: a connection begun just as the
        store froze must not outlast the budget either."""
        attempt = super()._connect_gen(conninfo)
        started = time.monotonic()
        try:
            value = next(attempt)
            while True:
                ready = yield value
                breaker = cls.breaker
                if (breaker is not None and breaker.is_open()
                        and time.monotonic() - started >= UNRESPONSIVE_DEADLINE):
                    attempt.close()
                    raise psycopg.OperationalError(
                        "timeout: the database did not complete the connection within "
                        f"{UNRESPONSIVE_DEADLINE:.1f} s while it is not answering")
                value = attempt.send(ready)
        except StopIteration as done:
            return done.value

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """As psycopg's, with the deadline checked every `_WAIT_SLICE` seconds."""
        started = time.monotonic()
        until = None if timeout is None else started + timeout
        fileno = self.pgconn.socket
        waited = 0.0
        slice_ms = int(_WAIT_SLICE * 1000)
        try:
            state = next(gen)
            poller = select.poll()
            poller.register(fileno, _POLL_EVENTS[state])
            while True:
                ready = poller.poll(slice_ms)
                if ready:
                    events = ready[0][1]
                    new_state = gen.send((READY_R if events & _POLL_READ else 0)
                                         | (READY_W if events & select.POLLOUT else 0))
                    if new_state != state:
                        state = new_state
                        poller.modify(fileno, _POLL_EVENTS[state])
                    if until is None:
                        continue  # answered: the deadline is looked at on silence only
                else:
                    gen.send(READY_NONE)
                now = time.monotonic()
                if until is not None and now >= until:
                    raise psycopg.errors._WaitTimeout("wait timeout expired")
                if now - started >= self._allowed():
                    waited = now - started
                    break
        except StopIteration as done:
            return done.value
        self._abandon(waited)

    def _allowed(self) -> float:
        breaker = self.breaker
        if breaker is not None and breaker.is_open():
            return min(self.deadline, UNRESPONSIVE_DEADLINE)
        return self.deadline

    def _abandon(self, waited: float) -> NoReturn:
        if self.breaker is not None:
            self.breaker.trip()
        with contextlib.suppress(Exception):
            self.pgconn.finish()
        raise psycopg.OperationalError(
            f"timeout: the database did not answer within {waited:.1f} s "
            "(client-side deadline); the connection was closed")


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


def postgres_connect_args(connect_timeout: int, statement_timeout: float,
                          pooled: bool = False) -> dict[str, Any]:
    """libpq settings every PostgreSQL connection gets: a bounded connect, a bounded
    statement (in the server), no transaction left idle for long, TCP keepalives and a
    TCP user timeout so a vanished peer is noticed by the kernel. A server that is
    frozen, or a partition that holds bytes, is bounded by `BoundedConnection`.

    `pooled`: a pooler in transaction mode (PgBouncer) stands in front of the server.
    Then no prepared statements (a later statement may run on another server
    connection) and no `options` startup parameter (PgBouncer refuses it, and session
    settings would not follow the client anyway): the client-side deadlines still bound
    every statement; the server's own timeouts come from `ALTER ROLE ... SET`."""
    args: dict[str, Any] = {
        "connect_timeout": max(2, connect_timeout),  # libpq treats 1 as 2
        "keepalives": 1, "keepalives_idle": 2, "keepalives_interval": 1,
        "keepalives_count": 3, "tcp_user_timeout": 3000,
    }
    if pooled:
        args["prepare_threshold"] = None
        return args
    statement_ms = int(statement_timeout * 1000)
    args["options"] = (f"-c statement_timeout={statement_ms} "
                       f"-c lock_timeout={statement_ms} "
                       f"-c idle_in_transaction_session_timeout="
                       f"{max(statement_ms * 6, 30_000)}")
    return args


#: `TALLYKEY_DB_POOLER` values.
POOLERS = ("auto", "none", "transaction")


def detect_pooler(url: str, connect_timeout: int, statement_timeout: float) -> bool:
    """Is a pooler such as PgBouncer in front of this PostgreSQL server? Yes when it
    refuses the `options` startup parameter (PgBouncer's default) or drops it (its
    `ignore_startup_parameters = options`): then the server does not report the
    statement timeout asked for. A server that cannot be reached now counts as direct."""
    dialect = make_url(url).get_dialect()()
    args, kwargs = dialect.create_connect_args(make_url(url))
    kwargs.update(postgres_connect_args(connect_timeout, statement_timeout))
    try:
        connection = connect_bounded(args, kwargs, statement_timeout + DEADLINE_MARGIN,
                                     bounded_class(None))
    except (psycopg.Error, OSError) as error:
        return "startup parameter" in str(error)
    try:
        connection.autocommit = True
        row = connection.execute("SELECT current_setting('statement_timeout')").fetchone()
        wanted = f"{int(statement_timeout * 1000)}ms"
        return _milliseconds(str(row[0]) if row else "") != _milliseconds(wanted)
    except psycopg.Error:
        return False
    finally:
        with contextlib.suppress(Exception):
            connection.close()


def _milliseconds(value: str) -> int | None:
    """A PostgreSQL duration setting as shown (`5s`, `500ms`, `1min`, `0`) in ms."""
    units = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
    for unit in ("ms", "min", "s", "h", "d"):
        if value.endswith(unit) and value[: -len(unit)].isdigit():
            return int(value[: -len(unit)]) * units[unit]
    return int(value) if value.isdigit() else None


def bounded_class(breaker: Breaker | None) -> type[BoundedConnection]:
    """The `BoundedConnection` class of one database (it carries that breaker)."""
    return type("BoundedConnection", (BoundedConnection,), {"breaker": breaker})


def connect_bounded(args: Any, kwargs: Any, deadline: float,
                    kind: type[BoundedConnection]) -> BoundedConnection:
    """A `BoundedConnection` of class `kind` (see `bounded_class`)."""
    connection = kind.connect(*args, **kwargs)
    connection.deadline = deadline
    return connection


def build_engine(url: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 breaker: Breaker | None = None, pooled: bool = False) -> Engine:
    """An engine for `url`; for SQLite the data directory is created first. Connecting,
    waiting for a pooled connection and each statement are all bounded in time, on the
    client side too (`BoundedConnection`)."""
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
            connect_args=postgres_connect_args(connect_timeout, statement_timeout, pooled))
        deadline = statement_timeout + DEADLINE_MARGIN
        kind = bounded_class(breaker)

        def bounded(_dialect: Any, _record: Any, args: Any, kwargs: Any) -> Any:
            if breaker is not None and breaker.is_open():  # the feed probes recovery
                raise psycopg.OperationalError(
                    "timeout: no new connection while the database is not answering")
            return connect_bounded(args, kwargs, deadline, kind)

        event.listen(engine, "do_connect", bounded)
    event.listen(engine, "before_cursor_execute", _refuse_nul)
    return engine


VERDICT_CHANGED = "tallykey.verdict_changed"


class Database:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, url: str, connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
                 statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
                 pooler: str = "auto") -> None:
        self.url = url
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        postgres = make_url(url).get_backend_name() == "postgresql"
        #: A pooler in transaction mode (PgBouncer) stands in front of PostgreSQL: no
        #: prepared statements, no session settings, and the feed is polled (`pooler`:
        #: `transaction`, `none`, or `auto` to detect it with `detect_pooler`).
        self.pooled = postgres and (pooler == "transaction" or (
            pooler == "auto" and detect_pooler(url, connect_timeout, statement_timeout)))
        #: Open while the store does not answer (see `Breaker`); on SQLite never tripped.
        self.breaker = Breaker()
        self._bounded = bounded_class(self.breaker)
        self.engine = build_engine(url, connect_timeout, statement_timeout, self.breaker,
                                   self.pooled)
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
        self._check_breaker()
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
        self._check_breaker()
        with store_errors(), self._sessions() as session:
            yield session

    def _check_breaker(self) -> None:
        if self.breaker.is_open():
            raise StoreUnavailable("The token store is not answering right now.",
                                   retry_after=2)

    def raw_connection(self, autocommit: bool = False,
                       deadline: float | None = None) -> Any:
        """A new driver-level connection outside the pool, tuned and time-bounded like
        pooled ones (`deadline`: seconds one statement may wait on PostgreSQL, on the
        client side). An outage raises `StoreUnavailable`."""
        dialect = self.engine.dialect
        args, kwargs = dialect.create_connect_args(self.engine.url)
        connection: Any
        with store_errors():
            if dialect.name == "sqlite":
                connection = dialect.connect(*args, **kwargs)
                _tune_sqlite(connection, None, int(self.statement_timeout * 1000))
                if autocommit:
                    connection.isolation_level = None
            else:
                kwargs.update(postgres_connect_args(self.connect_timeout,
                                                    self.statement_timeout, self.pooled))
                connection = connect_bounded(
                    args, kwargs, deadline or self.statement_timeout + DEADLINE_MARGIN,
                    self._bounded)
                connection.autocommit = autocommit
        return connection

    def dispose(self) -> None:
        self.engine.dispose()
