"""The identities pages (SPEC §16): a list with a create form, and a page per identity
with its tokens, its credits left, its usage chart and (administrators) an edit form and
deletion. Administrators and auditors see every identity; a member those of their own
tokens. Forms are CSRF-checked like every console form (`FormDep`)."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from tallykey.console import chart
from tallykey.console.forms import said, text
from tallykey.console.web import (
    PREFIX,
    AdminDep,
    ConsoleRoute,
    FormDep,
    RuntimeDep,
    Viewer,
    ViewerDep,
    redirect,
    render,
)
from tallykey.controls.rules import parse_rate_limit, written_rate_limit
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.identities.models import Identity
from tallykey.identities.service import IdentityChanges, IdentityDraft, balance
from tallykey.monitor import analytics
from tallykey.plans.models import Plan
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenChanges, TokenQuery

router = APIRouter(route_class=ConsoleRoute)
NOTICES = {"added": "Identity created.", "saved": "Changes saved."}
FIELDS = ("external_id", "name", "metadata", "credits", "refill_amount", "refill_interval",
          "rate_limits", "plan")


def form_values(identity: Identity) -> dict[str, str]:
    """The edit form's values for an identity as it is."""
    return {"external_id": identity.external_id, "name": identity.name,
            "metadata": json.dumps(identity.meta) if identity.meta else "",
            "credits": "" if identity.credits_remaining is None
            else str(identity.credits_remaining),
            "refill_amount": "" if identity.credits_refill_amount is None
            else str(identity.credits_refill_amount),
            "refill_interval": identity.credits_refill_interval or "",
            "rate_limits": "\n".join(written_rate_limit(r)
                                     for r in identity.rate_limits or []),
            "plan": identity.plan_id or ""}


def read_form(form: FormData) -> dict[str, Any]:
    """The form as service fields; `ValidationFailed` naming the field for what cannot be
    read (the service checks the rest)."""
    found: dict[str, Any] = {"external_id": text(form, "external_id"),
                             "name": text(form, "name").strip() or None}
    raw = text(form, "metadata").strip()
    try:
        found["metadata"] = json.loads(raw) if raw else {}
    except ValueError:
        raise ValidationFailed("Metadata is not valid JSON.", "Write an object, e.g. "
                               "{\"plan\": \"pro\"}, or leave it empty.",
                               field="metadata") from None
    credits, amount = text(form, "credits").strip(), text(form, "refill_amount").strip()
    if credits:
        if not (credits.isascii() and credits.isdigit()):
            raise ValidationFailed("Credits must be a whole number (or empty: no pool).",
                                   field="credits")
        refill = None
        if amount:
            if not (amount.isascii() and amount.isdigit()):
                raise ValidationFailed("The refill amount must be a whole number.",
                                       field="credits")
            refill = {"amount": int(amount), "interval": text(form, "refill_interval")}
        found["credits"] = {"remaining": int(credits), "refill": refill}
    else:
        found["credits"] = None
    limits = [line for line in text(form, "rate_limits").splitlines() if line.strip()]
    found["rate_limits"] = [parse_rate_limit(line) for line in limits]
    found["plan"] = text(form, "plan").strip() or None  # SPEC §16: None takes it off
    found["plan_shown"] = bool(text(form, "plan_shown"))  # an administrator's form
    return found


def _list(request: Request, viewer: Viewer, runtime: Runtime, *, status: int = 200,
          error: str = "", values: dict[str, str] | None = None,
          notice: str = "") -> Response:
    found = runtime.identities.list_identities(viewer.actor)
    counts = runtime.identities.token_counts(viewer.actor)
    now = runtime.clock.now()
    return render(request, "identities.html", status_code=status, identities=found,
                  plans=_plans(viewer, runtime),
                  counts=counts, balances={i.id: balance(i, now) for i in found},
                  error=error, values=values or {}, notice=notice)


def _detail(request: Request, viewer: Viewer, runtime: Runtime, identity: Identity, *,
            status: int = 200, error: str = "", values: dict[str, str] | None = None,
            notice: str = "", usage_unit: str = chart.DAILY) -> Response:
    tokens = runtime.identities.tokens_of(viewer.actor, identity.id)
    now = runtime.clock.now()
    # the usage analytics query (SPEC §16): the last 30 days or 48 hours of its tokens
    window = replace(analytics.window(now, interval=analytics.HOUR if usage_unit ==
                                      chart.HOURLY else analytics.DAY,
                                      group_by=analytics.OUTCOME), identity_id=identity.id)
    with runtime.database.reading() as session:
        found = analytics.verifications(session, viewer.actor, window)
    usage = chart.from_analytics(found, window.starts(), usage_unit)
    return render(request, "identity_detail.html", status_code=status, identity=identity,
                  plans=_plans(viewer, runtime),
                  tokens=tokens, now=now, remaining=balance(identity, now),
                  allowed=sum(b.allowed for b in usage), denied=sum(b.denied for b in usage),
                  usage_chart=chart.usage_svg(usage, usage_unit), usage_unit=usage_unit,
                  values=values or form_values(identity), error=error, notice=notice)


def _plans(viewer: Viewer, runtime: Runtime) -> list[Plan]:
    """The plans an administrator may put an identity on (SPEC §16); none for others."""
    if not viewer.is_admin:
        return []
    return runtime.plans.all_plans(viewer.actor)


@router.get("/identities")
def identities_page(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
                    done: str = "") -> Response:
    return _list(request, viewer, runtime, notice=NOTICES.get(done, ""))


@router.post("/identities")
def create_identity(request: Request, viewer: AdminDep, form: FormDep,
                    runtime: RuntimeDep) -> Response:
    try:
        fields = read_form(form)
        identity = runtime.identities.create(viewer.actor, IdentityDraft(
            external_id=fields["external_id"], name=fields["name"],
            metadata=fields["metadata"] or None, rate_limits=fields["rate_limits"],
            credits=fields["credits"], plan_id=fields["plan"]))
    except (ValidationFailed, Conflict, PermissionDenied, NotFound) as error:
        return _list(request, viewer, runtime, status=422, error=said(error),
                     values={k: text(form, k) for k in FIELDS})
    return redirect(f"{PREFIX}/identities/{identity.id}?done=added")


@router.get("/identities/{identity_id}")
def identity_page(request: Request, identity_id: str, viewer: ViewerDep,
                  runtime: RuntimeDep, done: str = "", usage: str = chart.DAILY) -> Response:
    identity = runtime.identities.get(viewer.actor, identity_id)
    return _detail(request, viewer, runtime, identity, notice=NOTICES.get(done, ""),
                   usage_unit=chart.HOURLY if usage == chart.HOURLY else chart.DAILY)


@router.post("/identities/{identity_id}")
def edit_identity(request: Request, identity_id: str, viewer: AdminDep, form: FormDep,
                  runtime: RuntimeDep) -> Response:
    identity = runtime.identities.get(viewer.actor, identity_id)
    try:
        fields = read_form(form)
        changed = runtime.identities.update(viewer.actor, identity.id, IdentityChanges(
            external_id=fields["external_id"], name=fields["name"] or identity.name,
            metadata=fields["metadata"], rate_limits=fields["rate_limits"],
            credits=fields["credits"], remove_credits=fields["credits"] is None,
            plan_id=fields["plan"] if fields["plan_shown"] else None,
            detach_plan=fields["plan_shown"] and fields["plan"] is None))
    except (ValidationFailed, Conflict, NotFound) as error:
        return _detail(request, viewer, runtime, identity, status=422, error=said(error),
                       values={k: text(form, k) for k in FIELDS})
    identity = runtime.identities.get(viewer.actor, identity.id)
    return _detail(request, viewer, runtime, identity,
                   notice=f"Changes saved: {changed.propagation.summary('applied')}.")


@router.post("/identities/{identity_id}/tokens")
def add_token(request: Request, identity_id: str, viewer: AdminDep, form: FormDep,
              runtime: RuntimeDep) -> Response:
    """Put one of the account's tokens (by prefix or id) in this identity."""
    identity = runtime.identities.get(viewer.actor, identity_id)
    ref = text(form, "token").strip()
    try:
        token = _token(runtime, viewer, ref)
        runtime.tokens.update(viewer.actor, token.id, TokenChanges(identity_id=identity.id))
    except (ValidationFailed, Conflict, NotFound) as error:
        return _detail(request, viewer, runtime, identity, status=422, error=said(error))
    done = runtime.propagation.settle(token.id)
    return _detail(request, viewer, runtime, identity, notice=(
        f"{token.name} now belongs to this identity ({done.summary('applied')})."))


def _token(runtime: Runtime, viewer: Viewer, ref: str) -> Token:
    """The account's token named by its id or its prefix."""
    if ref:
        try:
            return runtime.tokens.get(viewer.actor, ref)
        except NotFound:
            page = runtime.tokens.list_tokens(viewer.actor, TokenQuery(search=ref, limit=5))
            found = [t for t in page.items if ref.startswith(t.prefix)]
            if len(found) == 1:
                return found[0]
    raise NotFound(f"No token {ref[:40]!r} in this account.",
                   "Paste its prefix (tlk_…) or its id from the token list.", field="token")


@router.post("/identities/{identity_id}/delete")
def delete_identity(request: Request, identity_id: str, viewer: AdminDep, form: FormDep,
                    runtime: RuntimeDep) -> Response:
    identity = runtime.identities.get(viewer.actor, identity_id)
    try:
        deleted = runtime.identities.delete(viewer.actor, identity.id,
                                            detach=text(form, "detach") == "yes")
    except (Conflict, NotFound) as error:
        return _detail(request, viewer, runtime, identity, status=409, error=said(error))
    return _list(request, viewer, runtime, notice=(
        f"Identity {identity.external_id} deleted; {len(deleted.value)} token(s) left it "
        f"({deleted.propagation.summary('applied')})."))
