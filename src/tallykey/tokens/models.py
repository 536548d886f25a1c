"""Tables of tokens: one row per token, one row per secret it has had (rotation lineage)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tallykey.accounts.models import User, Workspace
from tallykey.db.base import Base, UTCDateTime, new_id
from tallykey.tokens import format as token_format

PERSONAL = "personal"
APPLICATION = "application"
#: A decoy (SPEC §17): issued like any token, never grants; any use raises an alert.
DECOY = "decoy"
KINDS = (PERSONAL, APPLICATION, DECOY)
#: A key the platform issued before tallykey (SPEC §16), imported by its SHA-256 alone:
#: it verifies with its original string, whatever its format; it is never issued here.
IMPORTED = "imported"
#: Every kind a token list shows and filters by (`KINDS` are the ones issued here).
LISTED_KINDS = (*KINDS, IMPORTED)
#: What an imported key shows in place of a `tlk_…` prefix: no character of the key
#: itself, only the start of its SHA-256 (`imported:3f9a0c1e`).
IMPORTED_PREFIX = "imported:"

ACTIVE = "active"
EXPIRED = "expired"
REVOKED = "revoked"
SUSPENDED = "suspended"
#: Awaiting an administrator's approval (account policy `token_approval`, SPEC §17).
PENDING = "pending"
STATUSES = (ACTIVE, EXPIRED, REVOKED, SUSPENDED, PENDING)
#: `revoke_reason` of a token an administrator denied, and of one the inactivity policy
#: revoked.
DENIED_REASON = "denied"
INACTIVE_REASON = "inactive"

#: `suspend_reason` of a suspension made by the `contain` policy (SPEC §17).
CONTAINED = "contained"


class Token(Base):
    __tablename__ = "tokens"
    #: The token list reads an account's tokens newest first, a page at a time.
    __table_args__ = (Index("ix_tokens_account_created", "account_id", "created_at", "id"),
                      Index("ix_tokens_account_external_id", "account_id", "external_id"),
                      #: Whether any imported key exists (the verifier's probe, SPEC §16).
                      Index("ix_tokens_kind", "kind"))

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    workspace_id: Mapped[str | None] = mapped_column(ForeignKey("workspaces.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    region: Mapped[str] = mapped_column(String(8))
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    target: Mapped[str | None] = mapped_column(String(100), nullable=True)
    ip_allowlist: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Restrictions an administrator put on another user's personal token
    #: (`ip_allowlist`, `scopes`, `rate_limits`, `credits`: `{"refill"}`): the owner may
    #: tighten them, never loosen them.
    admin_limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    created_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    revoke_reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: A suspended token is refused (401 token_suspended) until it is resumed.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    suspended_by_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    #: A token awaiting approval (`token_approval: members`) is refused (401
    #: token_pending) until an administrator approves it; a denial revokes it.
    pending_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: When an administrator approved it: the inactivity policy counts a never-used
    #: approved token's disuse from here, not from its request.
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Why a suspension nobody signed for was made (`contained`, by an anomaly alert).
    suspend_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Renewal lineage: a successor names the token it renewed, which names its successor.
    renewed_from_id: Mapped[str | None] = mapped_column(ForeignKey("tokens.id"),
                                                        nullable=True)
    successor_id: Mapped[str | None] = mapped_column(ForeignKey("tokens.id"), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    last_used_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: Key controls (SPEC §13, `tallykey.controls`): named rate limits
    #: (`[{"name", "limit", "per_seconds", "shared"}]`), usage credits and their refill,
    #: the refill period `credits_remaining` belongs to, metadata and an external id.
    rate_limits: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)
    credits_remaining: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    credits_refill_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    credits_refill_interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    credits_period: Mapped[int | None] = mapped_column(Integer, nullable=True)
    meta: Mapped[dict[str, object] | None] = mapped_column("metadata", JSON, nullable=True)
    external_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: The identity this token belongs to (SPEC §16), if any: its credit pool and rate
    #: limits apply to every request of the token.
    identity_id: Mapped[str | None] = mapped_column(ForeignKey("identities.id"),
                                                    nullable=True, index=True)
    #: The plan (SPEC §16) whose rate limits, credit refill and scopes ceiling apply
    #: (its own rate limits and credits override the plan's), and the credits its refill
    #: left for the current period (`plan_credits_period`), spent by `auth.credits`.
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id"), nullable=True,
                                                index=True)
    plan_credits_remaining: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    plan_credits_period: Mapped[int | None] = mapped_column(Integer, nullable=True)

    secrets: Mapped[list[TokenSecret]] = relationship(
        back_populates="token", order_by="TokenSecret.generation"
    )
    creator: Mapped[User | None] = relationship(foreign_keys=[created_by_id], lazy="joined")
    revoker: Mapped[User | None] = relationship(foreign_keys=[revoked_by_id], lazy="joined")
    suspender: Mapped[User | None] = relationship(foreign_keys=[suspended_by_id],
                                                  lazy="joined")
    owner: Mapped[User | None] = relationship(foreign_keys=[owner_id], lazy="joined")
    workspace: Mapped[Workspace | None] = relationship(lazy="joined")

    @property
    def prefix(self) -> str:
        if self.kind == IMPORTED:  # its public id is the start of the key's SHA-256
            return IMPORTED_PREFIX + self.public_id[:8]
        return token_format.prefix(self.region, self.public_id)

    def status_at(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return REVOKED
        if self.expires_at <= now:
            return EXPIRED
        if self.pending_at is not None:
            return PENDING
        if self.suspended_at is not None:
            return SUSPENDED
        return ACTIVE


class TokenSecret(Base):
    """One secret a token has had. `retires_at` is None for the current secret; a rotated-out
    secret keeps working until `retires_at` (the grace period)."""

    __tablename__ = "token_secrets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), index=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    #: Retrievable application tokens only: the token sealed under its account's data key.
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    data_key_id: Mapped[int | None] = mapped_column(ForeignKey("account_keys.id"),
                                                    nullable=True)

    token: Mapped[Token] = relationship(back_populates="secrets")
