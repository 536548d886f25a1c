"""The outbox: enqueue a delivery inside the caller's transaction, claim due rows safely
across workers and nodes, hand them to their channel, and settle each one (sent, retry
later with exponential back-off, or dead).

Delivery is at-least-once at the transport level and exactly-once in the normal case:
a row is claimed by one worker (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: a single
conditional `UPDATE … RETURNING`) under a lease, and only the claiming worker can settle
it. Only a worker that dies between the SMTP/HTTP hand-off and the settle leaves a row
whose lease expires and is sent again; mails carry a stable Message-ID (the row id) and
webhooks a stable `Tallykey-Delivery` header so receivers can drop such a repeat.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallykey.db.base import new_id
from tallykey.db.engine import Database
from tallykey.errors import DeliveryError, NotFound, ValidationFailed
from tallykey.notify.models import (
    CHANNELS,
    DEAD,
    OUTBOX_STATUSES,
    PENDING,
    SENDING,
    SENT,
    OutboxMessage,
)
from tallykey.tokens.format import TOKEN_PATTERN

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 12
RETRY_BASE = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=4)
#: A claim lasts this long unless its worker extends it (it does, every third of it,
#: while the delivery runs): a crashed worker delays its batch by at most this much.
LEASE = timedelta(seconds=30)
MAX_ERROR_LENGTH = 500
REDACTED = "[redacted token]"

#: Where a one-time secret (a password-reset link's token) goes in a stored mail: the row
#: keeps only this marker; the worker puts the secret in just before the mail leaves
#: (`tallykey.people.resets.unsealed`), so no page, API or CLI view of the outbox — and
#: no copy of the table — holds a usable link.
ONE_TIME = re.compile(r"\[\[one-time:(?P<kind>[a-z_]{1,30}):(?P<ref>[A-Za-z0-9-]{1,64})\]\]")
HIDDEN_SECRET = "[one-time link: sent only to the recipient]"  # noqa: S105 - a label
#: Links of console pages whose last path segment is a secret (rows written before the
#: markers existed, or a secret that slipped into a notice): never shown.
_SECRET_LINK = re.compile(r"(/console/(?:reset|setup)/)(?!\[one-time link)[^\s\"'<>&]+")


def sealed(kind: str, ref: str) -> str:
    """The marker standing for the one-time secret of `kind` named by `ref`."""
    return f"[[one-time:{kind}:{ref}]]"


def for_display(text: str) -> str:
    """A stored subject or body as the outbox views show it: one-time secrets hidden."""
    return _SECRET_LINK.sub(lambda m: m.group(1) + HIDDEN_SECRET,
                            ONE_TIME.sub(HIDDEN_SECRET, text))


@dataclass(frozen=True)
class Draft:
    """One delivery to enqueue. `notice` names what is being told (shared by all its
    recipients); the row's dedupe key is `notice` plus `recipient`."""

    channel: str
    event: str
    notice: str
    recipient: str
    body: str
    subject: str = ""
    html_body: str | None = None
    token_id: str | None = None
    endpoint_id: str | None = None

    @property
    def dedupe_key(self) -> str:
        return f"{self.notice}|{self.endpoint_id or self.recipient.lower()}"[:300]


class Channel(Protocol):
    """Sends claimed rows of one channel; yields each row with None (sent) or its error."""

    def deliver(self, messages: Sequence[OutboxMessage]
                ) -> Iterator[tuple[OutboxMessage, DeliveryError | None]]: ...


# --- enqueue ------------------------------------------------------------------------------


def enqueue(session: Session, account_id: str, draft: Draft, now: datetime) -> bool:
    """Add `draft` to the caller's transaction; it lands exactly when that change does.

    Returns False (and adds nothing) when a row with the same dedupe key exists already,
    so schedulers on several nodes may enqueue the same notice concurrently. Anything
    shaped like a full token (say, one pasted into a token's name) is redacted.
    """
    if draft.channel not in CHANNELS:
        raise ValueError(f"unknown outbox channel {draft.channel!r}")
    draft = replace(draft, subject=_redacted(draft.subject), body=_redacted(draft.body),
                    html_body=_redacted(draft.html_body) if draft.html_body else None)
    values: dict[str, Any] = {
        "id": new_id(), "account_id": account_id, "channel": draft.channel,
        "event": draft.event, "notice": draft.notice[:200], "dedupe_key": draft.dedupe_key,
        "token_id": draft.token_id, "recipient": draft.recipient,
        "endpoint_id": draft.endpoint_id, "subject": draft.subject[:300], "body": draft.body,
        "html_body": draft.html_body, "status": PENDING, "attempts": 0,
        "next_attempt_at": now, "created_at": now,
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(OutboxMessage).values(**values)
    elif dialect == "sqlite":
        statement = sqlite.insert(OutboxMessage).values(**values)
    else:  # pragma: no cover - only the two supported stores
        raise RuntimeError(f"unsupported database {dialect!r}")
    # RETURNING, not rowcount: psycopg reports a row even when the conflict skipped it.
    inserted = session.scalar(statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
                              .returning(OutboxMessage.id))
    return inserted is not None


def _redacted(text: str) -> str:
    if not TOKEN_PATTERN.search(text):
        return text
    log.warning("a notice contained something shaped like a token; it was redacted")
    return TOKEN_PATTERN.sub(REDACTED, text)


def notices_present(session: Session, notices: Iterable[str]) -> set[str]:
    """Which of `notices` have at least one outbox row already (in any state)."""
    wanted = list(set(notices))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        found.update(session.scalars(select(OutboxMessage.notice).where(
            OutboxMessage.notice.in_(wanted[start:start + 500])).distinct()))
    return found


# --- claim and settle ---------------------------------------------------------------------


#: Oldest first; delivery order is best effort (a retry overtakes nothing, but is overtaken).
_DUE_ORDER = (OutboxMessage.next_attempt_at, OutboxMessage.created_at)


def _claimable(now: datetime, channels: Sequence[str]) -> Any:
    return and_(OutboxMessage.channel.in_(list(channels)), or_(
        and_(OutboxMessage.status == PENDING, OutboxMessage.next_attempt_at <= now),
        and_(OutboxMessage.status == SENDING, OutboxMessage.lease_until <= now),
    ))


def claim(database: Database, *, worker: str, now: datetime, channels: Sequence[str],
          limit: int = 50, lease: timedelta = LEASE) -> list[OutboxMessage]:
    """Take up to `limit` due rows of `channels` for `worker` until `now + lease`.

    Rows another worker holds are skipped, never waited for; each claim counts as an
    attempt, so a row that crashes its worker still ends up dead.
    """
    if not channels:
        return []
    changes = {"status": SENDING, "lease_until": now + lease, "claimed_by": worker,
               "attempts": OutboxMessage.attempts + 1}
    with database.transaction() as session:
        if database.dialect == "postgresql":
            ids = list(session.scalars(
                select(OutboxMessage.id).where(_claimable(now, channels))
                .order_by(*_DUE_ORDER).limit(limit)
                .with_for_update(skip_locked=True)))
            if not ids:
                return []
            session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(ids))
                            .values(**changes).execution_options(synchronize_session=False))
        else:
            # SQLite has one writer at a time: a single UPDATE both picks and claims.
            due = (select(OutboxMessage.id).where(_claimable(now, channels))
                   .order_by(*_DUE_ORDER).limit(limit).scalar_subquery())
            ids = list(session.scalars(
                update(OutboxMessage).where(OutboxMessage.id.in_(due)).values(**changes)
                .returning(OutboxMessage.id).execution_options(synchronize_session=False)))
            if not ids:
                return []
        rows = list(session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))
                                    .order_by(*_DUE_ORDER)
                                    .execution_options(populate_existing=True)))
        session.expunge_all()
        return rows


def extend(database: Database, *, worker: str, now: datetime,
           lease: timedelta = LEASE) -> int:
    """Extend the claims `worker` still holds (a long delivery keeps its rows)."""
    with database.transaction() as session:
        result = session.execute(
            update(OutboxMessage).where(OutboxMessage.status == SENDING,
                                        OutboxMessage.claimed_by == worker)
            .values(lease_until=now + lease).execution_options(synchronize_session=False))
    return int(getattr(result, "rowcount", 0) or 0)


def retry_delay(attempts: int) -> timedelta:
    """Exponential back-off after the `attempts`-th failed try: 1, 2, 4 … minutes, at most
    4 hours. With the default 12 attempts a mail is given up after about 16 hours."""
    exponent = max(0, min(attempts - 1, 20))
    delay: timedelta = RETRY_BASE * (2 ** exponent)
    return min(delay, RETRY_CAP)


def settle(database: Database, message: OutboxMessage, *, worker: str, now: datetime,
           error: DeliveryError | None, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> str:
    """Record the outcome of one claimed delivery; returns the row's new status.

    Only the worker that holds the claim can settle the row: if its lease ran out and
    another worker claimed it meanwhile, nothing is changed (and "" is returned).
    """
    values: dict[str, Any]
    if error is None:
        values = {"status": SENT, "sent_at": now, "lease_until": None, "last_error": None}
    elif error.permanent or message.attempts >= max_attempts:
        values = {"status": DEAD, "lease_until": None, "last_error": str(error)[:MAX_ERROR_LENGTH]}
    else:
        values = {"status": PENDING, "lease_until": None,
                  "next_attempt_at": now + retry_delay(message.attempts),
                  "last_error": str(error)[:MAX_ERROR_LENGTH]}
    with database.transaction() as session:
        result = session.execute(
            update(OutboxMessage).where(
                OutboxMessage.id == message.id, OutboxMessage.status == SENDING,
                OutboxMessage.claimed_by == worker, OutboxMessage.attempts == message.attempts)
            .values(**values).execution_options(synchronize_session=False))
    if not result.rowcount:  # type: ignore[attr-defined]
        log.warning("outbox %s: claim lost before it was settled", message.id)
        return ""
    status: str = values["status"]
    if status == DEAD:
        log.error("outbox %s (%s to %s) is dead after %d attempts: %s", message.id,
                  message.channel, _loggable(message), message.attempts, error)
    elif status == PENDING:
        log.warning("outbox %s (%s) attempt %d failed, retrying at %s: %s", message.id,
                    message.channel, message.attempts, values["next_attempt_at"], error)
    return status


def _loggable(message: OutboxMessage) -> str:
    """The recipient without a URL's query string (webhook URLs may carry credentials)."""
    return message.recipient.split("?", 1)[0].split("#", 1)[0]


def purge(database: Database, before: datetime) -> int:
    """Delete rows sent before `before`; returns how many. Keep them longer than the
    reminder horizon: a sent reminder's row is what stops it being sent again."""
    with database.transaction() as session:
        result = session.execute(delete(OutboxMessage).where(
            OutboxMessage.status == SENT, OutboxMessage.sent_at < before)
            .execution_options(synchronize_session=False))
        return int(result.rowcount)  # type: ignore[attr-defined]


# --- operators' view ----------------------------------------------------------------------


def list_messages(database: Database, *, status: str | None = None,
                  account_id: str | None = None, limit: int = 100) -> list[OutboxMessage]:
    """Newest first."""
    if status is not None and status not in OUTBOX_STATUSES:
        raise ValidationFailed(f"Unknown outbox status {status!r}.",
                               "Use " + ", ".join(OUTBOX_STATUSES) + ".", field="status")
    if not 1 <= limit <= 1000:
        raise ValidationFailed("limit must be between 1 and 1000.", field="limit")
    statement = select(OutboxMessage)
    if status is not None:
        statement = statement.where(OutboxMessage.status == status)
    if account_id is not None:
        statement = statement.where(OutboxMessage.account_id == account_id)
    statement = statement.order_by(OutboxMessage.created_at.desc(), OutboxMessage.id.desc())
    with database.reading() as session:
        return list(session.scalars(statement.limit(limit)))


MIN_ID_PREFIX = 6


def get_message(database: Database, message_id: str) -> OutboxMessage:
    """A message by its id, or by the start of it (at least 6 characters, as a table
    may show it) when that names exactly one message."""
    message_id = message_id.strip().rstrip("…")
    with database.reading() as session:
        message = session.get(OutboxMessage, message_id)
        if message is None and len(message_id) >= MIN_ID_PREFIX:
            escaped = message_id.replace("\\", "\\\\").replace("%", "\\%").replace(
                "_", "\\_")
            found = list(session.scalars(select(OutboxMessage).where(
                OutboxMessage.id.like(escaped + "%", escape="\\")).limit(2)))
            if len(found) > 1:
                raise NotFound(f"{message_id!r} starts more than one outbox message id.",
                               "Give more of the id.")
            message = found[0] if found else None
    if message is None:
        raise NotFound(f"No outbox message {message_id!r}.",
                       "List them with 'tallykey outbox list'.")
    return message


def retry(database: Database, now: datetime, *, message_id: str | None = None,
          all_dead: bool = False) -> int:
    """Send one message (dead or waiting) again now, or every dead one; returns how many.

    A message that was sent already is refused: resending it would break "once".
    """
    if (message_id is None) == (not all_dead):
        raise ValidationFailed("Name one message id, or ask for all dead messages.")
    values = {"status": PENDING, "attempts": 0, "next_attempt_at": now, "lease_until": None,
              "claimed_by": None}
    with database.transaction() as session:
        if message_id is not None:
            message = session.get(OutboxMessage, message_id)
            if message is None:
                raise NotFound(f"No outbox message {message_id!r}.",
                               "List them with 'tallykey outbox list'.")
            if message.status in (SENT, SENDING):
                raise ValidationFailed(f"Outbox message {message_id} is {message.status}; "
                                       "only pending or dead messages can be retried.")
            condition: Any = OutboxMessage.id == message_id
        else:
            condition = OutboxMessage.status == DEAD
        result = session.execute(update(OutboxMessage).where(condition).values(**values)
                                 .execution_options(synchronize_session=False))
        return int(result.rowcount)  # type: ignore[attr-defined]
