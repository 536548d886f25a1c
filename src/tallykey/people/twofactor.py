"""Two-factor sign-in: a TOTP authenticator (RFC 6238, 30-second steps, six digits) and
ten one-time recovery codes.

Second-factor attempts are limited per user, across all their sign-ins and every node:
`MAX_USER_CODE_FAILURES` attempts without a right code, then none for `CODE_LOCK`. Each
attempt first takes one of them with a single conditional UPDATE of a stored row, so
concurrent wrong codes are counted exactly and never checked beyond the limit.

A code is accepted for the current step or one step either side (clock drift), once: the
newest accepted step is stored and a code for it or an older step is refused as replayed,
with one conditional UPDATE so two concurrent submissions cannot both pass. Codes of older
steps are refused as expired, anything else as wrong; every refusal is audited. Recovery
codes carry 80 random bits and are kept only as their SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NoReturn

import pyotp
import segno
from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.orm import Session

from tallykey.accounts.console_sessions import end_sessions
from tallykey.accounts.models import Account, SignInFailure, User
from tallykey.accounts.passwords import check_password
from tallykey.accounts.sign_in import ensure_failure_row
from tallykey.actor import Actor
from tallykey.audit import trail
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import (
    NotFound,
    PermissionDenied,
    SecondFactorRefused,
    TooManyAttempts,
    ValidationFailed,
)
from tallykey.notify.models import EMAIL
from tallykey.notify.notices import render
from tallykey.notify.outbox import Draft, enqueue
from tallykey.people.models import RecoveryCode, SecondFactor
from tallykey.people.policy import TWO_FACTOR_POLICIES, requires_second_factor

ISSUER = "tallykey"
STEP_SECONDS = 30
#: Steps either side of now whose code is accepted (clock drift between phone and server).
DRIFT_STEPS = 1
#: How far back a code is recognised as "expired" rather than "wrong".
RECOGNISED_PAST_STEPS = 20
RECOVERY_CODES = 10
REFUSED = "user.second_factor_refused"
#: Second-factor attempts a user has without a right code (across sign-ins and nodes)…
MAX_USER_CODE_FAILURES = 10
#: …after which none are checked for this long.
CODE_LOCK = timedelta(minutes=15)
#: A count with no attempt for this long starts again from zero.
CODE_FAILURES_FORGOTTEN = timedelta(hours=1)

_MESSAGES = {
    "wrong": ("The code is wrong.",
              "Type the six digits your authenticator app shows now for tallykey, or a "
              "recovery code."),
    "replayed": ("This code was used already.",
                 "Each code works once: wait for the next one (a new code every 30 "
                 "seconds)."),
    "expired": ("This code has expired.",
                "Type the code your app shows now; if it keeps failing, check that your "
                "phone's clock is set automatically."),
    "recovery": ("This recovery code is not valid or was used already.",
                 "Each recovery code works once. Use another one, or your authenticator."),
}


@dataclass(frozen=True)
class Enrolment:
    """What the enrolment page shows: the secret (for typing) and its QR code."""

    secret: str
    uri: str
    qr_svg_data_uri: str


def _limit_key(user_id: str) -> str:
    """The user's row in `sign_in_failures` (the per-address password back-off's table).
    Upper case: no address typed at sign-in (lower-cased there) can name it."""
    return f"SECOND-FACTOR:{user_id}"


def ascii_code(code: str) -> str:
    """`code` if it is plain ASCII; a code typed with other digits (Arabic-Indic,
    fullwidth…) is refused as input (422), never checked."""
    if not code.isascii():
        raise ValidationFailed("Type the code with the digits 0-9 (and, for a recovery "
                               "code, the letters a-z).", field="code")
    return code


def _step(moment: datetime) -> int:
    return int(moment.timestamp()) // STEP_SECONDS


def _code_hash(code: str) -> str:
    return hashlib.sha256(_normal_recovery(code).encode()).hexdigest()


def _normal_recovery(code: str) -> str:
    return "".join(ch for ch in code.lower() if ch.isalnum())


def new_recovery_code() -> str:
    """`xxxx-xxxx-xxxx-xxxx`: 16 base32 characters, 80 random bits."""
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def qr_data_uri(uri: str) -> str:
    """The QR code of `uri` as an SVG data URI (the console's CSP allows `img-src data:`;
    it allows no inline script)."""
    return str(segno.make(uri, error="m").svg_data_uri(scale=5, border=2))


class TwoFactor:
    """Verbs: `begin`, `confirm`, `disable`, `verify` (at sign-in), `reset_for` (admin),
    `status`, `set_policy`."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self.database = database
        self.clock = clock

    # --- enrolment -------------------------------------------------------------------

    def status(self, user_id: str) -> tuple[bool, int]:
        """(enrolled, unused recovery codes)."""
        with self.database.reading() as session:
            factor = session.get(SecondFactor, user_id)
            left = len(list(session.scalars(select(RecoveryCode.code_hash).where(
                RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)))))
        return factor is not None and factor.confirmed_at is not None, left

    def begin(self, user: User) -> Enrolment:
        """A new secret for the user to scan (replacing an unconfirmed one). Refused while
        an authenticator is confirmed: disable it first."""
        with self.database.transaction() as session:
            factor = session.get(SecondFactor, user.id)
            if factor is not None and factor.confirmed_at is not None:
                raise ValidationFailed("Two-factor sign-in is on already.",
                                       "Turn it off first to set up another authenticator.")
            if factor is None:
                factor = SecondFactor(user_id=user.id, secret=pyotp.random_base32(),
                                      created_at=self.clock.now(), last_step=0)
                session.add(factor)
            secret = factor.secret
        return self.enrolment(user, secret)

    def enrolment(self, user: User, secret: str) -> Enrolment:
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
        return Enrolment(secret, uri, qr_data_uri(uri))

    def pending_secret(self, user_id: str) -> str | None:
        with self.database.reading() as session:
            factor = session.get(SecondFactor, user_id)
            return factor.secret if factor and factor.confirmed_at is None else None

    def confirm(self, actor: Actor, code: str, *, password: str | None = None,
                just_signed_in: bool = False) -> list[str]:
        """Turn the enrolment on with a first code from the app; returns the ten recovery
        codes (shown once). Re-authentication: unless this is the sign-in that was just
        made with the password (`just_signed_in`, a session awaiting the set-up), a user
        with a password must give it (`ValidationFailed` on the `password` field), so a
        stolen session cannot put the thief's authenticator on the account."""
        assert actor.user_id is not None
        with self.database.reading() as session:
            factor = session.get(SecondFactor, actor.user_id)
            password_hash = session.scalar(select(User.password_hash).where(
                User.id == actor.user_id))
        if factor is None or factor.confirmed_at is not None:
            raise ValidationFailed("There is no authenticator being set up.",
                                   "Start again from your account page.")
        if not just_signed_in and password_hash is not None and not check_password(
                password_hash, password or ""):
            raise ValidationFailed("The password is wrong." if password else
                                   "Type your password to turn on two-factor sign-in.",
                                   field="password")
        step = self._check_totp(actor, factor, ascii_code(code))
        codes = [new_recovery_code() for _ in range(RECOVERY_CODES)]
        now = self.clock.now()
        with self.database.transaction() as session:
            stored = session.get_one(SecondFactor, actor.user_id)
            stored.confirmed_at = now
            stored.last_step = step
            session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == actor.user_id))
            session.add_all(RecoveryCode(code_hash=_code_hash(c), user_id=actor.user_id,
                                         created_at=now) for c in codes)
            trail.record(session, actor=actor, action="user.two_factor_enabled", at=now,
                         target_type="user", target_id=actor.user_id)
        return codes

    def disable(self, actor: Actor, password: str) -> None:
        """The user turns their second factor off, proving their password; refused while
        the account's policy requires it."""
        assert actor.user_id is not None
        with self.database.reading() as session:
            user = session.get_one(User, actor.user_id)
            policy = session.get_one(Account, user.account_id).two_factor_policy
        if not check_password(user.password_hash, password):
            raise ValidationFailed("The password is wrong.", field="password")
        if requires_second_factor(policy, user.role):
            raise ValidationFailed("Your account requires two-factor sign-in.",
                                   "An administrator can reset it if you lost your phone.")
        with self.database.transaction() as session:
            _remove(session, user.id)
            trail.record(session, actor=actor, action="user.two_factor_disabled",
                         at=self.clock.now(), target_type="user", target_id=user.id)

    def reset_for(self, actor: Actor, user_id: str) -> None:
        """An administrator removes a user's second factor (lost phone): the user's
        sessions end, and they are told by mail. They set it up again at their next
        sign-in when the policy requires it."""
        if not actor.is_admin:
            raise PermissionDenied("Only account administrators can reset two-factor "
                                   "sign-in.")
        now = self.clock.now()
        with self.database.transaction() as session:
            user = session.get(User, user_id)
            if user is None or user.account_id != actor.account_id:
                raise NotFound("No such user in this account.", field="user")
            if session.get(SecondFactor, user.id) is None:
                raise ValidationFailed(f"{user.email} has no second factor to reset.")
            _remove(session, user.id)
            ended = end_sessions(session, user.id)
            trail.record(session, actor=actor, action="user.two_factor_reset", at=now,
                         target_type="user", target_id=user.id,
                         details={"sessions_ended": ended})
            account = session.get_one(Account, user.account_id)
            mail = render("two_factor_reset", "Your two-factor sign-in was reset",
                          recipient=user, account=account.name, actor=actor, at=now)
            enqueue(session, user.account_id, Draft(
                channel=EMAIL, event="user.two_factor_reset",
                notice=f"two_factor_reset:{user.id}:{int(now.timestamp())}",
                recipient=user.email, subject=mail.subject, body=mail.text,
                html_body=mail.html), now)

    # --- sign-in ---------------------------------------------------------------------

    def verify(self, actor: Actor, code: str) -> str:
        """Check a sign-in code: an authenticator code or a recovery code. Returns
        `totp` or `recovery`; raises `SecondFactorRefused` (audited) otherwise."""
        assert actor.user_id is not None
        cleaned = _normal_recovery(ascii_code(code))
        with self.database.reading() as session:
            factor = session.get(SecondFactor, actor.user_id)
        if factor is None or factor.confirmed_at is None:
            raise SecondFactorRefused("There is no second factor for this user.")
        self._take_attempt(actor.user_id)
        method = self._verify(actor, factor, cleaned)
        with self.database.transaction() as session:  # a right code: the count restarts
            session.execute(update(SignInFailure).where(
                SignInFailure.email == _limit_key(actor.user_id))
                .values(failures=0, blocked_until=None))
        return method

    def _take_attempt(self, user_id: str) -> None:
        """Take one of the user's attempts, or raise `TooManyAttempts` (the code is then
        not checked at all). One conditional UPDATE: of concurrent attempts exactly as
        many pass as were left."""
        key, now = _limit_key(user_id), self.clock.now()
        with self.database.transaction() as session:
            ensure_failure_row(session, key, now)
            session.execute(update(SignInFailure).where(  # a lock ran out, or long ago
                SignInFailure.email == key,
                or_(SignInFailure.blocked_until <= now,
                    and_(SignInFailure.blocked_until.is_(None),
                         SignInFailure.last_failed_at < now - CODE_FAILURES_FORGOTTEN)))
                .values(failures=0, blocked_until=None))
            taken = session.execute(update(SignInFailure).where(
                SignInFailure.email == key, SignInFailure.blocked_until.is_(None),
                SignInFailure.failures < MAX_USER_CODE_FAILURES)
                .values(failures=SignInFailure.failures + 1, last_failed_at=now,
                        blocked_until=case(
                            (SignInFailure.failures + 1 >= MAX_USER_CODE_FAILURES,
                             now + CODE_LOCK), else_=None)))
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return
            until = session.scalar(select(SignInFailure.blocked_until).where(
                SignInFailure.email == key))
        wait = max(1, int(((until or now + CODE_LOCK) - now).total_seconds()) + 1)
        raise TooManyAttempts(wait, "Too many wrong codes for this user: no code is checked "
                                    f"for {wait // 60 + 1} minutes.")

    def _verify(self, actor: Actor, factor: SecondFactor, cleaned: str) -> str:
        if cleaned.isdigit():
            step = self._check_totp(actor, factor, cleaned)
            with self.database.transaction() as session:
                taken = session.execute(update(SecondFactor).where(
                    SecondFactor.user_id == actor.user_id, SecondFactor.last_step < step)
                    .values(last_step=step))
                if taken.rowcount == 1:  # type: ignore[attr-defined]
                    return "totp"
            self._refuse(actor, "replayed")
        with self.database.transaction() as session:
            spent = session.execute(update(RecoveryCode).where(
                RecoveryCode.user_id == actor.user_id,
                RecoveryCode.code_hash == _code_hash(cleaned),
                RecoveryCode.used_at.is_(None)).values(used_at=self.clock.now()))
            if spent.rowcount == 1:  # type: ignore[attr-defined]
                trail.record(session, actor=actor, action="user.recovery_code_used",
                             at=self.clock.now(), target_type="user",
                             target_id=actor.user_id)
                return "recovery"
        self._refuse(actor, "recovery")

    def _check_totp(self, actor: Actor, factor: SecondFactor, code: str) -> int:
        """The step `code` belongs to (within the drift window, newer than the last one
        used), or an audited `SecondFactorRefused` naming why not."""
        code = code.strip().replace(" ", "")
        totp = pyotp.TOTP(factor.secret)
        now = _step(self.clock.now())
        if len(code) == 6 and code.isdigit():
            for step in range(now + DRIFT_STEPS, now - RECOGNISED_PAST_STEPS - 1, -1):
                if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
                    if step < now - DRIFT_STEPS:
                        self._refuse(actor, "expired")
                    if step <= factor.last_step:
                        self._refuse(actor, "replayed")
                    return step
        self._refuse(actor, "wrong")

    def _refuse(self, actor: Actor, reason: str) -> NoReturn:
        with self.database.transaction() as session:
            trail.record(session, actor=actor, action=REFUSED, at=self.clock.now(),
                         target_type="user", target_id=actor.user_id,
                         details={"reason": reason})
        message, hint = _MESSAGES[reason]
        raise SecondFactorRefused(message, hint, reason=reason)

    # --- policy ----------------------------------------------------------------------

    def set_policy(self, actor: Actor, policy: str) -> None:
        if not actor.is_admin:
            raise PermissionDenied("Only account administrators can change this policy.")
        if policy not in TWO_FACTOR_POLICIES:
            raise ValidationFailed(f"Unknown two-factor policy {policy!r}.",
                                   "Use off, admins or everyone.",
                                   field="two_factor_policy")
        with self.database.transaction() as session:
            account = session.get_one(Account, actor.account_id)
            if account.two_factor_policy != policy:
                trail.record(session, actor=actor, action="account.policy_changed",
                             at=self.clock.now(), target_type="account",
                             target_id=account.id,
                             details={"before": {"two_factor_policy":
                                                 account.two_factor_policy},
                                      "after": {"two_factor_policy": policy}})
                account.two_factor_policy = policy


def _remove(session: Session, user_id: str) -> None:
    session.execute(delete(SignInFailure).where(SignInFailure.email == _limit_key(user_id)))
    session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    session.execute(delete(SecondFactor).where(SecondFactor.user_id == user_id))
