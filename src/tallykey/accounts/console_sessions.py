"""The console sessions of users (the table), and ending them: when a user is deactivated
or their password changes. Opening and checking sessions is `tallykey.people.sessions`."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Protocol

from sqlalchemy import ForeignKey, Integer, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from tallykey.db.base import Base, UTCDateTime, new_id


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: Names the session on the "your sessions" page (the cookie's hash is never shown).
    public_id: Mapped[str] = mapped_column(String(36), unique=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(300), nullable=True)
    #: None for a full session; else what it still waits for (see `tallykey.people.policy`).
    awaiting: Mapped[str | None] = mapped_column(String(16), nullable=True)
    code_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class HoldsCsrfToken(Protocol):
    @property
    def csrf_token(self) -> str: ...


def csrf_matches(session: HoldsCsrfToken, presented: str | None) -> bool:
    """The session's CSRF token, compared in constant time."""
    return bool(presented) and secrets.compare_digest(session.csrf_token.encode(),
                                                      (presented or "").encode())


def cookie_hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


def end_sessions(session: Session, user_id: str, *, keep_cookie: str | None = None) -> int:
    """Delete the user's sessions (but the one of `keep_cookie`) in the caller's
    transaction; returns how many ended."""
    statement = delete(ConsoleSession).where(ConsoleSession.user_id == user_id)
    if keep_cookie:
        statement = statement.where(ConsoleSession.id_hash != cookie_hash(keep_cookie))
    return int(session.execute(statement).rowcount or 0)  # type: ignore[attr-defined]
