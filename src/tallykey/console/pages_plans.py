"""The plans pages (SPEC §16): a list with a create form, and a page per plan with its
settings, how many tokens and identities use it, and (administrators) an edit form and
deletion. Everyone in the account reads plans; auditors and members change none. Forms
are CSRF-checked like every console form (`FormDep`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData

from tallykey.console.forms import said, text, texts
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
from tallykey.plans.models import Plan
from tallykey.plans.service import PlanChanges, PlanDraft
from tallykey.runtime import Runtime

router = APIRouter(route_class=ConsoleRoute)
NOTICES = {"added": "Plan created.", "saved": "Changes saved."}
FIELDS = ("name", "description", "rate_limits", "refill_amount", "refill_interval",
          "ceiling")


def form_values(plan: Plan) -> dict[str, Any]:
    """The edit form's values for a plan as it is."""
    return {"name": plan.name, "description": plan.description,
            "rate_limits": "\n".join(written_rate_limit(r) for r in plan.rate_limits or []),
            "refill_amount": "" if plan.refill_amount is None else str(plan.refill_amount),
            "refill_interval": plan.refill_interval or "",
            "ceiling": "yes" if plan.scopes is not None else "",
            "scopes": list(plan.scopes or [])}


def read_form(form: FormData) -> dict[str, Any]:
    """The form as service fields; `ValidationFailed` naming the field for what cannot be
    read (the service checks the rest)."""
    found: dict[str, Any] = {"name": text(form, "name"),
                             "description": text(form, "description")}
    limits = [line for line in text(form, "rate_limits").splitlines() if line.strip()]
    found["rate_limits"] = [parse_rate_limit(line) for line in limits]
    amount = text(form, "refill_amount").strip()
    if amount:
        if not (amount.isascii() and amount.isdigit()):
            raise ValidationFailed("The refill amount must be a whole number (or empty: "
                                   "no refill).", field="refill")
        found["refill"] = {"amount": int(amount), "interval": text(form, "refill_interval")}
    else:
        found["refill"] = None
    found["scopes"] = texts(form, "scopes") if text(form, "ceiling") == "yes" else None
    return found


def _values(form: FormData) -> dict[str, Any]:
    return {**{k: text(form, k) for k in FIELDS}, "scopes": texts(form, "scopes")}


def _list(request: Request, viewer: Viewer, runtime: Runtime, *, status: int = 200,
          error: str = "", values: dict[str, Any] | None = None,
          notice: str = "") -> Response:
    plans = runtime.plans.all_plans(viewer.actor)
    return render(request, "plans.html", status_code=status, plans=plans,
                  users=runtime.plans.users(viewer.actor), catalog=runtime.catalog,
                  error=error, values=values or {"scopes": []}, notice=notice)


def _detail(request: Request, viewer: Viewer, runtime: Runtime, plan: Plan, *,
            status: int = 200, error: str = "", values: dict[str, Any] | None = None,
            notice: str = "") -> Response:
    users = runtime.plans.users(viewer.actor).get(plan.id)
    return render(request, "plan_detail.html", status_code=status, plan=plan,
                  tokens=users.tokens if users else 0,
                  identities=users.identities if users else 0, catalog=runtime.catalog,
                  values=values or form_values(plan), error=error, notice=notice)


@router.get("/plans")
def plans_page(request: Request, viewer: ViewerDep, runtime: RuntimeDep,
               done: str = "") -> Response:
    return _list(request, viewer, runtime, notice=NOTICES.get(done, ""))


@router.post("/plans")
def create_plan(request: Request, viewer: AdminDep, form: FormDep,
                runtime: RuntimeDep) -> Response:
    try:
        fields = read_form(form)
        plan = runtime.plans.create(viewer.actor, PlanDraft(**fields))
    except (ValidationFailed, Conflict, PermissionDenied) as error:
        return _list(request, viewer, runtime, status=422, error=said(error),
                     values=_values(form))
    return redirect(f"{PREFIX}/plans/{plan.id}?done=added")


@router.get("/plans/{plan_id}")
def plan_page(request: Request, plan_id: str, viewer: ViewerDep, runtime: RuntimeDep,
              done: str = "") -> Response:
    plan = runtime.plans.get(viewer.actor, plan_id)
    return _detail(request, viewer, runtime, plan, notice=NOTICES.get(done, ""))


@router.post("/plans/{plan_id}")
def edit_plan(request: Request, plan_id: str, viewer: AdminDep, form: FormDep,
              runtime: RuntimeDep) -> Response:
    plan = runtime.plans.get(viewer.actor, plan_id)
    try:
        fields = read_form(form)
        changed = runtime.plans.update(viewer.actor, plan.id, PlanChanges(
            name=fields["name"], description=fields["description"],
            rate_limits=fields["rate_limits"], refill=fields["refill"],
            remove_refill=fields["refill"] is None, scopes=fields["scopes"],
            remove_scopes=fields["scopes"] is None))
    except (ValidationFailed, Conflict) as error:
        return _detail(request, viewer, runtime, plan, status=422, error=said(error),
                       values=_values(form))
    plan = runtime.plans.get(viewer.actor, plan.id)
    return _detail(request, viewer, runtime, plan,
                   notice=f"Changes saved: {changed.propagation.summary('applied')}.")


@router.post("/plans/{plan_id}/delete")
def delete_plan(request: Request, plan_id: str, viewer: AdminDep, form: FormDep,
                runtime: RuntimeDep) -> Response:
    plan = runtime.plans.get(viewer.actor, plan_id)
    try:
        deleted = runtime.plans.delete(viewer.actor, plan.id,
                                       detach=text(form, "detach") == "yes")
    except (Conflict, NotFound) as error:
        return _detail(request, viewer, runtime, plan, status=409, error=said(error))
    detached, done = deleted.value, deleted.propagation
    return _list(request, viewer, runtime, notice=(
        f"Plan {plan.name} deleted; {len(detached.tokens)} token(s) and "
        f"{len(detached.identities)} identity(ies) left it ({done.summary('applied')})."))
