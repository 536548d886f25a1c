"""Account governance (SPEC §17) over the management API, the real app in-process on a
real store: token approval (a member's new token is pending until an administrator
approves or denies it) and the policies that drive it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.notify.models import OutboxMessage
from tallykey.runtime import Runtime

from ..conftest import World
from .test_idempotency import management_token
from .test_key_lifecycle import Surfaces, api, app, embedded, lifecycle, member_api

__all__ = ["api", "app", "embedded", "member_api"]  # fixtures, used by name


def mails(rt: Runtime, event: str) -> list[tuple[str, str]]:
    with rt.database.reading() as session:
        return [(m.recipient, m.subject) for m in session.scalars(
            select(OutboxMessage).where(OutboxMessage.event == event,
                                        OutboxMessage.channel == "email")
            .order_by(OutboxMessage.recipient))]


def require_approval(api: TestClient, admin: dict[str, str]) -> None:
    answer = api.patch("/api/v1/account", json={"token_approval": "members"}, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["token_approval"] == "members"


def member_token(member_api: tuple[TestClient, dict[str, str]], name: str = "mine"
                 ) -> dict[str, Any]:
    client, headers = member_api
    made = client.post("/api/v1/tokens", headers=headers,
                       json={"name": name, "expires_in_days": 7})
    assert made.status_code == 201, made.text
    return dict(made.json())


def test_a_members_token_is_pending_until_an_admin_approves_it_on_every_surface(
        api: TestClient, embedded: TestClient, member_api: tuple[TestClient, dict[str, str]],
        world: World, rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    require_approval(api, admin)
    surfaces = Surfaces(api, embedded)
    made = member_token(member_api)
    assert made["status"] == "pending"

    assert surfaces.statuses(made["token"]) == [401, 401, 401]
    auth = {"Authorization": f"Bearer {made['token']}"}
    verdict = surfaces.verify(made["token"])
    for body in (verdict, api.get("/auth/request", headers=auth).json(),
                 embedded.get("/", headers=auth).json()):
        assert body["error"] == "token_pending" and body["reason"] == "token_pending"
        assert "awaits an administrator's approval" in body["message"]
    assert api.get("/auth/request", headers=auth).headers["tallykey-reason"] == (
        "token_pending")
    assert [m for m in mails(rt, "token.created") if "awaits" in m[1]] == [
        ("admin@acme.test", 'API token "mine" awaits your approval in Acme')]

    queue = api.get("/api/v1/tokens", params={"status": "pending"}, headers=admin).json()
    assert [t["id"] for t in queue["items"]] == [made["id"]]
    approved = api.post(f"/api/v1/tokens/{made['id']}/approve", headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "active"
    assert approved.json()["propagation"]["complete"] is True
    # the node had cached the pending verdict: approval reaches it like a resume
    assert surfaces.statuses(made["token"]) == [200, 204, 200]
    assert mails(rt, "token.approved") == [
        ("member@acme.test", 'API token "mine" was approved')]
    again = api.post(f"/api/v1/tokens/{made['id']}/approve", headers=admin)
    assert again.status_code == 409 and "not awaiting approval" in again.json()["message"]
    audit = api.get("/api/v1/audit", params={"target_id": made["id"]}, headers=admin).json()
    decided = [e for e in audit["items"] if e["action"].startswith("token.")]
    assert [e["action"] for e in decided] == ["token.approved", "token.created"]
    assert decided[0]["actor"] == "admin@acme.test"


def test_a_denied_token_is_revoked_for_good(
        api: TestClient, embedded: TestClient, member_api: tuple[TestClient, dict[str, str]],
        world: World, rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    require_approval(api, admin)
    made = member_token(member_api, "denied one")
    surfaces = Surfaces(api, embedded)
    assert surfaces.statuses(made["token"]) == [401, 401, 401]
    denied = api.post(f"/api/v1/tokens/{made['id']}/deny", headers=admin)
    assert denied.status_code == 200, denied.text
    body = denied.json()
    assert body["status"] == "revoked" and body["revoke_reason"] == "denied"
    assert body["propagation"]["complete"] is True
    assert surfaces.statuses(made["token"]) == [401, 401, 401]
    assert surfaces.verify(made["token"])["reason"] == "revoked"
    for verb in ("approve", "deny"):
        assert api.post(f"/api/v1/tokens/{made['id']}/{verb}",
                        headers=admin).status_code == 409
    assert mails(rt, "token.denied") == [
        ("member@acme.test", 'API token "denied one" was denied')]
    audit = api.get("/api/v1/audit", params={"target_id": made["id"],
                                             "action": "token.denied"}, headers=admin).json()
    assert [e["details"]["reason"] for e in audit["items"]] == ["denied"]


def test_only_admins_decide_and_refusals_change_nothing(
        api: TestClient, member_api: tuple[TestClient, dict[str, str]], world: World,
        rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    other = management_token(world, world.as_other_admin)
    require_approval(api, admin)
    made = member_token(member_api)
    active = api.post("/api/v1/tokens", headers=admin, json={
        "name": "admin's own", "expires_in_days": 7}).json()
    assert active["status"] == "active"  # an administrator's token needs no approval
    member_client, member = member_api
    before = lifecycle(rt)
    for client, headers, token_id, status in [
            (member_client, member, made["id"], 403), (api, other, made["id"], 404),
            (api, admin, active["id"], 409), (api, admin, "nope", 404),
            (api, {}, made["id"], 401)]:
        for verb in ("approve", "deny"):
            answer = client.post(f"/api/v1/tokens/{token_id}/{verb}", headers=headers)
            assert answer.status_code == status, (verb, answer.text)
            assert answer.json()["error"]
    # a pending token cannot be suspended, rotated or renewed around the approval
    for verb in ("suspend", "rotate"):
        answer = member_client.post(f"/api/v1/tokens/{made['id']}/{verb}", headers=member,
                                    json={} if verb == "rotate" else None)
        assert answer.status_code == 409 and "awaits" in answer.json()["message"], verb
    assert lifecycle(rt) == before


def test_the_policies_are_validated_and_audited(api: TestClient, world: World) -> None:
    admin = management_token(world, world.as_admin)
    for body, field in [({"token_approval": "everyone"}, "token_approval"),
                        ({"revoke_inactive_days": 0}, "revoke_inactive_days"),
                        ({"revoke_inactive_days": 4000}, "revoke_inactive_days"),
                        ({"revoke_inactive_days": True}, "revoke_inactive_days")]:
        answer = api.patch("/api/v1/account", json=body, headers=admin)
        assert answer.status_code == 422, (body, answer.text)
        assert field in answer.text
    account = api.get("/api/v1/account", headers=admin).json()
    assert account["token_approval"] == "off" and account["revoke_inactive_days"] is None
    changed = api.patch("/api/v1/account", json={"revoke_inactive_days": 30}, headers=admin)
    assert changed.json()["revoke_inactive_days"] == 30
    kept = api.patch("/api/v1/account", json={"token_approval": "off"}, headers=admin)
    assert kept.json()["revoke_inactive_days"] == 30  # a field left out stays
    off = api.patch("/api/v1/account", json={"revoke_inactive_days": None}, headers=admin)
    assert off.json()["revoke_inactive_days"] is None
    audit = api.get("/api/v1/audit", params={"action": "account.policy_changed"},
                    headers=admin).json()
    assert audit["items"][0]["details"]["after"]["revoke_inactive_days"] is None
    assert audit["items"][1]["details"]["after"]["revoke_inactive_days"] == 30


def test_turning_approval_off_approves_nothing_already_pending(
        api: TestClient, member_api: tuple[TestClient, dict[str, str]], world: World,
        rt: Runtime) -> None:
    """Red team (#31): turning `token_approval` off is no back door for what waits:
    a token already pending stays pending (refused, in the queue) until an administrator
    decides; only tokens made after that are active at once."""
    admin = management_token(world, world.as_admin)
    require_approval(api, admin)
    waiting = member_token(member_api, "asked before")
    off = api.patch("/api/v1/account", json={"token_approval": "off"}, headers=admin)
    assert off.status_code == 200 and off.json()["token_approval"] == "off"
    later = member_token(member_api, "asked after")
    assert later["status"] == "active"
    shown = api.get(f"/api/v1/tokens/{waiting['id']}", headers=admin).json()
    assert shown["status"] == "pending"
    refused = api.post("/api/v1/verify", json={"token": waiting["token"]}).json()
    assert refused["status"] == 401 and refused["reason"] == "token_pending"
    queue = api.get("/api/v1/tokens", params={"status": "pending"}, headers=admin).json()
    assert [t["id"] for t in queue["items"]] == [waiting["id"]]
    approved = api.post(f"/api/v1/tokens/{waiting['id']}/approve", headers=admin)
    assert approved.status_code == 200 and approved.json()["status"] == "active"
    assert api.post("/api/v1/verify", json={"token": waiting["token"]}).json()["status"] == 200
