"""The pure role rules (SPEC §17): what each role holds and reads."""

from __future__ import annotations

from tallykey.accounts.permissions import ADMIN, AUDITOR, MEMBER, ROLES, Permissions
from tallykey.actor import Actor

GRANTS = {"ws-sales": frozenset({"employees:read"})}


def test_the_three_roles() -> None:
    assert ROLES == ("admin", "member", "auditor")


def test_an_auditor_holds_no_scope_whatever_its_grants() -> None:
    auditor = Permissions(AUDITOR, True, GRANTS)
    assert auditor.is_auditor and not auditor.is_admin
    assert auditor.scopes_in("ws-sales") == frozenset()
    assert auditor.scopes_in(None) == frozenset()
    member = Permissions(MEMBER, True, GRANTS)
    assert member.scopes_in("ws-sales") == {"employees:read"}
    assert Permissions(ADMIN, True, {}).scopes_in("ws-sales") == Permissions(
        ADMIN, True, {}).everything


def test_admins_and_auditors_read_everything_only_auditors_are_read_only() -> None:
    def actor(role: str) -> Actor:
        return Actor("acct", "user", role, "someone@example.test")

    assert [actor(r).reads_all for r in ROLES] == [True, False, True]
    assert [actor(r).is_auditor for r in ROLES] == [False, False, True]
    assert Actor.operator("acct").reads_all and not Actor.operator("acct").is_auditor
