"""The operator API, `/api/v1/operator/...` (SPEC §11): the platform that runs tallykey
provisions its tenants from its own back office: accounts, their first users and their
workspaces. Authenticated by an operator token (`tallykey operator-tokens create`),
never by an account's token; every change is audited in the account it touches."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tallykey.accounts.models import Account
from tallykey.accounts.service import PolicyChanges
from tallykey.api.deps import RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import (
    ROLE_DESCRIPTION,
    Strict,
    UserView,
    WorkspaceCreate,
    WorkspaceView,
)
from tallykey.auth.caller import header_credential
from tallykey.errors import TooManyAttempts, Unauthenticated, ValidationFailed
from tallykey.network.throttle import FailureThrottle
from tallykey.operators.models import OperatorToken
from tallykey.tokens.schemas import Timestamp
from tallykey.web.deps import ip_of

router = APIRouter(prefix="/api/v1/operator", tags=["operator"],
                   responses=error_responses(400, 401, 404, 409, 413, 422, 429))
FAILURES_PER_MINUTE = 10


async def operator_token(request: Request) -> OperatorToken:
    """The operator token of the request, or 401 (throttled per client IP)."""
    runtime = request.app.state.runtime
    limiter: FailureThrottle | None = getattr(request.app.state, "operator_limiter", None)
    if limiter is None:
        limiter = request.app.state.operator_limiter = FailureThrottle(FAILURES_PER_MINUTE)
    ip = ip_of(request)
    wait = limiter.retry_after(ip)
    if wait is not None:
        raise TooManyAttempts(wait)
    try:
        return await run_in_threadpool(runtime.operators.authenticate,
                                       header_credential(request))
    except Unauthenticated:
        limiter.failed(ip)
        raise


OperatorDep = Annotated[OperatorToken, Depends(operator_token)]


class Policies(Strict):
    max_validity_days: int | None = None
    reminder_days: list[int] | None = Field(default=None, max_length=10)
    retrievable_application_tokens: bool | None = None
    ip_allowlist: list[str] | None = Field(default=None, max_length=1000)
    new_network_alerts: bool | None = None

    def changes(self) -> PolicyChanges:
        return PolicyChanges(**self.model_dump(include=set(Policies.model_fields)))


class OperatorAccountCreate(Policies):
    slug: str = Field(max_length=64, description="lowercase letters, digits and dashes")
    name: str = Field(default="", max_length=200)
    region: str | None = Field(default=None, max_length=8,
                               description="this deployment's region (the default); "
                               "another region's accounts are created there")


class OperatorAccountUpdate(Policies):
    active: bool | None = Field(default=None, description="false suspends the account: "
                                "its tokens stop on every node, its users cannot sign in")
    name: str | None = Field(default=None, max_length=200)


class OperatorAccountView(BaseModel):
    id: str
    slug: str
    name: str
    region: str
    active: bool
    created_at: Timestamp
    max_validity_days: int
    reminder_days: list[int]
    retrievable_application_tokens: bool
    ip_allowlist: list[str]
    new_network_alerts: bool

    @classmethod
    def of(cls, account: Account) -> OperatorAccountView:
        return cls(id=account.id, slug=account.slug, name=account.name,
                   region=account.region, active=account.active,
                   created_at=account.created_at,
                   max_validity_days=account.max_validity_days,
                   reminder_days=list(account.reminder_days),
                   retrievable_application_tokens=account.retrievable_application_tokens,
                   ip_allowlist=list(account.ip_allowlist),
                   new_network_alerts=account.new_network_alerts)


class OperatorAccountList(BaseModel):
    items: list[OperatorAccountView]
    next_cursor: str | None


class OperatorAccountChange(OperatorAccountView):
    """An updated account; `propagation` when the change reached the nodes' caches."""

    propagation: dict[str, object] | None = None


class OperatorUserCreate(Strict):
    email: str = Field(max_length=254)
    name: str = Field(default="", max_length=200)
    role: Literal["admin", "member", "auditor"] = Field(default="admin",
                                                        description=ROLE_DESCRIPTION)
    password: str | None = Field(default=None, max_length=1000)
    workspaces: dict[str, list[str]] = Field(
        default_factory=dict, description="workspace id or slug -> scopes held there")


@router.post("/accounts", status_code=201, response_model=OperatorAccountView)
def create_account(body: OperatorAccountCreate, token: OperatorDep, request: Request,
                   runtime: RuntimeDep) -> OperatorAccountView:
    """Create a tenant in this region, optionally with its policies."""
    if body.region is not None and body.region != runtime.settings.region:
        raise ValidationFailed(
            f"This deployment serves region {runtime.settings.region!r}, not "
            f"{body.region!r}.", f"Create the account on the {body.region} deployment.",
            field="region")
    return OperatorAccountView.of(runtime.operators.create_account(
        token, ip_of(request), body.slug, body.name, body.changes()))


@router.get("/accounts", response_model=OperatorAccountList)
def list_accounts(token: OperatorDep, runtime: RuntimeDep,
                  limit: Annotated[int, Query(ge=1, le=200)] = 50,
                  after: Annotated[str | None, Query(max_length=64,
                                                     description="cursor: a slug")] = None
                  ) -> OperatorAccountList:
    """Every account of this deployment, by slug, one page at a time."""
    found = runtime.operators.list_accounts(after, limit + 1)
    items = found[:limit]
    return OperatorAccountList(items=[OperatorAccountView.of(a) for a in items],
                               next_cursor=items[-1].slug if len(found) > limit else None)


@router.get("/accounts/{slug}", response_model=OperatorAccountView)
def get_account(slug: str, token: OperatorDep, runtime: RuntimeDep) -> OperatorAccountView:
    return OperatorAccountView.of(runtime.operators.find_account(slug))


@router.patch("/accounts/{slug}", response_model=OperatorAccountChange)
def update_account(slug: str, body: OperatorAccountUpdate, token: OperatorDep,
                   request: Request, response: Response,
                   runtime: RuntimeDep) -> OperatorAccountChange:
    """Suspend (`active: false`) or resume a tenant, rename it, change its policies. A
    suspension answers once every live node refuses the account's tokens."""
    account = runtime.operators.update_account(
        token, ip_of(request), slug, active=body.active, name=body.name,
        policies=body.changes())
    if body.active is False:
        for user in runtime.accounts.list_users(runtime.operators.actor(token, account.id,
                                                                        None)):
            runtime.sessions.close_all_for(user.id)
    propagation = show_propagation(response, runtime.propagation.settle(account.id))
    return OperatorAccountChange(**OperatorAccountView.of(account).model_dump(),
                                 propagation=propagation.model_dump())


@router.post("/accounts/{slug}/users", status_code=201, response_model=UserView)
def create_user(slug: str, body: OperatorUserCreate, token: OperatorDep, request: Request,
                runtime: RuntimeDep) -> UserView:
    """Add a user to a tenant: its first administrator, or members with permissions per
    workspace."""
    user = runtime.operators.add_user(token, ip_of(request), slug, body.email, role=body.role,
                                      name=body.name, password=body.password,
                                      grants=body.workspaces)
    actor = runtime.operators.actor(token, user.account_id, None)
    return UserView.of(runtime.accounts.get_user(actor, user.id))


@router.post("/accounts/{slug}/workspaces", status_code=201, response_model=WorkspaceView)
def create_workspace(slug: str, body: WorkspaceCreate, token: OperatorDep, request: Request,
                     runtime: RuntimeDep) -> WorkspaceView:
    """Add a workspace to a tenant."""
    return WorkspaceView.of(runtime.operators.add_workspace(
        token, ip_of(request), slug, body.chosen_slug, body.name, body.timezone))
