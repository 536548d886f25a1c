"""Domain events: what happened to a token, handed to listeners inside the same transaction
(the outbox and webhooks subscribe here, so a notice lands exactly when its change does)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from tallykey.actor import Actor
from tallykey.tokens.models import Token

TOKEN_CREATED = "token.created"
TOKEN_UPDATED = "token.updated"
TOKEN_ROTATED = "token.rotated"
TOKEN_REVOKED = "token.revoked"
TOKEN_SECRET_RETRIEVED = "token.secret_retrieved"
TOKEN_SUSPENDED = "token.suspended"
TOKEN_RESUMED = "token.resumed"
#: Approval (account policy `token_approval`): an administrator let a pending token work,
#: or denied it (a denial revokes it, reason `denied`).
TOKEN_APPROVED = "token.approved"
TOKEN_DENIED = "token.denied"
#: Announced on the renewed token; its successor names it in `renewed_from_id`.
TOKEN_RENEWED = "token.renewed"
#: Events that cannot change any verification verdict (no cache needs to hear of them).
VERDICT_NEUTRAL = frozenset({TOKEN_CREATED, TOKEN_SECRET_RETRIEVED})


@dataclass(frozen=True)
class TokenEvent:
    kind: str
    token: Token
    actor: Actor
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Session, TokenEvent], None]
