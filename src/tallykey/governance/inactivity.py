"""The inactivity policy (`revoke_inactive_days`): a token unused that long — since its
last use, or since its approval or creation when it was never used; a token still
awaiting approval is left to the approvers — is revoked by the worker with
`revoke_reason: "inactive"`, propagated and audited like any revocation. Its owner is
mailed 7 days before (halfway, for a limit of 7 days or less), once per stretch of
disuse. Time is the worker's clock, which is the database's (`feed.clock`).

A token is revoked `MARGIN` after the limit, not at it: a node writes its uses at its
next flush (a node cut off from the store, when it is back, up to the stale window
later), so a token in use right now is not revoked for a last use not written yet.
Decoys (SPEC §17) are never used by design and stay out of the policy."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from tallykey.accounts.models import Account
from tallykey.db.engine import Database
from tallykey.notify.notices import Notifier
from tallykey.notify.outbox import notices_present
from tallykey.tokens.models import DECOY, Token
from tallykey.tokens.service import TokenService, unused_from

log = logging.getLogger(__name__)

WARN_BEFORE = timedelta(days=7)
#: How long past the limit a token is left alone, for uses the nodes have not written
#: yet (a flush a heartbeat away; `TALLYKEY_STALE_IF_ERROR` is at most an hour).
MARGIN = timedelta(hours=1)


@dataclass
class InactivityReport:
    warned: int = 0
    revoked: int = 0


def warning_delay(days: int) -> timedelta:
    """How long after its last use a token's owner is warned: 7 days before the limit,
    or halfway to it when the limit is 7 days or less."""
    limit = timedelta(days=days)
    return limit - WARN_BEFORE if limit > WARN_BEFORE else limit / 2


def notice_key(token_id: str, unused_since: datetime) -> str:
    """One warning per token per stretch of disuse (a use starts a new stretch)."""
    return f"inactive:{token_id}:{unused_since.isoformat()}"


def sweep_inactive(database: Database, tokens: TokenService, notifier: Notifier,
                   now: datetime) -> InactivityReport:
    """Warn about and revoke the unused tokens of every account with the policy on."""
    report = InactivityReport()
    with database.reading() as session:
        policies = list(session.execute(select(Account.id, Account.revoke_inactive_days)
                                        .where(Account.revoke_inactive_days.is_not(None),
                                               Account.active.is_(True))))
    for account_id, days in policies:
        assert days is not None
        limit = timedelta(days=days)
        # A first cut in SQL (a use, approval or creation long enough ago); `unused_from`
        # decides, since a never-used token's approval may be later than its creation.
        unused_since = func.coalesce(Token.last_used_at, Token.created_at)
        with database.reading() as session:
            rows = list(session.scalars(
                select(Token)
                .where(Token.account_id == account_id, Token.revoked_at.is_(None),
                       Token.pending_at.is_(None), Token.kind != DECOY,
                       Token.expires_at > now,
                       unused_since <= now - warning_delay(days))))
        due: dict[str, tuple[str, datetime]] = {}
        for token in rows:
            token_id, since = token.id, unused_from(token)
            if since > now - warning_delay(days):
                continue
            if since <= now - limit - MARGIN:
                if tokens.revoke_unused(token_id, since, now) is not None:
                    report.revoked += 1
            else:
                due[notice_key(token_id, since)] = (token_id, since)
        report.warned += _warn(database, notifier, due, limit, now)
    if report.revoked or report.warned:
        log.info("inactivity policy: %d tokens revoked, %d warnings", report.revoked,
                 report.warned)
    return report


def _warn(database: Database, notifier: Notifier, due: dict[str, tuple[str, datetime]],
          limit: timedelta, now: datetime) -> int:
    if not due:
        return 0
    with database.reading() as session:
        told = notices_present(session, due)
    added = 0
    for key in sorted(set(due) - told):
        token_id, since = due[key]
        with database.transaction() as session:
            token = session.get(Token, token_id)
            if token is None or token.revoked_at is not None:
                continue
            added += notifier.inactivity_warning(session, token, notice=key,
                                                 unused_since=since,
                                                 revokes_at=since + limit, now=now)
    return added
