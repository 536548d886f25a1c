"""The account itself over the management API: read it, change its policies."""

from __future__ import annotations

from fastapi import APIRouter, Response

from tallykey.accounts.models import Account
from tallykey.accounts.service import OFF, PolicyChanges
from tallykey.api.deps import ManagementActor, RuntimeDep
from tallykey.api.responses import error_responses, show_propagation
from tallykey.api.schemas import (
    AccountUpdate,
    AccountView,
)

router = APIRouter(prefix="/api/v1",
                   responses=error_responses(400, 401, 403, 404, 409, 413, 422, 429, 503))


@router.get("/account", response_model=AccountView, tags=["account"])
def get_account(actor: ManagementActor, runtime: RuntimeDep) -> AccountView:
    with runtime.database.reading() as session:
        return AccountView.of(session.get_one(Account, actor.account_id))


@router.patch("/account", response_model=AccountView, tags=["account"])
def update_account(body: AccountUpdate, actor: ManagementActor,
                   runtime: RuntimeDep, response: Response) -> AccountView:
    account = runtime.accounts.update_policies(actor, PolicyChanges(
        max_validity_days=body.max_validity_days, reminder_days=body.reminder_days,
        retrievable_application_tokens=body.retrievable_application_tokens,
        ip_allowlist=body.ip_allowlist, new_network_alerts=body.new_network_alerts,
        token_approval=body.token_approval, revoke_inactive_days=OFF if (
            "revoke_inactive_days" in body.model_fields_set
            and body.revoke_inactive_days is None) else body.revoke_inactive_days,
        contain=body.contain))
    if body.two_factor_policy is not None:
        runtime.two_factor.set_policy(actor, body.two_factor_policy)
        account = runtime.accounts.find_account(account.id)
    show_propagation(response, runtime.propagation.settle(account.id))
    return AccountView.of(account)
