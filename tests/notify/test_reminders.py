"""Expiry reminders: the right one, once, to the right person, driven by the injected clock
(no sleeping), including after the scheduler was down while reminders fell due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tallykey.accounts.service import PolicyChanges
from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.notify.notices import EXPIRED_STAGE
from tallykey.notify.reminders import due_stage
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import SmtpServer, make_worker, outbox_rows, text_of

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def subjects(smtp: SmtpServer, address: str) -> list[str]:
    return [str(m.message["Subject"]) for m in smtp.to(address)]


def reminder_subjects(smtp: SmtpServer, address: str) -> list[str]:
    return [s for s in subjects(smtp, address) if "expire" in s]


def personal_token(world: World, days: int = 30) -> Token:
    return world.rt.tokens.issue(world.as_member, TokenDraft(
        name="Sheet", expires_in_days=days)).token


@pytest.mark.parametrize(("created", "expires", "now", "stage"), [
    (START, START + timedelta(days=30), START + timedelta(days=10), None),
    (START, START + timedelta(days=30), START + timedelta(days=23), 7),
    # 47 hours left, nothing sent yet: only the 2-day reminder is due, not the 7-day one.
    (START, START + timedelta(days=30), START + timedelta(days=28, hours=1), 2),
    (START, START + timedelta(days=30), START + timedelta(days=30), EXPIRED_STAGE),
    (START, START + timedelta(days=30), START + timedelta(days=32), EXPIRED_STAGE),
    (START, START + timedelta(days=30), START + timedelta(days=34), None),  # long expired
    # A reminder whose moment came before the token existed is never due.
    (START, START + timedelta(days=7), START + timedelta(hours=1), None),
    (START, START + timedelta(hours=47), START + timedelta(hours=1), None),
    (START, START + timedelta(days=5), START + timedelta(days=3, hours=1), 2),
])
def test_due_stage(created: datetime, expires: datetime, now: datetime,
                   stage: int | None) -> None:
    assert due_stage(created_at=created, expires_at=expires, reminder_days=[7, 2],
                     now=now) == stage


def test_47_hours_before_expiry_the_creator_gets_exactly_one_2_day_reminder(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    worker = make_worker(world.rt, smtp_server)
    clock.set(token.expires_at - timedelta(hours=47))
    report = worker.run_once()
    assert report.scheduled == 1
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" expires in 2 days']
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        assert worker.run_once().sent == 0
    notices = {row.notice for row in outbox_rows(world.rt) if row.event == "token.expiring"}
    assert notices == {f"reminder:{token.id}:2"}
    text = text_of(smtp_server.to("member@acme.test")[-1].message)
    assert "expires in 2 days, at 2030-01-31 12:00 UTC" in text
    assert "admin@acme.test" not in [r for m in smtp_server.received
                                     if "expire" in m.message["Subject"] for r in m.rcpt_tos]


def test_each_reminder_and_the_expiry_notice_are_sent_once_as_time_passes(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    worker = make_worker(world.rt, smtp_server)
    moment = token.created_at
    while moment < token.expires_at + timedelta(days=5):  # every 6 hours, no sleeping
        moment += timedelta(hours=6)
        clock.set(moment)
        worker.run_once()
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" expires in 7 days',
        'Your API token "Sheet" expires in 2 days',
        'Your API token "Sheet" has expired',
    ]


def test_the_expiry_day_notice(world: World, clock: FrozenClock,
                               smtp_server: SmtpServer) -> None:
    token = personal_token(world, days=7)
    worker = make_worker(world.rt, smtp_server)
    clock.set(token.expires_at - timedelta(minutes=1))
    worker.run_once()
    # The 2-day reminder was never sent, so it goes out now, saying how close it is.
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" expires in less than an hour']
    clock.set(token.expires_at)
    worker.run_once()
    expired = [m for m in smtp_server.to("member@acme.test")
               if m.message["Subject"] == 'Your API token "Sheet" has expired']
    assert len(expired) == 1
    text = text_of(expired[0].message)
    assert "expired at 2030-01-08 12:00 UTC" in text and "create a new token" in text


def test_after_an_outage_only_the_most_relevant_reminder_is_sent(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    worker = make_worker(world.rt, smtp_server)
    worker.run_once()  # the creation notice; then everything is down for 30 days
    clock.set(token.expires_at + timedelta(hours=1))
    worker.run_once()
    worker.run_once()
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" has expired']


def test_tokens_that_expired_long_ago_get_no_notice(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    clock.set(token.expires_at + timedelta(days=30))
    make_worker(world.rt, smtp_server).run_once()
    assert reminder_subjects(smtp_server, "member@acme.test") == []


def test_revoked_tokens_get_no_reminder(world: World, clock: FrozenClock,
                                        smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    world.rt.tokens.revoke(world.as_admin, token.id)
    clock.set(token.expires_at - timedelta(days=1))
    make_worker(world.rt, smtp_server).run_once()
    assert reminder_subjects(smtp_server, "member@acme.test") == []


def test_operator_application_tokens_remind_the_admins(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    operator = Actor.operator(world.acme_id)
    token = world.rt.tokens.issue(operator, TokenDraft(
        name="ETL", kind="application", expires_in_days=30, scopes=["employees:read"])).token
    clock.set(token.expires_at - timedelta(days=6))
    make_worker(world.rt, smtp_server).run_once()
    assert reminder_subjects(smtp_server, "admin@acme.test") == [
        'Your API token "ETL" expires in 6 days']
    assert reminder_subjects(smtp_server, "member@acme.test") == []


def test_a_deactivated_creator_is_replaced_by_the_admins(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    operator = Actor.operator(world.acme_id)
    helper = world.rt.accounts.create_user(operator, "helper@acme.test", role="admin")
    token = world.rt.tokens.issue(
        Actor(world.acme_id, helper.id, "admin", helper.email, None),
        TokenDraft(name="ETL", kind="application", expires_in_days=30,
                   scopes=["employees:read"])).token
    world.rt.accounts.update_user(operator, helper.id, active=False)
    clock.set(token.expires_at - timedelta(days=1))
    make_worker(world.rt, smtp_server).run_once()
    assert reminder_subjects(smtp_server, "admin@acme.test") == [
        'Your API token "ETL" expires in 1 day']
    assert reminder_subjects(smtp_server, "helper@acme.test") == []


def test_the_account_reminder_days_are_used(world: World, clock: FrozenClock,
                                            smtp_server: SmtpServer) -> None:
    world.rt.accounts.update_policies(Actor.operator(world.acme_id),
                                      PolicyChanges(reminder_days=[14]))
    token = personal_token(world)
    worker = make_worker(world.rt, smtp_server)
    for days_left in (20, 13, 6, 1):
        clock.set(token.expires_at - timedelta(days=days_left))
        worker.run_once()
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" expires in 13 days']


def test_two_schedulers_enqueue_a_reminder_once(world: World, clock: FrozenClock,
                                                smtp_server: SmtpServer) -> None:
    token = personal_token(world)
    clock.set(token.expires_at - timedelta(days=1))
    first, second = make_worker(world.rt, None), make_worker(world.rt, smtp_server)
    assert first.run_once().scheduled == 1
    assert second.run_once().scheduled == 0
    assert reminder_subjects(smtp_server, "member@acme.test") == [
        'Your API token "Sheet" expires in 1 day']
