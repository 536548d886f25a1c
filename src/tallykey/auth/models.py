"""Tables the verification path owns: failed-authentication counts shared across nodes,
console sign-in failures and the server keys."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime


class AuthFailure(Base):
    """Failed authentications per client IP per minute, summed across nodes."""

    __tablename__ = "auth_failures"

    ip: Mapped[str] = mapped_column(String(45), primary_key=True)
    window: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class SignInFailure(Base):
    """Consecutive failed console sign-ins per e-mail address (known or not), shared by
    every node: the per-account limit with its back-off (`accounts.sign_in`)."""

    __tablename__ = "sign_in_failures"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ServerKey(Base):
    """Random keys the server made for itself (e.g. the one that signs the sign-in form's
    anti-CSRF value), shared by every node through the store."""

    __tablename__ = "server_keys"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
