"""Token events become mails in the same transaction, to the right people, delivered over
real SMTP, and never with a token's secret in them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from tallykey.actor import Actor
from tallykey.errors import ValidationFailed
from tallykey.notify.models import EMAIL, OutboxMessage
from tallykey.notify.notices import in_words
from tallykey.notify.outbox import Draft, enqueue
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.events import TokenEvent
from tallykey.tokens.format import TOKEN_PATTERN
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft
from tallykey.tokens.service import TokenService

from ..conftest import World
from .conftest import HttpReceiver, SmtpServer, make_worker, outbox_rows, text_of


@pytest.fixture
def rt(settings: Settings, clock: Any) -> Any:
    """The runtime with a public URL, so mails carry console links."""
    settings = settings.model_copy(update={"public_url": "https://keys.acme.test/"})
    runtime = Runtime.build(settings, clock)
    yield runtime
    runtime.close()


def more_admins(world: World) -> tuple[str, str]:
    """A second active admin and a deactivated one in acme."""
    operator = Actor.operator(world.acme_id)
    second = world.rt.accounts.create_user(operator, "second@acme.test", role="admin",
                                           name="Second Admin")
    gone = world.rt.accounts.create_user(operator, "gone@acme.test", role="admin")
    world.rt.accounts.update_user(operator, gone.id, active=False)
    return second.email, gone.email


def test_a_new_token_notifies_every_active_admin_and_nobody_else(
        world: World, smtp_server: SmtpServer) -> None:
    second, gone = more_admins(world)
    issued = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="Payroll export", expires_in_days=30, scopes=["employees:read"]))
    report = make_worker(world.rt, smtp_server).run_once()
    assert report.sent == 2
    received = smtp_server.received
    assert sorted(r for m in received for r in m.rcpt_tos) == ["admin@acme.test", second]
    for address in ("member@acme.test", gone, "admin@globex.test"):
        assert smtp_server.to(address) == []

    mail = smtp_server.to(second)[0].message
    assert mail["Subject"] == 'New API token "Payroll export" created in Acme'
    assert mail["From"] == "tallykey@keys.acme.test"
    text = text_of(mail)
    html = text_of(mail, "html")
    token_id = issued.token.id
    for body in (text, html):
        assert "Hello Second Admin" in body
        assert "member@acme.test" in body  # who
        assert "Payroll export" in body and "personal" in body
        assert "employees:read" in body
        assert "198.51.100.7" in body  # from which IP
        assert "2030-01-31 12:00 UTC" in body  # expiry
        assert issued.token.prefix in body
        assert f"https://keys.acme.test/console/tokens/{token_id}" in body
        assert f"https://keys.acme.test/console/tokens/{token_id}/revoke" in body
        assert "If you do not recognise this, revoke it immediately" in body
    assert issued.value not in mail.as_string()


def test_mails_are_only_queued_until_the_worker_sends_them_once(
        world: World, smtp_server: SmtpServer) -> None:
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                     scopes=["employees:read"]))
    assert [m.status for m in outbox_rows(world.rt)] == ["pending"]
    worker = make_worker(world.rt, smtp_server)
    assert worker.run_once().sent == 1
    assert worker.run_once().sent == 0
    assert len(smtp_server.received) == 1
    [row] = outbox_rows(world.rt)
    assert row.status == "sent" and row.sent_at == world.rt.clock.now()
    assert smtp_server.received[0].message["Message-ID"] == f"<{row.id}@keys.acme.test>"


def test_rolled_back_change_leaves_no_outbox_row(world: World) -> None:
    def refuse(session: Any, event: TokenEvent) -> None:
        raise RuntimeError("a later listener fails")

    rt = world.rt
    tokens = TokenService(rt.database, rt.clock, region="eu1",
                          listeners=[rt.notifier.on_token_event, refuse])
    with pytest.raises(RuntimeError):
        tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                scopes=["employees:read"]))
    with rt.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0
        assert session.scalar(select(func.count()).select_from(Token)) == 0


def test_revoke_and_rotate_tell_the_creator(world: World, smtp_server: SmtpServer) -> None:
    issued = world.rt.tokens.issue(world.as_member, TokenDraft(name="Sheet", expires_in_days=30))
    worker = make_worker(world.rt, smtp_server)
    worker.run_once()
    before = len(smtp_server.received)
    world.rt.tokens.rotate(world.as_member, issued.token.id, grace_seconds=3600)
    world.rt.tokens.revoke(world.as_admin, issued.token.id, reason="left <b>the</b> team")
    assert worker.run_once().sent == 2
    new = smtp_server.received[before:]
    assert all(m.rcpt_tos == ["member@acme.test"] for m in new)
    subjects = sorted(m.message["Subject"] for m in new)
    assert subjects == ['API token "Sheet" was revoked', 'API token "Sheet" was rotated']
    revoked = next(m.message for m in new if "revoked" in m.message["Subject"])
    text = text_of(revoked)
    assert "admin@acme.test revoked" in text and "Reason given: left <b>the</b> team" in text
    html = text_of(revoked, "html")
    assert "left &lt;b&gt;the&lt;/b&gt; team" in html and "<b>the</b>" not in html
    rotated = next(m.message for m in new if "rotated" in m.message["Subject"])
    assert "2030-01-01T13:00:00+00:00" in text_of(rotated)


def test_operator_application_token_notices_go_to_the_admins(
        world: World, smtp_server: SmtpServer) -> None:
    operator = Actor.operator(world.acme_id)
    issued = world.rt.tokens.issue(operator, TokenDraft(
        name="ETL", kind="application", expires_in_days=30, scopes=["employees:read"]))
    world.rt.tokens.revoke(operator, issued.token.id)
    make_worker(world.rt, smtp_server).run_once()
    revoked = [m for m in smtp_server.received if "revoked" in m.message["Subject"]]
    assert [m.rcpt_tos for m in revoked] == [["admin@acme.test"]]
    created = [m for m in smtp_server.received if "created" in m.message["Subject"]]
    text = text_of(created[0].message)
    assert "operator (CLI) created" in text and "the operator (command line)" in text


def test_no_mail_or_row_ever_contains_a_token_secret(world: World,
                                                     smtp_server: SmtpServer) -> None:
    rt = world.rt
    secrets = []
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=8,
                                                        scopes=["employees:read"]))
    secrets += [issued.value, issued.secret.secret]
    app = rt.tokens.issue(world.as_admin, TokenDraft(name="App", kind="application",
                                                     expires_in_days=30,
                                                     scopes=["employees:read"]))
    secrets += [app.value, app.secret.secret]
    rotated = rt.tokens.rotate(world.as_admin, issued.token.id)
    secrets += [rotated.value, rotated.secret.secret]
    worker = make_worker(rt, smtp_server)
    worker.run_once()
    rt.clock.advance(timedelta(days=7))  # type: ignore[attr-defined]
    worker.run_once()  # the 2-day reminder
    rt.clock.advance(timedelta(days=2))  # type: ignore[attr-defined]
    worker.run_once()  # the expiry notice
    rt.tokens.revoke(world.as_admin, app.token.id)
    worker.run_once()
    assert len(smtp_server.received) >= 6
    everything = [r.raw.decode() for r in smtp_server.received]
    everything += [m.body + (m.html_body or "") + m.subject for m in outbox_rows(rt)]
    for text in everything:
        assert TOKEN_PATTERN.search(text) is None
        for secret in secrets:
            assert secret not in text


def test_a_token_pasted_into_a_name_is_refused_and_never_mailed(
        world: World, smtp_server: SmtpServer, http_receiver: HttpReceiver) -> None:
    world.rt.webhooks.add(Actor.operator(world.acme_id), http_receiver.url)
    first = world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                             scopes=["employees:read"]))
    with pytest.raises(ValidationFailed, match="looks like a tallykey token"):
        world.rt.tokens.issue(world.as_admin, TokenDraft(
            name=f"Oops {first.value}", description="", expires_in_days=30,
            scopes=["employees:read"]))
    make_worker(world.rt, smtp_server).run_once()
    assert len(smtp_server.received) == 1 and len(http_receiver.requests) == 1
    texts = [r.raw.decode() for r in smtp_server.received]
    texts += [r.body.decode() for r in http_receiver.requests]
    assert all(first.value not in text for text in texts)


def test_the_outbox_redacts_anything_shaped_like_a_token(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=9,
                                                             scopes=["employees:read"])).value
    draft = Draft(channel=EMAIL, event="x", notice="leaky", recipient="a@acme.test",
                  subject=f"about {token}", body=f"the token {token} leaked")
    with world.rt.database.transaction() as session:
        enqueue(session, world.acme_id, draft, world.rt.clock.now())
    stored = [row for row in outbox_rows(world.rt) if row.notice == "leaky"]
    assert stored and all(token not in (row.body + (row.subject or "")) for row in stored)
    assert "[redacted token]" in stored[0].body


def test_enqueue_ignores_a_second_copy_of_the_same_notice(world: World) -> None:
    draft = Draft(channel=EMAIL, event="x", notice="n1", recipient="A@acme.test", body="hi")
    with world.rt.database.transaction() as session:
        assert enqueue(session, world.acme_id, draft, world.rt.clock.now()) is True
    with world.rt.database.transaction() as session:
        again = Draft(channel=EMAIL, event="x", notice="n1", recipient="a@acme.test",
                      body="hi again")
        assert enqueue(session, world.acme_id, again, world.rt.clock.now()) is False
    assert len(outbox_rows(world.rt)) == 1


@pytest.mark.parametrize(("remaining", "words"), [
    (timedelta(hours=47), "in 2 days"), (timedelta(days=7), "in 7 days"),
    (timedelta(hours=30), "in 1 day"), (timedelta(hours=5), "in 5 hours"),
    (timedelta(hours=1), "in 1 hour"), (timedelta(minutes=5), "in less than an hour"),
])
def test_in_words(remaining: timedelta, words: str) -> None:
    assert in_words(remaining) == words
