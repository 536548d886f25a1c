"""Changing your password, listing and ending sessions, and what ends them for you:
a password change or reset, an administrator, deactivation."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tallykey.actor import Actor
from tallykey.audit.models import AuditEvent
from tallykey.errors import NotFound, PermissionDenied, ValidationFailed

from ..conftest import World

NEW_PASSWORD = "violet harbour engine"


def actions(world: World, action: str) -> list[AuditEvent]:
    with world.rt.database.reading() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_changing_the_password_needs_the_current_one_and_ends_the_other_sessions(
        world: World) -> None:
    rt = world.rt
    here = rt.sessions.open(world.admin, "198.51.100.1", "Firefox")
    there = rt.sessions.open(world.admin, "198.51.100.2", "Chromium")
    with pytest.raises(ValidationFailed, match="current password is wrong") as wrong:
        rt.accounts.change_password(world.as_admin, "not my password", NEW_PASSWORD,
                                    keep_session=here.cookie)
    assert wrong.value.details["field"] == "current_password"
    assert len(actions(world, "user.password_change_refused")) == 1
    assert rt.sessions.find(there.cookie) is not None  # nothing changed
    with pytest.raises(ValidationFailed, match="commonly used"):
        rt.accounts.change_password(world.as_admin, "correct horse battery", "1q2w3e4r5t6y")

    ended = rt.accounts.change_password(world.as_admin, "correct horse battery",
                                        NEW_PASSWORD, keep_session=here.cookie)
    assert ended == 1
    assert rt.sessions.find(here.cookie) is not None
    assert rt.sessions.find(there.cookie) is None
    assert rt.accounts.check_login("admin@acme.test", NEW_PASSWORD) is not None
    changed = actions(world, "user.password_changed")
    assert len(changed) == 1 and changed[0].details == {"sessions_ended": 1}


def test_the_operator_sets_a_password_and_every_session_ends(world: World) -> None:
    opened = world.rt.sessions.open(world.member, None)
    world.rt.accounts.set_password(Actor.operator(world.acme_id), world.member.id,
                                   NEW_PASSWORD)
    assert world.rt.sessions.find(opened.cookie) is None
    assert world.rt.accounts.check_login("member@acme.test", NEW_PASSWORD)
    with pytest.raises(PermissionDenied):
        world.rt.accounts.set_password(world.as_member, world.admin.id, NEW_PASSWORD)


def test_a_user_lists_and_ends_their_own_sessions_only(world: World) -> None:
    rt = world.rt
    first = rt.sessions.open(world.member, "198.51.100.1", "Firefox/128")
    second = rt.sessions.open(world.member, "198.51.100.2", "Chromium/130")
    admins = rt.sessions.open(world.admin, "198.51.100.3")
    listed = rt.sessions.list_for(world.member.id)
    assert {(s.ip, s.user_agent) for s in listed} == {("198.51.100.1", "Firefox/128"),
                                                     ("198.51.100.2", "Chromium/130")}
    assert rt.sessions.end(world.member.id, admins.public_id) is False  # not theirs
    assert rt.sessions.find(admins.cookie) is not None
    assert rt.sessions.end(world.member.id, second.public_id) is True
    assert rt.sessions.find(second.cookie) is None and rt.sessions.find(first.cookie)
    assert [s.public_id for s in rt.sessions.list_for(world.member.id)] == [first.public_id]


def test_an_admin_ends_a_users_sessions_within_their_account_only(world: World) -> None:
    opened = world.rt.sessions.open(world.member, None)
    with pytest.raises(PermissionDenied):
        world.rt.accounts.end_sessions_of(world.as_member, world.admin.id)
    with pytest.raises(NotFound):
        world.rt.accounts.end_sessions_of(world.as_other_admin, world.member.id)
    assert world.rt.accounts.end_sessions_of(world.as_admin, world.member.id) == 1
    assert world.rt.sessions.find(opened.cookie) is None
    assert actions(world, "user.sessions_ended")[0].target_id == world.member.id


def test_deactivation_ends_the_users_sessions_in_the_same_change(world: World) -> None:
    opened = world.rt.sessions.open(world.member, None)
    world.rt.accounts.update_user(world.as_admin, world.member.id, active=False)
    world.rt.accounts.update_user(world.as_admin, world.member.id, active=True)
    assert world.rt.sessions.find(opened.cookie) is None  # gone, not merely hidden
    assert world.rt.sessions.list_for(world.member.id) == []
