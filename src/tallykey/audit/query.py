"""The one read of the audit trail, for the API, the console and the CLI: a filter
(`AuditQuery`), a page of it newest first with a cursor, and all of it oldest first in
batches (exports).

One meaning of the bounds everywhere: `since` is inclusive and `until` exclusive, as
instants; a bare date means its whole day in UTC (`since` 2030-01-01 starts at its first
moment, `until` 2030-01-31 ends at the first moment of 2030-02-01).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, select

from tallykey.audit.models import AuditEvent
from tallykey.db.engine import Database

BATCH = 1000


def start_of(value: date | datetime) -> datetime:
    """`since` as an instant: a date is its first moment (UTC); a naive time is UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time(0), UTC)


def end_of(value: date | datetime) -> datetime:
    """`until` as an exclusive instant: a date includes its whole day."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value + timedelta(days=1), time(0), UTC)


@dataclass(frozen=True)
class AuditQuery:
    """Which entries: of one account (None: every account, for the operator's export)."""

    account_id: str | None
    action: str | None = None
    target_id: str | None = None
    actor_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def statement(self) -> Select[AuditEvent]:
        query = select(AuditEvent)
        if self.account_id is not None:
            query = query.where(AuditEvent.account_id == self.account_id)
        if self.action:
            query = query.where(AuditEvent.action == self.action)
        if self.target_id:
            query = query.where(AuditEvent.target_id == self.target_id)
        if self.actor_id:
            query = query.where(AuditEvent.actor_id == self.actor_id)
        if self.since is not None:
            query = query.where(AuditEvent.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(AuditEvent.occurred_at < self.until)
        return query


def page(database: Database, query: AuditQuery, before: int | None, limit: int
         ) -> tuple[list[AuditEvent], int | None]:
    """Up to `limit` entries older than the cursor `before`, newest first, and the cursor
    of the next page (None at the end)."""
    statement = query.statement()
    if before is not None:
        statement = statement.where(AuditEvent.id < before)
    with database.reading() as session:
        rows = list(session.scalars(statement.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return items, (items[-1].id if len(rows) > limit and items else None)


def entries(database: Database, query: AuditQuery) -> Iterator[AuditEvent]:
    """Every entry, oldest first, read in batches (for exports of any size)."""
    after = 0
    while True:
        statement = query.statement().where(AuditEvent.id > after)
        with database.reading() as session:
            rows = list(session.scalars(statement.order_by(AuditEvent.id).limit(BATCH)))
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def actions(database: Database, account_id: str) -> list[str]:
    """The actions the account's trail holds (for a filter's choices)."""
    with database.reading() as session:
        return sorted(session.scalars(select(AuditEvent.action).where(
            AuditEvent.account_id == account_id).distinct()))
