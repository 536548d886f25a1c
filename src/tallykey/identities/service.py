"""The identity service (SPEC §16): create, list, get, update and delete an account's
identities. The console, the management API and the CLI all call these methods.

An identity's credits, rate limits, external id and metadata are part of every verdict
of its tokens: each change is announced on the change feed (subject `identity`; every
node drops its cached verdicts), and `update` and `delete` wait for it like a
revocation does (`Propagator.settle(identity.id)`): they return the change with its
propagation.

Who sees what: administrators and auditors read every identity of the account; a member
reads the identities their own tokens belong to (and nothing else: another one answers
404, as an unknown one does). Only administrators create, change or delete identities,
and only administrators attach a token to one (a member could otherwise drain a
customer's pool).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.controls import rules
from tallykey.db.engine import Database
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.feed import changes
from tallykey.feed.propagation import Changed, Propagator
from tallykey.identities.models import Identity
from tallykey.plans import service as plans
from tallykey.tokens import policy
from tallykey.tokens.models import PERSONAL, Token

IDENTITY_CREATED = "identity.created"
IDENTITY_UPDATED = "identity.updated"
IDENTITY_DELETED = "identity.deleted"
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class IdentityDraft:
    """What a caller asks for when creating an identity (not yet validated)."""

    external_id: str
    name: str | None = None
    metadata: Any = None
    rate_limits: Sequence[Mapping[str, Any]] = ()
    credits: Mapping[str, Any] | None = None
    #: The plan (SPEC §16) of its tokens that name none: its id or name.
    plan_id: str | None = None


@dataclass(frozen=True)
class IdentityChanges:
    """Editable fields; None means "leave as is". `remove_credits` takes the pool away
    (its tokens are no longer costed by it); `metadata={}` clears the metadata."""

    external_id: str | None = None
    name: str | None = None
    metadata: Any = None
    rate_limits: Sequence[Mapping[str, Any]] | None = None
    credits: Mapping[str, Any] | None = None
    remove_credits: bool = False
    #: Put the identity on this plan (id or name); `detach_plan` takes it off.
    plan_id: str | None = None
    detach_plan: bool = False


class IdentityService:
    def __init__(self, database: Database, clock: Clock, propagation: Propagator) -> None:
        self.database = database
        self.clock = clock
        self.propagation = propagation

    # --- write -----------------------------------------------------------------------

    def create(self, actor: Actor, draft: IdentityDraft) -> Identity:
        """A new identity. `ValidationFailed` for a bad field, `Conflict` when the
        account has an identity with this external id, `PermissionDenied` for a
        non-administrator."""
        _require_admin(actor, "create identities")
        external_id = _external_id(draft.external_id)
        name = policy.clean_name(draft.name, "name") if draft.name else external_id[:100]
        metadata = rules.clean_metadata(draft.metadata)
        limits = _rate_limits(draft.rate_limits)
        credits = _credits(draft.credits)
        now = self.clock.now()
        with self.database.transaction() as session:
            self._require_unique(session, actor.account_id, external_id, None)
            identity = Identity(account_id=actor.account_id, external_id=external_id,
                                name=name, meta=metadata, rate_limits=limits,
                                created_at=now, updated_at=now)
            _set_credits(identity, credits, now)
            if draft.plan_id is not None and draft.plan_id.strip():
                identity.plan_id = plans.attach(session, actor, draft.plan_id).id
            session.add(identity)
            try:
                session.flush()
            except IntegrityError:  # created by a concurrent request meanwhile
                raise _taken(external_id, None) from None
            trail.record(session, actor=actor, action=IDENTITY_CREATED, at=now,
                         target_type="identity", target_id=identity.id,
                         details=snapshot(identity))
            return identity

    def update(self, actor: Actor, identity_id: str,
               changes_: IdentityChanges) -> Changed[Identity]:
        """Change an identity; every node stops using its old settings once the change
        is announced. Returns the identity once every live node applied it (or the
        timeout ran out), with the propagation."""
        _require_admin(actor, "change identities")
        now = self.clock.now()
        with self.database.transaction() as session:
            identity = self._visible(session, actor, identity_id, for_update=True)
            before = snapshot(identity)
            if changes_.external_id is not None:
                external_id = _external_id(changes_.external_id)
                if external_id != identity.external_id:
                    self._require_unique(session, actor.account_id, external_id,
                                         identity.id)
                identity.external_id = external_id
            if changes_.name is not None:
                identity.name = policy.clean_name(changes_.name, "name")
            if changes_.metadata is not None:
                identity.meta = rules.clean_metadata(changes_.metadata)
            if changes_.rate_limits is not None:
                identity.rate_limits = _rate_limits(changes_.rate_limits)
            if changes_.remove_credits:
                _set_credits(identity, None, now)
            elif changes_.credits is not None:
                _set_credits(identity, _credits(changes_.credits), now)
            if changes_.detach_plan:
                identity.plan_id = None
            elif changes_.plan_id is not None:
                identity.plan_id = plans.attach(session, actor, changes_.plan_id).id
            after = snapshot(identity)
            if after != before:
                identity.updated_at = now
                trail.record(session, actor=actor, action=IDENTITY_UPDATED, at=now,
                             target_type="identity", target_id=identity.id,
                             details={k: [before[k], after[k]] for k in after
                                      if after[k] != before[k]})
                changes.announce(session, changes.IDENTITY, identity.id, now)
        return Changed(identity, self.propagation.settle(identity.id))

    def delete(self, actor: Actor, identity_id: str, *,
               detach: bool = False) -> Changed[list[str]]:
        """Delete an identity. With tokens (any, revoked ones too) it is a `Conflict`
        unless `detach`: then its tokens lose the identity (announced, so every node
        stops applying its pool and limits to them). Returns the detached token ids,
        once every live node applied it (or the timeout ran out), with the propagation."""
        _require_admin(actor, "delete identities")
        now = self.clock.now()
        with self.database.transaction() as session:
            identity = self._visible(session, actor, identity_id, for_update=True)
            token_ids = list(session.scalars(select(Token.id).where(
                Token.account_id == actor.account_id, Token.identity_id == identity.id)
                .order_by(Token.created_at, Token.id)))
            if token_ids and not detach:
                raise Conflict(
                    f"This identity still has {len(token_ids)} token(s).",
                    "Move or revoke its tokens first, or delete with ?detach=true: its "
                    "tokens then keep working without the identity.", tokens=len(token_ids))
            if token_ids:
                session.execute(update(Token).where(
                    Token.account_id == actor.account_id, Token.identity_id == identity.id)
                    .values(identity_id=None, updated_at=now)
                    .execution_options(synchronize_session=False))
            trail.record(session, actor=actor, action=IDENTITY_DELETED, at=now,
                         target_type="identity", target_id=identity.id,
                         details={"external_id": identity.external_id,
                                  "detached_tokens": token_ids})
            changes.announce(session, changes.IDENTITY, identity.id, now)
            session.delete(identity)
            deleted = identity.id
        return Changed(token_ids, self.propagation.settle(deleted))

    # --- read ------------------------------------------------------------------------

    def get(self, actor: Actor, identity_id: str) -> Identity:
        """The identity `identity_id` (its id, or its external id) if the actor sees it;
        `NotFound` otherwise (also for another account's)."""
        with self.database.reading() as session:
            return self._visible(session, actor, identity_id)

    def list_identities(self, actor: Actor, *, search: str | None = None,
             limit: int = MAX_PAGE_SIZE) -> list[Identity]:
        """The identities the actor sees, by external id."""
        statement = self._visible_all(actor)
        if search and search.strip():
            needle = "%" + search.strip().lower().replace("\\", "\\\\").replace(
                "%", "\\%").replace("_", "\\_") + "%"
            statement = statement.where(Identity.external_id.ilike(needle, escape="\\")
                                        | Identity.name.ilike(needle, escape="\\"))
        with self.database.reading() as session:
            return list(session.scalars(statement.order_by(Identity.external_id)
                                        .limit(min(max(limit, 1), MAX_PAGE_SIZE))))

    def tokens_of(self, actor: Actor, identity_id: str) -> list[Token]:
        """The identity's tokens the actor sees, newest first."""
        with self.database.reading() as session:
            identity = self._visible(session, actor, identity_id)
            statement = select(Token).where(Token.account_id == actor.account_id,
                                            Token.identity_id == identity.id)
            if not actor.reads_all:
                statement = statement.where(Token.kind == PERSONAL,
                                            Token.owner_id == actor.user_id)
            return list(session.scalars(statement.order_by(Token.created_at.desc(),
                                                           Token.id)))

    def token_counts(self, actor: Actor) -> dict[str, int]:
        """How many tokens each identity of the account has (for lists)."""
        with self.database.reading() as session:
            return {str(identity_id): int(count) for identity_id, count in session.execute(
                select(Token.identity_id, func.count()).where(
                    Token.account_id == actor.account_id, Token.identity_id.is_not(None))
                .group_by(Token.identity_id))}

    def _visible_all(self, actor: Actor) -> Select[Identity]:
        statement = select(Identity).where(Identity.account_id == actor.account_id)
        if not actor.reads_all:
            statement = statement.where(Identity.id.in_(select(Token.identity_id).where(
                Token.account_id == actor.account_id, Token.kind == PERSONAL,
                Token.owner_id == actor.user_id)))
        return statement

    def _visible(self, session: Session, actor: Actor, ref: str, *,
                 for_update: bool = False) -> Identity:
        statement = self._visible_all(actor).where(
            (Identity.id == ref) | (Identity.external_id == ref))
        if for_update:
            statement = statement.with_for_update(of=Identity)
        identity = session.scalar(statement)
        if identity is None:
            raise NotFound("No such identity in this account.",
                           "Name it by its id or external id (GET /api/v1/identities).",
                           field="identity")
        return identity

    def _require_unique(self, session: Session, account_id: str, external_id: str,
                        other_than: str | None) -> None:
        clash = session.scalar(select(Identity.id).where(
            Identity.account_id == account_id, Identity.external_id == external_id))
        if clash is not None and clash != other_than:
            raise _taken(external_id, clash)


def _taken(external_id: str, clash: str | None) -> Conflict:
    return Conflict(f"This account already has an identity with external_id "
                    f"{external_id!r}.", "Use that identity, or pick another external_id.",
                    field="external_id", **({"identity_id": clash} if clash else {}))


def snapshot(identity: Identity) -> dict[str, Any]:
    """The identity's settings as the audit trail records them."""
    refill = (None if identity.credits_refill_amount is None else
              {"amount": identity.credits_refill_amount,
               "interval": identity.credits_refill_interval})
    return {"external_id": identity.external_id, "name": identity.name,
            "metadata": identity.meta, "rate_limits": identity.rate_limits,
            "credits": None if identity.credits_remaining is None else
            {"remaining": identity.credits_remaining, "refill": refill},
            "plan_id": identity.plan_id}


def balance(identity: Identity, now: datetime) -> int | None:
    """The credits the identity's pool holds now (a refill due since the last spend
    counted), or None without a pool."""
    if identity.credits_remaining is None:
        return None
    interval = identity.credits_refill_interval
    if (identity.credits_refill_amount is not None and interval is not None
            and (identity.credits_period is None
                 or identity.credits_period < rules.period_of(interval, now.timestamp()))):
        return identity.credits_refill_amount
    return identity.credits_remaining


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"Only account administrators can {what}.",
                               "Ask an administrator of your account.")


def _external_id(value: str | None) -> str:
    cleaned = rules.clean_external_id(value)
    if cleaned is None:
        raise ValidationFailed("external_id is required: your own id for this customer "
                               "or integration.", "e.g. \"cust_1234\".", field="external_id")
    return cleaned


def _rate_limits(entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    for entry in entries:
        if entry.get("shared") is not None:
            raise ValidationFailed("An identity's rate limits are shared by all its tokens "
                                   "already: leave `shared` out.", field="rate_limits")
    return [rule.as_dict() for rule in rules.clean_rate_limits(entries)] or None


def _credits(value: Mapping[str, Any] | None) -> tuple[int, rules.Refill | None] | None:
    if value is None:
        return None
    return rules.clean_credits(value.get("remaining"), value.get("refill"))


def _set_credits(identity: Identity, credits: tuple[int, rules.Refill | None] | None,
                 now: datetime) -> None:
    remaining, refill = credits if credits is not None else (None, None)
    identity.credits_remaining = remaining
    identity.credits_refill_amount = refill.amount if refill else None
    identity.credits_refill_interval = refill.interval if refill else None
    identity.credits_period = (rules.period_of(refill.interval, now.timestamp())
                               if refill else None)
