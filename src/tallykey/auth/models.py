"""Tables the verification path owns: failed-authentication counts shared across nodes,
and the server keys."""

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


class ServerKey(Base):
    """Random keys the server made for itself (e.g. the one that signs the sign-in form's
    anti-CSRF value), shared by every node through the store."""

    __tablename__ = "server_keys"

    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    secret: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
