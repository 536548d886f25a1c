"""The audit page's filters as one query, shared by the page and its CSV/JSON-lines
exports. Always within the viewer's account."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, select

from tallykey.audit import export
from tallykey.audit.models import AuditEvent
from tallykey.db.engine import Database
from tallykey.errors import ValidationFailed
from tallykey.tokens.format import PRODUCT_PREFIX
from tallykey.tokens.models import Token

EXPORT_BATCH = 1000


@dataclass(frozen=True)
class AuditFilter:
    actor: str = ""
    token: str = ""
    action: str = ""
    since: str = ""
    until: str = ""

    def as_params(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(f"{name} must be a date (YYYY-MM-DD).", field=name) from None


def statement(database: Database, account_id: str, flt: AuditFilter) -> Select[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if flt.actor:
        query = query.where(AuditEvent.actor_id == flt.actor)
    if flt.action:
        query = query.where(AuditEvent.action == flt.action)
    if flt.token:
        query = query.where(AuditEvent.target_id == _token_id(database, account_id,
                                                              flt.token.strip()))
    since, until = _day(flt.since, "since"), _day(flt.until, "until")
    if since:
        query = query.where(AuditEvent.occurred_at >= datetime.combine(since, time(0), UTC))
    if until:
        query = query.where(AuditEvent.occurred_at < datetime.combine(
            until + timedelta(days=1), time(0), UTC))
    return query


def _token_id(database: Database, account_id: str, ref: str) -> str:
    """A token id, or the id of the account's token with this prefix (`tlk_eu1_…`)."""
    if not ref.startswith(PRODUCT_PREFIX):
        return ref
    public_id = ref.rsplit("_", 1)[-1][:12]
    with database.reading() as session:
        found = session.scalar(select(Token.id).where(Token.account_id == account_id,
                                                      Token.public_id == public_id))
    return found or ref


def page(database: Database, account_id: str, flt: AuditFilter, before: int | None,
         limit: int) -> tuple[list[AuditEvent], int | None]:
    query = statement(database, account_id, flt)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    with database.reading() as session:
        rows = list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    items = rows[:limit]
    return items, (items[-1].id if len(rows) > limit and items else None)


def actions(database: Database, account_id: str) -> list[str]:
    with database.reading() as session:
        return sorted(session.scalars(select(AuditEvent.action).where(
            AuditEvent.account_id == account_id).distinct()))


def _batches(database: Database, account_id: str, flt: AuditFilter) -> Iterator[AuditEvent]:
    before: int | None = None
    while True:
        items, before = page(database, account_id, flt, before, EXPORT_BATCH)
        yield from items
        if before is None:
            return


def json_lines(database: Database, account_id: str, flt: AuditFilter) -> Iterator[str]:
    """The filtered entries as JSON lines, in the same form as `tallykey audit export`."""
    return export.json_lines(_batches(database, account_id, flt))


def csv_lines(database: Database, account_id: str, flt: AuditFilter) -> Iterator[str]:
    """The filtered entries as CSV, in the same form as `tallykey audit export`."""
    return export.csv_lines(_batches(database, account_id, flt))
