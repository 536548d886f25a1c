"""`tallykey plans list|create|show|update|delete` (SPEC §16). `register(app)` adds them.
Changes are made as the operator and audited; `update` and `delete` answer once every
live node applied them, like a revocation."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, fail, out, print_table
from tallykey.cli.tokens import parse_refill
from tallykey.controls.rules import parse_rate_limit, written_rate_limit
from tallykey.errors import ValidationFailed
from tallykey.plans.models import Plan
from tallykey.plans.service import PlanChanges, PlanDraft, PlanUsers, refill_of

plans_app = typer.Typer(help="Plans of an account: named bundles of rate limits, a credit "
                        "refill and a scopes ceiling that tokens and identities use.",
                        no_args_is_help=True)

PlanRef = Annotated[str, typer.Argument(help="Plan id or name.")]
PlanRateLimitOption = Annotated[list[str] | None, typer.Option(
    "--rate-limit", metavar="NAME=LIMIT/SECONDS[:owner|:external_id]",
    help="A rate limit counted for each token of the plan, e.g. default=100/60. Repeat "
    "for more.")]
PlanRefillOption = Annotated[str | None, typer.Option(
    "--refill", metavar="AMOUNT/daily|monthly",
    help="Credits each token of the plan gets per day or month, e.g. 1000/monthly.")]
PlanScopeOption = Annotated[list[str] | None, typer.Option(
    "--scope", help="A scope of the ceiling (tokens of the plan pass with no other); "
    "repeat for more.")]
DescriptionOption = Annotated[str | None, typer.Option(help="What the plan is for.")]


def register(app: typer.Typer) -> None:
    app.add_typer(plans_app, name="plans")


def plan_dict(plan: Plan, users: PlanUsers | None = None) -> dict[str, Any]:
    users = users or PlanUsers()
    return {"id": plan.id, "name": plan.name, "description": plan.description,
            "rate_limits": plan.rate_limits or [], "refill": refill_of(plan),
            "scopes": plan.scopes, "tokens": users.tokens, "identities": users.identities,
            "created_at": plan.created_at.isoformat(),
            "updated_at": plan.updated_at.isoformat()}


def _limits(texts: list[str] | None) -> list[dict[str, Any]] | None:
    if not texts:
        return None
    try:
        return [parse_rate_limit(text) for text in texts]
    except ValidationFailed as error:
        fail(error.message, error.hint)


@plans_app.command("list")
def plans_list(account: AccountOption, as_json: JsonOption = False) -> None:
    """List the account's plans."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        found = rt.plans.all_plans(actor)
        users = rt.plans.users(actor)
    rows = [plan_dict(p, users.get(p.id)) for p in found]
    if as_json:
        emit_json(rows)
        return
    print_table(["id", "name", "rate limits", "refill", "scopes", "tokens", "identities"],
                [[r["id"], r["name"],
                  " ".join(written_rate_limit(rule) for rule in r["rate_limits"]),
                  "" if r["refill"] is None else
                  f"{r['refill']['amount']}/{r['refill']['interval']}",
                  "any" if r["scopes"] is None else " ".join(r["scopes"]),
                  str(r["tokens"]), str(r["identities"])] for r in rows],
                keep=("id", "name"))


@plans_app.command("create")
def plans_create(
    account: AccountOption,
    name: Annotated[str, typer.Option(help="The plan's name (unique in the account).")],
    description: DescriptionOption = None,
    rate_limit: PlanRateLimitOption = None,
    refill: PlanRefillOption = None,
    scope: PlanScopeOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a plan (audited as the operator)."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        plan = rt.plans.create(actor, PlanDraft(
            name=name, description=description or "", rate_limits=_limits(rate_limit) or (),
            refill=parse_refill(refill) if refill else None, scopes=scope))
        shown = plan_dict(plan)
    if as_json:
        emit_json(shown)
    else:
        out.print(f"created plan {plan.name} ({plan.id})", highlight=False)


@plans_app.command("show")
def plans_show(account: AccountOption, ref: PlanRef, as_json: JsonOption = False) -> None:
    """A plan with its settings and how many tokens and identities use it."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        plan = rt.plans.get(actor, ref)
        shown = plan_dict(plan, rt.plans.users(actor).get(plan.id))
    if as_json:
        emit_json(shown)
        return
    refill = shown["refill"]
    limits = " ".join(written_rate_limit(r) for r in shown["rate_limits"]) or "none"
    refilled = "none" if refill is None else f"{refill['amount']}/{refill['interval']}"
    ceiling = "none" if plan.scopes is None else " ".join(plan.scopes) or "(empty)"
    out.print(f"{plan.name} ({plan.id})\nrate limits: {limits}\nrefill: {refilled}\n"
              f"scopes ceiling: {ceiling}\ntokens: {shown['tokens']}\n"
              f"identities: {shown['identities']}", highlight=False)


@plans_app.command("update")
def plans_update(
    account: AccountOption,
    ref: PlanRef,
    name: Annotated[str | None, typer.Option(help="New name.")] = None,
    description: DescriptionOption = None,
    rate_limit: PlanRateLimitOption = None,
    no_rate_limits: Annotated[bool, typer.Option(
        "--no-rate-limits", metavar="", help="Remove every rate limit.")] = False,
    refill: PlanRefillOption = None,
    no_refill: Annotated[bool, typer.Option(
        "--no-refill", metavar="", help="Remove the refill.")] = False,
    scope: PlanScopeOption = None,
    no_ceiling: Annotated[bool, typer.Option(
        "--no-ceiling", metavar="", help="Remove the scopes ceiling.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Change a plan; answered once every live node applied the change."""
    from tallykey.feed.propagation import PropagationView
    limits = [] if no_rate_limits else _limits(rate_limit)
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        changed = rt.plans.update(actor, ref, PlanChanges(
            name=name, description=description, rate_limits=limits,
            refill=parse_refill(refill) if refill else None, remove_refill=no_refill,
            scopes=scope, remove_scopes=no_ceiling))
        plan, done = changed.value, changed.propagation
        shown = plan_dict(plan, rt.plans.users(actor).get(plan.id))
    if as_json:
        emit_json({**shown, "propagation": PropagationView.of(done, "applied")
                   .model_dump(mode="json")})
    else:
        out.print(f"updated plan {plan.name}; {done.summary('applied')}", highlight=False)


@plans_app.command("delete")
def plans_delete(
    account: AccountOption,
    ref: PlanRef,
    detach: Annotated[bool, typer.Option(
        "--detach", metavar="",
        help="Also take its tokens and identities off it (they keep working).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a plan (refused while tokens or identities use it, unless --detach)."""
    from tallykey.feed.propagation import PropagationView
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        plan = rt.plans.get(actor, ref)
        deleted = rt.plans.delete(actor, plan.id, detach=detach)
        detached, done = deleted.value, deleted.propagation
    if as_json:
        emit_json({"id": plan.id, "deleted": True, "detached_tokens": detached.tokens,
                   "detached_identities": detached.identities,
                   "propagation": PropagationView.of(done, "applied").model_dump(
                       mode="json")})
    else:
        out.print(f"deleted plan {plan.name}; {len(detached.tokens)} token(s) and "
                  f"{len(detached.identities)} identity(ies) detached; "
                  f"{done.summary('applied')}", highlight=False)
