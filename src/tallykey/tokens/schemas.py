"""How a token is shown to the outside (API, CLI --json): one representation, no secrets
except in `IssuedTokenView`, which exists only in the create, rotate and renew answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, PlainSerializer

from tallykey.controls.rules import period_of, period_start
from tallykey.tokens.models import APPLICATION, Token
from tallykey.tokens.requests import IssuedToken

#: A datetime rendered as ISO 8601 with an explicit offset (`+00:00`, never a bare `Z`).
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class RateLimitView(BaseModel):
    """`limit` requests per `per_seconds`; `shared` by the owner's or the external id's
    tokens, or counted for this token alone (null)."""

    name: str
    limit: int
    per_seconds: int
    shared: str | None = None


class RefillView(BaseModel):
    amount: int
    interval: str


class CreditsView(BaseModel):
    """Usage credits: what is left now, the refill, and when it next happens."""

    remaining: int
    refill: RefillView | None
    next_refill_at: Timestamp | None

    @classmethod
    def of(cls, token: Token, now: datetime) -> CreditsView | None:
        if token.credits_remaining is None:
            return None
        if token.credits_refill_amount is None or token.credits_refill_interval is None:
            return cls(remaining=token.credits_remaining, refill=None, next_refill_at=None)
        interval = token.credits_refill_interval
        period = period_of(interval, now.timestamp())
        stale = token.credits_period is None or token.credits_period < period
        return cls(remaining=token.credits_refill_amount if stale else token.credits_remaining,
                   refill=RefillView(amount=token.credits_refill_amount, interval=interval),
                   next_refill_at=period_start(interval, period + 1))


class TokenView(BaseModel):
    id: str
    name: str
    description: str
    kind: str
    prefix: str
    status: str
    scopes: list[str]
    ip_allowlist: list[str]
    workspace: str | None
    target: str | None
    owner: str | None
    created_by: str | None
    created_at: Timestamp
    created_ip: str | None
    expires_at: Timestamp
    last_used_at: Timestamp | None
    last_used_ip: str | None
    last_used_agent: str | None
    rotated_at: Timestamp | None
    revoked_at: Timestamp | None
    revoked_by: str | None
    revoke_reason: str | None
    rate_limits: list[RateLimitView] = []
    credits: CreditsView | None = None
    metadata: dict[str, Any] | None = None
    external_id: str | None = None
    suspended_at: Timestamp | None = None
    suspended_by: str | None = None
    #: Renewal lineage: the token this one renewed, and the one that renewed it.
    renewed_from_id: str | None = None
    successor_id: str | None = None
    #: The identity (SPEC §16) the token belongs to.
    identity_id: str | None = None
    #: The plan (SPEC §16) the token is on (its own; an identity's plan shows there).
    plan_id: str | None = None

    @classmethod
    def of(cls, token: Token, now: datetime) -> TokenView:
        return cls(
            id=token.id, name=token.name, description=token.description, kind=token.kind,
            prefix=token.prefix, status=token.status_at(now), scopes=list(token.scopes),
            ip_allowlist=list(token.ip_allowlist),
            workspace=token.workspace.slug if token.workspace else None,
            target=token.target,
            owner=token.owner.email if token.owner else None,
            created_by=token.creator.email if token.creator else "operator",
            created_at=token.created_at, created_ip=token.created_ip,
            expires_at=token.expires_at, last_used_at=token.last_used_at,
            last_used_ip=token.last_used_ip, last_used_agent=token.last_used_agent,
            rotated_at=token.rotated_at, revoked_at=token.revoked_at,
            revoked_by=(token.revoker.email if token.revoker else
                        ("operator" if token.revoked_at else None)),
            revoke_reason=token.revoke_reason,
            rate_limits=[RateLimitView.model_validate(r) for r in token.rate_limits or []],
            credits=CreditsView.of(token, now), metadata=token.meta,
            external_id=token.external_id,
            suspended_at=token.suspended_at,
            suspended_by=(token.suspender.email if token.suspender else
                          ("operator" if token.suspended_at else None)),
            renewed_from_id=token.renewed_from_id, successor_id=token.successor_id,
            identity_id=token.identity_id, plan_id=token.plan_id,
        )


class IssuedTokenView(TokenView):
    """The create/rotate/renew answer: the one time the full secret leaves the server.
    After a rotation or a renewal, `previous_secret_expires_at` says when the old secret
    stops working."""

    token: str
    username: str | None = None
    password: str | None = None
    warnings: list[str] = []
    previous_secret_expires_at: Timestamp | None = None

    @classmethod
    def of_issued(cls, issued: IssuedToken, now: datetime) -> IssuedTokenView:
        base = TokenView.of(issued.token, now).model_dump()
        application = issued.token.kind == APPLICATION
        return cls(
            **base,
            token=issued.value,
            username=issued.secret.prefix if application else None,
            password=issued.secret.password if application else None,
            warnings=issued.warnings,
            previous_secret_expires_at=issued.previous_secret_expires_at,
        )
