"""Administrators' pages: the audit log (with CSV and JSON-lines exports), users and their
workspace permissions, the account's policies, and the notification outbox."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.responses import StreamingResponse

from tallykey.accounts.models import Account
from tallykey.accounts.permissions import ROLES
from tallykey.accounts.service import PolicyChanges
from tallykey.audit import export
from tallykey.audit import query as audit
from tallykey.console import audit_query, outbox
from tallykey.console.forms import text, texts
from tallykey.console.views import split_lines
from tallykey.console.web import (
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    ReaderDep,
    RuntimeDep,
    ViewerDep,
    propagation_notice,
    propagation_query,
    redirect,
    render,
)
from tallykey.errors import NotFound, ValidationFailed
from tallykey.runtime import Runtime

router = APIRouter(route_class=ConsoleRoute)

AUDIT_PAGE_SIZE = 100
NOTICES = {"saved": "Changes saved.", "added": "User added.",
           "granted": "The user's role, status and permissions were saved.",
           "reset-sent": "A password reset link was mailed to the user.",
           "user-sessions": "The user was signed out of every session.",
           "two-factor-reset": "The user's two-factor sign-in was reset; they were told by "
                               "e-mail.",
           "policy": "Two-factor policy saved."}


# --- audit --------------------------------------------------------------------------


@router.get("/audit")
def audit_page(request: Request, viewer: ReaderDep, runtime: RuntimeDep, actor: str = "",
               token: str = "", action: str = "", since: str = "", until: str = "",
               before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None
               ) -> Response:
    flt = audit_query.AuditFilter(actor=actor, token=token, action=action, since=since,
                                  until=until)
    account_id = viewer.actor.account_id
    try:
        events, older = audit.page(runtime.database, flt.query(runtime.tokens, account_id),
                                   before, AUDIT_PAGE_SIZE)
        error = ""
    except ValidationFailed as failed:
        events, older, error = [], None, failed.message
    users = runtime.accounts.list_users(viewer.actor)
    return render(request, "audit.html", status_code=422 if error else 200, events=events,
                  older=older, flt=flt, error=error, params=flt.as_params(), users=users,
                  people={u.id: u.email for u in users},
                  actions=audit.actions(runtime.database, account_id))


@router.get("/audit/export.csv")
def audit_csv(viewer: ReaderDep, runtime: RuntimeDep, actor: str = "", token: str = "",
              action: str = "", since: str = "", until: str = "") -> Response:
    query = audit_query.AuditFilter(actor, token, action, since, until).query(
        runtime.tokens, viewer.actor.account_id)  # a bad date is refused before streaming
    return StreamingResponse(
        export.csv_lines(audit.entries(runtime.database, query)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="tallykey-audit.csv"'})


@router.get("/audit/export.jsonl")
def audit_jsonl(viewer: ReaderDep, runtime: RuntimeDep, actor: str = "", token: str = "",
                action: str = "", since: str = "", until: str = "") -> Response:
    query = audit_query.AuditFilter(actor, token, action, since, until).query(
        runtime.tokens, viewer.actor.account_id)
    return StreamingResponse(
        export.json_lines(audit.entries(runtime.database, query)),
        media_type="application/jsonl",
        headers={"Content-Disposition": 'attachment; filename="tallykey-audit.jsonl"'})


# --- users --------------------------------------------------------------------------


def _member_scopes(runtime: Runtime) -> dict[str, str]:
    """What a workspace grant may hold, with the catalog's descriptions."""
    return runtime.catalog.descriptions(runtime.catalog.member_scopes)


def _grants(form_values: dict[str, list[str]], workspace_ids: list[str]
            ) -> dict[str, list[str]]:
    return {ws: scopes for ws in workspace_ids if (scopes := form_values.get(ws))}


def _users_page(request: Request, viewer: AdminDep, runtime: Runtime, status: int = 200,
                error: str = "", values: dict[str, str] | None = None,
                notice: str = "") -> Response:
    return render(request, "users.html", status_code=status,
                  users=runtime.accounts.list_users(viewer.actor),
                  workspaces=runtime.accounts.workspaces(viewer.actor.account_id),
                  member_scopes=_member_scopes(runtime), roles=ROLES, error=error,
                  values=values or {},
                  notice=notice)


@router.get("/users")
def users_page(request: Request, viewer: AdminDep, runtime: RuntimeDep,
               done: str = "") -> Response:
    return _users_page(request, viewer, runtime, notice=NOTICES.get(done, ""))


@router.post("/users")
def add_user(request: Request, viewer: AdminDep, form: FormDep,
             runtime: RuntimeDep) -> Response:
    workspace_ids = [w.id for w in runtime.accounts.workspaces(viewer.actor.account_id)]
    grants = _grants({ws: texts(form, f"grant:{ws}") for ws in workspace_ids}, workspace_ids)
    try:
        runtime.accounts.create_user(viewer.actor, text(form, "email"),
                                     role=text(form, "role") or "member",
                                     name=text(form, "name"),
                                     password=text(form, "password") or None, grants=grants)
    except (ValidationFailed, NotFound) as error:
        values = {k: text(form, k) for k in ("email", "name", "role")}
        return _users_page(request, viewer, runtime, status=422, values=values,
                           error=error.message + (f" {error.hint}" if error.hint else ""))
    return redirect(f"{PREFIX}/users?done=added")


@router.get("/users/{user_id}")
def user_page(request: Request, user_id: str, viewer: AdminDep,
              runtime: RuntimeDep, done: str = "") -> Response:
    user = runtime.accounts.get_user(viewer.actor, user_id)
    return render(request, "user_edit.html", user=user,
                  granted={g.workspace_id: set(g.scopes) for g in user.grants},
                  workspaces=runtime.accounts.workspaces(viewer.actor.account_id),
                  member_scopes=_member_scopes(runtime), roles=ROLES, error="",
                  notice=f"{NOTICES.get(done, '')} {propagation_notice(request, 'applies')}"
                  .strip(), second_factor=runtime.two_factor.status(user.id)[0])


@router.post("/users/{user_id}")
def update_user(request: Request, user_id: str, viewer: AdminDep, form: FormDep,
                runtime: RuntimeDep) -> Response:
    workspace_ids = [w.id for w in runtime.accounts.workspaces(viewer.actor.account_id)]
    grants = _grants({ws: texts(form, f"grant:{ws}") for ws in workspace_ids}, workspace_ids)
    active = text(form, "active") == "yes"
    try:
        runtime.accounts.update_user(viewer.actor, user_id, role=text(form, "role") or None,
                                     active=active, grants=grants)
    except ValidationFailed as error:
        user = runtime.accounts.get_user(viewer.actor, user_id)
        return render(request, "user_edit.html", status_code=422, user=user,
                      granted={g.workspace_id: set(g.scopes) for g in user.grants},
                      workspaces=runtime.accounts.workspaces(viewer.actor.account_id),
                      member_scopes=_member_scopes(runtime), roles=ROLES, notice="",
                      error=error.message + (f" {error.hint}" if error.hint else ""))
    if not active:
        runtime.sessions.close_all_for(user_id)
    done = runtime.propagation.settle(user_id)
    return redirect(f"{PREFIX}/users/{user_id}?done=granted&{propagation_query(done)}")


# --- account policies ---------------------------------------------------------------


def _account(runtime: Runtime, account_id: str) -> Account:
    with runtime.database.reading() as session:
        return session.get_one(Account, account_id)


@router.get("/account")
def policies_page(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
                  done: str = "") -> Response:
    account = _account(runtime, viewer.actor.account_id)
    return render(request, "policies.html", account=account, values=None, error="",
                  error_field="",
                  notice=f"{NOTICES.get(done, '')} {propagation_notice(request, 'applies')}"
                  .strip())


def _days(raw: str, name: str) -> int:
    if not (raw.strip().isascii() and raw.strip().isdigit()):
        raise ValidationFailed(f"{name} must be a whole number of days.",
                               field="max_validity_days")
    return int(raw)


def _reminder_days(raw: str) -> list[int]:
    parts = [p.strip() for p in raw.replace(";", ",").split(",") if p.strip()]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise ValidationFailed("Reminder days are whole numbers separated by commas, e.g. 7, 2.",
                               field="reminder_days")
    return [int(p) for p in parts]


@router.post("/account")
def update_policies(request: Request, viewer: AdminDep, form: FormDep,
                    runtime: RuntimeDep) -> Response:
    try:
        changes = PolicyChanges(
            max_validity_days=_days(text(form, "max_validity_days"), "The maximum validity"),
            reminder_days=_reminder_days(text(form, "reminder_days")),
            retrievable_application_tokens=text(form, "retrievable") == "on",
            ip_allowlist=split_lines(text(form, "ip_allowlist")),
            new_network_alerts=text(form, "new_network_alerts") == "on",
            contain="suspend" if text(form, "contain") == "suspend" else "off")
        account = runtime.accounts.update_policies(viewer.actor, changes)
    except ValidationFailed as error:
        values = {k: text(form, k) for k in ("max_validity_days", "reminder_days",
                                             "ip_allowlist", "retrievable",
                                             "new_network_alerts", "contain")}
        return render(request, "policies.html", status_code=422,
                      account=_account(runtime, viewer.actor.account_id), values=values,
                      error=error.message + (f" {error.hint}" if error.hint else ""),
                      error_field=str(error.details.get("field", "")), notice="")
    done = runtime.propagation.settle(account.id)
    return redirect(f"{PREFIX}/account?done=saved&{propagation_query(done)}")


# --- outbox -------------------------------------------------------------------------


@router.get("/outbox")
def outbox_page(request: Request, viewer: AdminDep, runtime: RuntimeDep) -> Response:
    messages = outbox.recent(runtime, viewer.actor.account_id)
    return render(request, "outbox.html", configured=messages is not None,
                  messages=messages or [], smtp=bool(runtime.settings.smtp_url))


@router.get("/outbox/message")
def outbox_message(request: Request, viewer: AdminDep, runtime: RuntimeDep,
                   id: str = "") -> Response:
    """One message as it was (or will be) sent: the mail's text or the webhook's JSON."""
    found = outbox.one(runtime, viewer.actor.account_id, id)
    if found is None:
        raise NotFound("No such message in this account's outbox.",
                       "Open it from the Outbox page.")
    return render(request, "outbox_message.html", message=found.row, body=found.body)
