"""`tallykey identities list|create|show|update|delete` (SPEC §16). `register(app)` adds
them. Changes are made as the operator and audited; `update` and `delete` answer once
every live node applied them, like a revocation."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, fail, out, print_table
from tallykey.cli.tokens import (
    CreditsOption,
    MetadataOption,
    NoPlanOption,
    PlanOption,
    RefillOption,
    key_controls,
)
from tallykey.identities.models import Identity
from tallykey.identities.service import IdentityChanges, IdentityDraft, balance

identities_app = typer.Typer(help="Identities of an account: the platform's customers or "
                             "integrations, whose tokens share one credit pool and rate "
                             "limits.", no_args_is_help=True)

IdentityRef = Annotated[str, typer.Argument(help="Identity id or external id.")]
IdentityRateLimitOption = Annotated[list[str] | None, typer.Option(
    "--rate-limit", metavar="NAME=LIMIT/SECONDS",
    help="A rate limit counted once for all the identity's tokens, e.g. default=100/60. "
    "Repeat for more.")]


def register(app: typer.Typer) -> None:
    app.add_typer(identities_app, name="identities")


def identity_dict(identity: Identity, now: Any, tokens: int) -> dict[str, Any]:
    refill = (None if identity.credits_refill_amount is None else
              {"amount": identity.credits_refill_amount,
               "interval": identity.credits_refill_interval})
    left = balance(identity, now)
    return {"id": identity.id, "external_id": identity.external_id, "name": identity.name,
            "metadata": identity.meta, "rate_limits": identity.rate_limits or [],
            "credits": None if left is None else {"remaining": left, "refill": refill},
            "tokens": tokens, "plan_id": identity.plan_id,
            "created_at": identity.created_at.isoformat(),
            "updated_at": identity.updated_at.isoformat()}


def _controls(rate_limit: list[str] | None, credits: int | None, refill: str | None,
              metadata: str | None) -> dict[str, Any]:
    found = key_controls(rate_limit, credits, refill, metadata, None)
    for rule in found.get("rate_limits", []):
        if rule.get("shared"):
            fail("An identity's rate limits are shared by all its tokens already: leave "
                 "out :owner or :external_id.")
    return found


@identities_app.command("list")
def identities_list(account: AccountOption, as_json: JsonOption = False) -> None:
    """List the account's identities."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        found = rt.identities.list_identities(actor)
        counts = rt.identities.token_counts(actor)
        now = rt.clock.now()
    rows = [identity_dict(i, now, counts.get(i.id, 0)) for i in found]
    if as_json:
        emit_json(rows)
        return
    print_table(["id", "external id", "name", "credits", "tokens"],
                [[r["id"], r["external_id"], r["name"],
                  "" if r["credits"] is None else str(r["credits"]["remaining"]),
                  str(r["tokens"])] for r in rows], keep=("id", "external id"))


@identities_app.command("create")
def identities_create(
    account: AccountOption,
    external_id: Annotated[str, typer.Option(help="Your id for the customer or integration "
                                             "(unique in the account).")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the external "
                                             "id).")] = None,
    rate_limit: IdentityRateLimitOption = None,
    credits: CreditsOption = None,
    refill: RefillOption = None,
    metadata: MetadataOption = None,
    plan: PlanOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an identity (audited as the operator)."""
    controls = _controls(rate_limit, credits, refill, metadata)
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        identity = rt.identities.create(actor, IdentityDraft(
            external_id=external_id, name=name, metadata=controls.get("metadata"),
            rate_limits=controls.get("rate_limits", ()), credits=controls.get("credits"),
            plan_id=plan))
        shown = identity_dict(identity, rt.clock.now(), 0)
    if as_json:
        emit_json(shown)
    else:
        out.print(f"created identity {identity.external_id} ({identity.id})",
                  highlight=False)


@identities_app.command("show")
def identities_show(account: AccountOption, ref: IdentityRef,
                    as_json: JsonOption = False) -> None:
    """An identity with its credits left and its tokens."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        identity = rt.identities.get(actor, ref)
        tokens = rt.identities.tokens_of(actor, identity.id)
        shown = identity_dict(identity, rt.clock.now(), len(tokens))
        shown["token_list"] = [{"id": t.id, "name": t.name, "prefix": t.prefix,
                                "status": t.status_at(rt.clock.now())} for t in tokens]
    if as_json:
        emit_json(shown)
        return
    credits = shown["credits"]
    out.print(f"{identity.external_id} ({identity.id}): {identity.name}\n"
              f"credits: {'none' if credits is None else credits['remaining']}\n"
              f"rate limits: {len(shown['rate_limits'])}\ntokens: {len(tokens)}",
              highlight=False)
    for token in shown["token_list"]:
        out.print(f"  {token['prefix']}  {token['name']}  {token['status']}",
                  highlight=False)


@identities_app.command("update")
def identities_update(
    account: AccountOption,
    ref: IdentityRef,
    external_id: Annotated[str | None, typer.Option(help="New external id.")] = None,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    rate_limit: IdentityRateLimitOption = None,
    no_rate_limits: Annotated[bool, typer.Option(
        "--no-rate-limits", metavar="", help="Remove every rate limit.")] = False,
    credits: CreditsOption = None,
    refill: RefillOption = None,
    no_credits: Annotated[bool, typer.Option(
        "--no-credits", metavar="", help="Remove the credit pool.")] = False,
    metadata: MetadataOption = None,
    plan: PlanOption = None,
    no_plan: NoPlanOption = False,
    as_json: JsonOption = False,
) -> None:
    """Change an identity; answered once every live node applied the change."""
    from tallykey.feed.propagation import PropagationView
    controls = _controls(rate_limit, credits, refill, metadata)
    if no_rate_limits:
        controls["rate_limits"] = []
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        changed = rt.identities.update(actor, ref, IdentityChanges(
            external_id=external_id, name=name, metadata=controls.get("metadata"),
            rate_limits=controls.get("rate_limits"), credits=controls.get("credits"),
            remove_credits=no_credits, plan_id=plan, detach_plan=no_plan))
        identity, done = changed.value, changed.propagation
        shown = identity_dict(identity, rt.clock.now(),
                              rt.identities.token_counts(actor).get(identity.id, 0))
    if as_json:
        emit_json({**shown, "propagation": PropagationView.of(done, "applied")
                   .model_dump(mode="json")})
    else:
        out.print(f"updated identity {identity.external_id}; {done.summary('applied')}",
                  highlight=False)


@identities_app.command("delete")
def identities_delete(
    account: AccountOption,
    ref: IdentityRef,
    detach: Annotated[bool, typer.Option(
        "--detach", metavar="",
        help="Also take its tokens out of it (they keep working).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete an identity (refused while it has tokens, unless --detach)."""
    from tallykey.feed.propagation import PropagationView
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        identity = rt.identities.get(actor, ref)
        deleted = rt.identities.delete(actor, identity.id, detach=detach)
        detached, done = deleted.value, deleted.propagation
    if as_json:
        emit_json({"id": identity.id, "deleted": True, "detached_tokens": detached,
                   "propagation": PropagationView.of(done, "applied").model_dump(
                       mode="json")})
    else:
        out.print(f"deleted identity {identity.external_id}; {len(detached)} token(s) "
                  f"detached; {done.summary('applied')}", highlight=False)
