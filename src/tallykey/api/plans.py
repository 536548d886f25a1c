"""Plans over the API (SPEC §16): `POST|GET /api/v1/plans`,
`GET|PATCH|DELETE /api/v1/plans/{id}`. Thin adapters over
`tallykey.plans.service.PlanService`. Administrators write; everyone in the account
reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import RateLimitIn, RefillIn, Strict
from tallykey.feed.propagation import PropagationView
from tallykey.plans.models import Plan
from tallykey.plans.service import MAX_PAGE_SIZE, PlanChanges, PlanDraft, PlanUsers, refill_of
from tallykey.tokens.schemas import RateLimitView, RefillView, Timestamp

router = APIRouter(prefix="/api/v1", tags=["plans"],
                   responses=error_responses(400, 401, 403, 404, 409, 422, 429, 503))


class PlanCreate(Strict):
    name: str = Field(max_length=10_000, description="unique in the account")
    description: str = Field(default="", max_length=10_000)
    rate_limits: list[RateLimitIn] = Field(
        default_factory=list, max_length=10, description="counted for each token of the "
        "plan (unless the token has rate limits of its own)")
    refill: RefillIn | None = Field(
        default=None, description="each token of the plan without credits of its own gets "
        "`amount` credits per day or month")
    scopes: list[str] | None = Field(
        default=None, max_length=50, description="the scopes ceiling: a token of the plan "
        "passes with no scope outside it; null: no ceiling")


class PlanUpdate(Strict):
    name: str | None = Field(default=None, max_length=10_000)
    description: str | None = Field(default=None, max_length=10_000)
    rate_limits: list[RateLimitIn] | None = Field(
        default=None, max_length=10, description="replaces every limit; [] removes them")
    refill: RefillIn | None = Field(default=None, description="sets the refill; null "
                                    "removes it")
    scopes: list[str] | None = Field(default=None, max_length=50, description="sets the "
                                     "ceiling; null removes it")


class PlanView(BaseModel):
    id: str
    name: str
    description: str
    rate_limits: list[RateLimitView]
    refill: RefillView | None
    scopes: list[str] | None = Field(description="the scopes ceiling (null: none)")
    tokens: int = Field(description="how many tokens are on it (their own plan_id)")
    identities: int = Field(description="how many identities are on it")
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, plan: Plan, users: PlanUsers | None = None) -> PlanView:
        users = users or PlanUsers()
        refill = refill_of(plan)
        return cls(id=plan.id, name=plan.name, description=plan.description,
                   rate_limits=[RateLimitView.model_validate(r)
                                for r in plan.rate_limits or []],
                   refill=RefillView(**refill) if refill else None,
                   scopes=None if plan.scopes is None else list(plan.scopes),
                   tokens=users.tokens, identities=users.identities,
                   created_at=plan.created_at, updated_at=plan.updated_at)


class PlanList(BaseModel):
    items: list[PlanView]
    next_cursor: str | None


class PlanChangeView(PlanView):
    """The answer to PATCH: the plan, and how far the change reached (the nodes that
    applied it; acknowledged like a revocation)."""

    propagation: PropagationView


class PlanDeleted(BaseModel):
    id: str
    deleted: bool
    detached_tokens: list[str]
    detached_identities: list[str]
    propagation: PropagationView


def _changes(body: PlanUpdate) -> dict[str, Any]:
    named = body.model_fields_set
    found: dict[str, Any] = {}
    if "rate_limits" in named and body.rate_limits is not None:
        found["rate_limits"] = [r.model_dump() for r in body.rate_limits]
    if "refill" in named:
        if body.refill is None:
            found["remove_refill"] = True
        else:
            found["refill"] = body.refill.model_dump()
    if "scopes" in named:
        if body.scopes is None:
            found["remove_scopes"] = True
        else:
            found["scopes"] = body.scopes
    return found


@router.post("/plans", status_code=201, response_model=PlanView)
def create_plan(body: PlanCreate, actor: ManagementActor, runtime: RuntimeDep) -> PlanView:
    """Create a plan (administrators). 409 when the account has one of this `name`."""
    plan = runtime.plans.create(actor, PlanDraft(
        name=body.name, description=body.description,
        rate_limits=[r.model_dump() for r in body.rate_limits],
        refill=body.refill.model_dump() if body.refill else None, scopes=body.scopes))
    return PlanView.of(plan)


@router.get("/plans", response_model=PlanList)
def list_plans(actor: ManagementActor, runtime: RuntimeDep,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
               after: Annotated[str | None, Query(max_length=500,
                                                  description="next_cursor of the "
                                                  "previous page")] = None) -> PlanList:
    """The account's plans by name, a page at a time."""
    page = runtime.plans.list_plans(actor, limit=limit, after=after)
    users = runtime.plans.users(actor)
    return PlanList(items=[PlanView.of(p, users.get(p.id)) for p in page.items],
                    next_cursor=page.next_cursor)


@router.get("/plans/{plan_id}", response_model=PlanView)
def get_plan(plan_id: str, actor: ManagementActor, runtime: RuntimeDep) -> PlanView:
    """One plan (by id or name)."""
    plan = runtime.plans.get(actor, plan_id)
    return PlanView.of(plan, runtime.plans.users(actor).get(plan.id))


@router.patch("/plans/{plan_id}", response_model=PlanChangeView)
def update_plan(plan_id: str, body: PlanUpdate, actor: ManagementActor,
                runtime: RuntimeDep, response: Response) -> PlanChangeView:
    """Change a plan (administrators). Every token on it uses the new limits, refill and
    ceiling on every node once answered (`propagation`, as for a revocation)."""
    changed = runtime.plans.update(actor, plan_id, PlanChanges(
        name=body.name, description=body.description, **_changes(body)))
    plan = changed.value
    propagation = show_propagation(response, changed.propagation, "applied")
    view = PlanView.of(plan, runtime.plans.users(actor).get(plan.id))
    return PlanChangeView(**view.model_dump(), propagation=propagation)


@router.delete("/plans/{plan_id}", response_model=PlanDeleted)
def delete_plan(plan_id: str, actor: ManagementActor, runtime: RuntimeDep,
                response: Response,
                detach: Annotated[bool, Query(description="also take its tokens and "
                                              "identities off it (they keep working)")]
                = False) -> PlanDeleted:
    """Delete a plan (administrators). 409 while tokens or identities are on it, unless
    `?detach=true`: then they leave it, on every node once answered."""
    plan = runtime.plans.get(actor, plan_id)
    deleted = runtime.plans.delete(actor, plan.id, detach=detach)
    detached = deleted.value
    return PlanDeleted(id=plan.id, deleted=True, detached_tokens=detached.tokens,
                       detached_identities=detached.identities,
                       propagation=show_propagation(response, deleted.propagation,
                                                    "applied"))
