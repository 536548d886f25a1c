"""The audit page's filters as one query, shared by the page and its CSV/JSON-lines
exports. Always within the viewer's account."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, select

from tallykey.audit.models import AuditEvent
from tallykey.db.engine import Database
from tallykey.errors import ValidationFailed
from tallykey.tokens.format import PRODUCT_PREFIX
from tallykey.tokens.models import Token

EXPORT_BATCH = 1000
COLUMNS = ("id", "occurred_at", "action", "actor_type", "actor_id", "actor_label",
           "target_type", "target_id", "ip", "details")


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


def as_row(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "occurred_at": event.occurred_at.isoformat(),
            "action": event.action, "actor_type": event.actor_type,
            "actor_id": event.actor_id, "actor_label": event.actor_label,
            "target_type": event.target_type, "target_id": event.target_id, "ip": event.ip,
            "details": event.details}


def json_lines(database: Database, account_id: str, flt: AuditFilter) -> Iterator[str]:
    for event in _batches(database, account_id, flt):
        yield json.dumps(as_row(event), sort_keys=True) + "\n"


def _cell(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if isinstance(value, dict) else (
        "" if value is None else str(value))
    # Spreadsheets run cells that start with these as formulas (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def csv_lines(database: Database, account_id: str, flt: AuditFilter) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for event in _batches(database, account_id, flt):
        row = as_row(event)
        writer.writerow([_cell(row[c]) for c in COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
