"""Console sessions: a random cookie (stored only as its SHA-256) and a CSRF token per
session, checked in constant time on every state-changing request.

A session opened after the password of a user who has (or must set up) a second factor
is *awaiting* it: `find` does not return it, so no page or API call accepts it, until
`complete` swaps it for a full session under a new cookie.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tallykey.accounts.console_sessions import ConsoleSession, cookie_hash, end_sessions
from tallykey.accounts.models import Account, User
from tallykey.clock import Clock
from tallykey.db.base import new_id
from tallykey.db.engine import Database
from tallykey.errors import Unauthenticated
from tallykey.people.policy import second_factor_stage

SESSION_COOKIE = "tallykey_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_LIFETIME = timedelta(hours=12)
#: A session awaiting its second factor lives this long, and allows this many wrong codes.
PENDING_LIFETIME = timedelta(minutes=10)
MAX_CODE_FAILURES = 5


@dataclass(frozen=True)
class OpenSession:
    cookie: str
    csrf_token: str
    user: User
    expires_at: datetime
    public_id: str = ""
    awaiting: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """A live session as its user sees it in the list of their sessions."""

    public_id: str
    created_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None


class SessionStore:
    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    def open(self, user: User, ip: str | None, user_agent: str | None = None) -> OpenSession:
        """A fresh session after the password (a new id on every login: no session
        fixation). It awaits the second factor when the user has or needs one."""
        with self.database.transaction() as session:
            return self.open_in(session, user, ip, user_agent)

    def open_in(self, session: Session, user: User, ip: str | None,
                user_agent: str | None = None) -> OpenSession:
        """`open`, in the caller's transaction. Refused (`Unauthenticated`) unless the
        user and their account are active as of this transaction."""
        if not _may_sign_in(session, user.id):
            raise Unauthenticated("This user or their account is deactivated or suspended "
                                  "and cannot sign in.",
                                  "Ask an administrator of your account.")
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock.now()
        public_id = new_id()
        awaiting = second_factor_stage(session, user)
        lifetime = PENDING_LIFETIME if awaiting else SESSION_LIFETIME
        session.add(ConsoleSession(id_hash=cookie_hash(cookie), public_id=public_id,
                                   user_id=user.id, csrf_token=csrf, created_at=now,
                                   expires_at=now + lifetime, ip=ip,
                                   user_agent=(user_agent or "")[:300] or None,
                                   awaiting=awaiting))
        return OpenSession(cookie, csrf, user, now + lifetime, public_id, awaiting)

    def find(self, cookie: str | None) -> OpenSession | None:
        """The live, complete session of an active user of an active account for this
        cookie, or None."""
        found = self.find_any(cookie)
        return found if found is not None and found.awaiting is None else None

    def find_any(self, cookie: str | None) -> OpenSession | None:
        """Like `find`, but also a session still awaiting its second factor."""
        if not cookie or len(cookie) > 100:
            return None
        with self.database.reading() as session:
            row = session.execute(
                select(ConsoleSession, User, Account.active)
                .join(User, User.id == ConsoleSession.user_id)
                .join(Account, Account.id == User.account_id)
                .where(ConsoleSession.id_hash == cookie_hash(cookie))).first()
        if row is None:
            return None
        stored, user, account_active = row
        # every use checks the user and the account: a suspension binds open sessions
        if stored.expires_at <= self.clock.now() or not user.active or not account_active:
            return None
        return OpenSession(cookie, stored.csrf_token, user, stored.expires_at,
                           stored.public_id, stored.awaiting)

    def complete(self, session: Session, pending: OpenSession) -> OpenSession:
        """Swap a session that passed its second factor for a full one under a new cookie,
        in the caller's transaction. Raises `LookupError` if it ended meanwhile (so two
        concurrent submissions of one pending session cannot both succeed)."""
        stored = session.get(ConsoleSession, cookie_hash(pending.cookie))
        if stored is None or stored.awaiting is None or not _may_sign_in(session,
                                                                         pending.user.id):
            raise LookupError("the session awaiting a second factor has ended")
        ip, user_agent = stored.ip, stored.user_agent
        gone = session.execute(delete(ConsoleSession).where(
            ConsoleSession.id_hash == cookie_hash(pending.cookie),
            ConsoleSession.awaiting.is_not(None)))
        if not gone.rowcount:  # type: ignore[attr-defined]
            raise LookupError("the session awaiting a second factor has ended")
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock.now()
        public_id = new_id()
        session.add(ConsoleSession(id_hash=cookie_hash(cookie), public_id=public_id,
                                   user_id=pending.user.id, csrf_token=csrf, created_at=now,
                                   expires_at=now + SESSION_LIFETIME, ip=ip,
                                   user_agent=user_agent, awaiting=None))
        return OpenSession(cookie, csrf, pending.user, now + SESSION_LIFETIME, public_id)

    def take_code_attempt(self, pending: OpenSession) -> bool:
        """Take one of the pending session's `MAX_CODE_FAILURES` code attempts before the
        code is checked: one conditional UPDATE, so of concurrent submissions exactly as
        many are checked as were left. False: none left (or the sign-in ended)."""
        with self.database.transaction() as session:
            taken = session.execute(update(ConsoleSession).where(
                ConsoleSession.id_hash == cookie_hash(pending.cookie),
                ConsoleSession.awaiting.is_not(None),
                ConsoleSession.code_failures < MAX_CODE_FAILURES)
                .values(code_failures=ConsoleSession.code_failures + 1))
            return bool(taken.rowcount)  # type: ignore[attr-defined]

    def code_failed(self, pending: OpenSession) -> int:
        """After a wrong code (its attempt taken by `take_code_attempt`): once the
        attempts are used up the session ends (back to the password). Returns the
        attempts left."""
        with self.database.transaction() as session:
            failures = session.scalar(select(ConsoleSession.code_failures).where(
                ConsoleSession.id_hash == cookie_hash(pending.cookie))) or MAX_CODE_FAILURES
            if failures >= MAX_CODE_FAILURES:
                session.execute(delete(ConsoleSession).where(
                    ConsoleSession.id_hash == cookie_hash(pending.cookie)))
        return max(0, MAX_CODE_FAILURES - failures)

    def list_for(self, user_id: str) -> list[SessionInfo]:
        """The user's live, complete sessions, newest first."""
        with self.database.reading() as session:
            rows = session.scalars(select(ConsoleSession).where(
                ConsoleSession.user_id == user_id, ConsoleSession.awaiting.is_(None),
                ConsoleSession.expires_at > self.clock.now())
                .order_by(ConsoleSession.created_at.desc()))
            return [SessionInfo(r.public_id, r.created_at, r.expires_at, r.ip, r.user_agent)
                    for r in rows]

    def end(self, user_id: str, public_id: str) -> bool:
        """End one of the user's sessions; False if they have no such session."""
        with self.database.transaction() as session:
            gone = session.execute(delete(ConsoleSession).where(
                ConsoleSession.user_id == user_id, ConsoleSession.public_id == public_id))
            return bool(gone.rowcount)  # type: ignore[attr-defined]

    def close(self, cookie: str) -> None:
        with self.database.transaction() as session:
            session.execute(delete(ConsoleSession).where(
                ConsoleSession.id_hash == cookie_hash(cookie)))

    def close_all_for(self, user_id: str) -> int:
        with self.database.transaction() as session:
            return end_sessions(session, user_id)


def _may_sign_in(session: Session, user_id: str) -> bool:
    """The user and their account are both active, as of this transaction."""
    active = session.execute(select(User.active, Account.active)
                             .join(Account, Account.id == User.account_id)
                             .where(User.id == user_id)).first()
    return active is not None and all(active)
