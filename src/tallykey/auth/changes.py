"""The change feed: services announce verdict-affecting changes in the same transaction;
verifiers on every node read what is new and evict what it touches."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tallykey.auth.models import VerdictChange
from tallykey.db.engine import VERDICT_CHANGED, Database

TOKEN = "token"  # noqa: S105 - a subject name
USER = "user"
ACCOUNT = "account"


def announce(session: Session, subject: str, subject_id: str, at: datetime) -> None:
    session.add(VerdictChange(subject=subject, subject_id=subject_id, at=at))
    session.info[VERDICT_CHANGED] = True


def latest_id(database: Database) -> int:
    with database.reading() as session:
        return session.scalar(select(func.max(VerdictChange.id))) or 0


BATCH = 1000


def since(database: Database, after_id: int, limit: int = BATCH) -> list[tuple[int, str, str]]:
    """Changes with id > `after_id`, oldest first."""
    with database.reading() as session:
        rows = session.execute(
            select(VerdictChange.id, VerdictChange.subject, VerdictChange.subject_id)
            .where(VerdictChange.id > after_id).order_by(VerdictChange.id).limit(limit))
        return [(row[0], row[1], row[2]) for row in rows]


def prune(database: Database, older_than: datetime) -> int:
    """Drop feed rows nobody needs any more (every cache entry is younger than its TTL)."""
    with database.transaction() as session:
        result = session.execute(delete(VerdictChange).where(VerdictChange.at < older_than))
        return int(getattr(result, "rowcount", 0) or 0)


RETENTION = timedelta(days=1)
