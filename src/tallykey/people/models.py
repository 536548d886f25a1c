"""Tables of console sign-in: reset links, second factors and recovery codes. Every
secret here is kept only as its SHA-256 (reset links, recovery codes) or, for the TOTP
seed the authenticator app shares, as the seed itself (it must be read to check a code)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.db.base import Base, UTCDateTime, new_id


class PasswordReset(Base):
    """A one-time reset link: valid until `expires_at`, spent at `used_at`."""

    __tablename__ = "password_resets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class SecondFactor(Base):
    """A user's TOTP authenticator. Until `confirmed_at` it is an enrolment in progress;
    `last_step` is the newest 30-second step a code was accepted for (no replays)."""

    __tablename__ = "second_factors"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_step: Mapped[int] = mapped_column(Integer, default=0)


class RecoveryCode(Base):
    """One of a user's ten one-time recovery codes, kept as its SHA-256."""

    __tablename__ = "recovery_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class OidcSignIn(Base):
    """A single sign-on in progress: its `state` (kept as SHA-256; the browser holds it in
    a cookie too), `nonce` and PKCE `code_verifier`. Spent by the callback, once."""

    __tablename__ = "oidc_sign_ins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
