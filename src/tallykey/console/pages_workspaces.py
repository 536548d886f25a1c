"""The workspaces page (administrators): list, create, rename, and archive with a
confirmation that says how many tokens stop. The word shown is the platform's own
(`TALLYKEY_WORKSPACE_LABEL`: "Project", "Team"...)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from tallykey.accounts.models import WorkspaceGrant
from tallykey.console.forms import text
from tallykey.console.web import (
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    RuntimeDep,
    Viewer,
    redirect,
    render,
)
from tallykey.errors import Conflict, NotFound, ValidationFailed
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token

router = APIRouter(route_class=ConsoleRoute)
NOTICES = {"added": "{label} created.", "saved": "Changes saved."}


def _page(request: Request, viewer: Viewer, runtime: Runtime, status: int = 200,
          error: str = "", values: dict[str, str] | None = None, notice: str = "",
          row_errors: dict[str, str] | None = None) -> Response:
    account_id = viewer.actor.account_id
    workspaces = runtime.accounts.workspaces(account_id, archived=True)
    now = runtime.clock.now()
    with runtime.database.reading() as session:
        tokens = {row[0]: row[1] for row in session.execute(
            select(Token.workspace_id, func.count()).where(
                Token.account_id == account_id, Token.workspace_id.is_not(None),
                Token.revoked_at.is_(None), Token.expires_at > now)
            .group_by(Token.workspace_id))}
        members = {row[0]: row[1] for row in session.execute(
            select(WorkspaceGrant.workspace_id, func.count())
            .where(WorkspaceGrant.workspace_id.in_([w.id for w in workspaces]))
            .group_by(WorkspaceGrant.workspace_id))}
    return render(request, "workspaces.html", status_code=status,
                  live=[w for w in workspaces if w.archived_at is None],
                  archived=[w for w in workspaces if w.archived_at is not None],
                  tokens=tokens, members=members, error=error, values=values or {},
                  notice=notice, row_errors=row_errors or {})


@router.get("/workspaces")
def workspaces_page(request: Request, viewer: AdminDep, runtime: RuntimeDep,
                    done: str = "") -> Response:
    notice = NOTICES.get(done, "").format(label=runtime.settings.workspace_label)
    return _page(request, viewer, runtime, notice=notice)


@router.post("/workspaces")
def create_workspace(request: Request, viewer: AdminDep, form: FormDep,
                     runtime: RuntimeDep) -> Response:
    try:
        runtime.accounts.add_workspace(viewer.actor, text(form, "slug").strip(),
                                       text(form, "name"), text(form, "timezone") or "UTC")
    except (ValidationFailed, Conflict, NotFound) as error:
        values = {k: text(form, k) for k in ("slug", "name", "timezone")}
        return _page(request, viewer, runtime, status=422, values=values,
                     error=error.message + (f" {error.hint}" if error.hint else ""))
    return redirect(f"{PREFIX}/workspaces?done=added")


@router.post("/workspaces/{workspace_id}")
def rename_workspace(request: Request, workspace_id: str, viewer: AdminDep, form: FormDep,
                     runtime: RuntimeDep) -> Response:
    try:
        runtime.accounts.update_workspace(viewer.actor, workspace_id,
                                          name=text(form, "name"))
    except (ValidationFailed, Conflict) as error:
        return _page(request, viewer, runtime, status=422,
                     row_errors={workspace_id: error.message})
    return redirect(f"{PREFIX}/workspaces?done=saved")


@router.get("/workspaces/{workspace_id}/archive")
def archive_page(request: Request, workspace_id: str, viewer: AdminDep,
                 runtime: RuntimeDep) -> Response:
    workspace = runtime.accounts.get_workspace(viewer.actor, workspace_id)
    stopping = runtime.accounts.tokens_stopped_by_archiving(viewer.actor, workspace.id)
    return render(request, "workspace_archive.html", workspace=workspace, stopping=stopping,
                  error="")


@router.post("/workspaces/{workspace_id}/archive")
def archive_workspace(request: Request, workspace_id: str, viewer: AdminDep,
                      form: FormDep, runtime: RuntimeDep) -> Response:
    try:
        archived = runtime.accounts.archive_workspace(viewer.actor, workspace_id)
    except Conflict as error:
        workspace = runtime.accounts.get_workspace(viewer.actor, workspace_id)
        return render(request, "workspace_archive.html", status_code=409,
                      workspace=workspace, stopping=0, error=error.message)
    # the same wait as a revocation's: answered once every live node has applied it
    (workspace, stopped), done = archived.value, archived.propagation
    note = (f"{workspace.name} was archived: {stopped} token"
            f"{'' if stopped == 1 else 's'} {done.summary()}." if stopped else
            f"{workspace.name} was archived. It held no live tokens, so none stopped.")
    return _page(request, viewer, runtime, notice=note)  # the answer says how it went
