"""A decoy's use (SPEC §17) is mailed to the account's admins over real SMTP with the
caller's address, user agent and path; a flood within a minute is one alert, counted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.monitor.models import DecoyTrip
from tallykey.notify.webhooks import SIGNATURE_HEADER, TOKEN_DECOY_USED, verify_signature
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.models import DECOY
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import HttpReceiver, SmtpServer, make_worker, text_of

AGENT = "python-requests/2.31"
SUBJECT = 'Decoy token "Old deploy key" was used'


@pytest.fixture
def rt(settings: Settings, clock: Any) -> Iterator[Runtime]:
    settings = settings.model_copy(update={"public_url": "https://keys.acme.test/"})
    runtime = Runtime.build(settings, clock)
    yield runtime
    runtime.close()


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock,
                    background=False)
    yield made
    made.close()


def test_a_decoy_use_mails_every_admin_once_a_minute_with_a_count(
        world: World, rt: Runtime, verifier: Verifier, clock: FrozenClock,
        smtp_server: SmtpServer) -> None:
    second_admin = rt.accounts.create_user(Actor.operator(world.acme_id),
                                           "security@acme.test", role="admin")
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="Old deploy key", kind=DECOY,
                                                        expires_in_days=365))
    header = f"Bearer {issued.value}"
    worker = make_worker(rt, smtp_server)
    worker.run_once()  # the "created" mails
    before = len(smtp_server.received)
    verdict = verifier.verify(header, "203.0.113.77", user_agent=AGENT,
                              path="/api/v1/employees")
    assert not verdict.allowed and verdict.reason == "unknown"
    verifier.flush_usage()
    for _ in range(40):  # a flood within the same minute: counted, not mailed
        verifier.verify(header, "203.0.113.78", user_agent=AGENT, path="/api/v1/payroll")
        clock.advance(timedelta(seconds=1))
        verifier.flush_usage()
    worker.run_once()
    mails = smtp_server.received[before:]
    assert sorted(r for m in mails for r in m.rcpt_tos) == sorted(
        [world.admin.email, second_admin.email])  # the admins, not the member
    for received in mails:
        assert received.message["Subject"] == SUBJECT
        text = text_of(received.message)
        assert "203.0.113.77" in text and AGENT in text and "/api/v1/employees" in text
        assert issued.value not in text and issued.token.prefix in text
    with rt.database.reading() as session:
        trips = list(session.scalars(select(DecoyTrip).order_by(DecoyTrip.first_at)))
    assert len(trips) == 1 and trips[0].count == 41  # one alert window so far
    assert (trips[0].ip, trips[0].path) == ("203.0.113.78", "/api/v1/payroll")
    clock.advance(timedelta(seconds=30))  # the next minute: a new alert, with the count
    verifier.verify(header, "198.51.100.5", user_agent=AGENT, path="/export")
    verifier.flush_usage()
    worker.run_once()
    later = [m for m in smtp_server.to(world.admin.email) if m.message["Subject"] == SUBJECT]
    assert len(later) == 2
    text = text_of(later[-1].message)
    assert "198.51.100.5" in text and "counted 41 use(s)" in text


def test_a_decoy_use_calls_the_webhook_with_address_agent_and_path(
        world: World, rt: Runtime, verifier: Verifier, http_receiver: HttpReceiver) -> None:
    _, secret = rt.webhooks.add(world.as_admin, http_receiver.url)
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="Old deploy key", kind=DECOY,
                                                        expires_in_days=365))
    for _ in range(5):
        verifier.verify(f"Basic {issued.value}", "203.0.113.77", user_agent=AGENT,
                        path="/api/v1/employees")
    verifier.flush_usage()
    make_worker(rt, None).run_once()
    calls = [r for r in http_receiver.requests
             if r.headers.get("Tallykey-Event") == TOKEN_DECOY_USED]
    assert len(calls) == 1  # five uses, one event
    body = calls[0].body.decode()
    verify_signature(secret, calls[0].headers[SIGNATURE_HEADER], body, rt.clock.now(),
                     delivery=calls[0].headers["Tallykey-Delivery"])
    event = json.loads(body)
    assert event["type"] == TOKEN_DECOY_USED and event["account_id"] == world.acme_id
    assert event["data"]["token"]["kind"] == DECOY
    assert event["data"]["token"]["prefix"] == issued.token.prefix
    details = event["data"]["details"]
    assert (details["ip"], details["user_agent"], details["path"], details["count"]) == (
        "203.0.113.77", AGENT, "/api/v1/employees", 5)
    assert issued.value not in body
