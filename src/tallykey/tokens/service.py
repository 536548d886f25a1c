"""The token service: the product's verbs on tokens — issue, list, get, update, rotate,
renew, suspend, resume, revoke, approve, deny. The console, the management API and the
CLI all call these same methods; what they ask for and get back is `tokens.requests`."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, func, or_, select
from sqlalchemy.orm import Session

from tallykey.accounts.models import APPROVAL_MEMBERS, Account, User, Workspace
from tallykey.accounts.scopes import DEMO_CATALOG, ScopeCatalog
from tallykey.accounts.service import permissions_of
from tallykey.actor import ADMIN, Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.controls import rules
from tallykey.db.engine import Database
from tallykey.errors import Conflict, KeyConfigError, NotFound, PermissionDenied, ValidationFailed
from tallykey.feed import changes
from tallykey.identities.models import Identity
from tallykey.keys.vault import SecretVault
from tallykey.plans import service as plans
from tallykey.tokens import format as token_format
from tallykey.tokens import imports, policy
from tallykey.tokens.events import (
    TOKEN_APPROVED,
    TOKEN_CREATED,
    TOKEN_DENIED,
    TOKEN_RENEWED,
    TOKEN_RESUMED,
    TOKEN_REVOKED,
    TOKEN_ROTATED,
    TOKEN_SECRET_RETRIEVED,
    TOKEN_SUSPENDED,
    TOKEN_UPDATED,
    VERDICT_NEUTRAL,
    Listener,
    TokenEvent,
)
from tallykey.tokens.models import (
    ACTIVE,
    APPLICATION,
    DECOY,
    DENIED_REASON,
    EXPIRED,
    IMPORTED,
    INACTIVE_REASON,
    KINDS,
    LISTED_KINDS,
    PENDING,
    PERSONAL,
    REVOKED,
    STATUSES,
    SUSPENDED,
    Token,
    TokenSecret,
)
from tallykey.tokens.requests import (
    INHERITED,
    MAX_PAGE_SIZE,
    IssuedToken,
    Renewal,
    TokenChanges,
    TokenDraft,
    TokenPage,
    TokenQuery,
)

#: Renewals followed from a secret's token when checking what it may manage.
MAX_LINEAGE = 64


class TokenService:
    def __init__(
        self,
        database: Database,
        clock: Clock,
        *,
        region: str,
        targets: Sequence[str] = (),
        listeners: Sequence[Listener] = (),
        vault: SecretVault | None = None,
        catalog: ScopeCatalog = DEMO_CATALOG,
        kek_hint: str = "Set TALLYKEY_KEK (or TALLYKEY_KEK_FILE) on the server.",
    ) -> None:
        self.database = database
        self.kek_hint = kek_hint  # said when a secret must be sealed and no key is set
        self.catalog = catalog
        self.clock = clock
        self.region = region
        self.targets = list(targets)
        self.listeners = list(listeners)
        self.vault = vault

    # --- issue -----------------------------------------------------------------------

    def issue(self, actor: Actor, draft: TokenDraft) -> IssuedToken:
        """Create a token and return it with its secret (shown once).

        Raises `ValidationFailed` for any field that breaks a policy, `PermissionDenied`
        when a member asks for an application token or for scopes beyond their own, and
        `NotFound` for an unknown workspace. Nothing is stored unless everything passes.
        A member's token is `pending` (refused until an administrator approves it) when
        the account's `token_approval` policy is `members`.
        """
        now = self.clock.now()
        if draft.kind not in KINDS:
            raise ValidationFailed(f"Unknown token kind {draft.kind!r}.",
                                   "Use 'personal', 'application' or 'decoy'.", field="kind")
        name = policy.clean_name(draft.name)
        description = policy.clean_description(draft.description)
        allowlist = policy.clean_allowlist(draft.ip_allowlist)
        target = policy.clean_target(draft.target, self.targets)
        scopes = policy.clean_scopes(draft.scopes, self.catalog)
        rate_limits = rules.clean_rate_limits(draft.rate_limits)
        credits = (None if draft.credits is None else
                   rules.clean_credits(draft.credits.get("remaining"),
                                       draft.credits.get("refill")))
        metadata = rules.clean_metadata(draft.metadata)
        external_id = rules.clean_external_id(draft.external_id)
        if draft.kind == APPLICATION and not actor.is_admin:
            raise PermissionDenied("Only account administrators can create application tokens.",
                                   "Ask an administrator to create the token for you.")
        if draft.kind == DECOY:
            _check_decoy(actor, rate_limits, credits)
        with self.database.transaction() as session:
            account = session.get_one(Account, actor.account_id)
            expires_at = policy.resolve_expiry(
                now, expires_at=draft.expires_at, expires_in_days=draft.expires_in_days,
                max_validity_days=account.max_validity_days)
            workspace_id = self._workspace_id(session, actor.account_id, draft.workspace)
            owner_id: str | None = None
            if draft.kind == PERSONAL:
                owner = self._acting_user(session, actor, "create a personal token")
                scopes = self._personal_scopes(owner, workspace_id, scopes)
                owner_id = owner.id
            elif not scopes and draft.kind == APPLICATION:
                raise ValidationFailed("An application token needs at least one scope.",
                                       "Pick the scopes the integration needs.", field="scopes")
            secret = token_format.generate(self.region)
            token = Token(
                account_id=actor.account_id, workspace_id=workspace_id, kind=draft.kind,
                region=self.region, public_id=secret.public_id, name=name,
                description=description, scopes=scopes, target=target, ip_allowlist=allowlist,
                owner_id=owner_id, created_by_id=actor.user_id, created_at=now,
                created_ip=actor.ip, updated_at=now, expires_at=expires_at,
                rate_limits=[rule.as_dict() for rule in rate_limits] or None,
                meta=metadata, external_id=external_id,
                pending_at=now if needs_approval(account, actor) else None)
            _set_credits(token, credits, now)
            if draft.identity_id is not None and draft.identity_id.strip():
                token.identity_id = _identity(session, actor, draft.identity_id).id
            if draft.plan_id is not None and draft.plan_id.strip():
                token.plan_id = plans.attach(session, actor, draft.plan_id).id
            if token.plan_id is not None or token.identity_id is not None:
                plans.check_within_ceiling(scopes, plans.effective_plan(session, token))
            session.add(token)
            session.flush()
            stored = TokenSecret(token_id=token.id, secret_hash=secret.secret_hash,
                                 generation=1, created_at=now)
            self._seal_if_retrievable(session, account, token, stored, secret)
            session.add(stored)
            self._announce(session, TokenEvent(TOKEN_CREATED, token, actor, now, {
                "name": name, "kind": draft.kind, "scopes": scopes,
                "expires_at": expires_at.isoformat(), "prefix": token.prefix,
                "ip_allowlist": list(token.ip_allowlist), **_controls_snapshot(token),
                **({"pending": True} if token.pending_at else {})}))
            return IssuedToken(token, secret, policy.validity_warnings(now, expires_at))

    def import_keys(self, actor: Actor, items: Sequence[imports.ImportItem]
                    ) -> imports.ImportReport:
        """Import keys the platform issued before (SPEC §16); see `tokens.imports`."""
        return imports.import_keys(self.database, self.clock, self.catalog, actor, items)

    # --- read ------------------------------------------------------------------------

    def locate(self, ref: str) -> tuple[str, str]:
        """Operator look-up: (account id, token id) for a token id or its public prefix."""
        ref = ref.strip()
        public_id = (ref.rsplit("_", 1)[-1][:token_format.PUBLIC_ID_LENGTH]
                     if ref.startswith(token_format.PRODUCT_PREFIX) else "")
        with self.database.reading() as session:
            row = session.execute(select(Token.account_id, Token.id).where(
                or_(Token.id == ref, Token.public_id == public_id))).first()
        if row is None:
            raise NotFound(f"No token {ref!r}.", "Pass a token id or its prefix (tlk_…).")
        return row[0], row[1]

    def get(self, actor: Actor, token_id: str) -> Token:
        """The token if the actor may see it; `NotFound` otherwise (never says which)."""
        with self.database.reading() as session:
            return self._visible_token(session, actor, token_id)

    def list_tokens(self, actor: Actor, query: TokenQuery) -> TokenPage:
        """Tokens the actor may see, newest first, one keyset page at a time."""
        if query.status is not None and query.status not in STATUSES:
            raise ValidationFailed(f"Unknown status {query.status!r}.",
                                   "Use active, pending, suspended, expired or revoked.",
                                   field="status")
        if query.kind is not None and query.kind not in LISTED_KINDS:
            raise ValidationFailed(f"Unknown kind {query.kind!r}.",
                                   "Use personal, application, decoy or imported.",
                                   field="kind")
        if isinstance(query.limit, bool) or not 1 <= query.limit <= MAX_PAGE_SIZE:
            raise ValidationFailed(f"limit must be between 1 and {MAX_PAGE_SIZE}.", field="limit")
        statement = self._visible_tokens(actor)
        statement = self._filtered(statement, query, self.clock.now())
        if query.after:
            created_at, token_id = _decode_cursor(query.after)
            statement = statement.where(or_(
                Token.created_at < created_at,
                and_(Token.created_at == created_at, Token.id < token_id)))
        statement = statement.order_by(Token.created_at.desc(), Token.id.desc())
        with self.database.reading() as session:
            rows = list(session.scalars(statement.limit(query.limit + 1)))
        more = len(rows) > query.limit
        items = rows[: query.limit]
        cursor = _encode_cursor(items[-1]) if more and items else None
        return TokenPage(items, cursor)

    def count_by_target(self, actor: Actor) -> dict[str, tuple[int, int]]:
        """target -> (active tokens, all tokens) among the tokens the actor may see."""
        now = self.clock.now()
        visible = self._visible_tokens(actor).where(Token.target.is_not(None)).subquery()
        live = case((and_(visible.c.revoked_at.is_(None), visible.c.expires_at > now), 1),
                    else_=0)
        statement = select(visible.c.target, func.sum(live), func.count()).group_by(
            visible.c.target)
        with self.database.reading() as session:
            return {row[0]: (int(row[1] or 0), int(row[2])) for row in session.execute(
                statement)}

    # --- change ----------------------------------------------------------------------

    def update(self, actor: Actor, token_id: str, changes: TokenChanges) -> Token:
        """Edit name, description, allow-list, target, scopes, or shorten the expiry.

        An allow-list or scopes an administrator set on another user's personal token are
        that token's limits: its owner may narrow them, never widen them (`PermissionDenied`).

        Raises `ValidationFailed` if the expiry would move later ("expiry cannot be
        extended") and `Conflict` for a revoked or expired token.
        """
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            self._require_live(token, now, "edited")
            if token.kind == DECOY and (changes.rate_limits or changes.credits is not None):
                _check_decoy(actor, rules.clean_rate_limits(changes.rate_limits or ()),
                             (0, None) if changes.credits is not None else None)
            before = _editable_snapshot(token)
            if changes.name is not None:
                token.name = policy.clean_name(changes.name)
            if changes.description is not None:
                token.description = policy.clean_description(changes.description)
            imposed = token.kind == PERSONAL and token.owner_id != actor.user_id
            limits = dict(token.admin_limits or {})
            if changes.ip_allowlist is not None:
                allowlist = policy.clean_allowlist(changes.ip_allowlist)
                if imposed:
                    limits["ip_allowlist"] = allowlist
                elif not actor.is_admin and "ip_allowlist" in limits:
                    policy.check_allowlist_within(allowlist, limits["ip_allowlist"])
                token.ip_allowlist = allowlist
            if changes.target is not None:
                token.target = policy.clean_target(changes.target, self.targets)
            if changes.scopes is not None:
                scopes = self._changed_scopes(session, actor, token, changes.scopes)
                if imposed:
                    limits["scopes"] = scopes
                elif not actor.is_admin and "scopes" in limits:
                    policy.check_scopes_within(scopes, limits["scopes"])
                token.scopes = scopes
            if changes.expires_at is not None:
                token.expires_at = _shortened_expiry(token, changes.expires_at, now)
            self._change_controls(token, changes, now, actor, limits, imposed=imposed)
            if changes.detach_identity and token.identity_id is not None:
                _identity(session, actor, token.identity_id)  # administrators only
                token.identity_id = None
            elif changes.identity_id is not None:
                token.identity_id = _identity(session, actor, changes.identity_id).id
            if changes.detach_plan and token.plan_id is not None:
                plans.attach(session, actor, token.plan_id)  # administrators only
                token.plan_id = None
            elif changes.plan_id is not None:
                token.plan_id = plans.attach(session, actor, changes.plan_id).id
            if (changes.plan_id is not None or changes.scopes is not None
                    or changes.identity_id is not None):
                plans.check_within_ceiling(token.scopes, plans.effective_plan(session, token))
            if imposed and limits != (token.admin_limits or {}):
                token.admin_limits = limits
            after = _editable_snapshot(token)
            if after != before:
                token.updated_at = now
                diff = {k: [before[k], after[k]] for k in after if after[k] != before[k]}
                self._announce(session, TokenEvent(TOKEN_UPDATED, token, actor, now, diff))
            return token

    def rotate(self, actor: Actor, token_id: str, grace_seconds: int = 0) -> IssuedToken:
        """Give the token a new secret; the current one keeps working for `grace_seconds`
        (0 to 7 days). Secrets already in their grace period keep their own end.

        A personal token is rotated only by its owner: the caller receives the new secret,
        and an administrator may revoke another user's token, never obtain a copy of it."""
        grace = policy.check_grace(grace_seconds)
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            _require_owner(actor, token, "rotate", "a rotation")
            _require_native(token, "rotated")
            self._require_live(token, now, "rotated")
            retire_at = now + timedelta(seconds=grace)
            generation = 1 + _retire_secrets(token, retire_at)
            secret = token_format.generate(token.region, token.public_id)
            stored = TokenSecret(token_id=token.id, secret_hash=secret.secret_hash,
                                 generation=generation, created_at=now)
            self._seal_if_retrievable(session, session.get_one(Account, token.account_id),
                                      token, stored, secret)
            session.add(stored)
            token.rotated_at = now
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_ROTATED, token, actor, now, {
                "grace_seconds": grace, "old_secret_retires_at": retire_at.isoformat(),
                "generation": generation}))
            return IssuedToken(token, secret, previous_secret_expires_at=retire_at)

    def grace_ends_at(self, actor: Actor, token_id: str) -> datetime | None:
        """When the last previous secret still in its grace period stops working, or None
        when no previous secret works any more."""
        now = self.clock.now()
        with self.database.reading() as session:
            token = self._visible_token(session, actor, token_id)
            return session.scalar(select(func.max(TokenSecret.retires_at)).where(
                TokenSecret.token_id == token.id, TokenSecret.retires_at > now))

    def end_grace(self, actor: Actor, token_id: str) -> Token:
        """Stop every previous secret now (the current one keeps working). Audited as an
        update; `Conflict` when no previous secret is in its grace period."""
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            self._require_live(token, now, "changed")
            graced = list(session.scalars(select(TokenSecret).where(
                TokenSecret.token_id == token.id, TokenSecret.retires_at > now)))
            if not graced:
                raise Conflict("No previous secret of this token is in a grace period.",
                               "Nothing to end: only the current secret works.")
            ended = max(s.retires_at for s in graced if s.retires_at is not None)
            for old in graced:
                old.retires_at = now
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_UPDATED, token, actor, now, {
                "previous_secret_expires_at": [ended.isoformat(), now.isoformat()]}))
            return token

    def renew(self, actor: Actor, token_id: str, renewal: Renewal) -> IssuedToken:
        """Issue a successor of a live token: a new token with a new expiry (within the
        account's maximum validity) and every setting in `INHERITED`; its secret is
        returned once. The renewed token keeps its own expiry (never extended), and its
        secrets stop working after `renewal.grace_seconds`, as after a rotation. Credits
        move to the successor (the old secret spends from its balance) and rate-limit
        windows go on: a renewal never adds to either.

        Like a rotation, a personal token is renewed only by its owner; a secret in its
        grace period cannot renew (or otherwise manage) its own token. Raises
        `ValidationFailed` (expiry, grace), `Conflict` (not active, or renewed already:
        renew its successor) and `PermissionDenied`. Nothing is stored unless all pass."""
        grace = policy.check_grace(renewal.grace_seconds)
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            _require_owner(actor, token, "renew", "a renewal")
            _require_native(token, "renewed")
            self._require_live(token, now, "renewed")
            if token.successor_id is not None:
                successor = session.get_one(Token, token.successor_id)
                raise Conflict(f"This token was renewed already: its successor is "
                               f"{successor.prefix}.", "Renew the successor instead.",
                               successor_id=successor.id)
            account = session.get_one(Account, token.account_id)
            expires_at = policy.resolve_expiry(
                now, expires_at=renewal.expires_at, expires_in_days=renewal.expires_in_days,
                max_validity_days=account.max_validity_days)
            secret = token_format.generate(token.region)
            successor = Token(
                **{name: getattr(token, name) for name in INHERITED},
                public_id=secret.public_id, renewed_from_id=token.id,
                created_by_id=actor.user_id, created_at=now, created_ip=actor.ip,
                updated_at=now, expires_at=expires_at)
            session.add(successor)
            session.flush()
            stored = TokenSecret(token_id=successor.id, secret_hash=secret.secret_hash,
                                 generation=1, created_at=now)
            self._seal_if_retrievable(session, account, successor, stored, secret)
            session.add(stored)
            retire_at = now + timedelta(seconds=grace)
            _retire_secrets(token, retire_at)
            token.successor_id = successor.id
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_RENEWED, token, actor, now, {
                "successor_id": successor.id, "successor_prefix": successor.prefix,
                "expires_at": expires_at.isoformat(), "grace_seconds": grace,
                "old_secret_retires_at": retire_at.isoformat()}))
            session.refresh(successor)
            return IssuedToken(successor, secret, policy.validity_warnings(now, expires_at),
                               previous_secret_expires_at=retire_at)

    def suspend(self, actor: Actor, token_id: str, reason: str | None = None,
                details: Mapping[str, Any] | None = None) -> Token:
        """Stop an active token until `resume`: it answers 401 token_suspended. `Conflict`
        if it is revoked, expired or suspended already. `reason` (e.g. `contained`) and
        `details` go into the audit trail and the event."""
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            status = token.status_at(now)
            if status == SUSPENDED and self._takes_over_suspension(session, actor, token):
                token.suspended_by_id = actor.user_id  # the member can no longer resume it
                token.updated_at = now
                self._announce(session, TokenEvent(TOKEN_SUSPENDED, token, actor, now,
                                                   {"taken_over": True}))
                return token
            if status == SUSPENDED:
                assert token.suspended_at is not None
                raise Conflict(f"This token was already suspended at "
                               f"{token.suspended_at.isoformat()}.",
                               "Resume it to let it work again.", status=status)
            self._require_live(token, now, "suspended")
            token.suspended_at = now
            token.suspended_by_id = actor.user_id
            token.suspend_reason = reason
            token.updated_at = now
            self._announce(session, TokenEvent(
                TOKEN_SUSPENDED, token, actor, now,
                {"reason": reason, **(details or {})} if reason else dict(details or {})))
            return token

    @staticmethod
    def _takes_over_suspension(session: Session, actor: Actor, token: Token) -> bool:
        """An administrator suspending a token that a member suspended makes the
        suspension theirs: else the member, who may resume their own suspension, would
        lift the one the administrator asked for (which answered "already suspended")."""
        if not actor.is_admin or token.suspended_by_id in (None, actor.user_id):
            return False
        suspender = session.get(User, token.suspended_by_id)
        return suspender is not None and suspender.role != ADMIN

    def resume(self, actor: Actor, token_id: str) -> Token:
        """Let a suspended token work again. `Conflict` if it is not suspended (or was
        revoked or expired meanwhile: those are final)."""
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            status = token.status_at(now)
            if status == ACTIVE:
                raise Conflict("This token is not suspended: there is nothing to resume.",
                               status=status)
            if status != SUSPENDED:
                raise Conflict(f"This token is {status} and cannot be resumed.",
                               "Create a new token instead.", status=status)
            if not actor.is_admin and token.suspended_by_id != actor.user_id:
                raise PermissionDenied(
                    "An administrator suspended this token, so only an administrator can "
                    "resume it.", "Ask an administrator of your account to resume it.",
                    reason="admin_suspension")
            assert token.suspended_at is not None
            suspended_at = token.suspended_at
            token.suspended_at = None
            token.suspended_by_id = None
            token.suspend_reason = None
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_RESUMED, token, actor, now, {
                "suspended_at": suspended_at.isoformat()}))
            return token

    def revoke(self, actor: Actor, token_id: str, reason: str = "") -> Token:
        """Stop the token at once; irreversible. `Conflict` if it was revoked already."""
        reason = policy.clean_description(reason)[:500]
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id, for_update=True)
            self._require_current_secret(session, actor, token)
            if token.revoked_at is not None:
                raise Conflict(f"This token was already revoked at "
                               f"{token.revoked_at.isoformat()}.", revoked_at=token.revoked_at
                               .isoformat())
            token.revoked_at = now
            token.revoked_by_id = actor.user_id
            token.revoke_reason = reason or None
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_REVOKED, token, actor, now,
                                               {"reason": reason} if reason else {}))
            return token

    def approve(self, actor: Actor, token_id: str) -> Token:
        """Let a pending token work (administrators only), on every node once propagated.
        `Conflict` unless it awaits approval; `PermissionDenied` for a member."""
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._pending_token(session, actor, token_id, now, "approve")
            pending_since = token.pending_at
            assert pending_since is not None
            token.pending_at = None
            token.approved_at = now
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_APPROVED, token, actor, now, {
                "pending_since": pending_since.isoformat()}))
            return token

    def deny(self, actor: Actor, token_id: str) -> Token:
        """Refuse a pending token for good: it is revoked (reason `denied`) and can never
        be used. Administrators only; `Conflict` unless it awaits approval."""
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._pending_token(session, actor, token_id, now, "deny")
            pending_since = token.pending_at
            assert pending_since is not None
            token.pending_at = None
            token.revoked_at = now
            token.revoked_by_id = actor.user_id
            token.revoke_reason = DENIED_REASON
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_DENIED, token, actor, now, {
                "reason": DENIED_REASON, "pending_since": pending_since.isoformat()}))
            return token

    def _pending_token(self, session: Session, actor: Actor, token_id: str, now: datetime,
                       verb: str) -> Token:
        if not actor.is_admin:
            raise PermissionDenied(f"Only account administrators can {verb} tokens.",
                                   "Ask an administrator of your account.")
        token = self._visible_token(session, actor, token_id, for_update=True)
        self._require_current_secret(session, actor, token)
        status = token.status_at(now)
        if status != PENDING:
            raise Conflict(f"This token is {status}, not awaiting approval: there is "
                           f"nothing to {verb}.", status=status)
        return token

    def pending(self, actor: Actor) -> list[Token]:
        """The account's tokens awaiting approval, oldest request first (administrators)."""
        if not actor.is_admin:
            raise PermissionDenied("Only account administrators see the approval queue.")
        now = self.clock.now()
        with self.database.reading() as session:
            return list(session.scalars(self._visible_tokens(actor).where(
                Token.pending_at.is_not(None), Token.revoked_at.is_(None),
                Token.expires_at > now).order_by(Token.pending_at, Token.id)))

    def revoke_unused(self, token_id: str, unused_since: datetime, now: datetime
                      ) -> Token | None:
        """The inactivity policy's revocation (`revoke_inactive_days`, run by the worker):
        revoke the token, reason `inactive`, if it is still live, not awaiting approval,
        and still unused since `unused_since` (`unused_from`) — checked again
        under its row lock, so a use recorded meanwhile keeps it. Propagated, mailed and
        audited like any revocation. None when it was kept."""
        with self.database.transaction() as session:
            token = session.scalar(select(Token).where(Token.id == token_id)
                                   .with_for_update(of=Token))
            if (token is None or token.revoked_at is not None or token.expires_at <= now
                    or token.kind == DECOY
                    or token.pending_at is not None or unused_from(token) > unused_since):
                return None
            actor = Actor.system(token.account_id, "the inactivity policy")
            token.revoked_at = now
            token.revoke_reason = INACTIVE_REASON
            token.updated_at = now
            self._announce(session, TokenEvent(TOKEN_REVOKED, token, actor, now, {
                "reason": INACTIVE_REASON,
                "last_used_at": (token.last_used_at.isoformat() if token.last_used_at
                                 else None)}))
            return token

    def retrieve_secret(self, actor: Actor, token_id: str) -> IssuedToken:
        """An application token's current username and password, for administrators of an
        account that keeps them retrievable. Audited, and announced to listeners (the other
        admins are told). Raises `PermissionDenied` or `NotFound` saying why not."""
        if not actor.is_admin:
            raise PermissionDenied("Only account administrators can retrieve token secrets.")
        now = self.clock.now()
        with self.database.transaction() as session:
            token = self._visible_token(session, actor, token_id)
            self._require_current_secret(session, actor, token)
            account = session.get_one(Account, token.account_id)
            if token.kind != APPLICATION:
                raise NotFound("Personal tokens are shown once and can never be retrieved.",
                               "Rotate the token to get a new secret.", field="token")
            if not account.retrievable_application_tokens:
                raise PermissionDenied(
                    "Retrievable application tokens are off for this account.",
                    "An administrator can turn them on in the account policies; tokens "
                    "created before that stay unretrievable.", reason="retrieval_off")
            self._require_live(token, now, "retrieved")
            current = session.scalar(select(TokenSecret).where(
                TokenSecret.token_id == token.id, TokenSecret.retires_at.is_(None)))
            if current is not None and current.ciphertext is not None and self.vault is None:
                raise KeyConfigError(
                    "This token's secret is kept, but no key-encryption key is configured "
                    "here to open it.",
                    "Set TALLYKEY_KEK (or TALLYKEY_KEK_FILE) to the key in use, then run "
                    "'tallykey keys check'. Do not rotate the token: its secret is intact.")
            if current is None or current.ciphertext is None or self.vault is None:
                raise NotFound(
                    "This token's secret was not kept: it was created or rotated while "
                    "retrievable application tokens were off.",
                    "Rotate the token to get a new, retrievable secret.", field="token")
            secret = token_format.parse(self.vault.reveal(session, current, account.id))
            self._announce(session, TokenEvent(TOKEN_SECRET_RETRIEVED, token, actor, now))
            return IssuedToken(token, secret)

    # --- internals -------------------------------------------------------------------

    def _change_controls(self, token: Token, changes: TokenChanges, now: datetime,
                         actor: Actor, limits: dict[str, Any], *, imposed: bool) -> None:
        """Rate limits, credits, metadata and external id: validated, then set.

        Rate limits and credits an administrator set on another user's personal token
        (`imposed`) are recorded in `limits`; a member may then tighten them, never raise
        or remove them (`PermissionDenied`, reason `admin_limit`)."""
        bound = not actor.is_admin
        if changes.rate_limits is not None:
            cleaned = [rule.as_dict() for rule in rules.clean_rate_limits(changes.rate_limits)]
            if imposed:
                if cleaned:
                    limits["rate_limits"] = cleaned
                else:
                    limits.pop("rate_limits", None)
            elif bound and "rate_limits" in limits:
                policy.check_rate_limits_within(cleaned, limits["rate_limits"])
            token.rate_limits = cleaned or None
        if (changes.remove_credits or changes.credits is not None) and token.successor_id:
            raise Conflict("This token was renewed: its credits moved to its successor.",
                           "Change the credits of its successor.", field="credits",
                           successor_id=token.successor_id)
        if changes.remove_credits:
            if imposed:
                limits.pop("credits", None)
            elif bound and "credits" in limits:
                policy.check_credits_within(None, _balance(token, now), limits["credits"])
            _set_credits(token, None, now)
        elif changes.credits is not None:
            credits = rules.clean_credits(changes.credits.get("remaining"),
                                          changes.credits.get("refill"))
            if imposed:
                limits["credits"] = {"refill": credits[1].as_dict() if credits[1] else None}
            elif bound and "credits" in limits:
                policy.check_credits_within(credits, _balance(token, now), limits["credits"])
            _set_credits(token, credits, now)
        if changes.metadata is not None:
            token.meta = rules.clean_metadata(changes.metadata)
        if changes.external_id is not None:
            external_id = rules.clean_external_id(changes.external_id)
            if bound and external_id != token.external_id:
                policy.check_external_id_kept(limits.get("rate_limits") or [])
            token.external_id = external_id

    def _seal_if_retrievable(self, session: Session, account: Account, token: Token,
                             stored: TokenSecret, secret: token_format.ParsedToken) -> None:
        if token.kind != APPLICATION or not account.retrievable_application_tokens:
            return
        if self.vault is None:
            raise ValidationFailed(
                "This account keeps application tokens retrievable, but no key-encryption "
                "key is configured.", self.kek_hint)
        stored.data_key_id, stored.ciphertext = self.vault.seal(
            session, account.id, token.id, stored.generation, str(secret))

    def _announce(self, session: Session, event: TokenEvent) -> None:
        """Audit the event and hand it to listeners, all inside the caller's transaction."""
        trail.record(session, actor=event.actor, action=event.kind, at=event.at,
                     target_type="token", target_id=event.token.id,
                     details={"prefix": event.token.prefix, **event.details})
        if event.kind not in VERDICT_NEUTRAL:
            changes.announce(session, changes.TOKEN, event.token.id, event.at)
        for listener in self.listeners:
            listener(session, event)
        session.flush()
        session.refresh(event.token)  # load creator/owner/workspace for the caller's view

    def require_current_secret(self, actor: Actor) -> None:
        """A secret that a rotation or a renewal replaced (still verifying in its grace
        period) changes nothing through the management API: no new token, user, policy
        or account change, so a leaked old secret cannot outlive the rotation by minting
        its own successor. Checked against the store, not the cached verdict."""
        if actor.token_digest is None:
            return
        with self.database.reading() as session:
            retires_at = session.scalar(select(TokenSecret.retires_at).where(
                TokenSecret.secret_hash == actor.token_digest))
        if retires_at is not None:
            raise PermissionDenied(
                "This secret was replaced by a rotation or a renewal: until its grace "
                "period ends it still verifies, but it cannot change anything through "
                "the management API.",
                "Use the current secret (the one the rotation or renewal issued), or "
                "the console.", reason="retiring_secret")

    def _require_current_secret(self, session: Session, actor: Actor, token: Token) -> None:
        """A request authenticated by a secret that a rotation or a renewal replaced (in
        its grace period, it still verifies) may not manage its own token, nor a token
        renewed from it: a leaked old secret must not outlive the rotation meant to cut
        it off. Checked under the token's row lock, against the store."""
        if actor.token_digest is None:
            return
        presented = session.scalar(select(TokenSecret).where(
            TokenSecret.secret_hash == actor.token_digest))
        if presented is None or presented.retires_at is None:
            return
        lineage: str | None = presented.token_id
        for _ in range(MAX_LINEAGE):
            if lineage is None:
                return
            if lineage == token.id:
                raise PermissionDenied(
                    "This secret was replaced by a rotation or a renewal: until its grace "
                    "period ends it still verifies, but it cannot change, rotate, renew, "
                    "suspend, resume or revoke its own token.",
                    "Use the current secret (the one the rotation or renewal issued), or "
                    "the console.", reason="retiring_secret")
            lineage = session.scalar(select(Token.successor_id).where(
                Token.id == lineage, Token.account_id == token.account_id))

    def _visible_tokens(self, actor: Actor) -> Select[Token]:
        return visible_tokens(actor)

    def _visible_token(self, session: Session, actor: Actor, token_id: str,
                       *, for_update: bool = False) -> Token:
        statement = self._visible_tokens(actor).where(Token.id == token_id)
        if for_update:
            statement = statement.with_for_update(of=Token)
        token = session.scalar(statement)
        if token is None:
            raise NotFound("No such token in this account.", field="token")
        return token

    def _filtered(self, statement: Select[Token], query: TokenQuery,
                  now: datetime) -> Select[Token]:
        if query.status == ACTIVE:
            statement = statement.where(Token.revoked_at.is_(None), Token.expires_at > now,
                                        Token.suspended_at.is_(None),
                                        Token.pending_at.is_(None))
        elif query.status == SUSPENDED:
            statement = statement.where(Token.revoked_at.is_(None), Token.expires_at > now,
                                        Token.suspended_at.is_not(None),
                                        Token.pending_at.is_(None))
        elif query.status == PENDING:
            statement = statement.where(Token.revoked_at.is_(None), Token.expires_at > now,
                                        Token.pending_at.is_not(None))
        elif query.status == EXPIRED:
            statement = statement.where(Token.revoked_at.is_(None), Token.expires_at <= now)
        elif query.status == REVOKED:
            statement = statement.where(Token.revoked_at.is_not(None))
        if query.kind:
            statement = statement.where(Token.kind == query.kind)
        if query.workspace:
            statement = statement.where(Token.workspace_id == query.workspace)
        if query.target:
            statement = statement.where(Token.target == query.target)
        if query.created_by:
            statement = statement.where(Token.created_by_id == query.created_by)
        if query.external_id:
            statement = statement.where(Token.external_id == query.external_id.strip())
        if query.identity and query.identity.strip():
            ref = query.identity.strip()
            statement = statement.where(Token.identity_id.in_(
                select(Identity.id).where(Identity.account_id == Token.account_id,
                                          (Identity.id == ref) | (Identity.external_id == ref))))
        if query.search and query.search.strip():
            needle = "%" + _escape_like(query.search.strip().lower()) + "%"
            # a pasted prefix or whole token: its public id follows the region
            public_part = query.search.strip().split("_")[-1][:token_format.PUBLIC_ID_LENGTH]
            statement = statement.where(or_(
                Token.name.ilike(needle, escape="\\"),
                Token.description.ilike(needle, escape="\\"),
                Token.public_id == public_part,
            ))
        return statement

    def _workspace_id(self, session: Session, account_id: str, ref: str | None) -> str | None:
        if ref is None or not ref.strip():
            return None
        workspace = session.scalar(select(Workspace).where(
            Workspace.account_id == account_id, Workspace.archived_at.is_(None),
            or_(Workspace.id == ref.strip(), Workspace.slug == ref.strip())))
        if workspace is None:
            raise NotFound(f"No workspace {ref[:64]!r} in use in this account.",
                           field="workspace")
        return workspace.id

    def _acting_user(self, session: Session, actor: Actor, what: str) -> User:
        if actor.user_id is None:
            raise ValidationFailed(f"A user is needed to {what}.",
                                   "Name the user the token belongs to (--user EMAIL).",
                                   field="user")
        user = session.get_one(User, actor.user_id)
        if not user.active:
            raise PermissionDenied("This user is deactivated.")
        return user

    def _personal_scopes(self, owner: User, workspace_id: str | None,
                         requested: list[str]) -> list[str]:
        """A personal token's scopes must lie within its owner's own permissions."""
        held = permissions_of(owner, self.catalog).scopes_in(workspace_id)
        if workspace_id is not None and not held:
            raise PermissionDenied("You have no access to this workspace.", field="workspace")
        if not requested:
            return sorted(held)
        beyond = sorted(set(requested) - held)
        if beyond:
            admin_only = [s for s in beyond if s in self.catalog.admin_only]
            hint = ("Only administrators hold " + ", ".join(admin_only) + "."
                    if admin_only else "Ask an administrator for more permissions.")
            raise PermissionDenied(
                "A personal token cannot have scopes its owner lacks: " + ", ".join(beyond)
                + ".", hint, field="scopes", refused=beyond)
        return requested

    def _changed_scopes(self, session: Session, actor: Actor, token: Token,
                        wanted: Sequence[str]) -> list[str]:
        scopes = policy.clean_scopes(wanted, self.catalog)
        if not scopes:
            raise ValidationFailed("A token needs at least one scope.", field="scopes")
        if token.kind == PERSONAL:
            assert token.owner_id is not None
            owner = session.get_one(User, token.owner_id)
            return self._personal_scopes(owner, token.workspace_id, scopes)
        return scopes

    def _require_live(self, token: Token, now: datetime, verb: str) -> None:
        status = token.status_at(now)
        if status == PENDING:
            raise Conflict(f"This token awaits an administrator's approval and cannot be "
                           f"{verb}.", "Wait until it is approved (or revoke it).",
                           status=status)
        if status == SUSPENDED:
            raise Conflict(f"This token is suspended and cannot be {verb}.",
                           "Resume it first.", status=status)
        if status != ACTIVE:
            raise Conflict(f"This token is {status} and cannot be {verb}.",
                           "Create a new token instead.", status=status)


def unused_from(token: Token) -> datetime:
    """Since when the inactivity policy counts `token` unused: its last use, else its
    approval (a token cannot be used before it), else its creation."""
    return max([moment for moment in (token.last_used_at, token.approved_at) if moment]
               or [token.created_at])


def visible_tokens(actor: Actor) -> Select[Token]:
    """The tokens `actor` may see (and so read the usage of): admins and auditors the
    account's tokens; members only their own personal tokens. (An auditor reaches none
    of them for a change: see `actor.AUDITOR`.)"""
    statement = select(Token).where(Token.account_id == actor.account_id)
    if not actor.reads_all:
        statement = statement.where(Token.kind == PERSONAL, Token.owner_id == actor.user_id)
    return statement


def needs_approval(account: Account, actor: Actor) -> bool:
    """Whether a token `actor` creates now awaits an administrator's approval: the
    account's `token_approval` policy is `members` and the creator is no administrator
    (nor the operator)."""
    return account.token_approval == APPROVAL_MEMBERS and not actor.is_admin


def _check_decoy(actor: Actor, rate_limits: Sequence[rules.RateRule],
                 credits: tuple[int, rules.Refill | None] | None) -> None:
    """A decoy (SPEC §17) is an administrator's trap: it never grants, so it has no rate
    limits or credits to spend."""
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can create decoy tokens.",
                               "Ask an administrator to plant the decoy.")
    if rate_limits or credits is not None:
        raise ValidationFailed("A decoy token never grants anything, so it takes no rate "
                               "limits or credits.", "Leave rate_limits and credits out.",
                               field="rate_limits" if rate_limits else "credits")


def _require_native(token: Token, verb: str) -> None:
    """An imported key has no secret tallykey could reissue in its format."""
    if token.kind == IMPORTED:
        raise Conflict(f"An imported key cannot be {verb}: tallykey did not issue it and "
                       "cannot make a new key in its format.",
                       "Create a tallykey token for the integration, move it over, then "
                       "revoke the imported key.", kind=IMPORTED)


def _identity(session: Session, actor: Actor, ref: str) -> Identity:
    """The identity a token is put in (by id or external id): in the actor's account
    (`NotFound` otherwise), and only by an administrator (`PermissionDenied`)."""
    if not actor.is_admin:
        raise PermissionDenied("Only account administrators can put a token in an "
                               "identity or take it out.", "Ask an administrator of your "
                               "account.", field="identity_id")
    found = session.scalar(select(Identity).where(
        Identity.account_id == actor.account_id,
        (Identity.id == ref.strip()) | (Identity.external_id == ref.strip())))
    if found is None:
        raise NotFound(f"No identity {ref.strip()[:64]!r} in this account.",
                       "Create it first (POST /api/v1/identities), or name it by its id or "
                       "external id.", field="identity_id")
    return found


def _require_owner(actor: Actor, token: Token, verb: str, noun: str) -> None:
    """A personal token gets a new secret only for its owner (or the operator): whoever
    asks receives that secret, and an administrator may revoke another user's token,
    never obtain a copy of it."""
    if token.kind == PERSONAL and not actor.is_operator and token.owner_id != actor.user_id:
        raise PermissionDenied(
            f"Only its owner can {verb} a personal token: {noun} hands the new secret to "
            "whoever asks for it.", f"Revoke the token instead, or ask its owner to {verb} it.",
            reason="not_owner")


def _retire_secrets(token: Token, retire_at: datetime) -> int:
    """Make every secret of `token` stop at `retire_at` (one already retiring earlier keeps
    its own end); returns the highest generation so far."""
    generation = 0
    for old in token.secrets:
        generation = max(generation, old.generation)
        if old.retires_at is None or old.retires_at > retire_at:
            old.retires_at = retire_at
    return generation


def _shortened_expiry(token: Token, wanted: datetime, now: datetime) -> datetime:
    if wanted.tzinfo is None:
        raise ValidationFailed("expires_at needs a timezone offset.", field="expires_at")
    if wanted > token.expires_at:
        raise ValidationFailed(
            "A token's expiry cannot be extended "
            f"(it expires at {token.expires_at.isoformat()}).",
            "Renew the token for longer access: its successor gets a new expiry.",
            field="expires_at")
    if wanted <= now:
        raise ValidationFailed("The new expiry is in the past; revoke the token instead.",
                               field="expires_at")
    return wanted


def _editable_snapshot(token: Token) -> dict[str, Any]:
    return {
        "name": token.name,
        "description": token.description,
        "ip_allowlist": list(token.ip_allowlist),
        "target": token.target,
        "scopes": list(token.scopes),
        "expires_at": token.expires_at.isoformat(),
        **_controls_snapshot(token),
    }


def _controls_snapshot(token: Token) -> dict[str, Any]:
    """The key controls as the audit trail records them (a change evicts the verdict)."""
    refill = (None if token.credits_refill_amount is None else
              {"amount": token.credits_refill_amount,
               "interval": token.credits_refill_interval})
    return {
        "rate_limits": list(token.rate_limits or []),
        "credits": None if token.credits_remaining is None else
        {"remaining": token.credits_remaining, "refill": refill},
        "metadata": token.meta,
        "external_id": token.external_id,
        "identity_id": token.identity_id,
        "plan_id": token.plan_id,
    }


def _set_credits(token: Token, credits: tuple[int, rules.Refill | None] | None,
                 now: datetime) -> None:
    """Set (or with None remove) a token's credits; they count for the current period."""
    remaining, refill = credits if credits is not None else (None, None)
    token.credits_remaining = remaining
    token.credits_refill_amount = refill.amount if refill else None
    token.credits_refill_interval = refill.interval if refill else None
    token.credits_period = (rules.period_of(refill.interval, now.timestamp())
                            if refill else None)


def _balance(token: Token, now: datetime) -> int:
    """The credits a token has now (a refill due since the last spend counted)."""
    interval = token.credits_refill_interval
    if (token.credits_refill_amount is not None and interval is not None
            and (token.credits_period is None
                 or token.credits_period < rules.period_of(interval, now.timestamp()))):
        return token.credits_refill_amount
    return token.credits_remaining or 0


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _encode_cursor(token: Token) -> str:
    raw = json.dumps([token.created_at.isoformat(), token.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, token_id = json.loads(raw)
        return datetime.fromisoformat(created_at), str(token_id)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ValidationFailed("The pagination cursor is malformed.",
                               "Pass the next_cursor value from the previous page unchanged.",
                               field="after") from None
