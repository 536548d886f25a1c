"""Console sessions: a random cookie (stored only as its SHA-256) and a CSRF token per
session, checked in constant time on every state-changing request."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from tallykey.accounts.models import User
from tallykey.clock import Clock
from tallykey.db.base import Base, UTCDateTime
from tallykey.db.engine import Database

SESSION_COOKIE = "tallykey_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = timedelta(hours=12)


class ConsoleSession(Base):
    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)


@dataclass(frozen=True)
class OpenSession:
    cookie: str
    csrf_token: str
    user: User
    expires_at: datetime


def _hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionStore:
    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    def open(self, user: User, ip: str | None) -> OpenSession:
        """A fresh session (a new id on every login: no session fixation)."""
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self.database.transaction() as session:
            session.add(ConsoleSession(id_hash=_hash(cookie), user_id=user.id, csrf_token=csrf,
                                       created_at=now, expires_at=now + SESSION_LIFETIME,
                                       ip=ip))
        return OpenSession(cookie, csrf, user, now + SESSION_LIFETIME)

    def find(self, cookie: str | None) -> OpenSession | None:
        """The live session of an active user for this cookie, or None."""
        if not cookie or len(cookie) > 100:
            return None
        with self.database.reading() as session:
            row = session.execute(
                select(ConsoleSession, User).join(User, User.id == ConsoleSession.user_id)
                .where(ConsoleSession.id_hash == _hash(cookie))).first()
        if row is None:
            return None
        stored, user = row
        if stored.expires_at <= self.clock.now() or not user.active:
            return None
        return OpenSession(cookie, stored.csrf_token, user, stored.expires_at)

    def close(self, cookie: str) -> None:
        with self.database.transaction() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.id_hash == _hash(cookie)))

    def close_all_for(self, user_id: str) -> None:
        with self.database.transaction() as session:
            session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


def csrf_matches(session: OpenSession, presented: str | None) -> bool:
    return bool(presented) and secrets.compare_digest(session.csrf_token.encode(),
                                                      (presented or "").encode())
