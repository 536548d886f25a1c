"""The token pages: the table (with search, filters, keyset pages), Expired & Revoked,
create, the show-once page, a token's detail (edit, rotate, suspend, resume, revoke,
history, usage) and its renew page."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account, Workspace
from tallykey.accounts.service import permissions_of
from tallykey.audit import query as audit
from tallykey.console import chart, forms
from tallykey.console.forms import text
from tallykey.console.web import (
    PREFIX,
    ChangerDep,
    ConsoleRoute,
    FormDep,
    OwnFormDep,
    RuntimeDep,
    Viewer,
    ViewerDep,
    new_issue_key,
    propagation_notice,
    propagation_query,
    redirect,
    render,
)
from tallykey.errors import (
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    PermissionDenied,
    ValidationFailed,
    mask_secrets,
)
from tallykey.runtime import Runtime
from tallykey.tokens import format as token_format
from tallykey.tokens.idempotency import Claim, IdempotencyStore, Replay, fingerprint
from tallykey.tokens.models import (
    ACTIVE,
    APPLICATION,
    EXPIRED,
    KINDS,
    LISTED_KINDS,
    PENDING,
    REVOKED,
    SUSPENDED,
    Token,
    TokenSecret,
)
from tallykey.tokens.policy import (
    DEFAULT_GRACE_SECONDS,
    EXPIRY_PRESET_DAYS,
    LONG_VALIDITY_WARNING_DAYS,
)
from tallykey.tokens.requests import IssuedToken, TokenQuery
from tallykey.tokens.schemas import CreditsView

router = APIRouter(route_class=ConsoleRoute)

PAGE_SIZE = 50
STATUS_CHOICES = {"active": ACTIVE, "pending": PENDING, "suspended": SUSPENDED,
                  "expired": EXPIRED, "revoked": REVOKED, "all": None}
NOTICES = {
    "saved": "Changes saved.",
    "revoked": "The token was revoked.",
    "suspended": "The token was suspended: it is refused until resumed.",
    "resumed": "The token was resumed.",
    "grace_ended": "The previous secret stopped working. Only the current secret works.",
}


def _choice(value: str | None, allowed: object) -> str | None:
    return value if value and value in allowed else None  # type: ignore[operator]


def _searchable(q: str) -> str:
    """A search term fit for a URL: a pasted token is cut to its public prefix."""
    return mask_secrets(q).replace("…", "")


def _search_url(path: str, q: str, **filters: str) -> str:
    query = {"q": _searchable(q)[:200], **{k: v for k, v in filters.items() if v}}
    return f"{PREFIX}{path}?" + urlencode({k: v for k, v in query.items() if v})


@router.post("/tokens")
def token_search(viewer: ViewerDep, form: OwnFormDep) -> Response:
    """The search form posts (so a pasted token never lands in a URL or the browser's
    history) and is redirected to the list, searching by the token's public prefix."""
    return redirect(_search_url("/tokens", text(form, "q"), status=text(form, "status"),
                                kind=text(form, "kind")))


@router.get("/tokens")
def token_list(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
               q: str = "", status: str = "active", kind: str = "", after: str = "",
               done: str = "") -> Response:
    if _searchable(q) != q:  # a token typed into the address bar: never shown back
        return redirect(_search_url("/tokens", q, status=status, kind=kind))
    status = status if status in STATUS_CHOICES else "active"
    page = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=STATUS_CHOICES[status], search=q[:200] or None,
        kind=_choice(kind, LISTED_KINDS),
        after=after or None, limit=PAGE_SIZE))
    return render(request, "tokens.html", tokens=page.items, next_cursor=page.next_cursor,
                  q=q, status=status, kind=_choice(kind, LISTED_KINDS) or "",
                  first_page=not after,
                  now=runtime.clock.now(), notice=NOTICES.get(done, ""))


@router.post("/tokens/inactive")
def token_graveyard_search(viewer: ViewerDep, form: OwnFormDep) -> Response:
    return redirect(_search_url("/tokens/inactive", text(form, "q")))


@router.get("/tokens/inactive")
def token_graveyard(request: Request, viewer: ViewerDep, runtime: RuntimeDep, q: str = "",
                    revoked_after: str = "", expired_after: str = "",
                    done: str = "") -> Response:
    """Expired & Revoked: who revoked what, when and why; what ran out and when."""
    if _searchable(q) != q:
        return redirect(_search_url("/tokens/inactive", q))
    search = q[:200] or None
    revoked = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=REVOKED, search=search, after=revoked_after or None, limit=PAGE_SIZE))
    expired = runtime.tokens.list_tokens(viewer.actor, TokenQuery(
        status=EXPIRED, search=search, after=expired_after or None, limit=PAGE_SIZE))
    notice = NOTICES.get(done, "")
    if notice:
        notice = f"{notice} {propagation_notice(request)}".strip()
    return render(request, "inactive.html", revoked=revoked, expired=expired, q=q,
                  now=runtime.clock.now(), notice=notice)


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
        "plans": _plans(viewer, runtime),
    }


def _plans(viewer: Viewer, runtime: Runtime) -> list[Any]:
    """The plans an administrator may put a token on (SPEC §16); none for others."""
    if not viewer.is_admin:
        return []
    return runtime.plans.all_plans(viewer.actor)


def _grantable(viewer: Viewer, runtime: Runtime) -> dict[str, str]:
    """Scope -> description (the catalog's) for the scopes the viewer may put on a token."""
    if viewer.is_admin:
        return runtime.catalog.descriptions()
    held = permissions_of(viewer.session.user, runtime.catalog).scopes_in(None)
    return runtime.catalog.descriptions(held)


@router.get("/tokens/new")
def new_token_page(request: Request, viewer: ChangerDep, runtime: RuntimeDep) -> Response:
    return render(request, "token_new.html", form=forms.TokenForm(issue_key=new_issue_key()),
                  **_form_context(viewer, runtime))


@router.post("/tokens/new")
def create_token(request: Request, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    """Create, then redirect to the one-time view (POST → redirect → GET): a reload, a
    double click or a re-posted form answers with the same token, never a second one."""
    values = forms.TokenForm.parse(form)
    context = _form_context(viewer, runtime)
    values.errors = values.problems(targets=runtime.settings.target_list,
                                    max_validity_days=context["max_days"],
                                    now=runtime.clock.now(), catalog=runtime.catalog)
    if values.errors:  # every field's problem at once; nothing is created
        return render(request, "token_new.html", status_code=422, form=values, **context)
    store, actor = _replays(runtime), _actor_key(viewer)
    try:
        started = store.begin(viewer.actor.account_id, actor, values.issue_key or
                              new_issue_key(), "console:create",
                              fingerprint("console:create", values.fields()),
                              viewer.session.cookie)
    except IdempotencyKeyReused:
        values.issue_key = new_issue_key()
        values.errors["form"] = ("This form was already used to create a token. Check the "
                                 "values below and submit again to create another one.")
        return render(request, "token_new.html", status_code=409, form=values,
                      **_form_context(viewer, runtime))
    if isinstance(started, Replay):
        return redirect(_once_url(started))
    try:
        issued = _remember(store, viewer, started, "created", 201,
                           lambda: runtime.tokens.issue(viewer.actor, values.draft()))
    except (ValidationFailed, PermissionDenied) as error:
        values.errors[forms.error_field(error)] = error.message + (
            f" {error.hint}" if error.hint else "")
        return render(request, "token_new.html", status_code=422, form=values,
                      **_form_context(viewer, runtime))
    return redirect(_once_url(started, issued.token.id))


def _replays(runtime: Runtime) -> IdempotencyStore:
    return IdempotencyStore(runtime.database, runtime.clock)


def _actor_key(viewer: Viewer) -> str:
    return f"user:{viewer.actor.user_id}"


def _once_url(replay: Replay | Claim, token_id: str | None = None) -> str:
    token = token_id or (replay.token_id if isinstance(replay, Replay) else None)
    return f"{PREFIX}/tokens/{token}/once?view={replay.id}"


def _remember(store: IdempotencyStore, viewer: Viewer, claim: Claim, what: str,
              status: int, issue: Callable[[], IssuedToken]) -> IssuedToken:
    """Issue once for the claimed form (`IdempotencyStore.run`), keeping the secret
    sealed under the session cookie until the one-time view shows it."""

    def answer(issued: IssuedToken) -> tuple[str | None, dict[str, Any]]:
        previous = issued.previous_secret_expires_at
        return issued.token.id, {
            "what": what, "secret": issued.value, "warnings": issued.warnings,
            "previous_secret_expires_at": previous.isoformat() if previous else None}

    return store.run(claim, viewer.session.cookie, issue, status, answer)


@router.get("/tokens/{token_id}/once")
def once_page(request: Request, token_id: str, viewer: ViewerDep, runtime: RuntimeDep,
              view: str = "") -> Response:
    """The one-time view: the secret the first time this page is opened, then never
    again (a reload says so and leads to the token)."""
    token = runtime.tokens.get(viewer.actor, token_id)
    shown = _replays(runtime).reveal(viewer.actor.account_id, _actor_key(viewer),
                                     view[:36], viewer.session.cookie)
    if shown is not None and shown.token_id != token.id:
        raise NotFound("This page is not available.", "Open the token from the token list.")
    if shown is None or shown.answer is None:
        return render(request, "token_issued.html", status_code=410,
                      headers={"Cache-Control": "no-store"}, token=token, secret=None,
                      what="gone", warnings=[], username=None, password=None, base_url="")
    previous = shown.answer.get("previous_secret_expires_at")
    issued = IssuedToken(token, token_format.parse(str(shown.answer["secret"])),
                         [str(w) for w in shown.answer.get("warnings", [])],
                         datetime.fromisoformat(previous) if previous else None)
    return show_once(request, runtime, issued, str(shown.answer["what"]))


def show_once(request: Request, runtime: Runtime, issued: IssuedToken, what: str) -> Response:
    """The one page that carries the full secret: the one-time view (or the answer to a
    retrieval), never cached, the secret never in a URL."""
    token = issued.token
    base_url = (runtime.settings.base_url_for(token.region) or runtime.settings.public_url
                or str(request.base_url)).rstrip("/")
    application = token.kind == APPLICATION
    basic = (base64.b64encode(f"{issued.secret.prefix}:{issued.secret.password}".encode())
             .decode() if application else "")
    return render(request, "token_issued.html",
                  demo=getattr(request.app.state, "demo", False), basic_credentials=basic,
                  headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
                  token=token, secret=issued.value, what=what,
                  username=issued.secret.prefix if application else None,
                  password=issued.secret.password if application else None,
                  warnings=issued.warnings, base_url=base_url, now=runtime.clock.now(),
                  previous_until=issued.previous_secret_expires_at)


# --- one token ----------------------------------------------------------------------


def _detail(request: Request, viewer: Viewer, runtime: Runtime, token: Token,
            status: int = 200, errors: dict[str, str] | None = None,
            values: dict[str, Any] | None = None, notice: str = "",
            usage_unit: str = chart.DAILY) -> Response:
    now = runtime.clock.now()
    history, _ = audit.page(runtime.database, audit.AuditQuery(
        viewer.actor.account_id, target_id=token.id), None, 50)
    with runtime.database.reading() as session:
        usage = (chart.hourly_usage(session, token.id, now) if usage_unit == chart.HOURLY
                 else chart.daily_usage(session, token.id, now))
        retrievable = _retrievable(session, token)
    grace_end = (runtime.tokens.grace_ends_at(viewer.actor, token.id)
                 if token.rotated_at or token.successor_id else None)
    return render(request, "token_detail.html", status_code=status, token=token, now=now,
                  grace_end=grace_end,
                  state=token.status_at(now), history=history,
                  usage_chart=chart.usage_svg(usage, usage_unit), usage_unit=usage_unit,
                  retrievable=retrievable, targets=runtime.settings.target_list,
                  errors=errors or {}, values=values, notice=notice,
                  workspace_name=_workspace_name(token.workspace), rotate_key=new_issue_key(),
                  default_grace=DEFAULT_GRACE_SECONDS,
                  scope_choices=_grantable(viewer, runtime) | runtime.catalog.descriptions(
                      token.scopes), catalog=runtime.catalog,
                  controls=(values or {}).get("controls") or forms.KeyControlsForm.of(token),
                  credits=CreditsView.of(token, now), plans=_plans(viewer, runtime),
                  renewed_from=_related(viewer, runtime, token.renewed_from_id),
                  successor=_related(viewer, runtime, token.successor_id))


def _related(viewer: Viewer, runtime: Runtime, token_id: str | None) -> Token | None:
    """The token a renewal links to, named on the page when the viewer may see it."""
    if token_id is None:
        return None
    try:
        return runtime.tokens.get(viewer.actor, token_id)
    except (NotFound, PermissionDenied):
        return None


def _retrievable(session: Session, token: Token) -> bool:
    """Whether the token's current secret is kept (sealed) for administrators to see."""
    if token.kind != APPLICATION:
        return False
    account = session.get_one(Account, token.account_id)
    if not account.retrievable_application_tokens:
        return False
    return session.scalar(select(TokenSecret.id).where(
        TokenSecret.token_id == token.id, TokenSecret.retires_at.is_(None),
        TokenSecret.ciphertext.is_not(None))) is not None


def _workspace_name(workspace: Workspace | None) -> str:
    if workspace is None:
        return ""
    return workspace.name + (" (archived)" if workspace.archived_at else "")


@router.get("/tokens/{token_id}")
def token_detail(request: Request, token_id: str, viewer: ViewerDep, runtime: RuntimeDep,
                 done: str = "", usage: str = chart.DAILY) -> Response:
    token = runtime.tokens.get(viewer.actor, token_id)
    notice = NOTICES.get(done, "")
    if notice and done in ("suspended", "resumed"):
        reached = "works" if done == "resumed" else "stopped"
        notice = f"{notice} {propagation_notice(request, reached)}".strip()
    return _detail(request, viewer, runtime, token, notice=notice,
                   usage_unit=chart.HOURLY if usage == chart.HOURLY else chart.DAILY)


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
        values["controls"] = forms.KeyControlsForm.parse(form)
        message = error.message + (f" {error.hint}" if error.hint else "")
        status = error.status if isinstance(error, PermissionDenied) else 422
        return _detail(request, viewer, runtime, token, status=status, values=values,
                       errors={forms.error_field(error): message})
    return redirect(f"{PREFIX}/tokens/{token_id}?done=saved")


@router.post("/tokens/{token_id}/rotate")
def rotate_token(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                 runtime: RuntimeDep) -> Response:
    """Rotate, then redirect to the one-time view; a re-posted form rotates once."""
    token = runtime.tokens.get(viewer.actor, token_id)
    store, operation = _replays(runtime), f"console:rotate:{token.id}"
    try:
        grace = forms.grace_seconds(form)
        started = store.begin(viewer.actor.account_id, _actor_key(viewer),
                              forms.text(form, forms.ISSUE_KEY_FIELD) or new_issue_key(),
                              operation, fingerprint(operation, grace), viewer.session.cookie)
    except IdempotencyKeyReused:
        return _detail(request, viewer, runtime, token, status=422, errors={
            "rotate": "This rotation form was already used with another grace period. "
                      "Pick the grace period again and rotate."})
    except ValidationFailed as error:
        return _detail(request, viewer, runtime, token, status=422,
                       errors={"rotate": error.message})
    if isinstance(started, Replay):
        return redirect(_once_url(started))
    try:
        issued = _remember(store, viewer, started, "rotated", 200,
                           lambda: runtime.tokens.rotate(viewer.actor, token_id, grace))
    except (ValidationFailed, Conflict) as error:
        return _detail(request, viewer, runtime, token, status=422,
                       errors={"rotate": error.message})
    return redirect(_once_url(started, issued.token.id))


@router.post("/tokens/{token_id}/suspend")
def suspend_token(request: Request, token_id: str, viewer: ViewerDep, _: FormDep,
                  runtime: RuntimeDep) -> Response:
    """Suspend, then say on how many nodes it stopped (like a revocation)."""
    return _suspension(request, viewer, runtime, token_id, "suspended")


@router.post("/tokens/{token_id}/resume")
def resume_token(request: Request, token_id: str, viewer: ViewerDep, _: FormDep,
                 runtime: RuntimeDep) -> Response:
    return _suspension(request, viewer, runtime, token_id, "resumed")


def _suspension(request: Request, viewer: Viewer, runtime: Runtime, token_id: str,
                done: str) -> Response:
    change = runtime.tokens.suspend if done == "suspended" else runtime.tokens.resume
    try:
        change(viewer.actor, token_id)
    except (Conflict, PermissionDenied) as error:  # e.g. a member and an admin's suspension
        token = runtime.tokens.get(viewer.actor, token_id)
        return _detail(request, viewer, runtime, token, status=error.status,
                       errors={"form": forms.said(error)})
    settled = runtime.propagation.settle(token_id)
    return redirect(f"{PREFIX}/tokens/{token_id}?done={done}&{propagation_query(settled)}")


def _renew_page(request: Request, viewer: Viewer, runtime: Runtime, token: Token,
                status: int = 200, values: dict[str, str] | None = None,
                errors: dict[str, str] | None = None) -> Response:
    """The renew form, prefilled: the token's own validity (within the account's maximum)
    and the default grace period."""
    context = _form_context(viewer, runtime)
    if values is None:
        validity = (token.expires_at - token.created_at).days
        fitting = [d for d in EXPIRY_PRESET_DAYS if d <= min(validity, context["max_days"])]
        values = {"expiry": str(fitting[-1] if fitting else EXPIRY_PRESET_DAYS[0]),
                  "expires_on": "", "grace_days": str(DEFAULT_GRACE_SECONDS // 86400)}
    return render(request, "token_renew.html", status_code=status, token=token,
                  form=values, errors=errors or {}, renew_key=new_issue_key(),
                  state=token.status_at(runtime.clock.now()), presets=context["presets"],
                  max_days=context["max_days"], warn_days=context["warn_days"],
                  today=context["today"])


@router.get("/tokens/{token_id}/renew")
def renew_page(request: Request, token_id: str, viewer: ChangerDep,
               runtime: RuntimeDep) -> Response:
    """Where the renew button and the expiry reminder mail lead: a form, never an action."""
    return _renew_page(request, viewer, runtime, runtime.tokens.get(viewer.actor, token_id))


@router.post("/tokens/{token_id}/renew")
def renew_token(request: Request, token_id: str, viewer: ViewerDep, form: FormDep,
                runtime: RuntimeDep) -> Response:
    """Renew, then redirect to the successor's one-time view; a re-posted form renews
    once."""
    token = runtime.tokens.get(viewer.actor, token_id)
    values = {k: forms.text(form, k) for k in ("expiry", "expires_on", "grace_days")}
    store, operation = _replays(runtime), f"console:renew:{token.id}"
    try:
        renewal = forms.renewal(form)
        started = store.begin(viewer.actor.account_id, _actor_key(viewer),
                              forms.text(form, forms.ISSUE_KEY_FIELD) or new_issue_key(),
                              operation, fingerprint(operation, values), viewer.session.cookie)
    except IdempotencyKeyReused:
        return _renew_page(request, viewer, runtime, token, 422, values, {
            "form": "This renew form was already used with other values. Check them and "
                    "renew again."})
    except ValidationFailed as error:
        return _renew_page(request, viewer, runtime, token, 422, values,
                           {forms.error_field(error): forms.said(error)})
    if isinstance(started, Replay):
        return redirect(_once_url(started))
    try:
        issued = _remember(store, viewer, started, "renewed", 201,
                           lambda: runtime.tokens.renew(viewer.actor, token_id, renewal))
    except (ValidationFailed, Conflict, PermissionDenied) as error:
        return _renew_page(request, viewer, runtime, token, error.status, values,
                           {forms.error_field(error): forms.said(error)})
    runtime.propagation.settle(token_id)
    return redirect(_once_url(started, issued.token.id))


@router.post("/tokens/{token_id}/end-grace")
def end_grace(request: Request, token_id: str, viewer: ViewerDep, _: FormDep,
              runtime: RuntimeDep) -> Response:
    """Stop the previous secret now rather than at the end of its grace period."""
    try:
        runtime.tokens.end_grace(viewer.actor, token_id)
    except Conflict as error:
        token = runtime.tokens.get(viewer.actor, token_id)
        return _detail(request, viewer, runtime, token, status=409,
                       errors={"form": error.message})
    return redirect(f"{PREFIX}/tokens/{token_id}?done=grace_ended")


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
def revoke_page(request: Request, token_id: str, viewer: ChangerDep,
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
    done = runtime.propagation.settle(token_id)
    return redirect(f"{PREFIX}/tokens/inactive?done=revoked&{propagation_query(done)}")
