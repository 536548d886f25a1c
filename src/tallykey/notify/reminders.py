"""The expiry-reminder scheduler: finds tokens whose reminder (or expiry notice) is due and
puts it in the outbox once.

Each token has one *most relevant* notice at any moment: the nearest of its account's
`reminder_days` that has been reached, or the expiry notice once it has expired. Only that
one is sent, so a scheduler that was down while several fell due sends one mail, not a
burst of stale ones, and the dedupe key (`reminder:<token>:<days>`) makes running it on
several nodes, or twice, harmless. A reminder whose moment came before the token was
even created is never due (a 7-day token gets no "7 days left" mail the moment it is made).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select

from tallykey.accounts.models import DEFAULT_REMINDER_DAYS, Account
from tallykey.db.engine import Database
from tallykey.notify.notices import EXPIRED_STAGE, Notifier
from tallykey.notify.outbox import notices_present
from tallykey.tokens.models import Token

log = logging.getLogger(__name__)

#: The furthest reminder an account can ask for (`reminder_days` are 1 to 90).
HORIZON = timedelta(days=90)
#: An expiry notice is still sent this long after the expiry (e.g. after an outage), and
#: never for tokens that expired before that: no burst of stale notices on first start.
EXPIRED_NOTICE_WINDOW = timedelta(days=3)


def due_stage(*, created_at: datetime, expires_at: datetime, reminder_days: Sequence[int],
              now: datetime) -> int | None:
    """The notice due for a live token at `now`: days before expiry, `EXPIRED_STAGE`, or
    None when nothing is due."""
    if expires_at <= now:
        return EXPIRED_STAGE if now - expires_at <= EXPIRED_NOTICE_WINDOW else None
    reached = [days for days in reminder_days
               if created_at < expires_at - timedelta(days=days) <= now]
    return min(reached) if reached else None


def notice_key(token_id: str, stage: int) -> str:
    return f"reminder:{token_id}:{'expired' if stage == EXPIRED_STAGE else stage}"


def schedule_reminders(database: Database, notifier: Notifier, now: datetime) -> int:
    """Enqueue every due, not yet enqueued reminder; returns how many outbox rows were
    added. Each token is handled in its own short transaction."""
    with database.reading() as session:
        rows = session.execute(
            select(Token.id, Token.created_at, Token.expires_at, Account.reminder_days)
            .join(Account, Account.id == Token.account_id)
            .where(Token.revoked_at.is_(None), Token.successor_id.is_(None),
                   Token.expires_at <= now + HORIZON,
                   Token.expires_at > now - EXPIRED_NOTICE_WINDOW)).all()
        due: dict[str, tuple[str, int]] = {}
        for token_id, created_at, expires_at, reminder_days in rows:
            stage = due_stage(created_at=created_at, expires_at=expires_at,
                              reminder_days=_days(reminder_days), now=now)
            if stage is not None:
                due[notice_key(token_id, stage)] = (token_id, stage)
        pending = {key: due[key] for key in sorted(set(due) - notices_present(session, due))}
    added = 0
    for token_id, stage in pending.values():
        with database.transaction() as session:
            token = session.get(Token, token_id)
            if token is None or token.revoked_at is not None or token.successor_id:
                continue  # revoked or renewed since it was read (a successor has its own)
            added += notifier.expiry_notice(session, token, stage, now)
    if added:
        log.info("scheduled %d reminder deliveries", added)
    return added


def _days(value: object) -> list[int]:
    if isinstance(value, list) and all(isinstance(d, int) for d in value):
        return value
    return list(DEFAULT_REMINDER_DAYS)
