"""Writing and reading the audit trail. Entries never hold a secret; each is chained to
the one before it when its transaction flushes (see `audit.chain`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tallykey.actor import Actor
from tallykey.audit.models import AuditEvent
from tallykey.errors import ReadOnlyRole


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    at: datetime,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add one entry to the current transaction: it lands exactly when the change does.

    Every change is audited, so this is also the last guard of the auditor role: an
    auditor may be recorded acting on their own person only (signing in, their password,
    second factor and sessions); any other change they would make raises `ReadOnlyRole`
    and its transaction rolls back. (The API and console refuse them long before.)"""
    if actor.is_auditor and not (target_type == "user" and target_id == actor.user_id):
        raise ReadOnlyRole()
    event = AuditEvent(
        account_id=actor.account_id,
        occurred_at=at,
        action=action,
        actor_type=actor.kind,
        actor_id=actor.user_id,
        actor_label=actor.label,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        details=details or {},
    )
    session.add(event)
    return event


def record_unattributed(
    session: Session,
    *,
    action: str,
    at: datetime,
    actor_type: str,
    label: str,
    account_id: str | None = None,
    ip: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an entry whose actor is nobody signed in: a `client` (a failed sign-in, a
    refused reset link or single sign-on; in the account of the user it named, when there
    is one) or `tallykey serve` itself before any account exists (`operator`, the
    first-run link). `label` says who (an address, an e-mail); it is cut to the column."""
    event = AuditEvent(account_id=account_id, occurred_at=at, action=action,
                       actor_type=actor_type, actor_id=None, actor_label=label[:254],
                       target_type=target_type, target_id=target_id,
                       ip=ip[:45] if ip else None, details=details or {})
    session.add(event)
    return event


#: Denied authentications, one entry per token, client IP and reason per usage flush.
AUTH_DENIED = "auth.denied"


def record_denial(session: Session, *, account_id: str, token_id: str, ip: str, reason: str,
                  count: int, first_at: datetime, last_at: datetime,
                  prefix: str | None = None) -> AuditEvent:
    """One aggregated entry for `count` refused requests of one token from one IP for one
    reason (written from the usage flush, never per request)."""
    details: dict[str, Any] = {"reason": reason, "count": count,
                               "first_at": first_at.isoformat(),
                               "last_at": last_at.isoformat()}
    if prefix:
        details["prefix"] = prefix
    return record_unattributed(session, action=AUTH_DENIED, at=last_at, actor_type="client",
                               label=ip, account_id=account_id, ip=ip, target_type="token",
                               target_id=token_id, details=details)
