"""Writing and reading the audit trail. Entries never hold a secret."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.accounts.actor import Actor
from tallykey.audit.models import AuditEvent


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
    """Add one entry to the current transaction: it lands exactly when the change does."""
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


def entries_for(
    session: Session,
    account_id: str,
    *,
    target_id: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Newest first, always within one account."""
    query = select(AuditEvent).where(AuditEvent.account_id == account_id)
    if target_id is not None:
        query = query.where(AuditEvent.target_id == target_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    query = query.order_by(AuditEvent.id.desc()).limit(limit)
    return list(session.scalars(query))
