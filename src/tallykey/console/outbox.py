"""The outbox page's data. The notification outbox (`tallykey.notify`) is optional: when
the module or its table is missing, the page says so instead of failing."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, select

from tallykey.notify.outbox import for_display
from tallykey.runtime import Runtime

RECENT = 100


@dataclass(frozen=True)
class OutboxRow:
    id: str
    created_at: datetime
    channel: str
    event: str
    recipient: str
    subject: str
    status: str
    attempts: int
    sent_at: datetime | None
    last_error: str | None


def _model() -> Any | None:
    try:
        module = importlib.import_module("tallykey.notify.models")
    except ImportError:
        return None
    return getattr(module, "OutboxMessage", None)


def recent(runtime: Runtime, account_id: str) -> list[OutboxRow] | None:
    """The account's newest outbox messages, or None when there is no outbox."""
    model = _model()
    if model is None:
        return None
    if not inspect(runtime.database.engine).has_table(model.__tablename__):
        return None
    with runtime.database.reading() as session:
        rows = session.scalars(select(model).where(model.account_id == account_id)
                               .order_by(model.created_at.desc()).limit(RECENT))
        return [OutboxRow(id=r.id, created_at=r.created_at, channel=r.channel, event=r.event,
                          recipient=r.recipient, subject=for_display(r.subject),
                          status=r.status, attempts=r.attempts, sent_at=r.sent_at,
                          last_error=r.last_error)
                for r in rows]


@dataclass(frozen=True)
class OutboxText:
    row: OutboxRow
    body: str


def one(runtime: Runtime, account_id: str, message_id: str) -> OutboxText | None:
    """One of the account's messages with its text (plain-text mail or webhook JSON), or
    None when it is not this account's (or there is no outbox)."""
    model = _model()
    if model is None or not message_id:
        return None
    with runtime.database.reading() as session:
        r = session.scalar(select(model).where(model.account_id == account_id,
                                               model.id == message_id[:36]))
        if r is None:
            return None
        # one-time links (password resets) are the recipient's alone: never shown here
        return OutboxText(OutboxRow(id=r.id, created_at=r.created_at, channel=r.channel,
                                    event=r.event, recipient=r.recipient,
                                    subject=for_display(r.subject), status=r.status,
                                    attempts=r.attempts, sent_at=r.sent_at,
                                    last_error=r.last_error), for_display(r.body))
