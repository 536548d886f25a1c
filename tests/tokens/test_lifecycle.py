"""Suspend, resume and renew on a real store (SQLite and PostgreSQL): what they change,
what they refuse (changing nothing), who may call them, and what they audit and mail."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import inspect, select

from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.notify.models import OutboxMessage
from tallykey.notify.reminders import schedule_reminders
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token, TokenSecret
from tallykey.tokens.requests import INHERITED, NOT_INHERITED, Renewal, TokenDraft, TokenQuery

from ..conftest import World
from .test_service import draft, dump


def actions(rt: Runtime, token_id: str) -> list[str]:
    with rt.database.reading() as session:
        return list(session.scalars(select(AuditEvent.action).where(
            AuditEvent.target_id == token_id).order_by(AuditEvent.id)))


def mails(rt: Runtime, event: str) -> list[OutboxMessage]:
    with rt.database.reading() as session:
        return list(session.scalars(select(OutboxMessage).where(
            OutboxMessage.event == event, OutboxMessage.channel == "email")))


# --- suspend and resume ----------------------------------------------------------------


def test_suspend_and_resume_are_reversible_audited_and_mailed_to_the_creator(
        world: World, clock: FrozenClock) -> None:
    token = world.rt.tokens.issue(world.as_member, draft()).token
    suspended = world.rt.tokens.suspend(world.as_admin, token.id)
    assert suspended.suspended_at == clock.now()
    assert suspended.suspended_by_id == world.admin.id
    assert suspended.status_at(clock.now()) == "suspended"
    clock.advance(timedelta(minutes=5))
    resumed = world.rt.tokens.resume(world.as_admin, token.id)
    assert resumed.suspended_at is None and resumed.suspended_by_id is None
    assert resumed.status_at(clock.now()) == "active"
    world.rt.tokens.suspend(world.as_admin, token.id)  # and again: reversible each time
    assert actions(world.rt, token.id) == ["token.created", "token.suspended",
                                           "token.resumed", "token.suspended"]
    suspended_mails = mails(world.rt, "token.suspended")
    assert [m.recipient for m in suspended_mails] == ["member@acme.test"] * 2
    assert suspended_mails[0].subject == 'API token "CRM Integration" was suspended'
    assert "admin@acme.test suspended" in suspended_mails[0].body
    assert [m.recipient for m in mails(world.rt, "token.resumed")] == ["member@acme.test"]


def test_suspended_tokens_have_their_own_status_filter(world: World) -> None:
    kept = world.rt.tokens.issue(world.as_admin, draft(name="kept")).token
    paused = world.rt.tokens.issue(world.as_admin, draft(name="paused")).token
    world.rt.tokens.suspend(world.as_admin, paused.id)

    def listed(status: str) -> list[str]:
        return [t.name for t in world.rt.tokens.list_tokens(
            world.as_admin, TokenQuery(status=status)).items]

    assert listed("active") == [kept.name]
    assert listed("suspended") == [paused.name]


def test_suspend_and_resume_refuse_what_makes_no_sense_and_change_nothing(
        world: World, clock: FrozenClock) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    revoked = world.rt.tokens.issue(world.as_admin, draft(name="gone")).token
    world.rt.tokens.revoke(world.as_admin, revoked.id)
    expiring = world.rt.tokens.issue(world.as_admin, draft(name="short",
                                                           expires_in_days=7)).token
    live = world.rt.tokens.issue(world.as_admin, draft(name="live")).token
    world.rt.tokens.suspend(world.as_admin, token.id)
    clock.advance(timedelta(days=8))
    before = dump(world.rt)
    with pytest.raises(Conflict, match="already suspended"):
        world.rt.tokens.suspend(world.as_admin, token.id)
    with pytest.raises(Conflict, match="revoked and cannot be suspended"):
        world.rt.tokens.suspend(world.as_admin, revoked.id)
    with pytest.raises(Conflict, match="expired and cannot be suspended"):
        world.rt.tokens.suspend(world.as_admin, expiring.id)
    with pytest.raises(Conflict, match="not suspended"):
        world.rt.tokens.resume(world.as_admin, live.id)
    with pytest.raises(Conflict, match="revoked and cannot be resumed"):
        world.rt.tokens.resume(world.as_admin, revoked.id)
    with pytest.raises(Conflict, match="suspended and cannot be rotated"):
        world.rt.tokens.rotate(world.as_admin, token.id)
    assert dump(world.rt) == before


def test_members_suspend_only_their_own_and_nothing_crosses_accounts(world: World) -> None:
    admin_token = world.rt.tokens.issue(world.as_admin, draft()).token
    mine = world.rt.tokens.issue(world.as_member, draft(name="mine")).token
    before = dump(world.rt)
    for call in (world.rt.tokens.suspend, world.rt.tokens.resume):
        with pytest.raises(NotFound):
            call(world.as_member, admin_token.id)
        with pytest.raises(NotFound):
            call(world.as_other_admin, mine.id)
    assert dump(world.rt) == before
    assert world.rt.tokens.suspend(world.as_member, mine.id).suspended_at is not None
    assert world.rt.tokens.resume(world.as_member, mine.id).suspended_at is None


# --- renew -----------------------------------------------------------------------------


def test_every_token_column_is_inherited_or_excluded_by_renewal() -> None:
    """A new column of `tokens` must be added to INHERITED or NOT_INHERITED: a renewal
    that silently drops a setting would weaken (or loosen) the successor."""
    columns = {attribute.key for attribute in inspect(Token).column_attrs}
    assert not set(INHERITED) & set(NOT_INHERITED)
    assert set(INHERITED) | set(NOT_INHERITED) == columns, (
        "classify in tallykey.tokens.service: "
        + ", ".join(sorted(columns ^ (set(INHERITED) | set(NOT_INHERITED)))))


def test_renewal_issues_a_successor_with_every_setting_and_a_new_expiry(
        world: World, clock: FrozenClock) -> None:
    first = world.rt.tokens.issue(world.as_admin, draft(
        kind="application", scopes=["employees:read"], ip_allowlist=["203.0.113.0/24"],
        target="Power BI", description="nightly export", workspace="sales",
        expires_in_days=7, rate_limits=[{"name": "default", "limit": 100, "per_seconds": 60}],
        credits={"remaining": 500, "refill": {"amount": 500, "interval": "daily"}},
        metadata={"plan": "pro"}, external_id="customer-42"))
    old = first.token
    renewed = world.rt.tokens.renew(world.as_admin, old.id, Renewal(
        expires_in_days=90, grace_seconds=3600))
    successor = renewed.token
    assert successor.id != old.id and renewed.secret.public_id != first.secret.public_id
    for name in INHERITED:
        assert getattr(successor, name) == getattr(old, name), name
    assert successor.meta == {"plan": "pro"} and successor.external_id == "customer-42"
    assert successor.credits_remaining == 500 and successor.rate_limits
    assert successor.expires_at == clock.now() + timedelta(days=90)
    assert successor.renewed_from_id == old.id
    assert renewed.previous_secret_expires_at == clock.now() + timedelta(hours=1)
    with world.rt.database.reading() as session:
        kept = session.get_one(Token, old.id)
        secrets = {s.token_id: s for s in session.scalars(select(TokenSecret))}
    assert kept.expires_at == old.expires_at  # never extended
    assert kept.successor_id == successor.id
    assert secrets[old.id].retires_at == clock.now() + timedelta(hours=1)
    assert secrets[successor.id].retires_at is None
    assert actions(world.rt, old.id) == ["token.created", "token.renewed"]
    mail = mails(world.rt, "token.renewed")
    assert [m.recipient for m in mail] == ["admin@acme.test"]
    assert successor.prefix in mail[0].body and renewed.value not in mail[0].body


def test_renewal_expiry_follows_the_account_maximum_and_bad_input_changes_nothing(
        world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    before = dump(world.rt)
    for renewal, error, fragment in [
        (Renewal(expires_in_days=366), ValidationFailed, "maximum validity"),
        (Renewal(expires_at=date(2020, 1, 1)), ValidationFailed, "past"),
        (Renewal(), ValidationFailed, "expiry is required"),
        (Renewal(expires_in_days=30, grace_seconds=604801), ValidationFailed,
         "grace_seconds"),
        (Renewal(expires_in_days=30, grace_seconds=-1), ValidationFailed, "grace_seconds"),
    ]:
        with pytest.raises(error, match=fragment):
            world.rt.tokens.renew(world.as_admin, token.id, renewal)
    with pytest.raises(NotFound):
        world.rt.tokens.renew(world.as_other_admin, token.id, Renewal(expires_in_days=30))
    assert dump(world.rt) == before


def test_a_token_is_renewed_once_and_only_while_live(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    successor = world.rt.tokens.renew(world.as_admin, token.id,
                                      Renewal(expires_in_days=30)).token
    with pytest.raises(Conflict, match="renewed already") as refused:
        world.rt.tokens.renew(world.as_admin, token.id, Renewal(expires_in_days=30))
    assert refused.value.hint == "Renew the successor instead."
    assert world.rt.tokens.renew(world.as_admin, successor.id,
                                 Renewal(expires_in_days=30)).token.renewed_from_id == (
        successor.id)
    world.rt.tokens.suspend(world.as_admin, token.id)
    with pytest.raises(Conflict, match="suspended and cannot be renewed"):
        world.rt.tokens.renew(world.as_admin, token.id, Renewal(expires_in_days=30))


def test_only_its_owner_renews_a_personal_token(world: World) -> None:
    mine = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="mine", expires_in_days=30)).token
    before = dump(world.rt)
    with pytest.raises(PermissionDenied, match="Only its owner can renew"):
        world.rt.tokens.renew(world.as_admin, mine.id, Renewal(expires_in_days=30))
    assert dump(world.rt) == before
    renewed = world.rt.tokens.renew(world.as_member, mine.id, Renewal(expires_in_days=30))
    assert renewed.token.owner_id == world.member.id
    assert renewed.token.scopes == mine.scopes


def test_renewed_tokens_get_no_more_expiry_reminders(world: World,
                                                     clock: FrozenClock) -> None:
    token = world.rt.tokens.issue(world.as_member, draft(expires_in_days=7)).token
    world.rt.tokens.renew(world.as_member, token.id, Renewal(expires_in_days=30))
    clock.set(token.expires_at - timedelta(hours=47))
    schedule_reminders(world.rt.database, world.rt.notifier, clock.now())
    assert mails(world.rt, "token.expiring") == []
