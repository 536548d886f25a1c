"""Tables of tenants: accounts, workspaces, users and their per-workspace permissions,
and the failed sign-ins per e-mail address."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tallykey.db.base import Base, UTCDateTime, new_id

DEFAULT_MAX_VALIDITY_DAYS = 365
DEFAULT_REMINDER_DAYS = [7, 2]
#: Account policy `token_approval`: `off`, or `members` (a member's new token is pending
#: until an administrator approves it).
APPROVAL_OFF = "off"
APPROVAL_MEMBERS = "members"
APPROVAL_POLICIES = (APPROVAL_OFF, APPROVAL_MEMBERS)
#: Account policy `revoke_inactive_days`: at least a day, at most ten years.
MAX_INACTIVE_DAYS = 3650
#: The `contain` policy: what an anomaly alert does to its token (SPEC §17).
CONTAIN_OFF = "off"
CONTAIN_SUSPEND = "suspend"
CONTAIN_POLICIES = (CONTAIN_OFF, CONTAIN_SUSPEND)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(8))
    max_validity_days: Mapped[int] = mapped_column(Integer, default=DEFAULT_MAX_VALIDITY_DAYS)
    reminder_days: Mapped[list[int]] = mapped_column(
        JSON, default=lambda: list(DEFAULT_REMINDER_DAYS)
    )
    retrievable_application_tokens: Mapped[bool] = mapped_column(Boolean, default=False)
    ip_allowlist: Mapped[list[str]] = mapped_column(JSON, default=list)
    new_network_alerts: Mapped[bool] = mapped_column(Boolean, default=True)
    #: A suspended account (operator API): its tokens stop and its users cannot sign in.
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    #: Who must sign in with a second factor: `off`, `admins` or `everyone`.
    two_factor_policy: Mapped[str] = mapped_column(String(16), default="off",
                                                   server_default="off")
    #: Governance (SPEC §17): `off` or `members` (a member's new token awaits an
    #: administrator's approval); revoke tokens unused this many days (None: never);
    #: when the weekly digest was last sent to the admins.
    token_approval: Mapped[str] = mapped_column(String(16), default="off",
                                                server_default="off")
    revoke_inactive_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    digest_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: `suspend`: a token an anomaly alert names is suspended at once (`monitor.containment`).
    contain: Mapped[str] = mapped_column(String(16), default=CONTAIN_OFF,
                                         server_default=CONTAIN_OFF)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    workspaces: Mapped[list[Workspace]] = relationship(back_populates="account")


class Workspace(Base):
    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    slug: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    #: Archived workspaces keep their history; their tokens and grants stop working.
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    account: Mapped[Account] = relationship(back_populates="workspaces")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: An administrator receives the weekly token digest unless they turn it off.
    weekly_digest: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())

    grants: Mapped[list[WorkspaceGrant]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )


class WorkspaceGrant(Base):
    """What a member may do in one workspace; seeing a workspace's data needs a grant."""

    __tablename__ = "workspace_grants"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)

    user: Mapped[User] = relationship(back_populates="grants")


class SignInFailure(Base):
    """Consecutive failed console sign-ins per e-mail address (known or not), shared by
    every node: the per-account limit with its back-off (`accounts.sign_in`)."""

    __tablename__ = "sign_in_failures"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
