"""The plan service (SPEC §16): create, list, get, update and delete an account's plans,
and find the plan a token or an identity is put on. The console, the management API and
the CLI all call these methods.

A plan is a named bundle of `rate_limits`, a credit `refill` and a `scopes` ceiling.
Tokens and identities reference one (`plan_id`). What a token gets (documented in
docs/deployment.md#plans):

- its plan is its own `plan_id`, else its identity's `plan_id` (token > identity);
- rate limits: the token's own when it has any, else its plan's (counted for each
  token alone, or shared as the rule says); an identity's own limits count beside them;
- credits: the token's own when it has any, else the plan's refill: each token of the
  plan gets `refill.amount` credits per period (a lowered amount applies at once, a
  raised one from the next period);
- scopes: never wider than the ceiling. A token is refused scopes outside its plan's
  ceiling when it is created or changed (422); a ceiling narrowed later, or a plan that
  reaches a token through its identity, is applied at verification (`insufficient_scope`).

Every change is announced on the change feed (subject `plan`; every node drops its
cached verdicts), and `update` and `delete` wait for it like a revocation does
(`Propagator.settle(plan.id)`): they return the change with its propagation.

Everyone in the account reads its plans; only administrators create, change or delete
them, or put a token or an identity on one.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tallykey.accounts.scopes import ScopeCatalog
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.controls import rules
from tallykey.db.engine import Database
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.feed import changes
from tallykey.feed.propagation import Changed, Propagator
from tallykey.identities.models import Identity
from tallykey.plans.models import Plan
from tallykey.tokens import policy
from tallykey.tokens.models import Token

PLAN_CREATED = "plan.created"
PLAN_UPDATED = "plan.updated"
PLAN_DELETED = "plan.deleted"
MAX_PAGE_SIZE = 200
MAX_DESCRIPTION = 1000
MAX_NAME = 100


@dataclass(frozen=True)
class PlanDraft:
    """What a caller asks for when creating a plan (not yet validated). `scopes` None:
    no ceiling."""

    name: str
    description: str = ""
    rate_limits: Sequence[Mapping[str, Any]] = ()
    refill: Mapping[str, Any] | None = None
    scopes: Sequence[str] | None = None


@dataclass(frozen=True)
class PlanChanges:
    """Editable fields; None means "leave as is". `remove_refill` and `remove_scopes`
    take the refill or the ceiling away; `rate_limits=[]` removes the limits."""

    name: str | None = None
    description: str | None = None
    rate_limits: Sequence[Mapping[str, Any]] | None = None
    refill: Mapping[str, Any] | None = None
    remove_refill: bool = False
    scopes: Sequence[str] | None = None
    remove_scopes: bool = False


@dataclass(frozen=True)
class PlanUsers:
    """How many tokens and identities are on a plan."""

    tokens: int = 0
    identities: int = 0


@dataclass(frozen=True)
class PlanPage:
    items: list[Plan]
    next_cursor: str | None


@dataclass(frozen=True)
class Detached:
    """What a delete with `detach` took off the plan."""

    tokens: list[str]
    identities: list[str]


class PlanService:
    def __init__(self, database: Database, clock: Clock, catalog: ScopeCatalog,
                 propagation: Propagator) -> None:
        self.database = database
        self.clock = clock
        self.catalog = catalog
        self.propagation = propagation

    # --- write -----------------------------------------------------------------------

    def create(self, actor: Actor, draft: PlanDraft) -> Plan:
        """A new plan. `ValidationFailed` for a bad field, `Conflict` when the account
        has a plan of this name, `PermissionDenied` for a non-administrator."""
        _require_admin(actor, "create plans")
        name = _name(draft.name)
        description = _description(draft.description)
        limits = _rate_limits(draft.rate_limits)
        refill = _refill(draft.refill)
        scopes = None if draft.scopes is None else _ceiling(draft.scopes, self.catalog)
        now = self.clock.now()
        with self.database.transaction() as session:
            self._require_unique(session, actor.account_id, name, None)
            plan = Plan(account_id=actor.account_id, name=name, description=description,
                        rate_limits=limits, scopes=scopes, created_at=now, updated_at=now)
            _set_refill(plan, refill)
            session.add(plan)
            try:
                session.flush()
            except IntegrityError:  # created by a concurrent request meanwhile
                raise _taken(name, None) from None
            trail.record(session, actor=actor, action=PLAN_CREATED, at=now,
                         target_type="plan", target_id=plan.id, details=snapshot(plan))
            return plan

    def update(self, actor: Actor, plan_id: str, changes_: PlanChanges) -> Changed[Plan]:
        """Change a plan; every token on it (directly or through its identity) uses the
        new settings on every node once the change is announced. Returns the plan once
        every live node applied it (or the timeout ran out), with the propagation."""
        _require_admin(actor, "change plans")
        now = self.clock.now()
        with self.database.transaction() as session:
            plan = self._visible(session, actor, plan_id, for_update=True)
            before = snapshot(plan)
            if changes_.name is not None:
                name = _name(changes_.name)
                if name != plan.name:
                    self._require_unique(session, actor.account_id, name, plan.id)
                plan.name = name
            if changes_.description is not None:
                plan.description = _description(changes_.description)
            if changes_.rate_limits is not None:
                plan.rate_limits = _rate_limits(changes_.rate_limits)
            if changes_.remove_refill:
                _set_refill(plan, None)
            elif changes_.refill is not None:
                _set_refill(plan, _refill(changes_.refill))
            if changes_.remove_scopes:
                plan.scopes = None
            elif changes_.scopes is not None:
                plan.scopes = _ceiling(changes_.scopes, self.catalog)
            after = snapshot(plan)
            if after != before:
                plan.updated_at = now
                trail.record(session, actor=actor, action=PLAN_UPDATED, at=now,
                             target_type="plan", target_id=plan.id,
                             details={k: [before[k], after[k]] for k in after
                                      if after[k] != before[k]})
                changes.announce(session, changes.PLAN, plan.id, now)
        return Changed(plan, self.propagation.settle(plan.id))

    def delete(self, actor: Actor, plan_id: str, *,
               detach: bool = False) -> Changed[Detached]:
        """Delete a plan. While tokens or identities are on it (revoked tokens too) it is
        a `Conflict` unless `detach`: then they leave it (announced, so every node stops
        applying it). Returns what was detached, once every live node applied it (or the
        timeout ran out), with the propagation."""
        _require_admin(actor, "delete plans")
        now = self.clock.now()
        with self.database.transaction() as session:
            plan = self._visible(session, actor, plan_id, for_update=True)
            token_ids = list(session.scalars(select(Token.id).where(
                Token.account_id == actor.account_id, Token.plan_id == plan.id)
                .order_by(Token.created_at, Token.id)))
            identity_ids = list(session.scalars(select(Identity.id).where(
                Identity.account_id == actor.account_id, Identity.plan_id == plan.id)
                .order_by(Identity.external_id)))
            if (token_ids or identity_ids) and not detach:
                raise Conflict(
                    f"This plan is still used by {len(token_ids)} token(s) and "
                    f"{len(identity_ids)} identity(ies).",
                    "Move them to another plan first, or delete with ?detach=true: they "
                    "then keep working without the plan.", tokens=len(token_ids),
                    identities=len(identity_ids))
            if token_ids:
                session.execute(update(Token).where(
                    Token.account_id == actor.account_id, Token.plan_id == plan.id)
                    .values(plan_id=None, updated_at=now)
                    .execution_options(synchronize_session=False))
            if identity_ids:
                session.execute(update(Identity).where(
                    Identity.account_id == actor.account_id, Identity.plan_id == plan.id)
                    .values(plan_id=None, updated_at=now)
                    .execution_options(synchronize_session=False))
            trail.record(session, actor=actor, action=PLAN_DELETED, at=now,
                         target_type="plan", target_id=plan.id,
                         details={"name": plan.name, "detached_tokens": token_ids,
                                  "detached_identities": identity_ids})
            changes.announce(session, changes.PLAN, plan.id, now)
            session.delete(plan)
            deleted, detached = plan.id, Detached(token_ids, identity_ids)
        return Changed(detached, self.propagation.settle(deleted))

    # --- read ------------------------------------------------------------------------

    def get(self, actor: Actor, plan_id: str) -> Plan:
        """The plan `plan_id` (its id, or its name) of the actor's account; `NotFound`
        otherwise (also for another account's)."""
        with self.database.reading() as session:
            return self._visible(session, actor, plan_id)

    def list_plans(self, actor: Actor, *, limit: int = 50,
                   after: str | None = None) -> PlanPage:
        """The account's plans by name, one page at a time (`after`: the cursor of the
        previous page)."""
        if isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE_SIZE}.",
                                   field="limit")
        statement = select(Plan).where(Plan.account_id == actor.account_id)
        if after:
            statement = statement.where(Plan.name > _decode_cursor(after))
        with self.database.reading() as session:
            rows = list(session.scalars(statement.order_by(Plan.name).limit(limit + 1)))
        items = rows[:limit]
        more = len(rows) > limit
        return PlanPage(items, _encode_cursor(items[-1].name) if more and items else None)

    def all_plans(self, actor: Actor) -> list[Plan]:
        """Every plan of the account, by name (for choosers and the console list)."""
        with self.database.reading() as session:
            return list(session.scalars(select(Plan).where(
                Plan.account_id == actor.account_id).order_by(Plan.name)))

    def users(self, actor: Actor) -> dict[str, PlanUsers]:
        """How many tokens and identities each plan of the account has (for lists)."""
        with self.database.reading() as session:
            tokens = {row[0]: int(row[1]) for row in session.execute(
                select(Token.plan_id, func.count()).where(
                    Token.account_id == actor.account_id, Token.plan_id.is_not(None))
                .group_by(Token.plan_id))}
            identities = {row[0]: int(row[1]) for row in session.execute(
                select(Identity.plan_id, func.count()).where(
                    Identity.account_id == actor.account_id, Identity.plan_id.is_not(None))
                .group_by(Identity.plan_id))}
        return {str(plan_id): PlanUsers(int(tokens.get(plan_id, 0)),
                                        int(identities.get(plan_id, 0)))
                for plan_id in set(tokens) | set(identities)}

    def _visible(self, session: Session, actor: Actor, ref: str, *,
                 for_update: bool = False) -> Plan:
        statement = select(Plan).where(Plan.account_id == actor.account_id,
                                       (Plan.id == ref) | (Plan.name == ref))
        if for_update:
            statement = statement.with_for_update(of=Plan)
        plan = session.scalar(statement)
        if plan is None:
            raise NotFound("No such plan in this account.",
                           "Name it by its id or name (GET /api/v1/plans).", field="plan")
        return plan

    def _require_unique(self, session: Session, account_id: str, name: str,
                        other_than: str | None) -> None:
        clash = session.scalar(select(Plan.id).where(Plan.account_id == account_id,
                                                     Plan.name == name))
        if clash is not None and clash != other_than:
            raise _taken(name, clash)


def attach(session: Session, actor: Actor, ref: str, field: str = "plan_id") -> Plan:
    """The plan a token or an identity is put on (by id or name): in the actor's account
    (`NotFound` otherwise, also for another account's), and only by an administrator
    (`PermissionDenied`)."""
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can put a token or an "
                               "identity on a plan or take it off.",
                               "Ask an administrator of your account.", field=field)
    ref = ref.strip()
    found = session.scalar(select(Plan).where(Plan.account_id == actor.account_id,
                                              (Plan.id == ref) | (Plan.name == ref)))
    if found is None:
        raise NotFound(f"No plan {ref[:64]!r} in this account.",
                       "Create it first (POST /api/v1/plans), or name it by its id or name.",
                       field=field)
    return found


def effective_plan(session: Session, token: Token) -> Plan | None:
    """The plan that applies to `token`: its own, else its identity's."""
    plan_id = token.plan_id
    if plan_id is None and token.identity_id is not None:
        plan_id = session.scalar(select(Identity.plan_id).where(
            Identity.id == token.identity_id, Identity.account_id == token.account_id))
    if plan_id is None:
        return None
    return session.scalar(select(Plan).where(Plan.id == plan_id,
                                             Plan.account_id == token.account_id))


def check_within_ceiling(scopes: Sequence[str], plan: Plan | None) -> None:
    """`ValidationFailed` when a token asks for scopes outside its plan's ceiling."""
    if plan is None or plan.scopes is None:
        return
    outside = sorted(set(scopes) - set(plan.scopes))
    if outside:
        raise ValidationFailed(
            f"Scope(s) outside the plan {plan.name!r}: " + ", ".join(outside) + ".",
            "The plan allows: " + (", ".join(plan.scopes) or "no scope") + ". Drop the "
            "others, or pick another plan.", field="scopes", outside=outside,
            plan_id=plan.id)


def snapshot(plan: Plan) -> dict[str, Any]:
    """The plan's settings as the audit trail records them."""
    return {"name": plan.name, "description": plan.description,
            "rate_limits": plan.rate_limits, "refill": refill_of(plan),
            "scopes": plan.scopes}


def refill_of(plan: Plan) -> dict[str, Any] | None:
    if plan.refill_amount is None or plan.refill_interval is None:
        return None
    return {"amount": plan.refill_amount, "interval": plan.refill_interval}


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"Only account administrators can {what}.",
                               "Ask an administrator of your account.")


def _taken(name: str, clash: str | None) -> Conflict:
    return Conflict(f"This account already has a plan named {name!r}.",
                    "Change that plan, or pick another name.", field="name",
                    **({"plan_id": clash} if clash else {}))


def _name(value: str | None) -> str:
    name = (value or "").strip()
    if not name:
        raise ValidationFailed("The plan's name is required.", "Name it after what it "
                               "sells, e.g. 'pro' or 'free-tier'.", field="name")
    if len(name) > MAX_NAME:
        raise ValidationFailed(f"The name is {len(name)} characters long; at most "
                               f"{MAX_NAME} are allowed.", field="name")
    if not name.isprintable():
        raise ValidationFailed("The name contains control characters.", "Remove them.",
                               field="name")
    return name


def _description(value: str | None) -> str:
    text = (value or "").strip()
    if len(text) > MAX_DESCRIPTION:
        raise ValidationFailed(f"The description is {len(text)} characters long; at most "
                               f"{MAX_DESCRIPTION} are allowed.", field="description")
    if any(not ch.isprintable() and ch not in "\n\t" for ch in text):
        raise ValidationFailed("The description contains control characters.",
                               "Remove them.", field="description")
    return text


def _rate_limits(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    return [rule.as_dict() for rule in rules.clean_rate_limits(entries)] or None


def _refill(value: Mapping[str, Any] | None) -> rules.Refill | None:
    if value is None:
        return None
    amount, interval = value.get("amount"), value.get("interval")
    if (not isinstance(amount, int) or isinstance(amount, bool)
            or not 1 <= amount <= rules.MAX_CREDITS):
        raise ValidationFailed(f"refill.amount must be a whole number from 1 to "
                               f"{rules.MAX_CREDITS}.", "Each token of the plan gets this "
                               "many credits per period.", field="refill")
    if interval not in rules.INTERVALS:
        raise ValidationFailed("refill.interval must be 'daily' or 'monthly'.",
                               field="refill")
    return rules.Refill(amount, interval)


def _ceiling(scopes: Sequence[str], catalog: ScopeCatalog) -> list[str]:
    return policy.clean_scopes(scopes, catalog)


def _set_refill(plan: Plan, refill: rules.Refill | None) -> None:
    plan.refill_amount = refill.amount if refill else None
    plan.refill_interval = refill.interval if refill else None


def _encode_cursor(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_",
                                validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("The cursor is not one this list handed out.",
                               "Pass next_cursor from the previous page as it is.",
                               field="after") from None


def period_balance(token: Token, plan: Plan | None, now: datetime) -> int | None:
    """The plan credits `token` has left now (a new period: the full amount), or None
    when the plan's refill does not apply to it (no refill, or credits of its own)."""
    if plan is None or plan.refill_amount is None or plan.refill_interval is None:
        return None
    if token.credits_remaining is not None:
        return None
    period = rules.period_of(plan.refill_interval, now.timestamp())
    if token.plan_credits_period != period or token.plan_credits_remaining is None:
        return plan.refill_amount
    return min(token.plan_credits_remaining, plan.refill_amount)
