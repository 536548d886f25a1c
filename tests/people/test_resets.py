"""Password reset links: mailed through the outbox and a real SMTP server, valid 30
minutes, spent once (also under concurrent use), audited when refused."""

from __future__ import annotations

import logging
import re
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from tallykey.accounts.console_sessions import ConsoleSession
from tallykey.actor import Actor
from tallykey.api.access_log import JsonFormatter
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import LinkRefused, NotFound, PermissionDenied, ValidationFailed
from tallykey.logs import redact
from tallykey.notify.models import OutboxMessage
from tallykey.notify.outbox import HIDDEN_SECRET, for_display, sealed
from tallykey.people.models import PasswordReset
from tallykey.people.resets import RESET_LIFETIME, PasswordResets

from ..conftest import World
from ..notify.conftest import SmtpServer, make_worker, text_of
from .conftest import PUBLIC_URL

LINK = re.compile(re.escape(PUBLIC_URL) + r"/console/reset/([A-Za-z0-9_-]+)")
NEW_PASSWORD = "violet harbour engine"


def mailed_token(world: World, smtp: SmtpServer, address: str) -> str:
    """Deliver the outbox to the real SMTP server; the reset token in the newest mail."""
    make_worker(world.rt, smtp).run_once()
    mails = smtp.to(address)
    assert mails, "no mail reached the SMTP server"
    body = mails[-1].message.get_body(("plain",))
    assert body is not None
    found = LINK.findall(body.get_content())
    assert found, body.get_content()
    return str(found[-1])


def audit(world: World, action: str) -> list[AuditEvent]:
    with world.rt.database.reading() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                    .order_by(AuditEvent.id)))


def sessions_of(world: World, user_id: str) -> int:
    with world.rt.database.reading() as session:
        return len(list(session.scalars(select(ConsoleSession).where(
            ConsoleSession.user_id == user_id))))


def test_a_reset_link_arrives_by_smtp_and_sets_the_password_once(
        world: World, smtp_server: SmtpServer) -> None:
    rt = world.rt
    rt.sessions.open(world.admin, "198.51.100.1")
    rt.sessions.open(world.admin, "198.51.100.2")
    assert rt.resets.request("Admin@Acme.test", "203.0.113.9") is True

    token = mailed_token(world, smtp_server, "admin@acme.test")
    mail = smtp_server.to("admin@acme.test")[-1].message
    assert mail["Subject"] == "Reset your tallykey password"
    assert "203.0.113.9" in text_of(mail)
    with rt.database.reading() as session:  # only the link's hash is stored
        stored = " ".join(str(v) for row in session.execute(select(PasswordReset))
                          for v in row)
    assert token not in stored

    assert rt.resets.check(token, None).email == "admin@acme.test"
    rt.resets.complete(token, NEW_PASSWORD, "203.0.113.9")
    assert rt.accounts.check_login("admin@acme.test", NEW_PASSWORD) is not None
    assert rt.accounts.check_login("admin@acme.test", "correct horse battery") is None
    assert sessions_of(world, world.admin.id) == 0  # every session ended
    done = audit(world, "user.password_reset")
    assert len(done) == 1 and done[0].details["sessions_ended"] == 2

    with pytest.raises(LinkRefused, match="used already") as again:
        rt.resets.complete(token, "another fine password", None)
    assert again.value.details["reason"] == "used"
    refused = audit(world, "user.password_reset_refused")
    assert [e.details["reason"] for e in refused] == ["used"]
    assert refused[0].account_id == world.acme_id and refused[0].target_id == world.admin.id


def test_an_unknown_address_gets_no_mail_and_no_error(world: World) -> None:
    assert world.rt.resets.request("nobody@acme.test", "203.0.113.9") is False
    assert world.rt.resets.request("not an address", None) is False
    with world.rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_links_expire_after_30_minutes(world: World, clock: FrozenClock,
                                       smtp_server: SmtpServer) -> None:
    world.rt.resets.request("member@acme.test", None)
    token = mailed_token(world, smtp_server, "member@acme.test")
    assert timedelta(minutes=30) == RESET_LIFETIME
    clock.advance(timedelta(minutes=29))
    world.rt.resets.check(token, None)
    clock.advance(timedelta(minutes=1, seconds=1))
    with pytest.raises(LinkRefused, match="expired"):
        world.rt.resets.complete(token, NEW_PASSWORD, "203.0.113.5")
    assert world.rt.accounts.check_login("member@acme.test", "member password 1")
    events = audit(world, "user.password_reset_refused")
    assert [(e.details["reason"], e.ip) for e in events] == [("expired", "203.0.113.5")]


def test_a_foreign_link_is_refused_and_audited(world: World) -> None:
    for forged in ("x" * 43, "", "a" * 500):
        with pytest.raises(LinkRefused, match="not valid"):
            world.rt.resets.check(forged, "203.0.113.7")
    events = audit(world, "user.password_reset_refused")
    assert len(events) == 3
    assert all(e.account_id is None and e.details == {"reason": "unknown"} for e in events)


def test_a_bad_new_password_leaves_the_link_usable(world: World,
                                                   smtp_server: SmtpServer) -> None:
    world.rt.resets.request("member@acme.test", None)
    token = mailed_token(world, smtp_server, "member@acme.test")
    with pytest.raises(ValidationFailed, match="commonly used"):
        world.rt.resets.complete(token, "1q2w3e4r5t6y", None)
    with pytest.raises(ValidationFailed, match="at least 12"):
        world.rt.resets.complete(token, "short", None)
    world.rt.resets.complete(token, NEW_PASSWORD, None)
    assert world.rt.accounts.check_login("member@acme.test", NEW_PASSWORD)


def test_a_deactivated_user_gets_no_link_and_cannot_use_one(
        world: World, smtp_server: SmtpServer) -> None:
    world.rt.resets.request("member@acme.test", None)
    token = mailed_token(world, smtp_server, "member@acme.test")
    world.rt.accounts.update_user(world.as_admin, world.member.id, active=False)
    with pytest.raises(LinkRefused, match="deactivated"):
        world.rt.resets.complete(token, NEW_PASSWORD, None)
    assert world.rt.resets.request("member@acme.test", None) is False


def test_requests_for_one_user_are_mailed_at_most_once_a_minute(
        world: World, clock: FrozenClock) -> None:
    assert world.rt.resets.request("member@acme.test", None) is True
    assert world.rt.resets.request("member@acme.test", None) is False
    clock.advance(timedelta(seconds=61))
    assert world.rt.resets.request("member@acme.test", None) is True


def test_concurrent_submissions_of_one_link_let_exactly_one_through(
        world: World, smtp_server: SmtpServer) -> None:
    world.rt.resets.request("member@acme.test", None)
    token = mailed_token(world, smtp_server, "member@acme.test")
    passwords = [f"parallel password number {n}" for n in range(8)]
    start = threading.Barrier(len(passwords))
    won: list[str] = []
    refused: list[str] = []

    def submit(password: str) -> None:
        start.wait()
        try:
            world.rt.resets.complete(token, password, None)
            won.append(password)
        except LinkRefused as error:
            refused.append(str(error.details["reason"]))

    threads = [threading.Thread(target=submit, args=(p,)) for p in passwords]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(won) == 1, (won, refused)
    assert refused == ["used"] * (len(passwords) - 1)
    for password in passwords:
        assert bool(world.rt.accounts.check_login("member@acme.test", password)) == (
            password == won[0])
    assert len(audit(world, "user.password_reset")) == 1


def test_an_admin_mails_a_reset_link_to_a_user_of_their_account(
        world: World, smtp_server: SmtpServer) -> None:
    world.rt.resets.send_for(world.as_admin, world.member.id)
    token = mailed_token(world, smtp_server, "member@acme.test")
    body = text_of(smtp_server.to("member@acme.test")[-1].message)
    assert "admin@acme.test (an administrator of Acme)" in body
    world.rt.resets.complete(token, NEW_PASSWORD, None)
    requested = audit(world, "user.password_reset_requested")
    assert requested[0].actor_id == world.admin.id and requested[0].details["by_admin"]
    with pytest.raises(PermissionDenied):
        world.rt.resets.send_for(world.as_member, world.admin.id)
    with pytest.raises(NotFound):
        world.rt.resets.send_for(world.as_other_admin, world.member.id)
    with pytest.raises(NotFound):
        world.rt.resets.send_for(Actor.operator(world.globex_id), world.member.id)


def test_without_a_public_url_no_link_is_built(world: World, clock: FrozenClock) -> None:
    """Links are built from TALLYKEY_PUBLIC_URL only, never from a request's Host."""
    resets = PasswordResets(world.rt.database, clock, None)
    assert resets.available is False
    assert resets.request("member@acme.test", None) is False
    with pytest.raises(ValidationFailed, match="public address"):
        resets.send_for(world.as_admin, world.member.id)
    with world.rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage)).all() == []


def test_reset_links_are_redacted_in_logs() -> None:
    line = 'GET /console/reset/Zq3_x-9AbC HTTP/1.1" 200'
    assert redact(line) == 'GET /console/reset/[redacted] HTTP/1.1" 200'
    formatted = JsonFormatter().format(logging.makeLogRecord(
        {"msg": "request", "path": "/console/reset/Zq3_x-9AbC"}))
    assert "Zq3_x-9AbC" not in formatted and "/console/reset/[redacted]" in formatted


def test_set_up_links_are_redacted_in_access_logs() -> None:
    formatted = JsonFormatter().format(logging.makeLogRecord(
        {"msg": "request", "path": "/console/setup/Kx81_aQ-zz"}))
    assert "Kx81_aQ-zz" not in formatted and "/console/setup/[redacted]" in formatted


def test_outbox_views_hide_one_time_links_old_and_new() -> None:
    """What the outbox page and CLI show: the marker of a new mail and the token of a
    mail stored before markers existed are both replaced, once, by one label."""
    marker = sealed("password_reset", "a1-b2")
    new = f"Set it here:\n\nhttps://keys.acme.test/console/reset/{marker}\n"
    old = "Set it here: https://keys.acme.test/console/reset/Zm9vYmFyYmF6cXV4cXV1eA_-x and go"
    shown = [for_display(new), for_display(old), for_display(for_display(old))]
    assert shown[0] == f"Set it here:\n\nhttps://keys.acme.test/console/reset/{HIDDEN_SECRET}\n"
    assert shown[1] == f"Set it here: https://keys.acme.test/console/reset/{HIDDEN_SECRET} and go"
    assert shown[2] == shown[1]
    assert for_display("/console/setup/c2VjcmV0") == f"/console/setup/{HIDDEN_SECRET}"
