"""Governance pages (SPEC §17): the approval queue where administrators approve or deny
members' pending tokens, the account's governance policies (token approval, inactivity
revocation), and each user's weekly-digest choice."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tallykey.accounts.models import Account
from tallykey.accounts.service import OFF, PolicyChanges
from tallykey.console import forms
from tallykey.console.forms import text
from tallykey.console.web import (
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    RuntimeDep,
    Viewer,
    ViewerDep,
    propagation_notice,
    propagation_query,
    redirect,
    render,
)
from tallykey.errors import Conflict, ValidationFailed
from tallykey.runtime import Runtime

router = APIRouter(route_class=ConsoleRoute)

NOTICES = {"approved": "Token approved: it works from now on.",
           "denied": "Token denied: it is revoked and can never be used."}


def _queue(request: Request, viewer: Viewer, runtime: Runtime, *, status: int = 200,
           notice: str = "", error: str = "") -> Response:
    return render(request, "approvals.html", status_code=status,
                  tokens=runtime.tokens.pending(viewer.actor), now=runtime.clock.now(),
                  notice=notice, error=error)


@router.get("/approvals")
def approvals_page(request: Request, viewer: AdminDep, runtime: RuntimeDep,
                   done: str = "") -> Response:
    """Members' tokens awaiting approval, oldest request first."""
    reached = "works" if done == "approved" else "stopped"
    notice = f"{NOTICES.get(done, '')} {propagation_notice(request, reached)}".strip()
    return _queue(request, viewer, runtime, notice=notice)


@router.post("/approvals/{token_id}/approve")
def approve(request: Request, token_id: str, viewer: AdminDep, _: FormDep,
            runtime: RuntimeDep) -> Response:
    """Approve one pending token, then say how far the change reached."""
    return _decide(request, viewer, runtime, token_id, approve=True)


@router.post("/approvals/{token_id}/deny")
def deny(request: Request, token_id: str, viewer: AdminDep, _: FormDep,
         runtime: RuntimeDep) -> Response:
    """Deny one pending token: it is revoked for good."""
    return _decide(request, viewer, runtime, token_id, approve=False)


def _decide(request: Request, viewer: Viewer, runtime: Runtime, token_id: str, *,
            approve: bool) -> Response:
    decision = runtime.tokens.approve if approve else runtime.tokens.deny
    try:
        decision(viewer.actor, token_id)
    except Conflict as error:  # decided meanwhile (another admin, another tab)
        return _queue(request, viewer, runtime, status=error.status, error=forms.said(error))
    settled = runtime.propagation.settle(token_id)
    done = "approved" if approve else "denied"
    return redirect(f"{PREFIX}/approvals?done={done}&{propagation_query(settled)}")


@router.post("/account/governance")
def set_governance(request: Request, viewer: AdminDep, form: FormDep,
                   runtime: RuntimeDep) -> Response:
    """Token approval and inactivity revocation (empty days: off)."""
    raw_days = text(form, "revoke_inactive_days").strip()
    try:
        if raw_days and not (raw_days.isascii() and raw_days.isdigit()):
            raise ValidationFailed("Inactivity days must be a whole number of days.",
                                   "Leave it empty to never revoke unused tokens.",
                                   field="revoke_inactive_days")
        runtime.accounts.update_policies(viewer.actor, PolicyChanges(
            token_approval=text(form, "token_approval") or None,
            revoke_inactive_days=int(raw_days) if raw_days else OFF))
    except ValidationFailed as error:
        with runtime.database.reading() as session:
            account = session.get_one(Account, viewer.actor.account_id)
        return render(request, "policies.html", status_code=422, account=account,
                      values=None, error=forms.said(error),
                      error_field=str(error.details.get("field", "")), notice="")
    done = runtime.propagation.settle(viewer.actor.account_id)
    return redirect(f"{PREFIX}/account?done=saved&{propagation_query(done)}")


@router.post("/me/digest")
def set_digest(viewer: ViewerDep, form: FormDep, runtime: RuntimeDep) -> Response:
    """The signed-in user's own weekly-digest choice."""
    runtime.accounts.set_weekly_digest(viewer.actor, text(form, "weekly_digest") == "on")
    return redirect(f"{PREFIX}/me?done=digest")
