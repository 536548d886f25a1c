"""TOTP two-factor sign-in: enrolment, codes refused as wrong, replayed or expired (each
audited), recovery codes that work once, the account policy, and an administrator's
reset that mails the user through a real SMTP server."""

from __future__ import annotations

import base64
import re
import threading
from datetime import timedelta
from urllib.parse import unquote

import pyotp
import pytest
from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import NotFound, PermissionDenied, SecondFactorRefused, ValidationFailed
from tallykey.people.models import RecoveryCode
from tallykey.people.policy import AWAITING_CODE, AWAITING_ENROLMENT
from tallykey.people.twofactor import RECOVERY_CODES, TwoFactor

from ..conftest import World
from ..notify.conftest import SmtpServer, make_worker, text_of

RECOVERY = re.compile(r"^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$")
#: The seeded users' passwords: setting up an authenticator re-authenticates.
PASSWORDS = {"admin@acme.test": "correct horse battery",
             "member@acme.test": "member password 1"}


def code(secret: str, clock: FrozenClock, steps: int = 0) -> str:
    return str(pyotp.TOTP(secret).at(clock.now() + timedelta(seconds=30 * steps)))


def enrol(world: World, clock: FrozenClock, actor: Actor | None = None) -> tuple[str, list[str]]:
    """Turn two-factor sign-in on for the admin (or `actor`); (secret, recovery codes)."""
    actor = actor or world.as_admin
    assert actor is not None and actor.user_id is not None
    user = world.rt.accounts.get_user(actor, actor.user_id)
    secret = world.rt.two_factor.begin(user).secret
    codes = world.rt.two_factor.confirm(actor, code(secret, clock),
                                        password=PASSWORDS[user.email])
    clock.advance(timedelta(seconds=30))  # the enrolment code's step is spent
    return secret, codes


def refusals(world: World) -> list[str]:
    with world.rt.database.reading() as session:
        return [e.details["reason"] for e in session.scalars(
            select(AuditEvent).where(AuditEvent.action == "user.second_factor_refused")
            .order_by(AuditEvent.id))]


def test_enrolment_shows_a_qr_code_and_gives_ten_hashed_recovery_codes(
        world: World, clock: FrozenClock) -> None:
    two_factor = world.rt.two_factor
    enrolment = two_factor.begin(world.admin)
    assert enrolment.uri.startswith("otpauth://totp/tallykey:admin%40acme.test?secret=")
    prefix = "data:image/svg+xml"
    assert enrolment.qr_svg_data_uri.startswith(prefix)
    assert two_factor.begin(world.admin).secret == enrolment.secret  # same until confirmed
    with pytest.raises(SecondFactorRefused, match="wrong"):
        two_factor.confirm(world.as_admin, "000000" if code(enrolment.secret, clock)
                           != "000000" else "111111", password=PASSWORDS["admin@acme.test"])
    assert two_factor.status(world.admin.id) == (False, 0)
    # re-authentication: a running session alone cannot turn it on
    for password in (None, "not the password"):
        with pytest.raises(ValidationFailed, match="password"):
            two_factor.confirm(world.as_admin, code(enrolment.secret, clock),
                               password=password)
    assert two_factor.status(world.admin.id) == (False, 0)

    codes = two_factor.confirm(world.as_admin, code(enrolment.secret, clock),
                               password=PASSWORDS["admin@acme.test"])
    assert len(codes) == len(set(codes)) == RECOVERY_CODES == 10
    assert all(RECOVERY.match(c) for c in codes)
    assert two_factor.status(world.admin.id) == (True, 10)
    with world.rt.database.reading() as session:
        stored = {r.code_hash for r in session.scalars(select(RecoveryCode))}
    assert len(stored) == 10 and not stored & set(codes)
    with pytest.raises(ValidationFailed, match="on already"):
        two_factor.begin(world.admin)


def test_after_the_password_a_session_waits_for_the_code(world: World,
                                                       clock: FrozenClock) -> None:
    secret, _ = enrol(world, clock)
    pending = world.rt.sessions.open(world.admin, "198.51.100.1")
    assert pending.awaiting == AWAITING_CODE
    assert world.rt.sessions.find(pending.cookie) is None  # no page accepts it yet
    assert world.rt.two_factor.verify(world.as_admin, code(secret, clock)) == "totp"
    with world.rt.database.transaction() as session:
        full = world.rt.sessions.complete(session, pending)
    assert full.cookie != pending.cookie and full.awaiting is None
    assert world.rt.sessions.find(full.cookie) is not None
    assert world.rt.sessions.find_any(pending.cookie) is None
    with world.rt.database.transaction() as session, pytest.raises(LookupError):
        world.rt.sessions.complete(session, pending)  # a pending session completes once


def test_wrong_replayed_and_old_codes_are_refused_with_their_reason(
        world: World, clock: FrozenClock) -> None:
    secret, _ = enrol(world, clock)
    verify = world.rt.two_factor.verify
    now = code(secret, clock)
    assert verify(world.as_admin, now) == "totp"
    with pytest.raises(SecondFactorRefused, match="used already") as replayed:
        verify(world.as_admin, now)
    assert replayed.value.details["reason"] == "replayed"
    with pytest.raises(SecondFactorRefused, match="used already"):
        verify(world.as_admin, code(secret, clock, -1))  # older than the one just used
    with pytest.raises(SecondFactorRefused, match="expired"):
        verify(world.as_admin, code(secret, clock, -5))
    wrong = next(c for c in ("123456", "654321") if c not in {
        code(secret, clock, s) for s in range(-25, 3)})
    with pytest.raises(SecondFactorRefused, match="wrong"):
        verify(world.as_admin, wrong)
    assert verify(world.as_admin, code(secret, clock, +1)) == "totp"  # a fast phone
    assert refusals(world) == ["replayed", "replayed", "expired", "wrong"]


def test_one_code_submitted_concurrently_passes_once(world: World,
                                                    clock: FrozenClock) -> None:
    secret, _ = enrol(world, clock)
    current = code(secret, clock)
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def submit() -> None:
        start.wait()
        try:
            outcomes.append(world.rt.two_factor.verify(world.as_admin, current))
        except SecondFactorRefused as refused:
            outcomes.append(str(refused.details["reason"]))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["replayed"] * 5 + ["totp"]


def test_recovery_codes_work_once_each(world: World, clock: FrozenClock) -> None:
    _, codes = enrol(world, clock)
    assert world.rt.two_factor.verify(world.as_admin, codes[3].upper()) == "recovery"
    with pytest.raises(SecondFactorRefused, match="recovery code is not valid"):
        world.rt.two_factor.verify(world.as_admin, codes[3])
    with pytest.raises(SecondFactorRefused, match="recovery code is not valid"):
        world.rt.two_factor.verify(world.as_admin, "aaaa-bbbb-cccc-dddd")
    assert world.rt.two_factor.status(world.admin.id) == (True, 9)
    with pytest.raises(SecondFactorRefused):  # another user's code is not theirs
        world.rt.two_factor.verify(world.as_member, codes[4])


def test_the_account_policy_makes_users_enrol_before_anything(world: World,
                                                            clock: FrozenClock) -> None:
    two_factor = world.rt.two_factor
    with pytest.raises(PermissionDenied):
        two_factor.set_policy(world.as_member, "everyone")
    with pytest.raises(ValidationFailed, match="Unknown two-factor policy"):
        two_factor.set_policy(world.as_admin, "sometimes")
    two_factor.set_policy(world.as_admin, "admins")
    assert world.rt.sessions.open(world.admin, None).awaiting == AWAITING_ENROLMENT
    assert world.rt.sessions.open(world.member, None).awaiting is None
    two_factor.set_policy(world.as_admin, "everyone")
    assert world.rt.sessions.open(world.member, None).awaiting == AWAITING_ENROLMENT
    enrol(world, clock, world.as_member)
    assert world.rt.sessions.open(world.member, None).awaiting == AWAITING_CODE
    with pytest.raises(ValidationFailed, match="requires two-factor"):
        two_factor.disable(world.as_member, "member password 1")
    assert world.rt.sessions.open(world.other_admin, None).awaiting is None  # other tenant


def test_a_user_turns_it_off_with_their_password(world: World, clock: FrozenClock) -> None:
    enrol(world, clock)
    with pytest.raises(ValidationFailed, match="password is wrong"):
        world.rt.two_factor.disable(world.as_admin, "nope")
    world.rt.two_factor.disable(world.as_admin, "correct horse battery")
    assert world.rt.two_factor.status(world.admin.id) == (False, 0)
    assert world.rt.sessions.open(world.admin, None).awaiting is None


def test_an_admin_resets_a_users_second_factor_and_the_user_is_mailed(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    enrol(world, clock, world.as_member)
    signed_in = world.rt.sessions.open(world.member, None)
    with pytest.raises(PermissionDenied):
        world.rt.two_factor.reset_for(world.as_member, world.member.id)
    with pytest.raises(NotFound):
        world.rt.two_factor.reset_for(world.as_other_admin, world.member.id)
    world.rt.two_factor.reset_for(world.as_admin, world.member.id)
    assert world.rt.two_factor.status(world.member.id) == (False, 0)
    assert world.rt.sessions.find_any(signed_in.cookie) is None
    with pytest.raises(ValidationFailed, match="no second factor"):
        world.rt.two_factor.reset_for(world.as_admin, world.member.id)

    make_worker(world.rt, smtp_server).run_once()
    mails = smtp_server.to("member@acme.test")
    assert [m.message["Subject"] for m in mails] == ["Your two-factor sign-in was reset"]
    assert "admin@acme.test, an administrator of Acme" in text_of(mails[0].message)
    with world.rt.database.reading() as session:
        entry = session.scalar(select(AuditEvent).where(
            AuditEvent.action == "user.two_factor_reset"))
    assert entry is not None and entry.actor_id == world.admin.id
    assert entry.target_id == world.member.id


def test_the_qr_code_is_an_svg_image(world: World) -> None:
    uri = world.rt.two_factor.begin(world.member).qr_svg_data_uri
    header, _, payload = uri.partition(",")
    svg = (base64.b64decode(payload).decode() if header.endswith(";base64")
           else unquote(payload))
    assert "<svg" in svg and "<script" not in svg
    assert isinstance(world.rt.two_factor, TwoFactor)
