"""The token pages: the table (with search, filters, keyset pages), Expired & Revoked,
create, the show-once page, a token's detail (edit, rotate, revoke, history, usage)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from tallykey.accounts.models import Account, Workspace
from tallykey.accounts.service import permissions_of
from tallykey.audit import trail
from tallykey.console import chart, forms
from tallykey.console.web import (
    PREFIX,
    ConsoleRoute,
    FormDep,
    RuntimeDep,
    Viewer,
    ViewerDep,
    redirect,
    render,
)
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.runtime import Runtime
from tallykey.tokens.models import ACTIVE, APPLICATION, EXPIRED, KINDS, REVOKED, Token
from tallykey.tokens.policy import EXPIRY_PRESET_DAYS, LONG_VALIDITY_WARNING_DAYS
from tallykey.tokens.service import IssuedToken, TokenQuery

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50
STATUS_CHOICES = {"active": ACTIVE, "expired": EXPIRED, "revoked": REVOKED, "all": None}
NOTICES = {
    "saved": "Changes saved.",
    "revoked": "The token was revoked. It stopped working everywhere at once.",
}


def _choice(value: str | None, allowed: object) -> str | None:
    return value if value and value in allowed else None  # type: ignore[operator]


@router.get("/tokens")
def token_list(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
               q: str = "", status: str = "active", kind: str = "", after: str = "",
               done: str = "") -> Response:
    status = status if status in STATUS_CHOICES else "active"
    page = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=STATUS_CHOICES[status], search=q[:200] or None, kind=_choice(kind, KINDS),
        after=after or None, limit=PAGE_SIZE))
    return render(request, "tokens.html", tokens=page.items, next_cursor=page.next_cursor,
                  q=q, status=status, kind=_choice(kind, KINDS) or "", first_page=not after,
                  now=runtime.clock.now(), notice=NOTICES.get(done, ""))


@router.get("/tokens/inactive")
def token_graveyard(request: Request, viewer: ViewerDep, runtime: RuntimeDep, q: str = "",
                    revoked_after: str = "", expired_after: str = "",
                    done: str = "") -> Response:
    """Expired & Revoked: who revoked what, when and why; what ran out and when."""
    search = q[:200] or None
    revoked = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=REVOKED, search=search, after=revoked_after or None, limit=PAGE_SIZE))
    expired = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=EXPIRED, search=search, after=expired_after or None, limit=PAGE_SIZE))
    return render(request, "inactive.html", revoked=revoked, expired=expired, q=q,
                  now=runtime.clock.now(), notice=NOTICES.get(done, ""))


# --- create -------------------------------------------------------------------------


def _form_context(viewer: Viewer, runtime: Runtime) -> dict[str, Any]:
    """What the viewer may choose: workspaces they see, scopes they may grant, kinds."""
    user = viewer.session.user
    workspaces = runtime.accounts.workspaces(viewer.actor.account_id)
    if not viewer.is_admin:
        held = permissions_of(user, runtime.catalog)
        workspaces = [w for w in workspaces if w.id in held.by_workspace]
    with runtime.database.reading() as session:
        account = session.get_one(Account, viewer.actor.account_id)
        max_days = account.max_validity_days
    return {
        "workspaces": workspaces,
        "scopes": _grantable(viewer, runtime),
        "kinds": KINDS if viewer.is_admin else ("personal",),
        "targets": runtime.settings.target_list,
        "presets": [d for d in EXPIRY_PRESET_DAYS],
        "max_days": max_days,
        "warn_days": LONG_VALIDITY_WARNING_DAYS,
        "today": runtime.clock.now().date(),
    }


def _grantable(viewer: Viewer, runtime: Runtime) -> dict[str, str]:
    """Scope -> description (the catalog's) for the scopes the viewer may put on a token."""
    if viewer.is_admin:
        return runtime.catalog.descriptions()
    held = permissions_of(viewer.session.user, runtime.catalog).scopes_in(None)
    return runtime.catalog.descriptions(held)


@router.get("/tokens/new")
def new_token_page(request: Request, viewer: ViewerDep, runtime: RuntimeDep) -> Response:
    return render(request, "token_new.html", form=forms.TokenForm(),
                  **_form_context(viewer, runtime))


@router.post("/tokens/new")
def create_token(request: Request, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    values = forms.TokenForm.parse(form)
    try:
        issued = runtime.tokens.issue(viewer.actor, values.draft())
    except (ValidationFailed, PermissionDenied) as error:
        values.errors[forms.error_field(error)] = error.message + (
            f" {error.hint}" if error.hint else "")
        return render(request, "token_new.html", status_code=422, form=values,
                      **_form_context(viewer, runtime))
    return show_once(request, runtime, issued, "created")


def show_once(request: Request, runtime: Runtime, issued: IssuedToken, what: str) -> Response:
    """The one page that carries the full secret: rendered in the POST's answer (never a
    URL), never cached."""
    token = issued.token
    base_url = (runtime.settings.base_url_for(token.region) or runtime.settings.public_url
                or str(request.base_url)).rstrip("/")
    application = token.kind == APPLICATION
    return render(request, "token_issued.html", status_code=201 if what == "created" else 200,
                  headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
                  token=token, secret=issued.value, what=what,
                  username=issued.secret.prefix if application else None,
                  password=issued.secret.password if application else None,
                  warnings=issued.warnings, base_url=base_url)


# --- one token ----------------------------------------------------------------------


def _detail(request: Request, viewer: Viewer, runtime: Runtime, token: Token,
            status: int = 200, errors: dict[str, str] | None = None,
            values: dict[str, Any] | None = None, notice: str = "") -> Response:
    now = runtime.clock.now()
    with runtime.database.reading() as session:
        history = trail.entries_for(session, viewer.actor.account_id, target_id=token.id,
                                    limit=50)
        usage = chart.daily_usage(session, token.id, now)
    return render(request, "token_detail.html", status_code=status, token=token, now=now,
                  state=token.status_at(now), history=history,
                  usage_chart=chart.usage_svg(usage), targets=runtime.settings.target_list,
                  errors=errors or {}, values=values, notice=notice,
                  workspace_name=_workspace_name(token.workspace),
                  scope_choices=_grantable(viewer, runtime) | runtime.catalog.descriptions(
                      token.scopes), catalog=runtime.catalog)


def _workspace_name(workspace: Workspace | None) -> str:
    if workspace is None:
        return ""
    return workspace.name + (" (archived)" if workspace.archived_at else "")


@router.get("/tokens/{token_id}")
def token_detail(request: Request, token_id: str, viewer: ViewerDep, runtime: RuntimeDep,
                 done: str = "") -> Response:
    token = runtime.tokens.get(viewer.actor, token_id)
    return _detail(request, viewer, runtime, token, notice=NOTICES.get(done, ""))


@router.post("/tokens/{token_id}")
def update_token(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    try:
        runtime.tokens.update(viewer.actor, token_id, forms.token_changes(form))
    except (ValidationFailed, Conflict, PermissionDenied) as error:
        token = runtime.tokens.get(viewer.actor, token_id)
        values: dict[str, Any] = {k: forms.text(form, k)
                                  for k in ("name", "description", "ip_allowlist", "target")}
        values["scopes"] = forms.texts(form, "scopes")
        message = error.message + (f" {error.hint}" if error.hint else "")
        return _detail(request, viewer, runtime, token, status=422, values=values,
                       errors={forms.error_field(error): message})
    return redirect(f"{PREFIX}/tokens/{token_id}?done=saved")


@router.post("/tokens/{token_id}/rotate")
def rotate_token(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    try:
        issued = runtime.tokens.rotate(viewer.actor, token_id, forms.grace_seconds(form))
    except (ValidationFailed, Conflict) as error:
        token = runtime.tokens.get(viewer.actor, token_id)
        return _detail(request, viewer, runtime, token, status=422,
                       errors={"rotate": error.message})
    return show_once(request, runtime, issued, "rotated")


@router.post("/tokens/{token_id}/secret")
def retrieve_secret(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                    runtime: RuntimeDep) -> Response:
    """An application token's username and password, when the account keeps them
    retrievable: shown like a new token, audited, and the other admins are told."""
    try:
        issued = runtime.tokens.retrieve_secret(viewer.actor, token_id)
    except (PermissionDenied, NotFound, Conflict) as error:
        token = runtime.tokens.get(viewer.actor, token_id)
        message = error.message + (f" {error.hint}" if error.hint else "")
        return _detail(request, viewer, runtime, token, status=error.status,
                       errors={"secret": message})
    return show_once(request, runtime, issued, "retrieved")


@router.get("/tokens/{token_id}/revoke")
def revoke_page(request: Request, token_id: str, viewer: ViewerDep,
                runtime: RuntimeDep) -> Response:
    token = runtime.tokens.get(viewer.actor, token_id)
    return render(request, "token_revoke.html", token=token, now=runtime.clock.now(),
                  state=token.status_at(runtime.clock.now()), error="")


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    try:
        runtime.tokens.revoke(viewer.actor, token_id, forms.text(form, "reason"))
    except (ValidationFailed, Conflict) as error:
        token = runtime.tokens.get(viewer.actor, token_id)
        return render(request, "token_revoke.html", status_code=409, token=token,
                      now=runtime.clock.now(), state=token.status_at(runtime.clock.now()),
                      error=error.message)
    return redirect(f"{PREFIX}/tokens/inactive?done=revoked")
