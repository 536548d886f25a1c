"""The weekly digest (SPEC §17): once a week per account, each administrator (unless
they turned it off) is mailed the account's live tokens that expire within 14 days and
those never used (not decoys: they are never used by design, and a list of unused tokens
invites a clean-up). `accounts.digest_sent_at` records the week's send, claimed in the
same transaction as the mails, so workers on several nodes send it once."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update

from tallykey.accounts.models import Account
from tallykey.db.engine import Database
from tallykey.notify.notices import Notifier
from tallykey.tokens.models import DECOY, Token

log = logging.getLogger(__name__)

EVERY = timedelta(days=7)
EXPIRING_WITHIN = timedelta(days=14)
#: The longest list of each kind in one mail (the console has the rest).
MAX_LISTED = 100


def _due(now: datetime) -> ColumnElement[bool]:
    """The account's last digest is a week old; the first comes a week after the account
    was created (a new account has nothing to digest yet)."""
    return or_(Account.digest_sent_at <= now - EVERY,
               and_(Account.digest_sent_at.is_(None), Account.created_at <= now - EVERY))


def send_digests(database: Database, notifier: Notifier, now: datetime) -> int:
    """Send the digest of every account whose last one is a week old; returns how many
    mails were enqueued. Nothing to list: no mail, and the week counts as done."""
    with database.reading() as session:
        due = list(session.scalars(select(Account.id).where(Account.active.is_(True),
                                                             _due(now))))
    added = 0
    for account_id in due:
        with database.transaction() as session:
            claimed = session.execute(
                update(Account).where(Account.id == account_id, _due(now))
                .values(digest_sent_at=now))
            if not claimed.rowcount:  # type: ignore[attr-defined]
                continue  # another worker sent it meanwhile
            account = session.get_one(Account, account_id)
            live = select(Token).where(Token.account_id == account_id,
                                       Token.revoked_at.is_(None), Token.expires_at > now)
            expiring = list(session.scalars(
                live.where(Token.expires_at <= now + EXPIRING_WITHIN)
                .order_by(Token.expires_at, Token.id).limit(MAX_LISTED)))
            unused = list(session.scalars(
                live.where(Token.last_used_at.is_(None), Token.kind != DECOY)
                .order_by(Token.created_at, Token.id).limit(MAX_LISTED)))
            if expiring or unused:
                added += notifier.digest(session, account,
                                         notice=f"digest:{account_id}:{now.date().isoformat()}",
                                         expiring=expiring, unused=unused, now=now)
    if added:
        log.info("weekly digest: %d mails", added)
    return added
