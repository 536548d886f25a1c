"""Announcing and reading verdict-affecting changes.

Services announce a change in the same transaction as the change itself. Readers must
never skip a committed change, yet ids are handed out before commit, so two writers can
commit out of id order. On PostgreSQL each change therefore records its transaction id,
and a reader takes, in one statement, the new rows *and* its snapshot (`xmin`: every
transaction below it has finished; `xmax` and the transactions in progress): the next
read asks for rows of transactions at or above that `xmin`, so a change that commits
late is still read. A node reports the snapshot of its last read; a change is applied by
a node whose snapshot sees the change's transaction (`applied`). SQLite has one writer at
a time (`BEGIN IMMEDIATE`), so ids follow commit order and the position is simply the
newest id read.
"""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from tallykey.db.engine import VERDICT_CHANGED, Database, store_errors
from tallykey.feed.models import VerdictChange

TOKEN = "token"  # noqa: S105 - a subject name
USER = "user"
ACCOUNT = "account"
#: An identity (SPEC §16): its credits, rate limits or metadata changed, or tokens left it.
IDENTITY = "identity"
#: A plan (SPEC §16): its rate limits, refill or scopes ceiling changed, or it was deleted.
PLAN = "plan"
CHANNEL = "tallykey_changes"
#: Feed rows older than this are pruned (every cache entry is far younger).
RETENTION = timedelta(days=1)

#: One change read from the feed: (id, subject, subject id, its time as POSIX seconds).
Change = tuple[int, str, str, float | None]


def announce(session: Session, subject: str, subject_id: str, at: datetime) -> None:
    """Record a verdict-affecting change in the caller's transaction. On PostgreSQL every
    listening node is also woken (NOTIFY is delivered at commit, never on rollback)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    tx = None
    if postgres:
        tx = int(session.execute(text("SELECT pg_current_xact_id()::text::bigint"))
                 .scalar_one())
    session.add(VerdictChange(subject=subject, subject_id=subject_id, at=at, tx=tx))
    if postgres and not session.info.get(VERDICT_CHANGED):
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    session.info[VERDICT_CHANGED] = True


def position_of(database: Database, subject_id: str) -> int:
    """What identifies the newest change about `subject_id` for `applied`: its
    transaction id on PostgreSQL, its id on SQLite (0 when there is none)."""
    with database.reading() as session:
        if database.dialect == "postgresql":
            tx = session.scalar(select(func.max(VerdictChange.tx))
                                .where(VerdictChange.subject_id == subject_id))
            return int(tx) if tx is not None else 0
        found = session.scalar(select(func.max(VerdictChange.id))
                               .where(VerdictChange.subject_id == subject_id))
        return int(found or 0)


def applied(postgres: bool, position: int, snapshot: str | None, change: int) -> bool:
    """Has a node whose last read was at `position` (with PostgreSQL `snapshot`,
    `xmin:xmax:xip,…`) applied `change` (from `position_of`)?"""
    if change <= 0:
        return True
    if not postgres:
        return position >= change
    if position > change:  # the change's transaction had finished before that read
        return True
    if not snapshot:
        return False
    _, xmax, in_progress = snapshot.split(":")
    return change < int(xmax) and str(change) not in in_progress.split(",")


class FeedReader:
    """Reads the feed on one raw autocommit connection of its own: a poll costs
    microseconds, so every node can poll often without loading the database.

    `position` and `snapshot` say how far this reader is (see `applied`); `read()`
    returns the changes committed since the previous read (each change once)."""

    def __init__(self, database: Database, deadline: float | None = None) -> None:
        self.database = database
        #: Seconds one read may wait on PostgreSQL (client side); None: the default.
        self.deadline = deadline
        self._postgres = database.dialect == "postgresql"
        self._connection: Any = None
        self._lock = threading.Lock()
        self.position = 0
        self.snapshot: str | None = None
        #: PostgreSQL: ids already applied among the rows a later read may return again.
        self._applied: dict[int, int] = {}

    def start(self) -> int:
        """Begin at the present: changes committed from now on will be read (what is
        committed already is in the store, which an empty cache reads anyway)."""
        if self._postgres:
            self.position, self.snapshot = 0, None
            self._applied.clear()
            self.position = self._read_postgres(self._first_xmin())
            return self.position
        rows = self._query("SELECT max(id) FROM verdict_changes", ())
        self.position = int(rows[0][0] or 0)
        return self.position

    def _first_xmin(self) -> int:
        rows = self._query("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint", ())
        return int(rows[0][0])

    def read(self) -> list[Change]:
        """The changes committed since the last read, oldest first."""
        if not self._postgres:
            rows = self._query("SELECT id, subject, subject_id, at FROM verdict_changes "
                               "WHERE id > ? ORDER BY id", (self.position,))
            changes = [_change(row) for row in rows]
            if changes:
                self.position = changes[-1][0]
            return changes
        fresh: list[Change] = []
        self._read_postgres(self.position, fresh)
        return fresh

    def _read_postgres(self, since: int, fresh: list[Change] | None = None) -> int:
        """One statement, one snapshot: the rows of transactions from `since` on, and
        that snapshot. Rows not seen before go to `fresh` (or are only remembered)."""
        rows = self._query(
            "SELECT s.snap::text, pg_snapshot_xmin(s.snap)::text::bigint, "
            "c.id, c.subject, c.subject_id, c.at, c.tx "
            "FROM (SELECT pg_current_snapshot() AS snap) s "
            "LEFT JOIN verdict_changes c ON c.tx >= %s ORDER BY c.id", (since,))
        snapshot, xmin = str(rows[0][0]), int(rows[0][1])
        for row in rows:
            if row[2] is None or row[2] in self._applied:
                continue
            self._applied[int(row[2])] = int(row[6])
            if fresh is not None:
                fresh.append(_change(row[2:6]))
        # Rows of transactions below the new xmin will not be returned again.
        self._applied = {i: tx for i, tx in self._applied.items() if tx >= xmin}
        self.position = max(self.position, xmin)
        self.snapshot = snapshot
        return self.position

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            if self._connection is None:
                self._connection = self.database.raw_connection(autocommit=True,
                                                                deadline=self.deadline)
            try:
                with store_errors():
                    cursor = self._connection.cursor()
                    try:
                        cursor.execute(sql, params)
                        return list(cursor.fetchall())
                    finally:
                        cursor.close()
            except Exception:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None
                raise


def _change(row: Any) -> Change:
    return (int(row[0]), str(row[1]), str(row[2]), _posix(row[3]))


def _posix(value: Any) -> float | None:
    """A raw driver's timestamp (PostgreSQL: aware datetime; SQLite: UTC text) as POSIX
    seconds."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()
        except ValueError:
            return None
    return None


def prune(database: Database, older_than: datetime) -> int:
    """Drop feed rows nobody needs any more (every cache entry is far younger)."""
    with database.transaction() as session:
        result = session.execute(delete(VerdictChange).where(VerdictChange.at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)
