"""The token service on a real store (SQLite and PostgreSQL): policies, rotation, revocation,
and that bad input changes nothing."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from tallykey.runtime import Runtime
from tallykey.schema.tables import metadata
from tallykey.tokens.models import TokenSecret
from tallykey.tokens.requests import TokenChanges, TokenDraft, TokenQuery

from ..conftest import World


def dump(rt: Runtime) -> dict[str, list[Any]]:
    """Every row of every table: to prove that a refused call changed nothing."""
    with rt.database.reading() as session:
        return {table.name: [tuple(row) for row in session.execute(
            text(f'SELECT * FROM "{table.name}" ORDER BY 1'))] for table in metadata.sorted_tables}


def draft(**overrides: Any) -> TokenDraft:
    values: dict[str, Any] = {"name": "CRM Integration", "expires_in_days": 30}
    values.update(overrides)
    return TokenDraft(**values)


def test_issue_returns_the_secret_once_and_stores_only_its_hash(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_admin, draft(scopes=["employees:read"]))
    assert issued.value.startswith("tlk_eu1_")
    everything = repr(dump(world.rt))
    assert issued.value not in everything
    assert issued.secret.secret not in everything
    assert issued.secret.secret_hash in everything
    assert issued.token.prefix in issued.value


def test_personal_token_without_scopes_mirrors_the_owner(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_member, draft())
    assert issued.token.scopes == ["employees:read"]
    assert issued.token.owner_id == world.member.id


def test_personal_scopes_must_lie_within_the_owner_permissions(world: World) -> None:
    before = dump(world.rt)
    with pytest.raises(PermissionDenied, match="employees:write"):
        world.rt.tokens.issue(world.as_member, draft(scopes=["employees:write"]))
    with pytest.raises(PermissionDenied, match="tokens:manage"):
        world.rt.tokens.issue(world.as_member, draft(scopes=["tokens:manage"]))
    with pytest.raises(PermissionDenied, match="no access to this workspace"):
        world.rt.tokens.issue(world.as_member, draft(workspace="ops"))
    assert dump(world.rt) == before


def test_only_admins_issue_application_tokens(world: World) -> None:
    with pytest.raises(PermissionDenied, match="administrators"):
        world.rt.tokens.issue(world.as_member, draft(kind="application",
                                                     scopes=["employees:read"]))
    issued = world.rt.tokens.issue(world.as_admin, draft(kind="application",
                                                         scopes=["employees:read"],
                                                         target="Power BI"))
    assert issued.token.owner_id is None
    assert issued.token.target == "Power BI"


@pytest.mark.parametrize(("overrides", "error", "fragment"), [
    ({"expires_in_days": None}, ValidationFailed, "expiry is required"),
    ({"expires_in_days": None, "expires_at": date(2029, 12, 1)}, ValidationFailed, "past"),
    ({"expires_in_days": 366}, ValidationFailed, "maximum validity"),
    ({"name": ""}, ValidationFailed, "name is required"),
    ({"name": "x" * 10_000}, ValidationFailed, "at most 100"),
    ({"name": "Robot 🤖"}, ValidationFailed, "emoji"),
    ({"ip_allowlist": ["10.0.0.0/33"]}, ValidationFailed, "prefix length /33"),
    ({"scopes": ["employees:destroy"]}, ValidationFailed, "Unknown scope"),
    ({"kind": "robot"}, ValidationFailed, "Unknown token kind"),
    ({"workspace": "nowhere"}, NotFound, "No workspace"),
    ({"target": "Lotus Notes"}, ValidationFailed, "Unknown target"),
    ({"kind": "application"}, ValidationFailed, "at least one scope"),
])
def test_bad_input_is_refused_and_changes_nothing(
    world: World, overrides: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    before = dump(world.rt)
    with pytest.raises(error, match=fragment):
        world.rt.tokens.issue(world.as_admin, draft(**overrides))
    assert dump(world.rt) == before


def test_account_maximum_can_be_lowered_but_not_raised(world: World) -> None:
    from tallykey.accounts.service import PolicyChanges

    world.rt.accounts.update_policies(world.as_admin, PolicyChanges(max_validity_days=30))
    with pytest.raises(ValidationFailed, match="maximum validity of 30 days"):
        world.rt.tokens.issue(world.as_admin, draft(expires_in_days=60))
    with pytest.raises(ValidationFailed, match="between 1 and 365"):
        world.rt.accounts.update_policies(world.as_admin, PolicyChanges(max_validity_days=400))


def test_long_validity_is_a_warning(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_admin, draft(expires_in_days=365))
    assert issued.warnings and "3 months" in issued.warnings[0]
    assert not world.rt.tokens.issue(world.as_admin, draft(expires_in_days=90)).warnings


def test_expiry_cannot_be_extended_but_can_be_shortened(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    before = dump(world.rt)
    with pytest.raises(ValidationFailed, match="cannot be extended"):
        world.rt.tokens.update(world.as_admin, token.id,
                               TokenChanges(expires_at=token.expires_at + timedelta(seconds=1)))
    assert dump(world.rt) == before
    shorter = token.expires_at - timedelta(days=10)
    updated = world.rt.tokens.update(world.as_admin, token.id, TokenChanges(expires_at=shorter))
    assert updated.expires_at == shorter


def test_update_edits_the_editable_fields_and_audits_the_diff(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    updated = world.rt.tokens.update(world.as_admin, token.id, TokenChanges(
        name="Renamed", description="where it runs", ip_allowlist=["2001:db8::/48"],
        target="Tableau"))
    assert (updated.name, updated.description, updated.ip_allowlist, updated.target) == (
        "Renamed", "where it runs", ["2001:db8::/48"], "Tableau")
    with world.rt.database.reading() as session:
        event = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "token.updated")).one()
    assert event.details["name"] == ["CRM Integration", "Renamed"]


def test_revocation_is_immediate_irreversible_and_recorded(world: World, clock: FrozenClock
                                                           ) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    revoked = world.rt.tokens.revoke(world.as_admin, token.id, "leaked in a log")
    assert revoked.revoked_at == clock.now()
    assert revoked.revoked_by_id == world.admin.id
    assert revoked.status_at(clock.now()) == "revoked"
    with pytest.raises(Conflict, match="already revoked"):
        world.rt.tokens.revoke(world.as_admin, token.id)
    with pytest.raises(Conflict, match="revoked and cannot be rotated"):
        world.rt.tokens.rotate(world.as_admin, token.id)
    with pytest.raises(Conflict, match="cannot be edited"):
        world.rt.tokens.update(world.as_admin, token.id, TokenChanges(name="again"))


def test_rotation_keeps_the_record_and_gives_the_old_secret_a_grace(world: World,
                                                                   clock: FrozenClock) -> None:
    first = world.rt.tokens.issue(world.as_admin, draft())
    second = world.rt.tokens.rotate(world.as_admin, first.token.id, grace_seconds=3600)
    assert second.token.id == first.token.id
    assert second.secret.public_id == first.secret.public_id
    assert second.value != first.value
    clock.advance(timedelta(minutes=10))
    third = world.rt.tokens.rotate(world.as_admin, first.token.id, grace_seconds=0)
    with world.rt.database.reading() as session:
        rows = {row.secret_hash: row for row in session.scalars(select(TokenSecret))}
    assert rows[first.secret.secret_hash].retires_at == clock.now()  # cut short by grace 0
    assert rows[second.secret.secret_hash].retires_at == clock.now()
    assert rows[third.secret.secret_hash].retires_at is None
    assert [rows[s.secret_hash].generation for s in (first.secret, second.secret,
                                                      third.secret)] == [1, 2, 3]


def test_a_second_rotation_does_not_extend_an_earlier_grace(world: World,
                                                            clock: FrozenClock) -> None:
    first = world.rt.tokens.issue(world.as_admin, draft())
    world.rt.tokens.rotate(world.as_admin, first.token.id, grace_seconds=60)
    end = clock.now() + timedelta(seconds=60)
    world.rt.tokens.rotate(world.as_admin, first.token.id, grace_seconds=604800)
    with world.rt.database.reading() as session:
        row = session.scalars(select(TokenSecret).where(
            TokenSecret.secret_hash == first.secret.secret_hash)).one()
    assert row.retires_at == end


def test_members_manage_only_their_own_tokens(world: World) -> None:
    admin_token = world.rt.tokens.issue(world.as_admin, draft()).token
    mine = world.rt.tokens.issue(world.as_member, draft(name="mine")).token
    with pytest.raises(NotFound):
        world.rt.tokens.get(world.as_member, admin_token.id)
    with pytest.raises(NotFound):
        world.rt.tokens.revoke(world.as_member, admin_token.id)
    page = world.rt.tokens.list_tokens(world.as_member, TokenQuery())
    assert [t.id for t in page.items] == [mine.id]
    assert world.rt.tokens.revoke(world.as_member, mine.id).revoked_at is not None
    admin_view = world.rt.tokens.list_tokens(world.as_admin, TokenQuery())
    assert {t.id for t in admin_view.items} == {admin_token.id, mine.id}


def test_nothing_crosses_accounts(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    before = dump(world.rt)
    for call in (
        lambda: world.rt.tokens.get(world.as_other_admin, token.id),
        lambda: world.rt.tokens.revoke(world.as_other_admin, token.id),
        lambda: world.rt.tokens.rotate(world.as_other_admin, token.id),
        lambda: world.rt.tokens.update(world.as_other_admin, token.id, TokenChanges(name="x")),
    ):
        with pytest.raises(NotFound, match="No such token"):
            call()
    assert world.rt.tokens.list_tokens(world.as_other_admin, TokenQuery()).items == []
    assert dump(world.rt) == before


def test_status_filters_search_and_keyset_pagination(world: World, clock: FrozenClock) -> None:
    ids = []
    for number in range(7):
        ids.append(world.rt.tokens.issue(world.as_admin, draft(
            name=f"token {number}", expires_in_days=7 if number < 2 else 30)).token.id)
        clock.advance(timedelta(seconds=1))
    world.rt.tokens.revoke(world.as_admin, ids[6])
    clock.advance(timedelta(days=8))
    query = world.rt.tokens.list_tokens
    assert {t.id for t in query(world.as_admin, TokenQuery(status="expired")).items} == set(
        ids[:2])
    assert {t.id for t in query(world.as_admin, TokenQuery(status="revoked")).items} == {ids[6]}
    assert len(query(world.as_admin, TokenQuery(status="active")).items) == 4
    assert [t.id for t in query(world.as_admin, TokenQuery(search="TOKEN 3")).items] == [ids[3]]
    assert query(world.as_admin, TokenQuery(search="100%_")).items == []
    seen: list[str] = []
    cursor = None
    while True:
        page = query(world.as_admin, TokenQuery(limit=3, after=cursor))
        seen += [t.id for t in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    with pytest.raises(ValidationFailed, match="cursor"):
        query(world.as_admin, TokenQuery(after="not-a-cursor"))
    with pytest.raises(ValidationFailed, match="status"):
        query(world.as_admin, TokenQuery(status="dormant"))


def test_search_by_prefix_or_whole_token_finds_the_token(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_admin, draft())
    for needle in (issued.token.prefix, issued.value):
        found = world.rt.tokens.list_tokens(world.as_admin, TokenQuery(search=needle))
        assert [t.id for t in found.items] == [issued.token.id]


def test_every_change_writes_an_audit_event_without_secrets(world: World) -> None:
    issued = world.rt.tokens.issue(world.as_admin, draft())
    rotated = world.rt.tokens.rotate(world.as_admin, issued.token.id, 60)
    world.rt.tokens.update(world.as_admin, issued.token.id, TokenChanges(name="new name"))
    world.rt.tokens.revoke(world.as_admin, issued.token.id)
    with world.rt.database.reading() as session:
        events = list(session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == issued.token.id).order_by(AuditEvent.id)))
    assert [e.action for e in events] == ["token.created", "token.rotated", "token.updated",
                                         "token.revoked"]
    assert all(e.actor_id == world.admin.id and e.ip == "198.51.100.7" for e in events)
    text_of_events = repr([(e.details, e.actor_label) for e in events])
    for secret in (issued.value, rotated.value, issued.secret.secret, rotated.secret.secret):
        assert secret not in text_of_events


def test_times_are_aware_utc(world: World) -> None:
    token = world.rt.tokens.issue(world.as_admin, draft()).token
    fetched = world.rt.tokens.get(world.as_admin, token.id)
    assert fetched.created_at.tzinfo is not None
    assert fetched.expires_at == datetime(2030, 1, 31, 12, 0, tzinfo=UTC)


def test_an_owner_cannot_widen_scopes_an_admin_narrowed(world: World) -> None:
    tokens = world.rt.tokens
    world.rt.accounts.update_user(world.as_admin, world.member.id, role=None, active=None,
                                  grants={world.sales.id: ["employees:read",
                                                           "employees:write"]})
    issued = tokens.issue(world.as_member, TokenDraft(
        name="Two scopes", expires_in_days=7, workspace="sales",
        scopes=["employees:read", "employees:write"]))
    tokens.update(world.as_admin, issued.token.id, TokenChanges(scopes=["employees:read"]))
    with pytest.raises(PermissionDenied) as refused:
        tokens.update(world.as_member, issued.token.id,
                      TokenChanges(scopes=["employees:read", "employees:write"]))
    assert "employees:write" in refused.value.message
    assert tokens.get(world.as_member, issued.token.id).scopes == ["employees:read"]
