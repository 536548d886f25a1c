"""Password reset by e-mail: a one-time link, valid 30 minutes, sent through the outbox.

Only the link's SHA-256 is stored. The link's token is an HMAC, under a server key, of the
reset's id and the user's password hash as it was when the link was made: the mail in
the outbox holds only a marker (`notify.outbox.sealed`) that the worker turns into the
link as the mail leaves (`unsealed`), so the outbox page, API and CLI never show a usable
link; and once the password changes (by any path) every earlier link stops working.

Asking for a link answers the same whether or not the address belongs to anyone: the
adapters only hand the address to `ask` — the same work for any address, no lookup — and
one background thread per node does the lookup and the mail afterwards (`request` never
raises for an unknown address), so neither the answer nor its timing, nor the work of
the request that asked, tells. Spending a link is one conditional UPDATE, so of
concurrent submissions of the same link exactly one succeeds; it sets the password and
ends every session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import queue
import re
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tallykey.accounts.console_sessions import end_sessions
from tallykey.accounts.models import Account, User
from tallykey.accounts.passwords import check_rules, hash_password
from tallykey.accounts.service import normalise_email
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.auth.server_keys import server_key
from tallykey.clock import Clock
from tallykey.db.base import new_id
from tallykey.db.engine import Database
from tallykey.errors import LinkRefused, NotFound, PermissionDenied, ValidationFailed
from tallykey.notify.models import EMAIL, OutboxMessage
from tallykey.notify.notices import render
from tallykey.notify.outbox import HIDDEN_SECRET, ONE_TIME, Draft, enqueue, sealed
from tallykey.people.models import PasswordReset

log = logging.getLogger(__name__)

RESET_LIFETIME = timedelta(minutes=30)
#: A new link for the same user is mailed at most this often (no mail bombing).
RESEND_AFTER = timedelta(minutes=1)
RESET_PATH = "/console/reset/"
REFUSED = "user.password_reset_refused"
#: Requests waiting for the background thread at most; more are dropped (and logged).
QUEUED_REQUESTS = 1000
#: The background thread ends after this long without a request (started again on one).
IDLE_SECONDS = 30.0
#: The server key (shared by every node through the store) that link tokens are made with.
LINK_KEY = "password_reset_links"
#: The kind of one-time secret a reset mail's marker names (see `notify.outbox.sealed`).
SEALED_KIND = "password_reset"

_MESSAGES = {
    "unknown": ("This password reset link is not valid.",
                "Copy the whole link from the e-mail, or ask for a new one."),
    "used": ("This password reset link was used already.",
             "Each link works once. Ask for a new one on the sign-in page."),
    "expired": ("This password reset link has expired.",
                "Links work for 30 minutes. Ask for a new one on the sign-in page."),
    "inactive": ("This user is deactivated and cannot sign in.",
                 "Ask an administrator of your account."),
    "superseded": ("This password reset link no longer works: the password was changed "
                   "after it was sent.",
                   "Sign in with the new password, or ask for a new link."),
}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_token(database: Database, clock: Clock, reset_id: str,
               password_hash: str | None) -> str:
    """The token of reset `reset_id` while the user's password hash is `password_hash`."""
    key = server_key(database, clock, LINK_KEY)
    mac = hmac.new(key, f"{reset_id}:{password_hash or ''}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def unsealed(database: Database, clock: Clock, message: OutboxMessage) -> OutboxMessage:
    """The outbox row `message` (detached, as `outbox.claim` returns it) with the link of
    every reset marker put in, for sending only: the stored row keeps the marker. A
    link that can no longer work (spent, expired, password changed) is left out."""
    def secret(match: re.Match[str]) -> str:
        if match.group("kind") != SEALED_KIND:
            return HIDDEN_SECRET
        with database.reading() as session:
            row = session.execute(select(PasswordReset, User.password_hash)
                                  .join(User, User.id == PasswordReset.user_id)
                                  .where(PasswordReset.id == match.group("ref"))).first()
        if row is None or row[0].used_at is not None or row[0].expires_at <= clock.now():
            return HIDDEN_SECRET
        token = link_token(database, clock, row[0].id, row[1])
        if not hmac.compare_digest(_hash(token), row[0].token_hash):
            return HIDDEN_SECRET  # the password changed since the link was made
        return token

    message.body = ONE_TIME.sub(secret, message.body)
    if message.html_body:
        message.html_body = ONE_TIME.sub(secret, message.html_body)
    return message


@dataclass(frozen=True)
class ResetLink:
    user_id: str
    email: str


class PasswordResets:
    """Verbs: `request` (anyone, by e-mail), `send_for` (an admin, for a user), `check`
    and `complete` (whoever holds the link)."""

    def __init__(self, database: Database, clock: Clock, public_url: str | None) -> None:
        self.database = database
        self.clock = clock
        self.public_url = public_url.rstrip("/") if public_url else None
        self._asked: queue.Queue[tuple[str, str | None]] = queue.Queue(QUEUED_REQUESTS)
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()

    def ask(self, email: str, ip: str | None) -> None:
        """What the sign-in page and the API do for "mail me a link": queue the address
        for the background thread, which runs `request`. The same work whatever the
        address; never raises, never waits."""
        try:
            self._asked.put_nowait((email[:254], ip))
        except queue.Full:
            log.warning("password reset requests are arriving faster than they are "
                        "handled; one was dropped")
            return
        with self._start:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._handle_asked, daemon=True,
                                                name="tallykey-password-resets")
                self._thread.start()

    def settled(self, timeout: float = 10.0) -> bool:
        """Wait until every asked request was handled (for tests and shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._asked.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _handle_asked(self) -> None:
        while True:
            try:
                email, ip = self._asked.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._start:
                    if self._asked.empty():
                        self._thread = None
                        return
                continue
            try:
                self.request(email, ip)
            except Exception:  # the store may be down: the person can ask again
                log.exception("a password reset request could not be handled")
            finally:
                self._asked.task_done()

    @property
    def available(self) -> bool:
        """Links need the console's public address (never taken from a request's Host)."""
        return self.public_url is not None

    def request(self, email: str, ip: str | None) -> bool:
        """Mail a reset link to the active user with this address, if there is one.
        Never raises for an unknown or invalid address; returns whether a mail was queued
        (for tests and logs, never for the person asking)."""
        if not self.available:
            return False
        try:
            address = normalise_email(email)
        except ValidationFailed:
            return False
        with self.database.transaction() as session:
            user = session.scalar(select(User).where(func.lower(User.email) == address))
            if user is None or not user.active or not _account_active(session, user):
                return False
            recent = session.scalar(select(func.count()).select_from(PasswordReset).where(
                PasswordReset.user_id == user.id,
                PasswordReset.created_at > self.clock.now() - RESEND_AFTER))
            if recent:
                return False
            actor = Actor(user.account_id, user.id, user.role, user.email, ip, "console")
            self._issue(session, user, actor, requested_by=None)
            return True

    def send_for(self, actor: Actor, user_id: str) -> None:
        """An administrator has a reset link mailed to a user of their account."""
        if not actor.is_admin:
            raise PermissionDenied("Only account administrators can send reset links.")
        with self.database.transaction() as session:
            user = session.get(User, user_id)
            if user is None or user.account_id != actor.account_id:
                raise NotFound("No such user in this account.", field="user")
            if not self.available:
                raise ValidationFailed("Reset links need the console's public address.",
                                       "Set TALLYKEY_PUBLIC_URL on the server.")
            if not user.active:
                raise ValidationFailed(f"{user.email} is deactivated.",
                                       "Reactivate the user first.")
            self._issue(session, user, actor, requested_by=actor.label)

    def check(self, token: str, ip: str | None) -> ResetLink:
        """The user a live link is for, or `LinkRefused` (audited) saying why not."""
        with self.database.reading() as session:
            reason, user = self._find(session, token)
        if reason is not None or user is None:
            self._refuse(reason or "unknown", user, ip)
        return ResetLink(user.id, user.email)

    def complete(self, token: str, password: str, ip: str | None) -> ResetLink:
        """Spend the link: set `password`, end every session of the user, and mark every
        other open link of theirs used. A password breaking the rules raises
        `ValidationFailed` and leaves the link usable."""
        link = self.check(token, ip)
        check_rules(password, email=link.email)
        password_hash = hash_password(password, email=link.email)
        now = self.clock.now()
        with self.database.transaction() as session:
            spent = session.execute(update(PasswordReset).where(
                PasswordReset.token_hash == _hash(token), PasswordReset.used_at.is_(None),
                PasswordReset.expires_at > now).values(used_at=now))
            if spent.rowcount == 1:  # type: ignore[attr-defined]
                user = session.get_one(User, link.user_id)
                user.password_hash = password_hash
                session.execute(update(PasswordReset).where(
                    PasswordReset.user_id == user.id, PasswordReset.used_at.is_(None))
                    .values(used_at=now))
                ended = end_sessions(session, user.id)
                trail.record(session, actor=Actor(user.account_id, user.id, user.role,
                                                  user.email, ip, "console"),
                             action="user.password_reset", at=now, target_type="user",
                             target_id=user.id, details={"sessions_ended": ended})
                return link
        with self.database.reading() as session:
            owner = session.get(User, link.user_id)
        self._refuse("used", owner, ip)

    # --- internals -------------------------------------------------------------------

    def _issue(self, session: Session, user: User, actor: Actor,
               requested_by: str | None) -> None:
        now = self.clock.now()
        reset = PasswordReset(id=new_id(), user_id=user.id, created_at=now,
                              expires_at=now + RESET_LIFETIME)
        reset.token_hash = _hash(link_token(self.database, self.clock, reset.id,
                                            user.password_hash))
        session.add(reset)
        session.flush()
        account = session.get_one(Account, user.account_id)
        link = f"{self.public_url}{RESET_PATH}{sealed(SEALED_KIND, reset.id)}"
        mail = render("password_reset", "Reset your tallykey password", recipient=user,
                      account=account.name, link=link,
                      minutes=int(RESET_LIFETIME.total_seconds() // 60),
                      requested_by=requested_by, ip=actor.ip)
        enqueue(session, user.account_id, Draft(
            channel=EMAIL, event="user.password_reset_requested",
            notice=f"password_reset:{reset.id}", recipient=user.email, subject=mail.subject,
            body=mail.text, html_body=mail.html), now)
        trail.record(session, actor=actor, action="user.password_reset_requested", at=now,
                     target_type="user", target_id=user.id,
                     details={"by_admin": requested_by is not None,
                              "expires_at": reset.expires_at.isoformat()})

    def _find(self, session: Session, token: str) -> tuple[str | None, User | None]:
        """(None, the user) for a live link, else (why not, the user if known)."""
        if not token or len(token) > 100:
            return "unknown", None
        reset = session.scalar(select(PasswordReset).where(
            PasswordReset.token_hash == _hash(token)))
        if reset is None:
            return "unknown", None
        user = session.get_one(User, reset.user_id)
        if reset.used_at is not None:
            return "used", user
        if reset.expires_at <= self.clock.now():
            return "expired", user
        if not user.active or not _account_active(session, user):
            return "inactive", user
        if not hmac.compare_digest(link_token(self.database, self.clock, reset.id,
                                              user.password_hash), token):
            return "superseded", user
        return None, user

    def _refuse(self, reason: str, user: User | None, ip: str | None) -> NoReturn:
        """Audit the refused link (in its user's account, or account-less when the link is
        unknown) and raise `LinkRefused`."""
        with self.database.transaction() as session:
            trail.record_unattributed(
                session, action=REFUSED, at=self.clock.now(), actor_type="client",
                label=ip or "unknown client", account_id=user.account_id if user else None,
                ip=ip, target_type="user" if user else None,
                target_id=user.id if user else None, details={"reason": reason})
        message, hint = _MESSAGES[reason]
        raise LinkRefused(message, hint, reason=reason)


def _account_active(session: Session, user: User) -> bool:
    return bool(session.scalar(select(Account.active).where(Account.id == user.account_id)))
