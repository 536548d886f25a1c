"""Delivery from the outbox over real SMTP: retries with back-off while the server is down,
the dead state, claims that keep two workers from sending the same mail twice."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.db.engine import Database
from tallykey.errors import DeliveryError, ValidationFailed
from tallykey.jobs import Worker
from tallykey.notify import outbox
from tallykey.notify.models import EMAIL, OutboxMessage
from tallykey.notify.notices import Notifier
from tallykey.notify.outbox import Draft, enqueue, retry_delay
from tallykey.notify.smtp import SmtpConfig, SmtpMailer
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import MAIL_FROM, SmtpServer, make_worker, outbox_rows


def queue_mails(rt: Runtime, account_id: str, count: int) -> None:
    with rt.database.transaction() as session:
        for number in range(count):
            enqueue(session, account_id, Draft(
                channel=EMAIL, event="test", notice=f"test:{number}",
                recipient=f"user{number}@acme.test", subject=f"mail {number}",
                body=f"mail number {number}"), rt.clock.now())


def test_retry_delay_doubles_up_to_a_cap() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=1), timedelta(minutes=2), timedelta(minutes=4), timedelta(minutes=8)]
    assert retry_delay(30) == timedelta(hours=4)


def test_smtp_down_for_a_while_then_back_delivers_every_mail_once(
        world: World, clock: FrozenClock, smtp_down: SmtpServer) -> None:
    operator = Actor.operator(world.acme_id)
    world.rt.accounts.create_user(operator, "second@acme.test", role="admin")
    for name in ("CRM", "Payroll", "Sheets"):
        world.rt.tokens.issue(world.as_admin, TokenDraft(name=name, expires_in_days=30,
                                                         scopes=["employees:read"]))
    worker = make_worker(world.rt, smtp_down)
    report = worker.run_once()
    assert (report.sent, report.retrying) == (0, 6)
    rows = outbox_rows(world.rt)
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all("cannot reach smtp://127.0.0.1" in (r.last_error or "") for r in rows)
    assert all(r.next_attempt_at == clock.now() + timedelta(minutes=1) for r in rows)
    assert worker.run_once().retrying == 0  # not due yet: nothing is tried
    clock.advance(timedelta(minutes=1))
    assert worker.run_once().retrying == 6  # second failure, now 2 minutes away

    smtp_down.start()
    clock.advance(timedelta(minutes=1))
    assert worker.run_once().sent == 0  # still backing off
    clock.advance(timedelta(minutes=1))
    assert worker.run_once().sent == 6
    for _ in range(3):
        clock.advance(timedelta(hours=1))
        assert worker.run_once().sent == 0
    received = sorted((m.rcpt_tos[0], str(m.message["Subject"])) for m in smtp_down.received)
    assert len(received) == 6 == len(set(received))
    assert {r.status for r in outbox_rows(world.rt)} == {"sent"}


def test_a_mail_is_dead_after_the_last_attempt_and_can_be_retried(
        world: World, clock: FrozenClock, smtp_down: SmtpServer) -> None:
    queue_mails(world.rt, world.acme_id, 1)
    worker = make_worker(world.rt, smtp_down, max_attempts=3)
    statuses = []
    for _ in range(5):
        report = worker.run_once()
        statuses.append((report.retrying, report.dead))
        clock.advance(timedelta(hours=4))
    assert statuses == [(1, 0), (1, 0), (0, 1), (0, 0), (0, 0)]
    [row] = outbox_rows(world.rt)
    assert (row.status, row.attempts) == ("dead", 3)

    smtp_down.start()
    assert worker.run_once().sent == 0  # dead stays dead
    assert outbox.retry(world.rt.database, clock.now(), all_dead=True) == 1
    assert worker.run_once().sent == 1
    assert len(smtp_down.received) == 1
    with pytest.raises(ValidationFailed, match="is sent"):
        outbox.retry(world.rt.database, clock.now(), message_id=row.id)


def test_a_refused_recipient_is_dead_at_once_and_the_others_are_sent(
        world: World, smtp_server: SmtpServer) -> None:
    queue_mails(world.rt, world.acme_id, 3)
    smtp_server.recorder.refuse.add("user1@acme.test")
    report = make_worker(world.rt, smtp_server).run_once()
    assert (report.sent, report.dead) == (2, 1)
    dead = [r for r in outbox_rows(world.rt) if r.status == "dead"]
    assert [r.recipient for r in dead] == ["user1@acme.test"]
    assert dead[0].last_error == "recipient refused (550)"


def test_without_smtp_mails_stay_pending(world: World, smtp_server: SmtpServer) -> None:
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    worker = make_worker(world.rt, None)
    assert not worker.sends_mail
    assert worker.run_once().sent == 0
    [row] = outbox.list_messages(world.rt.database, status="pending")
    assert (row.attempts, row.recipient) == (0, "admin@acme.test")
    assert make_worker(world.rt, smtp_server).run_once().sent == 1


def test_a_claim_is_exclusive_until_its_lease_runs_out(world: World,
                                                       clock: FrozenClock) -> None:
    queue_mails(world.rt, world.acme_id, 2)
    db, now = world.rt.database, clock.now()
    first = outbox.claim(db, worker="a", now=now, channels=[EMAIL])
    assert len(first) == 2 and all(m.attempts == 1 for m in first)
    assert outbox.claim(db, worker="b", now=now, channels=[EMAIL]) == []
    later = now + outbox.LEASE
    taken = outbox.claim(db, worker="b", now=later, channels=[EMAIL])
    assert sorted(m.id for m in taken) == sorted(m.id for m in first)
    # The first worker's late outcome no longer counts; the holder's does.
    assert outbox.settle(db, first[0], worker="a", now=later, error=None) == ""
    assert outbox.settle(db, taken[0], worker="b", now=later, error=None) == "sent"
    assert outbox.settle(db, taken[1], worker="b", now=later,
                         error=DeliveryError("boom")) == "pending"


def test_listing_checks_its_input(world: World) -> None:
    with pytest.raises(ValidationFailed, match="Unknown outbox status"):
        outbox.list_messages(world.rt.database, status="lost")
    with pytest.raises(ValidationFailed, match="one message id"):
        outbox.retry(world.rt.database, world.rt.clock.now())


def test_two_workers_never_send_the_same_mail_twice(
        world: World, database_url: str, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    """Two workers, each with its own Database (connection pool), in two threads, racing
    over the same outbox on one store (PostgreSQL: SKIP LOCKED; SQLite: UPDATE claims)."""
    count = 120
    queue_mails(world.rt, world.acme_id, count)
    workers = []
    for name in ("node-a", "node-b"):
        database = Database(database_url)
        workers.append(Worker(database, clock, notifier=Notifier(), name=name, batch_size=7,
                              mailer=SmtpMailer(SmtpConfig.parse(smtp_server.url), MAIL_FROM)))
    start = threading.Barrier(len(workers))
    sent: dict[str, int] = {}
    failures: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            start.wait()
            sent[worker.name] = worker.run_once().sent
        except BaseException as error:  # surfaced below
            failures.append(error)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for worker in workers:
        worker.close()
        worker.database.dispose()
    assert failures == []
    assert sum(sent.values()) == count
    recipients = [r for m in smtp_server.received for r in m.rcpt_tos]
    assert len(recipients) == count == len(set(recipients))
    message_ids = [m.message["Message-ID"] for m in smtp_server.received]
    assert len(set(message_ids)) == count
    with world.rt.database.reading() as session:
        claimed_by = set(session.scalars(select(OutboxMessage.claimed_by)))
        statuses = set(session.scalars(select(OutboxMessage.status)))
    assert statuses == {"sent"}
    if world.rt.database.dialect == "postgresql":
        assert claimed_by == {"node-a", "node-b"}  # both took part


def test_a_pass_stops_early_when_nothing_gets_through(world: World,
                                                      smtp_down: SmtpServer) -> None:
    queue_mails(world.rt, world.acme_id, 5)
    report = make_worker(world.rt, smtp_down, batch_size=2).run_once()
    assert report.retrying == 2  # the other three wait for the next pass
    assert sorted(r.attempts for r in outbox_rows(world.rt)) == [0, 0, 0, 1, 1]


def test_sent_rows_are_purged_after_the_keeping_period(
        world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    queue_mails(world.rt, world.acme_id, 2)
    worker = make_worker(world.rt, smtp_server)
    worker.run_once()
    clock.advance(timedelta(days=119))
    worker.run_once()
    assert len(outbox_rows(world.rt)) == 2
    clock.advance(timedelta(days=2))
    worker.run_once()
    assert outbox_rows(world.rt) == []
