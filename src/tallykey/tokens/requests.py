"""What callers ask of the token service and what it answers: a token to issue
(`TokenDraft`), changes (`TokenChanges`), a renewal (`Renewal`), a listing (`TokenQuery`,
`TokenPage`), an issued token with its secret (`IssuedToken`), and which columns a
renewal's successor copies (`INHERITED`, `NOT_INHERITED`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from tallykey.tokens import format as token_format
from tallykey.tokens import policy
from tallykey.tokens.models import PERSONAL, Token

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class TokenDraft:
    """What a caller asks for when issuing a token (already parsed, not yet validated)."""

    name: str
    expires_at: datetime | date | None = None
    expires_in_days: int | None = None
    kind: str = PERSONAL
    description: str = ""
    workspace: str | None = None
    scopes: Sequence[str] = ()
    ip_allowlist: Sequence[str] = ()
    target: str | None = None
    #: Key controls (SPEC §13): `[{"name", "limit", "per_seconds", "shared"}]`, credits
    #: (`{"remaining", "refill": {"amount", "interval"} | None}`), metadata, external id.
    rate_limits: Sequence[Mapping[str, Any]] = ()
    credits: Mapping[str, Any] | None = None
    metadata: Any = None
    external_id: str | None = None
    #: The identity (SPEC §16) the token belongs to: its id or external id.
    identity_id: str | None = None
    #: The plan (SPEC §16) the token is on: its id or name.
    plan_id: str | None = None


@dataclass(frozen=True)
class TokenChanges:
    """Editable fields; None means "leave as is". Expiry may only move earlier."""

    name: str | None = None
    description: str | None = None
    ip_allowlist: Sequence[str] | None = None
    target: str | None = None
    scopes: Sequence[str] | None = None
    expires_at: datetime | None = None
    rate_limits: Sequence[Mapping[str, Any]] | None = None
    #: New credits; `remove_credits` takes them away (the token is no longer costed).
    credits: Mapping[str, Any] | None = None
    remove_credits: bool = False
    #: `{}` clears the metadata, "" the external id.
    metadata: Any = None
    external_id: str | None = None
    #: Move the token to this identity (id or external id); `detach_identity` takes it
    #: out of its identity.
    identity_id: str | None = None
    detach_identity: bool = False
    #: Put the token on this plan (id or name); `detach_plan` takes it off its plan.
    plan_id: str | None = None
    detach_plan: bool = False


@dataclass(frozen=True)
class Renewal:
    """What a renewal asks for: the successor's expiry (exactly one of the two) and how
    long the renewed token's secret keeps working."""

    expires_at: datetime | date | None = None
    expires_in_days: int | None = None
    grace_seconds: int = policy.DEFAULT_GRACE_SECONDS


#: Attributes of `Token` (one per column) a renewal's successor copies from the token it
#: renews. Every other one is in `NOT_INHERITED`; a test fails for a new column that is in
#: neither. Credits move with their balance and period, so a renewal never resets them:
#: the successor holds the balance, and the renewed token's secret spends from it during
#: its grace period (`auth.credits`); the renewed token's own columns are left as they
#: were and no longer counted. Rate-limit windows go on per renewal chain (`auth.rates`).
INHERITED = ("account_id", "workspace_id", "kind", "region", "name", "description",
             "scopes", "target", "ip_allowlist", "admin_limits", "owner_id", "rate_limits",
             "credits_remaining", "credits_refill_amount", "credits_refill_interval",
             "credits_period", "meta", "external_id", "identity_id", "plan_id",
             "plan_credits_remaining", "plan_credits_period")
#: Columns a successor does not copy: its identity, its own history and lineage.
NOT_INHERITED = ("id", "public_id", "created_by_id", "created_at", "created_ip",
                 "updated_at", "expires_at", "revoked_at", "revoked_by_id", "revoke_reason",
                 "rotated_at", "last_used_at", "last_used_ip", "last_used_agent",
                 "suspended_at", "suspended_by_id", "suspend_reason",
                 "renewed_from_id", "successor_id", "pending_at", "approved_at")


@dataclass(frozen=True)
class IssuedToken:
    """A token record with its secret: the only moment the secret exists outside a hash."""

    token: Token
    secret: token_format.ParsedToken
    warnings: list[str] = field(default_factory=list)
    #: After a rotation: when the previous secret stops working.
    previous_secret_expires_at: datetime | None = None

    @property
    def value(self) -> str:
        return str(self.secret)


@dataclass(frozen=True)
class TokenQuery:
    status: str | None = None
    search: str | None = None
    kind: str | None = None
    workspace: str | None = None
    target: str | None = None
    created_by: str | None = None
    external_id: str | None = None
    #: The tokens of one identity, by its id or its external id (of the actor's account).
    identity: str | None = None
    after: str | None = None
    limit: int = DEFAULT_PAGE_SIZE


@dataclass(frozen=True)
class TokenPage:
    items: list[Token]
    next_cursor: str | None
