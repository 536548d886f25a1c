"""The change feed: services announce verdict-affecting changes in the same transaction;
verifiers on every node read what is new and evict what it touches."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from tallykey.auth.models import VerdictChange
from tallykey.db.engine import VERDICT_CHANGED, Database

BATCH = 1000
TOKEN = "token"  # noqa: S105 - a subject name
USER = "user"
ACCOUNT = "account"


CHANNEL = "tallykey_changes"


def announce(session: Session, subject: str, subject_id: str, at: datetime) -> None:
    """Record a verdict-affecting change in the caller's transaction. On PostgreSQL every
    listening node is also woken (NOTIFY is delivered at commit, never on rollback)."""
    session.add(VerdictChange(subject=subject, subject_id=subject_id, at=at))
    if not session.info.get(VERDICT_CHANGED) and session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
    session.info[VERDICT_CHANGED] = True


def latest_for(database: Database, subject_id: str) -> int:
    """The newest change id about one subject (what a caller waits on after a change)."""
    with database.reading() as session:
        found = session.scalar(select(func.max(VerdictChange.id))
                               .where(VerdictChange.subject_id == subject_id))
        return int(found or 0)


class FeedReader:
    """Reads the feed on one raw connection of its own: a poll costs microseconds, so
    every node can poll often without loading the database or its own event loop."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._param = "?" if database.dialect == "sqlite" else "%s"
        self._connection: Any = None
        self._lock = threading.Lock()

    def latest(self) -> int:
        rows = self._query("SELECT max(id) FROM verdict_changes", ())
        return int(rows[0][0] or 0)

    def since(self, after_id: int, limit: int = BATCH
              ) -> list[tuple[int, str, str, float | None]]:
        """Changes with id > `after_id`, oldest first: (id, subject, subject id, the
        change's time as POSIX seconds)."""
        sql = ("SELECT id, subject, subject_id, at FROM verdict_changes "  # noqa: S608
               f"WHERE id > {self._param} ORDER BY id LIMIT {int(limit)}")
        rows = self._query(sql, (after_id,))
        return [(int(row[0]), str(row[1]), str(row[2]), _posix(row[3])) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            if self._connection is None:
                self._connection = self.database.raw_connection()
            try:
                cursor = self._connection.cursor()
                cursor.execute(sql, params)
                rows = list(cursor.fetchall())
                cursor.close()
                self._connection.rollback()
                return rows
            except Exception:
                with contextlib.suppress(Exception):
                    self._connection.close()
                self._connection = None
                raise


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
    """Drop feed rows nobody needs any more (every cache entry is younger than its TTL)."""
    with database.transaction() as session:
        result = session.execute(delete(VerdictChange).where(VerdictChange.at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)


RETENTION = timedelta(days=1)
