"""The plans table: one row per plan of an account (a named bundle of key controls)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime, new_id


class Plan(Base):
    """A named bundle of rate limits, a credit refill and a scopes ceiling. Tokens
    (`tokens.plan_id`) and identities (`identities.plan_id`) reference one; a token's own
    rate limits and credits override the plan's (see `plans.service`)."""

    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_plans_account_name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(1000), default="")
    #: `[{"name", "limit", "per_seconds", "shared"}]`: counted for each token of the plan
    #: as its own limits would be (unless the token has limits of its own).
    rate_limits: Mapped[list[dict[str, object]] | None] = mapped_column(JSON, nullable=True)
    #: Each token of the plan (without credits of its own) gets `refill_amount` credits
    #: per `refill_interval` (`daily` | `monthly`).
    refill_amount: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    refill_interval: Mapped[str | None] = mapped_column(String(8), nullable=True)
    #: The scopes ceiling: a token of the plan passes only with scopes in it (None: none).
    scopes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
