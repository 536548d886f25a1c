"""The weekly digest (SPEC §17): the worker's real pass (`Worker.from_settings`) mails
each administrator, once a week per account, the account's tokens expiring within 14
days and those never used, to a real SMTP server; an administrator may turn it off (API
and console), and a second pass in the same week sends nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from tallykey.accounts.models import Account
from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.people.sessions import CSRF_HEADER
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from ..console.conftest import csrf_of
from ..notify.conftest import SmtpServer, text_of
from .test_inactivity import worker


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), base_url="http://testserver") as client:
        yield client


def signed_in(api: TestClient, email: str, password: str) -> dict[str, str]:
    answer = api.post("/api/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return {CSRF_HEADER: answer.json()["csrf_token"]}


def test_admins_get_the_weekly_digest_once_a_week_unless_they_opt_out(
        rt: Runtime, world: World, clock: FrozenClock, smtp_server: SmtpServer,
        api: TestClient) -> None:
    operator = Actor.operator(world.acme_id)
    rt.accounts.create_user(operator, "second@acme.test", role="admin",
                            password="second admin password")
    soon = rt.tokens.issue(world.as_admin, TokenDraft(name="nightly export",
                                                      expires_in_days=10))
    idle = rt.tokens.issue(world.as_member, TokenDraft(name="never touched",
                                                       expires_in_days=90))
    used = rt.tokens.issue(world.as_member, TokenDraft(name="in daily use",
                                                       expires_in_days=90))
    gone = rt.tokens.issue(world.as_admin, TokenDraft(name="revoked one",
                                                      expires_in_days=5))
    rt.tokens.revoke(world.as_admin, gone.token.id)
    rt.tokens.issue(world.as_other_admin, TokenDraft(name="globex token",
                                                     expires_in_days=5))
    # a decoy is never used by design: listed as "never used" it invites a clean-up
    rt.tokens.issue(world.as_admin, TokenDraft(name="planted decoy", kind="decoy",
                                               expires_in_days=90))
    with rt.database.transaction() as session:
        session.execute(update(Token).where(Token.id == used.token.id).values(
            last_used_at=clock.now()))

    opted = api.patch("/api/v1/session/settings", json={"weekly_digest": False},
                      headers=signed_in(api, "second@acme.test", "second admin password"))
    assert opted.status_code == 200, opted.text
    assert opted.json()["weekly_digest"] is False
    bad = api.patch("/api/v1/session/settings", json={"weekly_digest": "sometimes"},
                    headers=signed_in(api, "admin@acme.test", "correct horse battery"))
    assert bad.status_code == 422 and bad.json()["error"]

    run = worker(rt, smtp_server)
    run.run_once()  # the creation notices; a new account's first digest is a week away
    assert not [r for r in smtp_server.received if "digest" in r.message["Subject"]]

    clock.advance(timedelta(days=7))
    run.run_once()
    digests = [r for r in smtp_server.received if "digest" in r.message["Subject"]]
    assert [(r.rcpt_tos, r.message["Subject"]) for r in digests] == [
        (["admin@acme.test"], "Weekly token digest for Acme")]
    body = text_of(digests[0].message)
    expiring, never = body.split("Never used")
    assert "nightly export" in expiring and soon.secret.prefix in expiring
    assert "expires in 3 days" in expiring
    assert "never touched" in never and idle.secret.prefix in never
    assert "nightly export" in never  # never used either
    for absent in ("in daily use", "revoked one", "globex token", "planted decoy"):
        assert absent not in body
    assert idle.value not in body and "never touched" in text_of(digests[0].message, "html")
    with rt.database.reading() as session:
        sent_at = session.scalar(select(Account.digest_sent_at).where(
            Account.id == world.acme_id))
    assert sent_at == clock.now()

    clock.advance(timedelta(days=6))
    run.run_once()
    assert len([r for r in smtp_server.received if "digest" in r.message["Subject"]]) == 1
    clock.advance(timedelta(days=1))
    run.run_once()
    assert len([r for r in smtp_server.received if "digest" in r.message["Subject"]]) == 2


def test_the_digest_choice_on_the_console_account_page(
        rt: Runtime, world: World, api: TestClient) -> None:
    page = api.get("/console/login")
    api.post("/console/login", data={"email": "admin@acme.test",
                                     "password": "correct horse battery",
                                     "csrf_token": csrf_of(page.text)})
    me = api.get("/console/me")
    assert me.status_code == 200 and 'name="weekly_digest" value="on" checked' in me.text
    refused = api.post("/console/me/digest", data={})  # no CSRF token: nothing changes
    assert refused.status_code == 403
    saved = api.post("/console/me/digest", data={"csrf_token": csrf_of(me.text)})
    assert saved.status_code == 200 and "digest setting was saved" in saved.text
    assert 'name="weekly_digest" value="on" checked' not in saved.text
    assert rt.accounts.get_user(world.as_admin, world.admin.id).weekly_digest is False
