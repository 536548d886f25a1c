"""Identities over the API (SPEC §16): `POST|GET /api/v1/identities`,
`GET|PATCH|DELETE /api/v1/identities/{id}`. Thin adapters over
`tallykey.identities.service.IdentityService`. Administrators write; administrators and
auditors read every identity, a member the identities of their own tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import CreditsIn, Strict
from tallykey.controls.rules import period_of, period_start
from tallykey.feed.propagation import PropagationView
from tallykey.identities.models import Identity
from tallykey.identities.service import (
    MAX_PAGE_SIZE,
    IdentityChanges,
    IdentityDraft,
    balance,
)
from tallykey.tokens.schemas import RateLimitView, RefillView, Timestamp, TokenView

router = APIRouter(prefix="/api/v1", tags=["identities"],
                   responses=error_responses(400, 401, 403, 404, 409, 422, 429, 503))


class IdentityRateLimitIn(Strict):
    name: str = Field(default="default", max_length=32)
    limit: int = Field(description="requests per window, by all the identity's tokens "
                       "together: 1 to 1000000000")
    per_seconds: int = Field(description="the window: 1 to 2592000 seconds (30 days)")


class IdentityCreate(Strict):
    external_id: str = Field(max_length=255, description="your id for this customer or "
                             "integration; unique in the account")
    name: str | None = Field(default=None, max_length=10_000,
                             description="defaults to the external id")
    metadata: dict[str, Any] | None = Field(
        default=None, description="a JSON object of at most 4 KB, returned on verify")
    rate_limits: list[IdentityRateLimitIn] = Field(default_factory=list, max_length=10)
    credits: CreditsIn | None = Field(default=None, description="one pool spent by all "
                                      "the identity's tokens")
    plan_id: str | None = Field(default=None, max_length=255, description="the plan (id "
                                "or name) of its tokens that are on none of their own")


class IdentityUpdate(Strict):
    external_id: str | None = Field(default=None, max_length=255)
    name: str | None = Field(default=None, max_length=10_000)
    metadata: dict[str, Any] | None = Field(default=None, description="replaces it; {} "
                                            "clears it")
    rate_limits: list[IdentityRateLimitIn] | None = Field(
        default=None, max_length=10, description="replaces every limit; [] removes them")
    credits: CreditsIn | None = Field(default=None, description="sets the pool; null "
                                      "removes it (its tokens are no longer costed by it)")
    plan_id: str | None = Field(default=None, max_length=255, description="puts it on "
                                "this plan (id or name); null takes it off its plan")


class IdentityCreditsView(BaseModel):
    remaining: int
    refill: RefillView | None
    next_refill_at: Timestamp | None


class IdentityView(BaseModel):
    id: str
    external_id: str
    name: str
    metadata: dict[str, Any] | None
    rate_limits: list[RateLimitView]
    credits: IdentityCreditsView | None
    tokens: int = Field(description="how many tokens belong to it")
    plan_id: str | None = Field(default=None, description="its plan (SPEC §16), if any")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, identity: Identity, now: datetime, tokens: int) -> IdentityView:
        return cls(id=identity.id, external_id=identity.external_id, name=identity.name,
                   metadata=identity.meta,
                   rate_limits=[RateLimitView.model_validate(r)
                                for r in identity.rate_limits or []],
                   credits=credits_view(identity, now), tokens=tokens,
                   plan_id=identity.plan_id,
                   created_at=identity.created_at, updated_at=identity.updated_at)


class IdentityDetail(IdentityView):
    """One identity with the tokens of it that the caller sees."""

    token_list: list[TokenView]


class IdentityChangeView(IdentityView):
    """The answer to PATCH: the identity, and how far the change reached (the nodes that
    applied it; acknowledged like a revocation)."""

    propagation: PropagationView


class IdentityDeleted(BaseModel):
    id: str
    deleted: bool
    detached_tokens: list[str]
    propagation: PropagationView


def credits_view(identity: Identity, now: datetime) -> IdentityCreditsView | None:
    left = balance(identity, now)
    if left is None:
        return None
    interval = identity.credits_refill_interval
    if identity.credits_refill_amount is None or interval is None:
        return IdentityCreditsView(remaining=left, refill=None, next_refill_at=None)
    return IdentityCreditsView(
        remaining=left, refill=RefillView(amount=identity.credits_refill_amount,
                                          interval=interval),
        next_refill_at=period_start(interval, period_of(interval, now.timestamp()) + 1))


def _controls(body: IdentityCreate | IdentityUpdate) -> dict[str, Any]:
    named = body.model_fields_set
    found: dict[str, Any] = {}
    if "rate_limits" in named and body.rate_limits is not None:
        found["rate_limits"] = [r.model_dump() for r in body.rate_limits]
    if "credits" in named:
        if body.credits is None:
            found["remove_credits"] = True
        else:
            found["credits"] = body.credits.model_dump()
    if "plan_id" in named and isinstance(body, IdentityUpdate):
        if body.plan_id is None or not body.plan_id.strip():
            found["detach_plan"] = True
        else:
            found["plan_id"] = body.plan_id
    return found


@router.post("/identities", status_code=201, response_model=IdentityView)
def create_identity(body: IdentityCreate, actor: ManagementActor,
                    runtime: RuntimeDep) -> IdentityView:
    """Create an identity (administrators). 409 when the account has one with this
    `external_id` already."""
    identity = runtime.identities.create(actor, IdentityDraft(
        external_id=body.external_id, name=body.name, metadata=body.metadata,
        rate_limits=[r.model_dump() for r in body.rate_limits],
        credits=body.credits.model_dump() if body.credits else None,
        plan_id=body.plan_id))
    return IdentityView.of(identity, runtime.clock.now(), 0)


@router.get("/identities", response_model=list[IdentityView])
def list_identities(actor: ManagementActor, runtime: RuntimeDep,
                    search: Annotated[str | None, Query(max_length=200)] = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = MAX_PAGE_SIZE
                    ) -> list[IdentityView]:
    """The account's identities by external id (a member: those of their own tokens)."""
    found = runtime.identities.list_identities(actor, search=search, limit=limit)
    counts = runtime.identities.token_counts(actor)
    now = runtime.clock.now()
    return [IdentityView.of(i, now, counts.get(i.id, 0)) for i in found]


@router.get("/identities/{identity_id}", response_model=IdentityDetail)
def get_identity(identity_id: str, actor: ManagementActor,
                 runtime: RuntimeDep) -> IdentityDetail:
    """One identity (by id or external id), with its pool's credits now and its tokens."""
    identity = runtime.identities.get(actor, identity_id)
    tokens = runtime.identities.tokens_of(actor, identity.id)
    now = runtime.clock.now()
    view = IdentityView.of(identity, now, len(tokens))
    return IdentityDetail(**view.model_dump(), token_list=[TokenView.of(t, now)
                                                           for t in tokens])


@router.patch("/identities/{identity_id}", response_model=IdentityChangeView)
def update_identity(identity_id: str, body: IdentityUpdate, actor: ManagementActor,
                    runtime: RuntimeDep, response: Response) -> IdentityChangeView:
    """Change an identity (administrators). Its tokens use the new credits, limits and
    metadata on every node once answered (`propagation`, as for a revocation)."""
    changed = runtime.identities.update(actor, identity_id, IdentityChanges(
        external_id=body.external_id, name=body.name,
        metadata=body.metadata if "metadata" in body.model_fields_set else None,
        **_controls(body)))
    identity = changed.value
    propagation = show_propagation(response, changed.propagation, "applied")
    counts = runtime.identities.token_counts(actor)
    view = IdentityView.of(identity, runtime.clock.now(), counts.get(identity.id, 0))
    return IdentityChangeView(**view.model_dump(), propagation=propagation)


@router.delete("/identities/{identity_id}", response_model=IdentityDeleted)
def delete_identity(identity_id: str, actor: ManagementActor, runtime: RuntimeDep,
                    response: Response,
                    detach: Annotated[bool, Query(description="also take its tokens out "
                                                  "of it (they keep working)")] = False
                    ) -> IdentityDeleted:
    """Delete an identity (administrators). 409 while tokens belong to it, unless
    `?detach=true`: then its tokens leave it, on every node once answered."""
    identity = runtime.identities.get(actor, identity_id)
    detached = runtime.identities.delete(actor, identity.id, detach=detach)
    return IdentityDeleted(id=identity.id, deleted=True, detached_tokens=detached.value,
                           propagation=show_propagation(response, detached.propagation,
                                                        "applied"))
