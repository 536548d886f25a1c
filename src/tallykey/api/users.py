"""The users of an account over the management API: list, invite, change role, active
flag and workspace permissions."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import (
    UserCreate,
    UserUpdate,
    UserView,
)

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


@router.get("/users", response_model=list[UserView], tags=["users"])
def list_users(actor: ManagementActor, runtime: RuntimeDep) -> list[UserView]:
    if not actor.is_admin:
        assert actor.user_id is not None
        return [UserView.of(runtime.accounts.get_user(actor, actor.user_id))]
    return [UserView.of(u) for u in runtime.accounts.list_users(actor)]


@router.post("/users", status_code=201, response_model=UserView, tags=["users"])
def create_user(body: UserCreate, actor: ManagementActor, runtime: RuntimeDep) -> UserView:
    user = runtime.accounts.create_user(actor, body.email, role=body.role, name=body.name,
                                        password=body.password, grants=body.workspaces)
    return UserView.of(runtime.accounts.get_user(actor, user.id))


@router.patch("/users/{user_id}", response_model=UserView, tags=["users"])
def update_user(user_id: str, body: UserUpdate, actor: ManagementActor,
                runtime: RuntimeDep, response: Response) -> UserView:
    """Change role, active flag or workspace permissions: effective on the next request,
    on every node."""
    runtime.accounts.update_user(actor, user_id, role=body.role, active=body.active,
                                 grants=body.workspaces)
    show_propagation(response, runtime.propagation.settle(user_id))
    if body.active is False:
        runtime.sessions.close_all_for(user_id)
    return UserView.of(runtime.accounts.get_user(actor, user_id))
