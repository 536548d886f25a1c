"""The identities table: one row per identity of an account (its customer or integration)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime, new_id


class Identity(Base):
    """An account's customer or integration. Its tokens (`tokens.identity_id`) spend one
    credit pool (`credits_*`, spent by `auth.credits` in one conditional UPDATE) and count
    against its rate limits together."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("account_id", "external_id",
                                       name="uq_identities_account_external_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100), default="")
    meta: Mapped[dict[str, object] | None] = mapped_column("metadata", JSON, nullable=True)
    #: `[{"name", "limit", "per_seconds"}]`: counted once for all the identity's tokens.
    rate_limits: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)
    credits_remaining: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    credits_refill_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    credits_refill_interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    credits_period: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: The plan (SPEC §16) of the identity's tokens that name none of their own.
    plan_id: Mapped[str | None] = mapped_column(ForeignKey("plans.id"), nullable=True,
                                                index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
