"""Accounts, users, permissions and policies on a real store."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tallykey.accounts.service import PolicyChanges
from tallykey.actor import Actor
from tallykey.audit.models import AuditEvent
from tallykey.errors import NotFound, PermissionDenied, ValidationFailed

from ..conftest import World


@pytest.mark.parametrize(("email", "fragment"), [
    ("not-an-email", "not a valid e-mail"), ("a@b", "not a valid e-mail"),
    ("admin@acme.test", "exists already"), ("ADMIN@acme.test", "exists already"),
])
def test_bad_or_duplicate_emails_are_refused(world: World, email: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed, match=fragment):
        world.rt.accounts.create_user(world.as_admin, email)


def test_members_cannot_manage_users_or_policies(world: World) -> None:
    with pytest.raises(PermissionDenied):
        world.rt.accounts.create_user(world.as_member, "x@acme.test")
    with pytest.raises(PermissionDenied):
        world.rt.accounts.update_policies(world.as_member, PolicyChanges(max_validity_days=30))


def test_grants_name_known_workspaces_and_member_scopes_only(world: World) -> None:
    with pytest.raises(NotFound, match="No workspace"):
        world.rt.accounts.create_user(world.as_admin, "g@acme.test", grants={"nope": []})
    with pytest.raises(ValidationFailed, match="workspace grants can hold: employees:read"):
        world.rt.accounts.create_user(world.as_admin, "g@acme.test",
                                      grants={world.sales.id: ["tokens:manage"]})
    other_workspace = world.rt.accounts.workspaces(world.globex_id)
    assert other_workspace == []  # globex has none: nothing of acme is visible there


def test_the_last_active_admin_stays(world: World) -> None:
    operator = Actor.operator(world.acme_id)
    with pytest.raises(ValidationFailed, match="last active administrator"):
        world.rt.accounts.update_user(operator, world.admin.id, active=False)
    with pytest.raises(ValidationFailed, match="last active administrator"):
        world.rt.accounts.update_user(operator, world.admin.id, role="member")
    world.rt.accounts.update_user(operator, world.member.id, role="admin")
    world.rt.accounts.update_user(operator, world.admin.id, active=False)


def test_users_of_another_account_are_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.rt.accounts.update_user(world.as_other_admin, world.member.id, active=False)
    with pytest.raises(NotFound):
        world.rt.accounts.get_user(world.as_other_admin, world.admin.id)


def test_login_checks_password_and_active_flag(world: World) -> None:
    accounts = world.rt.accounts
    assert accounts.check_login("admin@acme.test", "correct horse battery") is not None
    assert accounts.check_login("ADMIN@acme.test ", "correct horse battery") is not None
    assert accounts.check_login("admin@acme.test", "wrong") is None
    assert accounts.check_login("nobody@acme.test", "correct horse battery") is None
    assert accounts.check_login("not an email", "x") is None
    accounts.update_user(Actor.operator(world.acme_id), world.member.id, active=False)
    assert accounts.check_login("member@acme.test", "member password 1") is None


def test_policy_changes_are_validated_and_audited(world: World) -> None:
    accounts = world.rt.accounts
    for changes, fragment in ((PolicyChanges(reminder_days=[0]), "reminder_days"),
                              (PolicyChanges(reminder_days=list(range(1, 12))),
                               "reminder_days"),
                              (PolicyChanges(ip_allowlist=["10.0.0.1/40"]), "prefix length /40"),
                              (PolicyChanges(max_validity_days=0), "between 1 and 365")):
        with pytest.raises(ValidationFailed, match=fragment):
            accounts.update_policies(world.as_admin, changes)
    account = accounts.update_policies(world.as_admin, PolicyChanges(
        reminder_days=[2, 7, 7], ip_allowlist=["10.0.0.0/8"]))
    assert account.reminder_days == [7, 2] and account.ip_allowlist == ["10.0.0.0/8"]
    with world.rt.database.reading() as session:
        events = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "account.policy_changed")).all()
    assert len(events) == 1 and events[0].details["after"]["reminder_days"] == [7, 2]


def test_short_passwords_are_refused(world: World) -> None:
    with pytest.raises(ValidationFailed, match="at least 12"):
        world.rt.accounts.create_user(world.as_admin, "p@acme.test", password="short")


def test_the_last_admin_cannot_make_themself_an_auditor(world: World) -> None:
    """Red team (#31), held: demoting the last active administrator to auditor (by
    themself or the operator) is refused and changes nothing; with a second admin it is
    allowed, and from then on the demoted user changes nothing."""
    with pytest.raises(ValidationFailed, match="last active administrator"):
        world.rt.accounts.update_user(world.as_admin, world.admin.id, role="auditor")
    with pytest.raises(ValidationFailed, match="last active administrator"):
        world.rt.accounts.update_user(Actor.operator(world.acme_id), world.admin.id,
                                      role="auditor")
    assert world.rt.accounts.get_user(world.as_admin, world.admin.id).role == "admin"
    world.rt.accounts.update_user(world.as_admin, world.member.id, role="admin")
    world.rt.accounts.update_user(world.as_admin, world.admin.id, role="auditor")
    demoted = Actor(world.acme_id, world.admin.id, "auditor", world.admin.email)
    with pytest.raises(PermissionDenied):
        world.rt.accounts.update_user(demoted, world.member.id, role="auditor")


def test_two_admins_demoting_each_other_at_once_leave_one(world: World) -> None:
    """Red team (#31), low: the last-admin check counted the administrators without a
    lock, so two administrators demoting each other at the same moment on PostgreSQL
    could both pass it and leave the account with none. The check now locks the
    account's row first, so the second demotion waits for the first and sees it."""
    import threading

    operator = Actor.operator(world.acme_id)
    accounts = world.rt.accounts
    for _round in range(15):
        second = accounts.create_user(operator, f"second{_round}@acme.test", role="admin")
        pair = [world.admin.id, second.id]
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def demote(user_id: str, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                accounts.update_user(operator, user_id, role="member")
                outcomes.append("demoted")
            except ValidationFailed:
                outcomes.append("refused")

        threads = [threading.Thread(target=demote, args=(user_id,)) for user_id in pair]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(outcomes) == ["demoted", "refused"], outcomes
        admins = [user for user in accounts.list_users(operator) if user.role == "admin"
                  and user.active]
        assert len(admins) == 1
        # Back to the starting point: the original admin is the one admin again.
        accounts.update_user(operator, world.admin.id, role="admin")
        accounts.update_user(operator, second.id, role="member")
