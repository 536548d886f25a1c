"""Containment (SPEC §17): with `contain: suspend`, a token an anomaly alert names (a new
network, a burst of refusals) is suspended at once through the token service — audited
as the system with reason `contained` and the alert's kind, propagated, and the admins
mailed a link to the console page where they resume it. Off by default."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.accounts.service import PolicyChanges
from tallykey.audit.models import AuditEvent
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.errors import PermissionDenied, ValidationFailed
from tallykey.monitor.alerts import UsageMonitor
from tallykey.monitor.containment import TOKEN_CONTAINED
from tallykey.notify.models import EMAIL, OutboxMessage
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.models import CONTAINED, SUSPENDED, Token
from tallykey.tokens.requests import TokenDraft

from ..api.test_idempotency import management_token
from ..conftest import World


@pytest.fixture
def rt(settings: Settings, clock: FrozenClock) -> Iterator[Runtime]:
    settings = settings.model_copy(update={"public_url": "https://keys.acme.test/",
                                           "alert_denied_threshold": 20})
    runtime = Runtime.build(settings, clock)
    yield runtime
    runtime.close()


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock,
                    background=False)
    yield made
    made.close()


def flush(verifier: Verifier) -> None:
    """Flush usage and wait for the containments it started."""
    verifier.flush_usage()
    monitor = verifier.usage.observer
    assert isinstance(monitor, UsageMonitor) and monitor.containment is not None
    monitor.containment.wait(10)


def status_of(rt: Runtime, token_id: str) -> tuple[str, str | None]:
    with rt.database.reading() as session:
        token = session.get_one(Token, token_id)
        return token.status_at(rt.clock.now()), token.suspend_reason


def test_a_new_network_suspends_the_token_when_the_policy_says_so(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    with pytest.raises(ValidationFailed):
        rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="quarantine"))
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_member, TokenDraft(name="crm", expires_in_days=30))
    header = f"Bearer {issued.value}"
    assert verifier.verify(header, "198.51.100.7").allowed  # the baseline network
    flush(verifier)
    assert status_of(rt, issued.token.id) == ("active", None)
    assert verifier.verify(header, "203.0.113.50").allowed  # a new network: the alert
    flush(verifier)
    assert status_of(rt, issued.token.id) == (SUSPENDED, CONTAINED)
    refused = verifier.verify(header, "203.0.113.50")
    assert refused.status == 401 and refused.reason == "suspended"
    assert "tallykey containment" in refused.message
    with rt.database.reading() as session:
        entries = {e.action: e for e in session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == issued.token.id))}
        mails = list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == TOKEN_CONTAINED, OutboxMessage.channel == EMAIL)))
    suspended = entries["token.suspended"]
    assert (suspended.actor_type, suspended.actor_id) == ("system", None)
    assert suspended.details["reason"] == CONTAINED
    assert suspended.details["alert"] == "new_network"
    contained = entries[TOKEN_CONTAINED]
    assert contained.details["complete"] is True and contained.details["alert"] == \
        "new_network"
    assert [m.recipient for m in mails] == [world.admin.email]  # the admins
    assert f"https://keys.acme.test/console/tokens/{issued.token.id}" in mails[0].body
    assert "203.0.113.50" in mails[0].body and issued.value not in mails[0].body
    # Only an administrator lifts it; then the token works again.
    with pytest.raises(PermissionDenied):
        rt.tokens.resume(world.as_member, issued.token.id)
    rt.tokens.resume(world.as_admin, issued.token.id)
    assert status_of(rt, issued.token.id) == ("active", None)
    assert verifier.verify(header, "203.0.113.50").allowed


def test_a_burst_of_refusals_suspends_the_token(world: World, rt: Runtime,
                                                verifier: Verifier) -> None:
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="fenced", expires_in_days=30, ip_allowlist=["198.51.100.0/24"]))
    for _ in range(25):
        assert verifier.verify(f"Bearer {issued.value}", "203.0.113.9").status == 403
    flush(verifier)
    assert status_of(rt, issued.token.id) == (SUSPENDED, CONTAINED)
    with rt.database.reading() as session:
        entry = session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == issued.token.id,
            AuditEvent.action == "token.suspended")).one()
    assert entry.details["alert"] == "denied_spike"


def test_containment_is_off_by_default(world: World, rt: Runtime,
                                       verifier: Verifier) -> None:
    issued = rt.tokens.issue(world.as_member, TokenDraft(name="crm", expires_in_days=30))
    header = f"Bearer {issued.value}"
    verifier.verify(header, "198.51.100.7")
    flush(verifier)
    verifier.verify(header, "203.0.113.50")
    flush(verifier)
    assert status_of(rt, issued.token.id) == ("active", None)
    with rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.new_network")).first() is not None  # it alerted


def test_the_policy_is_a_field_of_the_account_api(world: World, rt: Runtime) -> None:
    bearer = management_token(world, world.as_admin)
    with TestClient(create_app(rt), client=("127.0.0.1", 40000)) as api:
        assert api.get("/api/v1/account", headers=bearer).json()["contain"] == "off"
        changed = api.patch("/api/v1/account", json={"contain": "suspend"}, headers=bearer)
        assert changed.status_code == 200 and changed.json()["contain"] == "suspend"
        wrong = api.patch("/api/v1/account", json={"contain": "quarantine"}, headers=bearer)
        assert wrong.status_code == 422 and wrong.json()["error"]
        decoy = api.post("/api/v1/tokens", headers=bearer, json={
            "name": "planted", "kind": "decoy", "expires_in_days": 30})
        assert decoy.status_code == 201 and decoy.json()["kind"] == "decoy"
        assert decoy.json()["token"].startswith(decoy.json()["prefix"])
    assert rt.accounts.find_account(world.acme_id).contain == "suspend"


def test_refusals_of_a_suspended_token_do_not_contain_it_again(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="paused", expires_in_days=30))
    rt.tokens.suspend(world.as_admin, issued.token.id)
    for _ in range(25):  # an integration keeps calling while it is suspended
        assert verifier.verify(f"Bearer {issued.value}", "198.51.100.7").reason == \
            "suspended"
    rt.tokens.resume(world.as_admin, issued.token.id)
    flush(verifier)  # the refusal spike is announced, but is no reason to suspend it
    assert status_of(rt, issued.token.id) == ("active", None)
    with rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.denied_spike")).first() is not None


def test_many_networks_at_once_alert_once_and_contain(world: World, rt: Runtime,
                                                      verifier: Verifier,
                                                      clock: FrozenClock) -> None:
    # only the crowd alert here: the account does not ask for new-network alerts
    rt.accounts.update_policies(world.as_admin, PolicyChanges(new_network_alerts=False))
    calm = rt.tokens.issue(world.as_member, TokenDraft(name="calm", expires_in_days=30))
    for n in range(4):  # four networks in a minute: below the threshold (5)
        assert verifier.verify(f"Bearer {calm.value}", f"198.51.{n}.7").allowed
    flush(verifier)
    clock.advance(timedelta(seconds=61))  # the window moved on: these four are forgotten
    assert verifier.verify(f"Bearer {calm.value}", "198.51.9.7").allowed
    flush(verifier)
    with rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.many_networks")).first() is None
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    crowded = rt.tokens.issue(world.as_member, TokenDraft(name="crowd", expires_in_days=30))
    for n in range(3):
        assert verifier.verify(f"Bearer {crowded.value}", f"203.0.{n}.1").allowed
    flush(verifier)
    assert status_of(rt, crowded.token.id) == ("active", None)
    for n in range(3, 6):  # five and six networks within the minute, over two flushes
        verifier.verify(f"Bearer {crowded.value}", f"203.0.{n}.1")
    flush(verifier)
    assert status_of(rt, crowded.token.id) == (SUSPENDED, CONTAINED)
    with rt.database.reading() as session:
        sent = list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.many_networks")))
        entry = session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == crowded.token.id,
            AuditEvent.action == "token.suspended")).one()
    assert [m.recipient for m in sent] == [world.member.email]  # the creator, once
    assert "6 different networks" in sent[0].body and "203.0.5.0/24" in sent[0].body
    assert entry.details["alert"] == "many_networks"


def test_a_resumed_token_is_not_contained_again_by_the_same_burst(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    """Red team (#31): the burst that contained a token was counted again at every later
    flush of that hour, so once an administrator resumed it, one more refusal (a request
    refused while it was suspended, flushed late, or a single wrong call) suspended it
    again. Only the flush in which the burst crosses the threshold contains it."""
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="fenced", expires_in_days=30, ip_allowlist=["198.51.100.0/24"]))
    header = f"Bearer {issued.value}"
    for _ in range(25):
        assert verifier.verify(header, "203.0.113.9").status == 403
    flush(verifier)
    assert status_of(rt, issued.token.id) == (SUSPENDED, CONTAINED)
    assert verifier.verify(header, "198.51.100.7").reason == "suspended"  # flushed late
    rt.tokens.resume(world.as_admin, issued.token.id)
    assert verifier.verify(header, "203.0.113.9").status == 403  # one more wrong call
    flush(verifier)
    assert status_of(rt, issued.token.id) == ("active", None)
    assert verifier.verify(header, "198.51.100.7").allowed
    with rt.database.reading() as session:
        suspensions = session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == issued.token.id,
            AuditEvent.action == "token.suspended")).all()
    assert len(suspensions) == 1


def test_a_retired_secret_cannot_contain_the_live_token(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    """Red team (#31): refusals of a secret a rotation retired (`rotated_out`) counted
    towards the burst, so whoever holds the leaked secret the owner rotated away could
    suspend the token's live secret at will. They still raise the spike alert."""
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="leaked", expires_in_days=30))
    rotated = rt.tokens.rotate(world.as_admin, issued.token.id, grace_seconds=0)
    for _ in range(25):
        assert verifier.verify(f"Bearer {issued.value}", "203.0.113.9").reason == \
            "rotated_out"
    flush(verifier)
    assert status_of(rt, issued.token.id) == ("active", None)
    assert verifier.verify(f"Bearer {rotated.value}", "198.51.100.7").allowed
    with rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.denied_spike")).first() is not None


def test_a_token_refused_by_its_own_rate_limit_is_not_contained(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    """Red team (#31): 429s of a token's own rate limit (or credits) are the key controls
    doing their job — a busy integration backing off on `Retry-After` meets many of them —
    not a sign of a leak; they contained the token, an outage of a client that behaved.
    They still raise the spike alert."""
    rt.accounts.update_policies(world.as_admin, PolicyChanges(contain="suspend"))
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="busy", expires_in_days=30,
        rate_limits=[{"name": "default", "limit": 1, "per_seconds": 3600}]))
    header = f"Bearer {issued.value}"
    assert verifier.verify(header, "198.51.100.7").allowed
    for _ in range(25):
        assert verifier.verify(header, "198.51.100.7").reason == "rate_limited"
    flush(verifier)
    assert status_of(rt, issued.token.id) == ("active", None)
    with rt.database.reading() as session:
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == "token.denied_spike")).first() is not None
