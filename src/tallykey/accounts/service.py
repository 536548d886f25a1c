"""The account service: tenants, workspaces, users, permissions and policies."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallykey.accounts.console_sessions import end_sessions
from tallykey.accounts.models import (
    APPROVAL_POLICIES,
    CONTAIN_POLICIES,
    MAX_INACTIVE_DAYS,
    Account,
    User,
    Workspace,
    WorkspaceGrant,
)
from tallykey.accounts.passwords import check_password, hash_password
from tallykey.accounts.permissions import ADMIN, ROLES, Permissions
from tallykey.accounts.scopes import DEMO_CATALOG, ScopeCatalog
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.feed import changes as change_feed
from tallykey.feed.propagation import Changed, Propagator
from tallykey.tokens.policy import MAX_VALIDITY_CEILING_DAYS, clean_allowlist, clean_name
from tallykey.tokens.secrets import destroy_ciphertexts

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def normalise_email(value: str) -> str:
    try:
        result = validate_email(value.strip(), check_deliverability=False,
                                test_environment=True)
    except EmailNotValidError as error:
        raise ValidationFailed(f"{value!r} is not a valid e-mail address: {error}",
                               field="email") from None
    return result.normalized.lower()


def permissions_of(user: User, catalog: ScopeCatalog = DEMO_CATALOG) -> Permissions:
    """The user's permissions as of now (grants are loaded with the user)."""
    return Permissions(
        role=user.role,
        active=user.active,
        by_workspace={grant.workspace_id: frozenset(grant.scopes) for grant in user.grants},
        everything=catalog.all,
    )


@dataclass(frozen=True)
class PolicyChanges:
    max_validity_days: int | None = None
    reminder_days: list[int] | None = None
    retrievable_application_tokens: bool | None = None
    ip_allowlist: list[str] | None = None
    new_network_alerts: bool | None = None
    #: `off` or `suspend` (SPEC §17: an anomaly alert suspends its token).
    contain: str | None = None
    #: Governance (SPEC §17): `off` | `members`; days, or `OFF` to stop revoking.
    token_approval: str | None = None
    revoke_inactive_days: int | str | None = None


#: `PolicyChanges.revoke_inactive_days` that turns the inactivity policy off.
OFF = "off"


class AccountService:
    """Verbs on accounts and users. Each change is audited in its own transaction."""

    def __init__(self, database: Database, clock: Clock, *, keys_configured: bool = False,
                 catalog: ScopeCatalog = DEMO_CATALOG, propagation: Propagator) -> None:
        self.database = database
        self.clock = clock
        self.keys_configured = keys_configured
        self.catalog = catalog
        self.propagation = propagation

    # --- accounts and workspaces ---------------------------------------------------

    def create_account(self, slug: str, name: str, region: str) -> Account:
        if not _SLUG.fullmatch(slug):
            raise ValidationFailed(
                f"Account slug {slug!r} must be lowercase letters, digits and dashes.",
                field="slug",
            )
        with self.database.transaction() as session:
            if session.scalar(select(Account).where(Account.slug == slug)):
                raise ValidationFailed(f"An account {slug!r} exists already.", field="slug")
            account = Account(slug=slug, name=clean_name(name), region=region,
                              created_at=self.clock.now())
            session.add(account)
            return account

    def list_accounts(self) -> list[Account]:
        """Every account of this deployment, by slug (the operator's view)."""
        with self.database.reading() as session:
            return list(session.scalars(select(Account).order_by(Account.slug)))

    def find_account(self, slug_or_id: str) -> Account:
        with self.database.reading() as session:
            account = session.scalar(
                select(Account).where((Account.slug == slug_or_id) | (Account.id == slug_or_id))
            )
            if account is None:
                raise NotFound(f"No account {slug_or_id!r}.", "List accounts with the CLI.")
            return account

    def create_workspace(self, account_id: str, slug: str, name: str,
                         timezone: str = "UTC") -> Workspace:
        """Operator verb (seed, CLI, operator API): a new workspace, not audited."""
        return self._add_workspace(None, account_id, slug, name, timezone)

    def add_workspace(self, actor: Actor, slug: str, name: str,
                      timezone: str = "UTC") -> Workspace:
        """An administrator (or the operator) adds a workspace to the account (audited)."""
        _require_admin(actor, "create workspaces")
        return self._add_workspace(actor, actor.account_id, slug, name, timezone)

    def workspaces(self, account_id: str, *, archived: bool = False) -> list[Workspace]:
        """The account's workspaces in use (with `archived`: the archived ones too)."""
        statement = select(Workspace).where(Workspace.account_id == account_id)
        if not archived:
            statement = statement.where(Workspace.archived_at.is_(None))
        with self.database.reading() as session:
            return list(session.scalars(statement.order_by(Workspace.name, Workspace.slug)))

    def get_workspace(self, actor: Actor, ref: str) -> Workspace:
        """A workspace of the actor's account by id or slug, or `NotFound`."""
        with self.database.reading() as session:
            return self._workspace_in_account(session, actor.account_id, ref)

    def update_workspace(self, actor: Actor, ref: str, *, name: str | None = None,
                         slug: str | None = None, timezone: str | None = None) -> Workspace:
        """Rename a workspace (name, slug) or change its time zone (audited)."""
        _require_admin(actor, "change workspaces")
        with self.database.transaction() as session:
            workspace = self._workspace_in_account(session, actor.account_id, ref)
            if workspace.archived_at is not None:
                raise Conflict("This workspace is archived and cannot be changed.",
                               status="archived")
            before = _workspace_snapshot(workspace)
            if name is not None:
                workspace.name = clean_name(name, "workspace name")
            if timezone is not None:
                workspace.timezone = _check_timezone(timezone)
            if slug is not None and slug != workspace.slug:
                self._check_workspace_slug(session, actor.account_id, slug)
                workspace.slug = slug
                # requests may name workspaces by slug: cached verdicts must learn the new one
                change_feed.announce(session, change_feed.ACCOUNT, actor.account_id,
                                     self.clock.now())
            after = _workspace_snapshot(workspace)
            if after != before:
                trail.record(session, actor=actor, action="workspace.updated",
                             at=self.clock.now(), target_type="workspace",
                             target_id=workspace.id,
                             details={k: [before[k], after[k]] for k in after
                                      if after[k] != before[k]})
            return workspace

    def tokens_stopped_by_archiving(self, actor: Actor, ref: str) -> int:
        """How many live tokens belong to the workspace (they stop when it is archived)."""
        with self.database.reading() as session:
            workspace = self._workspace_in_account(session, actor.account_id, ref)
            return self._live_tokens_in(session, workspace)

    def archive_workspace(self, actor: Actor, ref: str) -> Changed[tuple[Workspace, int]]:
        """Archive a workspace: its tokens stop on every node (announced on the change feed
        like a revocation) and grants in it no longer count. Returns the workspace and how
        many live tokens stopped, once every live node applied it (or the timeout ran
        out), with the propagation. `Conflict` if it was archived already."""
        _require_admin(actor, "archive workspaces")
        now = self.clock.now()
        with self.database.transaction() as session:
            workspace = self._workspace_in_account(session, actor.account_id, ref,
                                                   for_update=True)
            if workspace.archived_at is not None:
                raise Conflict(f"This workspace was already archived at "
                               f"{workspace.archived_at.isoformat()}.", status="archived")
            stopped = self._live_tokens_in(session, workspace)
            workspace.archived_at = now
            change_feed.announce(session, change_feed.ACCOUNT, actor.account_id, now)
            trail.record(session, actor=actor, action="workspace.archived", at=now,
                         target_type="workspace", target_id=workspace.id,
                         details={"slug": workspace.slug, "tokens_stopped": stopped})
        return Changed((workspace, stopped), self.propagation.settle(actor.account_id))

    def update_policies(self, actor: Actor, changes: PolicyChanges) -> Account:
        _require_admin(actor, "change account policies")
        with self.database.transaction() as session:
            account = session.get_one(Account, actor.account_id)
            before = _policy_snapshot(account)
            if changes.max_validity_days is not None:
                days = changes.max_validity_days
                if isinstance(days, bool) or not 1 <= days <= MAX_VALIDITY_CEILING_DAYS:
                    raise ValidationFailed(
                        f"max_validity_days must be between 1 and {MAX_VALIDITY_CEILING_DAYS}.",
                        "The maximum validity can be lowered, never raised above one year.",
                        field="max_validity_days",
                    )
                account.max_validity_days = days
            if changes.reminder_days is not None:
                account.reminder_days = _clean_reminder_days(changes.reminder_days)
            retrievable = changes.retrievable_application_tokens
            if retrievable and not account.retrievable_application_tokens and not (
                    self.keys_configured):
                raise ValidationFailed(
                    "Retrievable application tokens need a key-encryption key on the server.",
                    "Set TALLYKEY_KEK (or TALLYKEY_KEK_FILE), restart, and try again.",
                    field="retrievable_application_tokens")
            if retrievable is False and account.retrievable_application_tokens:
                destroy_ciphertexts(session, account.id)
            if retrievable is not None:
                account.retrievable_application_tokens = retrievable
            if changes.ip_allowlist is not None:
                account.ip_allowlist = clean_allowlist(changes.ip_allowlist)
            if changes.new_network_alerts is not None:
                account.new_network_alerts = changes.new_network_alerts
            _change_governance(account, changes)
            if changes.contain is not None:
                if changes.contain not in CONTAIN_POLICIES:
                    raise ValidationFailed(
                        f"Unknown containment policy {changes.contain[:32]!r}.",
                        "Use 'off' or 'suspend' (an anomaly alert suspends its token).",
                        field="contain")
                account.contain = changes.contain
            after = _policy_snapshot(account)
            if after != before:
                change_feed.announce(session, change_feed.ACCOUNT, account.id, self.clock.now())
                trail.record(session, actor=actor, action="account.policy_changed",
                             at=self.clock.now(), target_type="account", target_id=account.id,
                             details={"before": before, "after": after})
            return account

    # --- users ---------------------------------------------------------------------

    def create_user(
        self,
        actor: Actor,
        email: str,
        *,
        role: str = "member",
        name: str = "",
        password: str | None = None,
        grants: Mapping[str, Iterable[str]] | None = None,
    ) -> User:
        """Add a user to the actor's account. `grants` maps workspace id to scopes."""
        _require_admin(actor, "add users")
        email = normalise_email(email)
        _check_role(role)
        with self.database.transaction() as session:
            if session.scalar(select(User).where(func.lower(User.email) == email)):
                raise ValidationFailed(f"A user with the e-mail {email} exists already.",
                                       field="email")
            user = User(account_id=actor.account_id, email=email,
                        name=clean_name(name, "user name") if name.strip() else "",
                        role=role, active=True, created_at=self.clock.now(),
                        password_hash=hash_password(password, email=email) if password
                        else None)
            session.add(user)
            session.flush()
            self._apply_grants(session, user, grants or {})
            trail.record(session, actor=actor, action="user.created", at=self.clock.now(),
                         target_type="user", target_id=user.id,
                         details={"email": email, "role": role})
            return user

    def list_users(self, actor: Actor) -> list[User]:
        with self.database.reading() as session:
            return list(session.scalars(
                select(User).where(User.account_id == actor.account_id).order_by(User.email)
            ))

    def get_user(self, actor: Actor, user_id: str) -> User:
        with self.database.reading() as session:
            return self._user_in_account(session, actor, user_id)

    def set_weekly_digest(self, actor: Actor, on: bool) -> User:
        """The acting user's own choice to receive the weekly token digest (sent to
        administrators; SPEC §17). Audited when it changes."""
        if actor.user_id is None:
            raise ValidationFailed("The weekly digest is a user's own setting.",
                                   "Sign in as the user.", field="weekly_digest")
        with self.database.transaction() as session:
            user = self._user_in_account(session, actor, actor.user_id)
            if user.weekly_digest != on:
                user.weekly_digest = on
                trail.record(session, actor=actor, action="user.settings_changed",
                             at=self.clock.now(), target_type="user", target_id=user.id,
                             details={"weekly_digest": on})
            return user

    def find_user(self, account_id: str, email: str) -> User:
        """A user of `account_id` by e-mail, or `NotFound`."""
        email = normalise_email(email)
        with self.database.reading() as session:
            user = session.scalar(select(User).where(
                User.account_id == account_id, func.lower(User.email) == email))
            if user is None:
                raise NotFound(f"No user {email} in this account.", field="user")
            return user

    def update_user(self, actor: Actor, user_id: str, *, role: str | None = None,
                    active: bool | None = None,
                    grants: Mapping[str, Iterable[str]] | None = None) -> User:
        """Change role, active flag or workspace grants; takes effect on the next request."""
        _require_admin(actor, "change users")
        with self.database.transaction() as session:
            user = self._user_in_account(session, actor, user_id)
            now = self.clock.now()
            diff: dict[str, Any] = {}
            if role is not None and role != user.role:
                _check_role(role)
                if user.role == ADMIN and self._is_last_active_admin(session, user):
                    raise ValidationFailed("This is the account's last active administrator.",
                                           "Make another user an administrator first.")
                diff["role"] = [user.role, role]
                user.role = role
            if active is not None and active != user.active:
                if not active and user.role == ADMIN and self._is_last_active_admin(session, user):
                    raise ValidationFailed("This is the account's last active administrator.",
                                           "Make another user an administrator first.")
                diff["active"] = [user.active, active]
                user.active = active
                user.deactivated_at = None if active else now
                if not active:
                    diff["sessions_ended"] = end_sessions(session, user.id)
            if grants is not None:
                diff["grants"] = self._apply_grants(session, user, grants)
            if diff:
                change_feed.announce(session, change_feed.USER, user.id, now)
                trail.record(session, actor=actor, action="user.updated", at=now,
                             target_type="user", target_id=user.id, details=diff)
            return user

    def set_password(self, actor: Actor, user_id: str, password: str) -> None:
        """Set a user's password (an admin, the operator, or the user themself); every
        session of the user ends."""
        if actor.user_id != user_id:
            _require_admin(actor, "set another user's password")
        with self.database.reading() as session:
            email = self._user_in_account(session, actor, user_id).email
        password_hash = hash_password(password, email=email)
        with self.database.transaction() as session:
            user = self._user_in_account(session, actor, user_id)
            user.password_hash = password_hash
            ended = end_sessions(session, user.id)
            trail.record(session, actor=actor, action="user.password_set", at=self.clock.now(),
                         target_type="user", target_id=user.id,
                         details={"sessions_ended": ended})

    def change_password(self, actor: Actor, current: str, new: str, *,
                        keep_session: str | None = None) -> int:
        """The signed-in user changes their own password, proving the current one. Every
        other session of theirs ends (`keep_session`: the cookie of the one in use).
        Returns how many sessions ended; a wrong current password is audited and refused."""
        if actor.user_id is None:
            raise PermissionDenied("Only a signed-in user can change their own password.",
                                   "The operator sets passwords with "
                                   "'tallykey users set-password'.")
        with self.database.reading() as session:
            user = self._user_in_account(session, actor, actor.user_id)
        if not check_password(user.password_hash, current):
            with self.database.transaction() as session:
                trail.record(session, actor=actor, action="user.password_change_refused",
                             at=self.clock.now(), target_type="user", target_id=user.id,
                             details={"reason": "wrong current password"})
            raise ValidationFailed("The current password is wrong.",
                                   "Type the password you signed in with, or reset it by "
                                   "e-mail from the sign-in page.", field="current_password")
        if check_password(user.password_hash, new):
            raise ValidationFailed("The new password is the same as the current one.",
                                   field="password")
        password_hash = hash_password(new, email=user.email)
        with self.database.transaction() as session:
            stored = self._user_in_account(session, actor, user.id)
            stored.password_hash = password_hash
            ended = end_sessions(session, user.id, keep_cookie=keep_session)
            trail.record(session, actor=actor, action="user.password_changed",
                         at=self.clock.now(), target_type="user", target_id=user.id,
                         details={"sessions_ended": ended})
            return ended

    def end_sessions_of(self, actor: Actor, user_id: str) -> int:
        """An administrator signs a user of their account out everywhere (audited)."""
        if actor.user_id != user_id:
            _require_admin(actor, "end another user's sessions")
        with self.database.transaction() as session:
            user = self._user_in_account(session, actor, user_id)
            ended = end_sessions(session, user.id)
            trail.record(session, actor=actor, action="user.sessions_ended",
                         at=self.clock.now(), target_type="user", target_id=user.id,
                         details={"sessions_ended": ended})
            return ended

    def check_login(self, email: str, password: str) -> User | None:
        """The active user with these credentials, or None (same timing either way)."""
        try:
            email = normalise_email(email)
        except ValidationFailed:
            check_password(None, password)
            return None
        with self.database.reading() as session:
            user = session.scalar(select(User).where(func.lower(User.email) == email))
            ok = check_password(user.password_hash if user else None, password)
            if not ok or user is None or not user.active:
                return None
            account = session.get(Account, user.account_id)
            return user if account is not None and account.active else None

    # --- internals -----------------------------------------------------------------

    def _add_workspace(self, actor: Actor | None, account_id: str, slug: str, name: str,
                       timezone: str) -> Workspace:
        with self.database.transaction() as session:
            if session.get(Account, account_id) is None:
                raise NotFound("No such account.", field="account")
            self._check_workspace_slug(session, account_id, slug)
            workspace = Workspace(account_id=account_id, slug=slug,
                                  name=clean_name(name, "workspace name"),
                                  timezone=_check_timezone(timezone))
            session.add(workspace)
            session.flush()
            if actor is not None:
                trail.record(session, actor=actor, action="workspace.created",
                             at=self.clock.now(), target_type="workspace",
                             target_id=workspace.id, details=_workspace_snapshot(workspace))
            return workspace

    def _check_workspace_slug(self, session: Session, account_id: str, slug: str) -> None:
        if not isinstance(slug, str) or not _SLUG.fullmatch(slug):
            raise ValidationFailed(
                f"Workspace slug {slug!r} must be lowercase letters, digits and dashes "
                "(at most 63), starting with a letter or digit.", field="slug")
        if session.scalar(select(Workspace.id).where(Workspace.account_id == account_id,
                                                     Workspace.slug == slug)):
            raise Conflict(f"A workspace {slug!r} exists already in this account (archived "
                           "workspaces keep their slug).", field="slug")

    def _workspace_in_account(self, session: Session, account_id: str, ref: str,
                              *, for_update: bool = False) -> Workspace:
        statement = select(Workspace).where(Workspace.account_id == account_id,
                                            (Workspace.id == ref) | (Workspace.slug == ref))
        if for_update:
            statement = statement.with_for_update()
        workspace = session.scalar(statement)
        if workspace is None:
            raise NotFound("No such workspace in this account.",
                           "Name it by its id or slug (GET /api/v1/workspaces).",
                           field="workspace")
        return workspace

    def _live_tokens_in(self, session: Session, workspace: Workspace) -> int:
        from tallykey.tokens.models import Token  # tokens depend on accounts, not back

        now = self.clock.now()
        return int(session.scalar(select(func.count()).select_from(Token).where(
            Token.workspace_id == workspace.id, Token.revoked_at.is_(None),
            Token.expires_at > now)) or 0)

    def _user_in_account(self, session: Session, actor: Actor, user_id: str) -> User:
        user = session.get(User, user_id)
        if user is None or user.account_id != actor.account_id:
            raise NotFound("No such user in this account.", field="user")
        return user

    def _is_last_active_admin(self, session: Session, user: User) -> bool:
        """Whether `user` is the account's only active administrator. The account's row is
        locked first (PostgreSQL; SQLite's write transactions are serialised already), so
        two administrators demoting or deactivating each other at once are decided one
        after the other and the second sees the first's change."""
        session.execute(select(Account.id).where(Account.id == user.account_id)
                        .with_for_update())
        admins = session.scalar(select(func.count()).select_from(User).where(
            User.account_id == user.account_id, User.role == ADMIN, User.active.is_(True)))
        return (admins or 0) <= 1

    def _apply_grants(self, session: Session, user: User,
                      grants: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
        known = {slug: ws_id for ws_id, slug in session.execute(
            select(Workspace.id, Workspace.slug).where(Workspace.account_id == user.account_id,
                                                       Workspace.archived_at.is_(None)))}
        known.update({ws_id: ws_id for ws_id in list(known.values())})
        cleaned: dict[str, list[str]] = {}
        for ref, scopes in grants.items():
            workspace_id = known.get(ref)
            if workspace_id is None:
                raise NotFound(f"No workspace {ref[:64]!r} in this account.",
                               "Name a workspace in use by its id or slug "
                               "(GET /api/v1/workspaces).", field="workspace")
            if isinstance(scopes, str):
                raise ValidationFailed("Each workspace's grant is a list of scopes.",
                                       field="workspaces")
            wanted = sorted(set(scopes))
            unknown = self.catalog.unknown(wanted)
            if unknown:
                raise ValidationFailed(
                    "Unknown scope(s): " + ", ".join(unknown) + ".",
                    "Known scopes: " + ", ".join(self.catalog.names) + " (GET /api/v1/scopes).",
                    field="workspaces", unknown=unknown)
            refused = [s for s in wanted if s not in self.catalog.member_scopes]
            if refused:
                raise ValidationFailed(
                    "Only administrators hold " + ", ".join(refused) + "; workspace grants "
                    "can hold: " + ", ".join(self.catalog.member_scopes) + ".",
                    field="workspaces", refused=refused)
            cleaned[workspace_id] = wanted
        user.grants = [WorkspaceGrant(workspace_id=ws, scopes=scopes)
                       for ws, scopes in cleaned.items()]
        return cleaned


def _require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"Only account administrators can {what}.")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"Unknown role {role!r}.", "Use 'admin', 'member' or 'auditor'.",
                               field="role")


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValidationFailed(f"Unknown time zone {name!r}.",
                               "Use an IANA name such as Europe/Berlin or UTC.",
                               field="timezone") from None
    return name


def _workspace_snapshot(workspace: Workspace) -> dict[str, Any]:
    return {"slug": workspace.slug, "name": workspace.name, "timezone": workspace.timezone}


def _clean_reminder_days(days: Iterable[int]) -> list[int]:
    cleaned = sorted({d for d in days}, reverse=True)
    if len(cleaned) > 10 or any(isinstance(d, bool) or not 1 <= d <= 90 for d in cleaned):
        raise ValidationFailed("reminder_days must be up to 10 whole days between 1 and 90.",
                               field="reminder_days")
    return cleaned


def _policy_snapshot(account: Account) -> dict[str, Any]:
    return {
        "max_validity_days": account.max_validity_days,
        "reminder_days": list(account.reminder_days),
        "retrievable_application_tokens": account.retrievable_application_tokens,
        "ip_allowlist": list(account.ip_allowlist),
        "new_network_alerts": account.new_network_alerts,
        "token_approval": account.token_approval,
        "revoke_inactive_days": account.revoke_inactive_days,
        "contain": account.contain,
    }


def _change_governance(account: Account, changes: PolicyChanges) -> None:
    """Token approval and inactivity revocation (SPEC §17), validated, then set."""
    if changes.token_approval is not None:
        if changes.token_approval not in APPROVAL_POLICIES:
            raise ValidationFailed(f"Unknown token_approval {changes.token_approval!r}.",
                                   "Use 'off' or 'members'.", field="token_approval")
        account.token_approval = changes.token_approval
    days = changes.revoke_inactive_days
    if days == OFF:
        account.revoke_inactive_days = None
    elif days is not None:
        if isinstance(days, bool) or not isinstance(days, int) or not (
                1 <= days <= MAX_INACTIVE_DAYS):
            raise ValidationFailed(
                f"revoke_inactive_days must be a whole number of days between 1 and "
                f"{MAX_INACTIVE_DAYS}.", "Send null to turn the inactivity policy off.",
                field="revoke_inactive_days")
        account.revoke_inactive_days = days
