"""The token routes of the management API: issue, import, list, read, change, revoke,
rotate, renew (also a token renewing itself), suspend and resume, approve and deny, end
a grace period, retrieve a secret; the targets and scopes a new token may name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from tallykey.accounts.models import Workspace
from tallykey.actor import Actor
from tallykey.api.deps import ManagementActor, RuntimeDep, self_renewers
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import (
    ImportAnswer,
    ImportedKeyView,
    ImportRequest,
    RenewRequest,
    RevokedTokenView,
    RevokeRequest,
    RotateRequest,
    ScopeView,
    SecretView,
    SuspensionView,
    TargetCount,
    TokenCreate,
    TokenList,
    TokenUpdate,
    parse_moment,
)
from tallykey.auth.caller import header_credential
from tallykey.monitor.report import MAX_DAYS, MAX_HOURS, UsageReport, usage_report
from tallykey.people.sessions import SESSION_COOKIE
from tallykey.runtime import Runtime
from tallykey.tokens.idempotency import IdempotencyStore, Replay, fingerprint
from tallykey.tokens.imports import CREATED, EXISTING, UNAVAILABLE, ImportItem
from tallykey.tokens.models import Token
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS, end_of_day
from tallykey.tokens.requests import Renewal, TokenChanges, TokenDraft, TokenQuery
from tallykey.tokens.schemas import IssuedTokenView, TokenView
from tallykey.web.deps import ip_of

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


def _workspace_ref(runtime: Runtime, actor: Actor, ref: str | None) -> str | None:
    """Workspaces may be named by slug or id in filters."""
    if not ref:
        return None
    with runtime.database.reading() as session:
        found = session.scalar(select(Workspace.id).where(
            Workspace.account_id == actor.account_id,
            (Workspace.id == ref) | (Workspace.slug == ref)))
    return found or ref


IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=255,
    description="Any unique value (e.g. a UUID). A repeat of the same request with the same "
    "key, by the same user, within 24 hours, gets the first answer again (with "
    "`Idempotent-Replayed: true`) instead of issuing another secret; the same key with a "
    "different request is refused (422).")]


def _idempotent(request: Request, runtime: Runtime, actor: Actor, key: str | None,
                operation: str, body: Any, status_code: int,
                issue: Callable[[], IssuedTokenView]) -> IssuedTokenView | JSONResponse:
    """Run `issue` once per Idempotency-Key (scoped to the account and the user); the
    stored answer is sealed under the caller's own credential (see tokens/idempotency)."""
    if key is None:
        return issue()
    credential = header_credential(request) or request.cookies.get(SESSION_COOKIE) or ""
    store = IdempotencyStore(runtime.database, runtime.clock)
    started = store.begin(actor.account_id, f"user:{actor.user_id}", key, operation,
                          fingerprint(operation, body), credential)
    if isinstance(started, Replay):
        return JSONResponse(started.answer or {}, status_code=started.status_code,
                            headers={"Idempotent-Replayed": "true",
                                     "Cache-Control": "no-store"})
    return store.run(started, credential, issue, status_code,
                     lambda view: (view.id, view.model_dump(mode="json")))


@router.post("/tokens", status_code=201, response_model=IssuedTokenView, tags=["tokens"])
def create_token(body: TokenCreate, actor: ManagementActor, runtime: RuntimeDep,
                 request: Request, idempotency_key: IdempotencyKey = None
                 ) -> IssuedTokenView | JSONResponse:
    """Create a token. The answer carries the full token: it is shown this once only.
    Send `Idempotency-Key` to make a retry safe: it never creates a second token."""
    def issue() -> IssuedTokenView:
        draft = TokenDraft(
            name=body.name, description=body.description, kind=body.kind,
            workspace=body.workspace, scopes=body.scopes, ip_allowlist=body.ip_allowlist,
            target=body.target, expires_in_days=body.expires_in_days,
            expires_at=parse_moment(body.expires_at, "expires_at") if body.expires_at
            else None, **body.controls())
        return IssuedTokenView.of_issued(runtime.tokens.issue(actor, draft),
                                         runtime.clock.now())

    return _idempotent(request, runtime, actor, idempotency_key, "POST /api/v1/tokens",
                       body.model_dump(), 201, issue)


@router.post("/tokens/import", response_model=ImportAnswer, tags=["tokens"])
def import_keys(body: ImportRequest, actor: ManagementActor,
                runtime: RuntimeDep) -> ImportAnswer:
    """Import up to 10,000 keys the platform issued before (SPEC §16), each by the key
    itself or by `sha256:<hex>`: each then verifies with its original string, is listed
    with kind `imported` and revokes, suspends and expires like any token. Only the
    SHA-256 is stored. Idempotent by hash: a key imported already answers `existing`
    with its token id. Administrators only; audited as one `token.imported` entry."""
    items = [ImportItem(
        key=key.key, hash=key.hash, name=key.name, description=key.description,
        scopes=key.scopes, metadata=key.metadata, external_id=key.external_id,
        identity_id=key.identity_id, expires_in_days=key.expires_in_days,
        expires_at=parse_moment(key.expires_at, f"keys[{index}].expires_at")
        if key.expires_at else None) for index, key in enumerate(body.keys)]
    report = runtime.tokens.import_keys(actor, items)
    return ImportAnswer(
        created=report.count(CREATED), existing=report.count(EXISTING),
        unavailable=report.count(UNAVAILABLE),
        keys=[ImportedKeyView(index=r.index, outcome=r.outcome,
                              id=r.token_id, prefix=r.prefix, message=r.message)
              for r in report.results])


@router.get("/tokens", response_model=TokenList, tags=["tokens"])
def list_tokens(
    actor: ManagementActor,
    runtime: RuntimeDep,
    status: Annotated[str | None, Query(description="active, expired or revoked")] = None,
    search: Annotated[str | None, Query(max_length=200)] = None,
    kind: str | None = None,
    workspace: str | None = None,
    target: str | None = None,
    external_id: Annotated[str | None, Query(max_length=255)] = None,
    identity_id: Annotated[str | None, Query(
        max_length=255, description="the tokens of one identity: its id or external id")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[str | None, Query(max_length=500)] = None,
) -> TokenList:
    page = runtime.tokens.list_tokens(actor, TokenQuery(
        status=status, search=search, kind=kind,
        workspace=_workspace_ref(runtime, actor, workspace), target=target,
        external_id=external_id, identity=identity_id, limit=limit, after=after))
    now = runtime.clock.now()
    return TokenList(items=[TokenView.of(t, now) for t in page.items],
                     next_cursor=page.next_cursor)


@router.get("/tokens/{token_id}", response_model=TokenView, tags=["tokens"])
def get_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep) -> TokenView:
    return TokenView.of(runtime.tokens.get(actor, token_id), runtime.clock.now())


@router.get("/tokens/{token_id}/usage", response_model=UsageReport, tags=["tokens"])
def token_usage(
    token_id: str,
    actor: ManagementActor,
    runtime: RuntimeDep,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="Hourly points.")] = 48,
    days: Annotated[int, Query(ge=1, le=MAX_DAYS, description="Daily points.")] = 30,
) -> UsageReport:
    """Requests per hour and per day (allowed, and denied by reason), the last use and the
    last distinct client IPs. Counts are written about once a second by every node, and
    kept `TALLYKEY_USAGE_RETENTION_DAYS` days."""
    token = runtime.tokens.get(actor, token_id)
    with runtime.database.reading() as session:
        return usage_report(session, token, runtime.clock.now(), hours=hours, days=days,
                            retention_days=runtime.settings.usage_retention_days)


@router.patch("/tokens/{token_id}", response_model=TokenView, tags=["tokens"])
def update_token(token_id: str, body: TokenUpdate, actor: ManagementActor,
                 runtime: RuntimeDep, response: Response) -> TokenView:
    """Edit name, description, IP allow-list, target, scopes, rate limits, credits,
    metadata or external id. Expiry can only be moved earlier: extending it is refused."""
    expires_at = None
    if body.expires_at is not None:  # read as on create: a date, or a date-time (UTC if bare)
        moment = parse_moment(body.expires_at, "expires_at")
        if not isinstance(moment, datetime):
            expires_at = end_of_day(moment)
        else:
            expires_at = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    token = runtime.tokens.update(actor, token_id, TokenChanges(
        name=body.name, description=body.description, ip_allowlist=body.ip_allowlist,
        target=body.target, scopes=body.scopes, expires_at=expires_at, **body.controls()))
    show_propagation(response, runtime.propagation.settle(token.id))
    return TokenView.of(token, runtime.clock.now())


@router.delete("/tokens/{token_id}", response_model=RevokedTokenView, tags=["tokens"])
def delete_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                 response: Response) -> RevokedTokenView:
    """Revoke (tokens are never erased: they move to Expired & Revoked)."""
    return _revoke(runtime, actor, token_id, "", response)


@router.post("/tokens/{token_id}/revoke", response_model=RevokedTokenView, tags=["tokens"])
def revoke_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                 response: Response, body: RevokeRequest | None = None) -> RevokedTokenView:
    """Revoke at once. The answer comes when every live node refuses the token (or after
    `TALLYKEY_PROPAGATION_TIMEOUT`, naming the nodes that had not confirmed)."""
    return _revoke(runtime, actor, token_id, body.reason if body else "", response)


def _revoke(runtime: Runtime, actor: Actor, token_id: str, reason: str,
            response: Response) -> RevokedTokenView:
    token = runtime.tokens.revoke(actor, token_id, reason)
    propagation = show_propagation(response, runtime.propagation.settle(token.id))
    view = TokenView.of(token, runtime.clock.now())
    return RevokedTokenView(**view.model_dump(), propagation=propagation)


@router.post("/tokens/{token_id}/rotate", response_model=IssuedTokenView, tags=["tokens"])
def rotate_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                 request: Request, response: Response, body: RotateRequest | None = None,
                 idempotency_key: IdempotencyKey = None) -> IssuedTokenView | JSONResponse:
    """A new secret for the same token; the old one works for `grace_seconds` (0-604800).
    Send `Idempotency-Key` to make a retry safe: it never rotates twice."""
    grace = body.grace_seconds if body else DEFAULT_GRACE_SECONDS

    def issue() -> IssuedTokenView:
        issued = runtime.tokens.rotate(actor, token_id, grace)
        show_propagation(response, runtime.propagation.settle(issued.token.id))
        return IssuedTokenView.of_issued(issued, runtime.clock.now())

    return _idempotent(request, runtime, actor, idempotency_key,
                       f"POST /api/v1/tokens/{token_id}/rotate", {"grace_seconds": grace},
                       200, issue)


@router.post("/tokens/self/renew", status_code=201, response_model=IssuedTokenView,
             tags=["tokens"])
async def renew_self(body: RenewRequest, request: Request, response: Response,
                     runtime: RuntimeDep) -> IssuedTokenView:
    """The calling token renews itself: authenticated by that token alone, which needs
    the `tokens:renew_self` scope. As `tokens/{id}/renew`: a successor within the
    account's maximum validity, its secret in this answer only; the calling token's
    secret stops after `grace_seconds`."""
    caller = await self_renewers(request).authenticate(request, ip_of(request))
    verdict = caller.verdict
    assert verdict is not None and verdict.token_id is not None
    actor = replace(caller.actor, label=f"token {verdict.token_id}")
    renewal = Renewal(expires_at=parse_moment(body.expires_at, "expires_at")
                      if body.expires_at else None, expires_in_days=body.expires_in_days,
                      grace_seconds=body.grace_seconds)
    issued = await run_in_threadpool(runtime.tokens.renew, actor, verdict.token_id, renewal)
    show_propagation(response, await run_in_threadpool(runtime.propagation.settle,
                                                       verdict.token_id))
    response.headers["Cache-Control"] = "no-store"
    return IssuedTokenView.of_issued(issued, runtime.clock.now())


@router.post("/tokens/{token_id}/renew", status_code=201, response_model=IssuedTokenView,
             tags=["tokens"])
def renew_token(token_id: str, body: RenewRequest, actor: ManagementActor,
                runtime: RuntimeDep, request: Request, response: Response,
                idempotency_key: IdempotencyKey = None) -> IssuedTokenView | JSONResponse:
    """A successor with a new expiry (`expires_at` or `expires_in_days`, within the
    account's maximum validity) and every other setting of this token; the answer carries
    its full token, once. This token's expiry is never extended: its secret works for
    `grace_seconds` (0-604800) more, then stops (`previous_secret_expires_at`).
    Send `Idempotency-Key` to make a retry safe: it never renews twice."""
    def issue() -> IssuedTokenView:
        issued = runtime.tokens.renew(actor, token_id, Renewal(
            expires_at=parse_moment(body.expires_at, "expires_at") if body.expires_at
            else None, expires_in_days=body.expires_in_days,
            grace_seconds=body.grace_seconds))
        show_propagation(response, runtime.propagation.settle(token_id))
        return IssuedTokenView.of_issued(issued, runtime.clock.now())

    return _idempotent(request, runtime, actor, idempotency_key,
                       f"POST /api/v1/tokens/{token_id}/renew", body.model_dump(), 201, issue)


@router.post("/tokens/{token_id}/suspend", response_model=SuspensionView, tags=["tokens"])
def suspend_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                  response: Response) -> SuspensionView:
    """Stop the token until it is resumed: it answers 401 `token_suspended`. The answer
    comes when every live node refuses it (or after `TALLYKEY_PROPAGATION_TIMEOUT`,
    naming the nodes that had not confirmed). 409 unless the token is active."""
    return _suspension(runtime, runtime.tokens.suspend(actor, token_id), response)


@router.post("/tokens/{token_id}/resume", response_model=SuspensionView, tags=["tokens"])
def resume_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                 response: Response) -> SuspensionView:
    """Let a suspended token work again, on every live node once answered. 409 unless the
    token is suspended."""
    return _suspension(runtime, runtime.tokens.resume(actor, token_id), response)


@router.post("/tokens/{token_id}/approve", response_model=SuspensionView, tags=["tokens"])
def approve_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                  response: Response) -> SuspensionView:
    """Let a token awaiting approval work (account policy `token_approval`); answered once
    every live node lets it through. Administrators only; 409 unless it is pending."""
    token = runtime.tokens.approve(actor, token_id)
    propagation = show_propagation(response, runtime.propagation.settle(token.id),
                                   "works again")
    view = TokenView.of(token, runtime.clock.now())
    return SuspensionView(**view.model_dump(), propagation=propagation)


@router.post("/tokens/{token_id}/deny", response_model=SuspensionView, tags=["tokens"])
def deny_token(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
               response: Response) -> SuspensionView:
    """Refuse a token awaiting approval: it is revoked (`revoke_reason: "denied"`) and can
    never be used. Administrators only; 409 unless it is pending."""
    token = runtime.tokens.deny(actor, token_id)
    propagation = show_propagation(response, runtime.propagation.settle(token.id))
    view = TokenView.of(token, runtime.clock.now())
    return SuspensionView(**view.model_dump(), propagation=propagation)


def _suspension(runtime: Runtime, token: Token, response: Response) -> SuspensionView:
    propagation = show_propagation(response, runtime.propagation.settle(token.id),
                                   "stopped" if token.suspended_at else "works again")
    view = TokenView.of(token, runtime.clock.now())
    return SuspensionView(**view.model_dump(), propagation=propagation)


@router.post("/tokens/{token_id}/end-grace", response_model=TokenView, tags=["tokens"])
def end_grace(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
              response: Response) -> TokenView:
    """Stop the previous secret now instead of at the end of the rotation's grace period
    (the current secret keeps working). 409 when no previous secret is in grace."""
    token = runtime.tokens.end_grace(actor, token_id)
    show_propagation(response, runtime.propagation.settle(token.id))
    return TokenView.of(token, runtime.clock.now())


@router.post("/tokens/{token_id}/secret", response_model=SecretView, tags=["tokens"])
def retrieve_secret(token_id: str, actor: ManagementActor, runtime: RuntimeDep,
                    response: Response) -> SecretView:
    """An application token's username and password, when the account keeps them
    retrievable. Administrators only; every retrieval is audited and the other
    administrators are told. A POST (with `X-CSRF-Token` when a console session calls),
    so no link or image on another site can trigger one."""
    issued = runtime.tokens.retrieve_secret(actor, token_id)
    response.headers["Cache-Control"] = "no-store"
    return SecretView(id=issued.token.id, prefix=issued.secret.prefix,
                      username=issued.secret.prefix, password=issued.secret.password,
                      token=issued.value)


@router.get("/targets", response_model=list[TargetCount], tags=["tokens"])
def count_targets(actor: ManagementActor, runtime: RuntimeDep) -> list[TargetCount]:
    """The configured target software, with how many of the account's tokens name each."""
    counts = runtime.tokens.count_by_target(actor)
    return [TargetCount(target=name, active=counts.get(name, (0, 0))[0],
                        total=counts.get(name, (0, 0))[1])
            for name in [*runtime.settings.target_list,
                         *sorted(set(counts) - set(runtime.settings.target_list))]]


@router.get("/scopes", response_model=list[ScopeView], tags=["tokens"])
def list_scopes(actor: ManagementActor, runtime: RuntimeDep) -> list[ScopeView]:
    """The scope catalog: every scope a token may carry, with what it allows. Admin-only
    scopes are held by administrators only and cannot be granted per workspace."""
    return [ScopeView(name=s.name, description=s.description, admin_only=s.admin_only)
            for s in runtime.catalog.scopes()]
