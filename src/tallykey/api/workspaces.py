"""The workspaces of an account over the management API: list, create, read, rename,
archive."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import (
    ArchivedWorkspaceView,
    WorkspaceCreate,
    WorkspaceUpdate,
    WorkspaceView,
)
from tallykey.errors import (
    NotFound,
)

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


@router.get("/workspaces", response_model=list[WorkspaceView], tags=["workspaces"])
def list_workspaces(actor: ManagementActor, runtime: RuntimeDep,
                    archived: bool = False) -> list[WorkspaceView]:
    """The account's workspaces in use (`archived=true`: archived ones too). A member
    sees the workspaces they hold permissions in; an auditor, all of them."""
    found = runtime.accounts.workspaces(actor.account_id, archived=archived)
    if not actor.reads_all:
        assert actor.user_id is not None
        user = runtime.accounts.get_user(actor, actor.user_id)
        mine = {g.workspace_id for g in user.grants}
        found = [w for w in found if w.id in mine]
    return [WorkspaceView.of(w) for w in found]


@router.post("/workspaces", status_code=201, response_model=WorkspaceView,
             tags=["workspaces"])
def create_workspace(body: WorkspaceCreate, actor: ManagementActor,
                     runtime: RuntimeDep) -> WorkspaceView:
    """Add a workspace (administrators). Grant members permissions in it with
    `PATCH /api/v1/users/{id}`."""
    return WorkspaceView.of(runtime.accounts.add_workspace(actor, body.chosen_slug, body.name,
                                                           body.timezone))


@router.get("/workspaces/{workspace_id}", response_model=WorkspaceView, tags=["workspaces"])
def get_workspace(workspace_id: str, actor: ManagementActor,
                  runtime: RuntimeDep) -> WorkspaceView:
    workspace = runtime.accounts.get_workspace(actor, workspace_id)
    if not actor.reads_all:
        assert actor.user_id is not None
        user = runtime.accounts.get_user(actor, actor.user_id)
        if workspace.id not in {g.workspace_id for g in user.grants}:
            raise NotFound("No such workspace in this account.",
                           "Name it by its id or slug (GET /api/v1/workspaces).",
                           field="workspace")  # the same answer as for an unknown one
    return WorkspaceView.of(workspace)


@router.patch("/workspaces/{workspace_id}", response_model=WorkspaceView,
              tags=["workspaces"])
def update_workspace(workspace_id: str, body: WorkspaceUpdate, actor: ManagementActor,
                     runtime: RuntimeDep, response: Response) -> WorkspaceView:
    """Rename a workspace (name, slug) or change its time zone."""
    workspace = runtime.accounts.update_workspace(actor, workspace_id, name=body.name,
                                                  slug=body.slug, timezone=body.timezone)
    if body.slug is not None:
        show_propagation(response, runtime.propagation.settle(actor.account_id))
    return WorkspaceView.of(workspace)


@router.delete("/workspaces/{workspace_id}", response_model=ArchivedWorkspaceView,
               tags=["workspaces"])
def archive_workspace(workspace_id: str, actor: ManagementActor, runtime: RuntimeDep,
                      response: Response) -> ArchivedWorkspaceView:
    """Archive a workspace: its tokens stop at once on every node (the answer comes when
    every live node has applied it, like a revocation's) and permissions in it no longer
    count. Its history stays; archiving cannot be undone."""
    archived = runtime.accounts.archive_workspace(actor, workspace_id)
    workspace, stopped = archived.value
    return ArchivedWorkspaceView(workspace=WorkspaceView.of(workspace), tokens_stopped=stopped,
                                 propagation=show_propagation(response, archived.propagation))
