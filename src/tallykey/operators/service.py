"""The operator service: the platform's own credential (operator tokens) and the verbs
its back office uses to provision tenants over HTTP (SPEC §11). Every change is audited
in the account it touches, under the operator token that made it.

An operator token is a tallykey token of the reserved region `operator`
(`tlk_operator_…`), so secret scanners and log redaction catch it like any other; only
its SHA-256 is stored. It is accepted by `/api/v1/operator/...` alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from tallykey.accounts.models import Account, User, Workspace
from tallykey.accounts.permissions import ADMIN
from tallykey.accounts.service import AccountService, PolicyChanges
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import NotFound, TokenFormatError, Unauthenticated, ValidationFailed
from tallykey.feed import changes
from tallykey.operators.models import OperatorToken
from tallykey.tokens import format as token_format
from tallykey.tokens.policy import clean_name

OPERATOR_REGION = "operator"
MAX_DAYS = 365


@dataclass(frozen=True)
class IssuedOperatorToken:
    record: OperatorToken
    secret: token_format.ParsedToken

    @property
    def value(self) -> str:
        return str(self.secret)


class OperatorService:
    def __init__(self, database: Database, clock: Clock, accounts: AccountService,
                 region: str) -> None:
        self.database = database
        self.clock = clock
        self.accounts = accounts
        self.region = region

    # --- the credential ------------------------------------------------------------

    def issue(self, name: str, days: int) -> IssuedOperatorToken:
        """A new operator token, valid `days` days (1 to 365): shown once, stored hashed."""
        if isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
            raise ValidationFailed(f"An operator token is valid 1 to {MAX_DAYS} days.",
                                   field="days")
        name = clean_name(name)
        now = self.clock.now()
        secret = token_format.generate(OPERATOR_REGION)
        with self.database.transaction() as session:
            record = OperatorToken(name=name, public_id=secret.public_id,
                                   secret_hash=secret.secret_hash, created_at=now,
                                   expires_at=now + timedelta(days=days))
            session.add(record)
            return IssuedOperatorToken(record, secret)

    def list_tokens(self) -> list[OperatorToken]:
        with self.database.reading() as session:
            return list(session.scalars(select(OperatorToken)
                                        .order_by(OperatorToken.created_at.desc())))

    def revoke(self, ref: str) -> OperatorToken:
        """Stop an operator token (by id or prefix) at once."""
        public_id = ref.rsplit("_", 1)[-1] if ref.startswith(token_format.PRODUCT_PREFIX) \
            else ""
        with self.database.transaction() as session:
            record = session.scalar(select(OperatorToken).where(
                (OperatorToken.id == ref) | (OperatorToken.public_id == public_id)))
            if record is None:
                raise NotFound(f"No operator token {ref[:80]!r}.")
            if record.revoked_at is None:
                record.revoked_at = self.clock.now()
            return record

    def authenticate(self, authorization: str | None) -> OperatorToken:
        """The live operator token in an `Authorization: Bearer …` header, or
        `Unauthenticated` saying what is wrong (never whether another token exists)."""
        hint = "Send Authorization: Bearer tlk_operator_… (tallykey operator-tokens create)."
        if not authorization:
            raise Unauthenticated("The operator API needs an operator token.", hint)
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value or " " in value:
            raise Unauthenticated("The Authorization header is not 'Bearer <operator "
                                  "token>'.", hint)
        try:
            parsed = token_format.parse(value)
        except TokenFormatError as error:
            raise Unauthenticated(error.message, hint) from None
        if parsed.region != OPERATOR_REGION:
            raise Unauthenticated("This is not an operator token: account tokens cannot "
                                  "use the operator API.", hint)
        now = self.clock.now()
        with self.database.transaction() as session:
            record = session.scalar(select(OperatorToken).where(
                OperatorToken.secret_hash == parsed.secret_hash))
            if record is None:
                raise Unauthenticated("The operator token is not recognised.", hint)
            if record.revoked_at is not None:
                raise Unauthenticated("This operator token was revoked.", hint)
            if record.expires_at <= now:
                raise Unauthenticated(f"This operator token expired at "
                                      f"{record.expires_at.isoformat()}.", hint)
            record.last_used_at = now
            return record

    # --- provisioning ----------------------------------------------------------------

    def actor(self, token: OperatorToken, account_id: str, ip: str | None) -> Actor:
        """Who the audit trail names for a change made with `token` in `account_id`."""
        name = token_format.prefix(OPERATOR_REGION, token.public_id)
        return Actor(account_id, None, ADMIN, f"operator token {token.name} ({name})", ip,
                     "operator-api")

    def create_account(self, token: OperatorToken, ip: str | None, slug: str, name: str,
                       policies: PolicyChanges | None = None) -> Account:
        """A new tenant in this region (audited in the new account)."""
        account = self.accounts.create_account(slug, name or slug, self.region)
        actor = self.actor(token, account.id, ip)
        with self.database.transaction() as session:
            trail.record(session, actor=actor, action="account.created",
                         at=self.clock.now(), target_type="account", target_id=account.id,
                         details={"slug": slug, "name": account.name})
        if policies is not None and policies != PolicyChanges():
            account = self.accounts.update_policies(actor, policies)
        return account

    def list_accounts(self, after: str | None, limit: int) -> list[Account]:
        """Accounts by slug, one keyset page at a time."""
        statement = select(Account).order_by(Account.slug)
        if after:
            statement = statement.where(Account.slug > after)
        with self.database.reading() as session:
            return list(session.scalars(statement.limit(limit)))

    def find_account(self, slug: str) -> Account:
        with self.database.reading() as session:
            account = session.scalar(select(Account).where(Account.slug == slug))
            if account is None:
                raise NotFound("No such account.", "List accounts with GET "
                               "/api/v1/operator/accounts.", field="account")
            return account

    def update_account(self, token: OperatorToken, ip: str | None, slug: str, *,
                       active: bool | None = None, name: str | None = None,
                       policies: PolicyChanges | None = None) -> Account:
        """Suspend or resume a tenant (its tokens stop or work again on every node; its
        users cannot sign in while suspended), rename it, change its policies."""
        account = self.find_account(slug)
        actor = self.actor(token, account.id, ip)
        if policies is not None and policies != PolicyChanges():
            self.accounts.update_policies(actor, policies)
        now = self.clock.now()
        with self.database.transaction() as session:
            stored = session.get_one(Account, account.id)
            diff: dict[str, Any] = {}
            if name is not None and clean_name(name) != stored.name:
                diff["name"] = [stored.name, clean_name(name)]
                stored.name = clean_name(name)
            if active is not None and active != stored.active:
                diff["active"] = [stored.active, active]
                stored.active = active
                changes.announce(session, changes.ACCOUNT, stored.id, now)
            if diff:
                trail.record(session, actor=actor, action="account.updated", at=now,
                             target_type="account", target_id=stored.id, details=diff)
            return stored

    def add_user(self, token: OperatorToken, ip: str | None, slug: str, email: str, *,
                 role: str, name: str, password: str | None,
                 grants: Mapping[str, Iterable[str]] | None) -> User:
        account = self.find_account(slug)
        return self.accounts.create_user(self.actor(token, account.id, ip), email, role=role,
                                         name=name, password=password, grants=grants)

    def add_workspace(self, token: OperatorToken, ip: str | None, slug: str,
                      workspace_slug: str, name: str, timezone: str) -> Workspace:
        account = self.find_account(slug)
        return self.accounts.add_workspace(self.actor(token, account.id, ip),
                                           workspace_slug, name, timezone)
