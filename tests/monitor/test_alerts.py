"""Alerts from aggregated usage: raised at flush time, one notice per incident."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from tallykey.accounts.service import PolicyChanges
from tallykey.audit.models import AuditEvent
from tallykey.audit.trail import AUTH_DENIED
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.monitor.alerts import network_of
from tallykey.notify.models import EMAIL, WEBHOOK, OutboxMessage
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft

from ..conftest import World


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    settings = rt.settings.model_copy(update={"alert_denied_threshold": 20})
    made = Verifier(settings=settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


def alerts(rt: Runtime, event: str) -> list[OutboxMessage]:
    with rt.database.reading() as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.event == event)
                                    .order_by(OutboxMessage.created_at)))


def test_networks_by_prefix() -> None:
    assert network_of("203.0.113.77", 24, 48) == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::5", 24, 48) == "2001:db8:1::/48"
    assert network_of("::ffff:203.0.113.9", 24, 48) == "203.0.113.0/24"
    assert network_of("10.1.2.3", 16, 48) == "10.1.0.0/16"
    assert network_of("not an ip", 24, 48) is None


def test_a_new_network_alerts_once(world: World, rt: Runtime, verifier: Verifier) -> None:
    rt.webhooks.add(world.as_admin, "https://hooks.example.test/tallykey")
    issued = rt.tokens.issue(world.as_member, TokenDraft(name="crm", expires_in_days=30))
    header = f"Bearer {issued.value}"
    for ip in ("198.51.100.7", "198.51.100.8"):  # the baseline network: no alert
        assert verifier.verify(header, ip).allowed
    verifier.flush_usage()
    assert alerts(rt, "token.new_network") == []
    for _ in range(3):  # a new network, seen across several flushes
        assert verifier.verify(header, "203.0.113.50").allowed
        assert verifier.verify(header, "203.0.113.51").allowed
        verifier.flush_usage()
    sent = alerts(rt, "token.new_network")
    assert sorted(m.channel for m in sent) == [EMAIL, WEBHOOK]
    mail = next(m for m in sent if m.channel == EMAIL)
    assert mail.recipient == world.member.email  # the token's creator
    assert "203.0.113.0/24" in mail.body and "198.51.100.0/24" in mail.body
    assert issued.value not in mail.body and issued.value not in mail.subject
    # Another node raising the same alert changes nothing (dedupe keys).
    other = Verifier(settings=verifier.settings, database=rt.database, clock=verifier.clock,
                     background=False)
    try:
        assert other.verify(header, "203.0.113.99").allowed
        other.flush_usage()
    finally:
        other.close()
    assert len(alerts(rt, "token.new_network")) == 2


def test_new_network_alerts_follow_the_account_flag(world: World, rt: Runtime,
                                                    verifier: Verifier) -> None:
    rt.accounts.update_policies(world.as_admin, PolicyChanges(new_network_alerts=False))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="quiet", expires_in_days=30))
    verifier.verify(f"Bearer {issued.value}", "198.51.100.7")
    verifier.flush_usage()
    verifier.verify(f"Bearer {issued.value}", "2001:db8::1")
    verifier.flush_usage()
    assert alerts(rt, "token.new_network") == []


def test_a_spike_of_denials_alerts_once_and_is_audited_in_aggregate(
        world: World, rt: Runtime, verifier: Verifier, clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="fenced", expires_in_days=30, ip_allowlist=["198.51.100.0/24"]))
    header = f"Bearer {issued.value}"
    for _ in range(15):
        assert verifier.verify(header, "203.0.113.9").status == 403
    verifier.flush_usage()
    assert alerts(rt, "token.denied_spike") == []  # 15 < 20
    for _ in range(3):
        for _ in range(10):
            verifier.verify(header, "203.0.113.9")
        verifier.flush_usage()
    assert len(alerts(rt, "token.denied_spike")) == 1
    clock.advance(timedelta(hours=1))  # the attack goes on: the same incident
    for _ in range(30):
        verifier.verify(header, "203.0.113.9")
    verifier.flush_usage()
    spikes = alerts(rt, "token.denied_spike")
    assert len(spikes) == 1 and "ip_not_allowed: 25" in spikes[0].body
    with rt.database.reading() as session:
        denied = list(session.scalars(select(AuditEvent).where(
            AuditEvent.action == AUTH_DENIED).order_by(AuditEvent.id)))
    assert len(denied) == 5  # one per flush, not one per request
    assert sum(e.details["count"] for e in denied) == 75
    assert {e.ip for e in denied} == {"203.0.113.9"}
    assert denied[0].target_id == issued.token.id and denied[0].account_id == world.acme_id
    assert denied[0].details["reason"] == "ip_not_allowed"


def test_an_old_secret_in_its_grace_period_alerts_once(world: World, rt: Runtime,
                                                       verifier: Verifier,
                                                       clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="rotating", expires_in_days=30))
    new = rt.tokens.rotate(world.as_admin, issued.token.id, 3600)
    assert verifier.verify(f"Bearer {new.value}", "198.51.100.7").allowed
    verifier.flush_usage()
    assert alerts(rt, "token.old_secret_used") == []
    for _ in range(2):
        assert verifier.verify(f"Bearer {issued.value}", "198.51.100.7").allowed
        verifier.flush_usage()
    sent = alerts(rt, "token.old_secret_used")
    assert [m.channel for m in sent] == [EMAIL]
    assert "stops working at" in sent[0].body
    clock.advance(timedelta(hours=2))
    assert verifier.verify(f"Bearer {issued.value}", "198.51.100.7").status == 401
    verifier.flush_usage()
    assert len(alerts(rt, "token.old_secret_used")) == 1
