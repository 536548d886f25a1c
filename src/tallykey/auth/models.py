"""Tables the verification path owns: per-hour usage counts flushed in batches from
memory, and failed-authentication counts shared across nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class TokenUsage(Base):
    """Requests per token per hour per outcome (`allowed` or a denial reason)."""

    __tablename__ = "token_usage"

    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class AuthFailure(Base):
    """Failed authentications per client IP per minute, summed across nodes."""

    __tablename__ = "auth_failures"

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
