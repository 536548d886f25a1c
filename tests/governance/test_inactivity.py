"""The inactivity policy (SPEC §17) run by the worker's real pass (`Worker.from_settings`,
as `tallykey worker` builds it) on a real store, mails to a real SMTP server: a warning 7
days before, then the revocation (`revoke_reason: "inactive"`), audited, propagated."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from tallykey import Verifier
from tallykey.accounts.service import OFF, PolicyChanges
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.jobs import Worker
from tallykey.notify.models import OutboxMessage
from tallykey.notify.notices import TOKEN_INACTIVE
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from ..notify.conftest import MAIL_FROM, SmtpServer, text_of

IP = "198.51.100.7"


def worker(rt: Runtime, smtp: SmtpServer) -> Worker:
    settings = rt.settings.model_copy(update={"smtp_url": smtp.url, "mail_from": MAIL_FROM})
    return Worker.from_settings(rt.database, rt.clock, settings, rt.notifier)


def date_back(rt: Runtime, token_id: str, *, created: datetime,
              last_used: datetime | None = None) -> None:
    with rt.database.transaction() as session:
        session.execute(update(Token).where(Token.id == token_id).values(
            created_at=created, last_used_at=last_used))


def token_row(rt: Runtime, token_id: str) -> Token:
    with rt.database.reading() as session:
        return session.get_one(Token, token_id)


def test_an_unused_token_is_warned_about_then_revoked_by_the_worker(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    now = clock.now()
    policy = rt.accounts.update_policies(world.as_admin, _days(30))
    assert policy.revoke_inactive_days == 30
    idle = rt.tokens.issue(world.as_member, TokenDraft(name="idle laptop",
                                                       expires_in_days=90))
    busy = rt.tokens.issue(world.as_member, TokenDraft(name="busy laptop",
                                                       expires_in_days=90))
    other = rt.tokens.issue(world.as_other_admin, TokenDraft(name="globex idle",
                                                             expires_in_days=90))
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        assert verifier.verify(f"Bearer {idle.value}", IP).allowed  # cached as valid
        run = worker(rt, smtp_server)
        assert run.run_once().sent == 3  # the tokens' creation notices to the admins
        # never used, created 24 days ago: within the last 7 days of the 30
        date_back(rt, idle.token.id, created=now - timedelta(days=24))
        date_back(rt, busy.token.id, created=now - timedelta(days=200),
                  last_used=now - timedelta(days=2))
        date_back(rt, other.token.id, created=now - timedelta(days=200))  # no policy there
        first = run.run_once()
        assert first.revoked_inactive == 0 and first.sent == 1
        [warning] = smtp_server.to("member@acme.test")
        assert warning.message["Subject"] == (
            'Your API token "idle laptop" will be revoked in 6 days for inactivity')
        body = text_of(warning.message)
        assert "never been used since it was created" in body
        assert (now + timedelta(days=6)).strftime("%Y-%m-%d %H:%M UTC") in body
        assert run.run_once().sent == 0  # warned once for this stretch of disuse
        assert token_row(rt, idle.token.id).revoked_at is None

        date_back(rt, idle.token.id, created=now - timedelta(days=31))
        second = run.run_once()
        assert second.revoked_inactive == 1
        revoked = token_row(rt, idle.token.id)
        assert revoked.revoked_at == now and revoked.revoke_reason == "inactive"
        for kept in (busy, other):
            assert token_row(rt, kept.token.id).revoked_at is None
        mails = smtp_server.to("member@acme.test")
        assert mails[-1].message["Subject"] == 'API token "idle laptop" was revoked'
        assert "Reason given: inactive" in text_of(mails[-1].message)
        with rt.database.reading() as session:
            [entry] = session.scalars(select(AuditEvent).where(
                AuditEvent.target_id == idle.token.id, AuditEvent.action == "token.revoked"))
        assert entry.details["reason"] == "inactive"
        assert entry.actor_label == "the inactivity policy"
        # tallykey acting on its own, as containment does: not "the operator" (red team)
        assert (entry.actor_type, entry.actor_id) == ("system", None)
        verifier.sync()  # the feed's change reaches the cache like any revocation
        refused = verifier.verify(f"Bearer {idle.value}", IP)
        assert not refused.allowed and refused.reason == "revoked"
        assert run.run_once().revoked_inactive == 0
    finally:
        verifier.close()


def test_a_use_starts_a_new_stretch_and_the_policy_off_revokes_nothing(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    now = clock.now()
    rt.accounts.update_policies(world.as_admin, _days(10))
    token = rt.tokens.issue(world.as_member, TokenDraft(name="weekly job",
                                                        expires_in_days=90))
    run = worker(rt, smtp_server)
    assert run.run_once().sent == 1  # the token's creation notice to the admin
    date_back(rt, token.token.id, created=now - timedelta(days=60),
              last_used=now - timedelta(days=4))
    assert run.run_once().sent == 1  # 10 - 7 = 3 days unused: warned
    date_back(rt, token.token.id, created=now - timedelta(days=60),
              last_used=now - timedelta(days=5))  # used again since, then idle again
    assert run.run_once().sent == 1
    assert len(smtp_server.to("member@acme.test")) == 2
    rt.accounts.update_policies(world.as_admin, _days(None))
    date_back(rt, token.token.id, created=now - timedelta(days=60),
              last_used=now - timedelta(days=59))
    assert run.run_once().revoked_inactive == 0
    assert token_row(rt, token.token.id).revoked_at is None
    assert [m.event for m in _inactive_rows(rt)] == [TOKEN_INACTIVE, TOKEN_INACTIVE]


def _days(days: int | None) -> PolicyChanges:
    return PolicyChanges(revoke_inactive_days=OFF if days is None else days)


def _inactive_rows(rt: Runtime) -> list[OutboxMessage]:
    with rt.database.reading() as session:
        return list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == TOKEN_INACTIVE)))


def test_a_decoy_is_never_revoked_nor_warned_about_for_inactivity(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    """Red team (#31): a decoy is never used by design (its trips are no use), so the
    inactivity policy revoked every decoy `revoke_inactive_days` after it was planted —
    and a revoked decoy raises no alert any more: the trap was silently disarmed."""
    now = clock.now()
    rt.accounts.update_policies(world.as_admin, _days(30))
    decoy = rt.tokens.issue(world.as_admin, TokenDraft(name="aws key in wiki", kind="decoy",
                                                       expires_in_days=365))
    idle = rt.tokens.issue(world.as_admin, TokenDraft(name="idle", expires_in_days=365))
    run = worker(rt, smtp_server)
    run.run_once()  # the creation notices
    date_back(rt, decoy.token.id, created=now - timedelta(days=25))
    date_back(rt, idle.token.id, created=now - timedelta(days=25))
    assert run.run_once().sent == 1  # the real idle token's warning only
    date_back(rt, decoy.token.id, created=now - timedelta(days=200))
    date_back(rt, idle.token.id, created=now - timedelta(days=200))
    assert run.run_once().revoked_inactive == 1
    assert token_row(rt, idle.token.id).revoke_reason == "inactive"
    assert token_row(rt, decoy.token.id).revoked_at is None
    assert [m.token_id for m in _inactive_rows(rt)] == [idle.token.id]


def test_a_use_not_flushed_yet_keeps_a_token_at_the_limit(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    """Red team (#31): a node writes its uses at its next flush (and, cut off from the
    store, up to the stale window later). The worker now leaves a token alone for
    `inactivity.MARGIN` past the limit, so a token in use right now on another node is
    not revoked on the strength of a last use that is merely not written yet."""
    now = clock.now()
    rt.accounts.update_policies(world.as_admin, _days(30))
    token = rt.tokens.issue(world.as_member, TokenDraft(name="monthly job",
                                                        expires_in_days=365))
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        date_back(rt, token.token.id, created=now - timedelta(days=200),
                  last_used=now - timedelta(days=30, minutes=5))
        assert verifier.verify(f"Bearer {token.value}", IP).allowed  # in use on a node
        run = worker(rt, smtp_server)
        assert run.run_once().revoked_inactive == 0
        assert token_row(rt, token.token.id).revoked_at is None
        verifier.flush_usage()
        assert token_row(rt, token.token.id).last_used_at == now
        assert verifier.verify(f"Bearer {token.value}", IP).allowed
        # past the margin, an unused token goes as before
        date_back(rt, token.token.id, created=now - timedelta(days=200),
                  last_used=now - timedelta(days=30, hours=2))
        assert run.run_once().revoked_inactive == 1
    finally:
        verifier.close()


def test_the_clock_of_a_token_awaiting_approval_starts_at_its_approval(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer) -> None:
    """Red team (#31), low: a token awaiting approval counted as unused from its request,
    so one approved after more than `revoke_inactive_days` of waiting was revoked by the
    next pass, and one still waiting was revoked while the approvers had it in their
    queue. A waiting token is now left to the approvers, and an approved one never used
    counts from its approval."""
    now = clock.now()
    rt.accounts.update_policies(world.as_admin, PolicyChanges(
        revoke_inactive_days=30, token_approval="members"))
    waiting = rt.tokens.issue(world.as_member, TokenDraft(name="slow approval",
                                                          expires_in_days=365))
    assert token_row(rt, waiting.token.id).pending_at is not None
    run = worker(rt, smtp_server)
    run.run_once()  # the approval request's mail to the admin
    date_back(rt, waiting.token.id, created=now - timedelta(days=100))
    report = run.run_once()
    assert report.revoked_inactive == 0 and report.sent == 0  # still in the queue
    assert token_row(rt, waiting.token.id).revoked_at is None

    rt.tokens.approve(world.as_admin, waiting.token.id)
    assert token_row(rt, waiting.token.id).approved_at == now
    run.run_once()  # the approval's mail to the member
    report = run.run_once()
    assert report.revoked_inactive == 0 and report.sent == 0  # approved just now
    assert token_row(rt, waiting.token.id).revoked_at is None

    with rt.database.transaction() as session:  # approved 31 days ago, never used
        session.execute(update(Token).where(Token.id == waiting.token.id).values(
            approved_at=now - timedelta(days=31)))
    assert run.run_once().revoked_inactive == 1
    assert token_row(rt, waiting.token.id).revoke_reason == "inactive"
