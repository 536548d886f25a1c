"""First run: while the store has no administrator, `tallykey serve` prints a one-time
setup link; opening it creates the first account and its administrator, once, in one
unit of work (the link is spent exactly when the account and its admin exist).

Only the link's SHA-256 is kept, in an (account-less) audit entry, so every node sharing
the database accepts it and its use is on record. A newer link replaces older ones; the
link stops working once used, after `LINK_LIFETIME`, or as soon as any admin exists.

When several nodes start on one empty store, only the first prints a link (`claim_link`
checks and issues in one transaction, serialised across nodes); the others say that
set-up is pending and where the link is.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account, User
from tallykey.accounts.passwords import check_rules
from tallykey.accounts.permissions import ADMIN
from tallykey.accounts.service import AccountService, normalise_email
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.audit.models import AuditEvent
from tallykey.errors import ValidationFailed
from tallykey.tokens.policy import clean_name

LINK_ISSUED = "setup.link_issued"
LINK_USED = "setup.completed"
LINK_LIFETIME = timedelta(hours=24)
SETUP_PATH = "/console/setup/"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def needs_setup(accounts: AccountService) -> bool:
    """True while no administrator exists anywhere in the store."""
    with accounts.database.reading() as session:
        return not session.scalar(select(exists().where(User.role == ADMIN)))


def issue_link(accounts: AccountService, base_url: str) -> str | None:
    """A fresh setup link when the store has no admin (else None). Prints nothing."""
    if not needs_setup(accounts):
        return None
    key = secrets.token_urlsafe(32)
    with accounts.database.transaction() as session:
        trail.record_unattributed(session, action=LINK_ISSUED, at=accounts.clock.now(),
                                  actor_type="operator", label="tallykey serve",
                                  details={"link_sha256": _hash(key)})
    return base_url.rstrip("/") + SETUP_PATH + key


#: The PostgreSQL advisory lock that serialises nodes claiming the first-run link (SQLite
#: write transactions hold the whole store already).
CLAIM_LOCK = 0x7A11_5E70


@dataclass(frozen=True)
class FirstRun:
    """What a starting node says while the store has no administrator: the link when
    this node issued it (only that node prints it), else when the pending one was issued
    by another node and until when it works."""

    link: str | None
    issued_at: datetime
    expires_at: datetime


def claim_link(accounts: AccountService, base_url: str) -> FirstRun | None:
    """On start: None when an administrator exists. Otherwise, in one transaction
    (serialised across nodes): a pending, unexpired link issued before means another node
    printed it (`link` None); else a new link is issued and returned for this node to
    print."""
    if not needs_setup(accounts):
        return None
    with accounts.database.transaction() as session:
        if accounts.database.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK})
        if session.scalar(select(exists().where(User.role == ADMIN))):
            return None
        now = accounts.clock.now()
        latest = _latest(session)
        if (latest is not None and latest.action == LINK_ISSUED
                and latest.occurred_at + LINK_LIFETIME > now):
            return FirstRun(None, latest.occurred_at, latest.occurred_at + LINK_LIFETIME)
        key = secrets.token_urlsafe(32)
        trail.record_unattributed(session, action=LINK_ISSUED, at=now,
                                  actor_type="operator", label="tallykey serve",
                                  details={"link_sha256": _hash(key)})
    return FirstRun(base_url.rstrip("/") + SETUP_PATH + key, now, now + LINK_LIFETIME)


def _latest(session: Session) -> AuditEvent | None:
    """The newest link entry (issued or used)."""
    return session.scalar(select(AuditEvent).where(
        AuditEvent.account_id.is_(None), AuditEvent.action.in_((LINK_ISSUED, LINK_USED)))
        .order_by(AuditEvent.id.desc()).limit(1))


def link_is_valid(accounts: AccountService, key: str) -> bool:
    """The newest link, unused, not too old, and still no admin in the store."""
    if not key or len(key) > 100:
        return False
    with accounts.database.reading() as session:
        return _valid_link(session, accounts, key) is not None


def _valid_link(session: Session, accounts: AccountService, key: str, *, lock: bool = False
                ) -> AuditEvent | None:
    """The link's issue entry if `key` is still good. With `lock`, the entry's row stays
    locked until the transaction ends (PostgreSQL; SQLite's write transactions hold the
    whole store), so two submissions cannot both find the link unused."""
    if session.scalar(select(exists().where(User.role == ADMIN))):
        return None
    latest = _latest(session)
    if latest is None or latest.action != LINK_ISSUED:
        return None
    if lock:
        session.scalar(select(AuditEvent.id).where(AuditEvent.id == latest.id)
                       .with_for_update())
        # whoever held the lock before us may have spent the link or made an admin
        if session.scalar(select(exists().where(
                AuditEvent.account_id.is_(None), AuditEvent.action == LINK_USED,
                AuditEvent.id > latest.id))) or session.scalar(
                select(exists().where(User.role == ADMIN))):
            return None
    if latest.occurred_at + LINK_LIFETIME < accounts.clock.now():
        return None
    stored = str(latest.details.get("link_sha256", ""))
    return latest if secrets.compare_digest(stored.encode(), _hash(key).encode()) else None


@dataclass(frozen=True)
class FirstAdmin:
    account_name: str
    email: str
    password: str
    name: str = ""


def slug_for(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50]
    return slug or "account"


def check(draft: FirstAdmin) -> tuple[str, str]:
    """(account name, e-mail) cleaned, or `ValidationFailed` naming the field."""
    account_name = clean_name(draft.account_name, "account name")
    email = normalise_email(draft.email)
    check_rules(draft.password, email=email)
    return account_name, email


def complete(accounts: AccountService, region: str, key: str, draft: FirstAdmin,
             ip: str | None) -> User:
    """Spend the link and create the account and its administrator: one unit of work.

    Raises `ValidationFailed` for bad input and for a link that is no longer valid; then
    nothing changed and a good link stays usable.
    """
    account_name, email = check(draft)
    with accounts.database.transaction() as session:
        if not key or len(key) > 100 or _valid_link(session, accounts, key, lock=True) is None:
            raise ValidationFailed("This setup link has been used or has expired.",
                                   "Run 'tallykey serve --new-setup-link' to print a new "
                                   "one.")
        if session.scalar(select(exists().where(User.email == email))):
            raise ValidationFailed(f"A user with the e-mail {email} exists already.",
                                   field="email")
        slug = base = slug_for(account_name)
        number = 1
        while session.scalar(select(exists().where(Account.slug == slug))):
            number += 1
            slug = f"{base}-{number}"
        trail.record_unattributed(session, action=LINK_USED, at=accounts.clock.now(),
                                  actor_type="operator", label=email, ip=ip,
                                  details={"account": slug})
        account = accounts.create_account(slug, account_name, region)
        setup_actor = Actor(account.id, None, ADMIN, "first-run setup", ip, "console")
        return accounts.create_user(setup_actor, email, role=ADMIN, name=draft.name,
                                    password=draft.password)
