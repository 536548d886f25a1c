"""Tables of per-token monitoring, written by the usage flush (never per request): usage
counts per hour, recent client addresses, networks seen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class TokenUsage(Base):
    """Requests per token per hour per outcome (`allowed` or a denial reason)."""

    __tablename__ = "token_usage"

    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class TokenClientIp(Base):
    """A client address a token was used from; only each token's most recent few are kept
    (`monitor.recent_ips.RECENT_IPS`)."""

    __tablename__ = "token_client_ips"

    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class TokenNetwork(Base):
    """A network (`/24` IPv4, `/48` IPv6 by default) a token has been used from: the
    memory behind "first use from a new network" alerts. Pruned with usage retention."""

    __tablename__ = "token_networks"

    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"), primary_key=True)
    network: Mapped[str] = mapped_column(String(49), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class DecoyTrip(Base):
    """Uses of a decoy token (SPEC §17), one row per decoy per alert window: when, how
    often, and the latest caller's address, user agent and path."""

    __tablename__ = "decoy_trips"
    __table_args__ = (Index("ix_decoy_trips_token_last", "token_id", "last_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("tokens.id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_at: Mapped[datetime] = mapped_column(UTCDateTime())
    count: Mapped[int] = mapped_column(Integer)
    ip: Mapped[str] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    path: Mapped[str | None] = mapped_column(String(300), nullable=True)
