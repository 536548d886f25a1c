"""Signing in with e-mail and password, for the console form and `POST /api/v1/session`
alike: two limits in front of the password check, and every failure on record.

- **Per e-mail address** (known or not, so the limit tells nothing about who exists),
  shared by every node through the store: after `FREE_FAILURES` consecutive failures each
  further one blocks the address for twice as long as the one before (1 s, 2 s, 4 s …,
  at most `MAX_BLOCK`). A back-off, never a lockout an attacker can make permanent: the
  owner waits minutes at most, and a success resets the count.
- **Per source network** (an IPv4 address, an IPv6 /64): `NETWORK_FAILURES_PER_MINUTE`,
  in the app's `FailureThrottle`.

Every failed attempt is audited as `user.login_failed` (in the account the address
belongs to, or in the account-less chain when nobody has it), with the reason. Attempts
refused by a limit are answered 429 without checking the password and are not audited
one by one: the failure that starts a block records how long it lasts. The caller
records the successful sign-in (`user.login`) once the session opens.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallykey.accounts.models import SignInFailure, User
from tallykey.accounts.service import AccountService, normalise_email
from tallykey.audit import trail
from tallykey.errors import TooManyAttempts, Unauthenticated, ValidationFailed
from tallykey.network.throttle import FailureThrottle

NETWORK_FAILURES_PER_MINUTE = 10
FREE_FAILURES = 5
MAX_BLOCK = timedelta(minutes=15)
#: A count of failures older than this (and no block running) starts again from zero.
FORGET_AFTER = timedelta(hours=1)
LOGIN_FAILED = "user.login_failed"
BAD_CREDENTIALS = "The e-mail or password is wrong, or the user is deactivated."


def _refuse_while_limited(accounts: AccountService, limiter: FailureThrottle, email: str,
                          ip: str, what: str, whom: str) -> str:
    """Raise `TooManyAttempts` while the network's or the address's limit runs (the
    password is then not even checked); else the address's failure key."""
    wait = limiter.retry_after(ip)
    if wait is not None:
        raise TooManyAttempts(wait, f"Too many {what} from your network.")
    key = _key(email)
    wait = _blocked_for(accounts, key)
    if wait is not None:
        raise TooManyAttempts(wait, f"Too many {what} for {whom}.")
    return key


def sign_in(accounts: AccountService, limiter: FailureThrottle, email: str, password: str,
            ip: str, via: str) -> User:
    """The active user with these credentials. Raises `TooManyAttempts` (a limit is
    reached: the password is not even checked) or `Unauthenticated` (audited)."""
    key = _refuse_while_limited(accounts, limiter, email, ip, "failed sign-ins",
                                "this e-mail address")
    user = accounts.check_login(email, password)
    if user is not None:
        _forget(accounts, key)
        return user
    limiter.failed(ip)
    _record_failure(accounts, key, ip, via)
    raise Unauthenticated(BAD_CREDENTIALS)


T = TypeVar("T")


def password_proved(accounts: AccountService, limiter: FailureThrottle, email: str, ip: str,
                    via: str, action: Callable[[], T], *, wrong_field: str) -> T:
    """Run `action` (changing the password, turning off the second factor…), which checks
    a signed-in user's password, behind the same two limits as signing in: refused while
    either runs; a `ValidationFailed` naming `wrong_field` (the password was wrong)
    counts as a failed sign-in of `email`, a success resets its count. So a stolen session
    is no faster an oracle for the password than the sign-in form."""
    key = _refuse_while_limited(accounts, limiter, email, ip, "wrong passwords",
                                "this user")
    try:
        result = action()
    except ValidationFailed as refused:
        if refused.details.get("field") == wrong_field:
            limiter.failed(ip)
            _record_failure(accounts, key, ip, via)
        raise
    _forget(accounts, key)
    return result


def _key(email: str) -> str:
    try:
        return normalise_email(email)[:254]
    except ValidationFailed:
        return email.strip().lower()[:254]


def _blocked_for(accounts: AccountService, key: str) -> int | None:
    with accounts.database.reading() as session:
        blocked_until = session.scalar(select(SignInFailure.blocked_until).where(
            SignInFailure.email == key))
    if blocked_until is None:
        return None
    left = (blocked_until - accounts.clock.now()).total_seconds()
    return math.ceil(left) if left > 0 else None


def _forget(accounts: AccountService, key: str) -> None:
    with accounts.database.reading() as session:
        if session.get(SignInFailure, key) is None:
            return
    with accounts.database.transaction() as session:
        row = session.get(SignInFailure, key)
        if row is not None:
            session.delete(row)


def _record_failure(accounts: AccountService, key: str, ip: str, via: str) -> None:
    now = accounts.clock.now()
    with accounts.database.transaction() as session:
        ensure_failure_row(session, key, now)
        row = session.scalar(select(SignInFailure).where(SignInFailure.email == key)
                             .with_for_update())
        assert row is not None
        if row.last_failed_at + FORGET_AFTER < now and (
                row.blocked_until is None or row.blocked_until <= now):
            row.failures = 0
        row.failures += 1
        row.last_failed_at = now
        block = _block_after(row.failures)
        if block is not None:
            row.blocked_until = now + block
        user = session.scalar(select(User).where(func.lower(User.email) == key))
        reason = ("unknown_user" if user is None else
                  "deactivated" if not user.active else "wrong_password")
        details: dict[str, object] = {"email": key, "reason": reason, "via": via,
                                      "consecutive_failures": row.failures}
        if block is not None:
            details["blocked_seconds"] = int(block.total_seconds())
        trail.record_unattributed(
            session, action=LOGIN_FAILED, at=now, actor_type="client", label=key,
            account_id=user.account_id if user else None, ip=ip,
            target_type="user" if user else None, target_id=user.id if user else None,
            details=details)


def _block_after(failures: int) -> timedelta | None:
    if failures < FREE_FAILURES:
        return None
    exponent = min(failures - FREE_FAILURES, 20)
    return min(timedelta(seconds=2 ** exponent), MAX_BLOCK)


def ensure_failure_row(session: Session, key: str, now: datetime) -> None:
    """Insert the address's row unless another node did (no duplicate-key error)."""
    values = {"email": key, "failures": 0, "last_failed_at": now}
    if session.get_bind().dialect.name == "postgresql":
        session.execute(postgresql.insert(SignInFailure).values(**values)
                        .on_conflict_do_nothing(index_elements=["email"]))
    else:
        session.execute(sqlite.insert(SignInFailure).values(**values)
                        .on_conflict_do_nothing(index_elements=["email"]))
