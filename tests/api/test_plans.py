"""Plans over the management API (SPEC §16): create, list (paged), get, patch, delete;
tokens and identities on a plan get its rate limits, credit refill and scopes ceiling
(a token's own settings win; token plan > identity plan); a plan change reaches the
verdicts at once; tenant isolation; bad input gets a specific 4xx and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "127.0.0.1"
Api = tuple[TestClient, dict[str, str], dict[str, str], dict[str, str]]
LIMIT = {"name": "default", "limit": 3, "per_seconds": 3600}


@pytest.fixture
def api(rt: Runtime, world: World) -> Iterator[Api]:
    admin = rt.tokens.issue(world.as_admin, TokenDraft(
        name="manage", expires_in_days=30, scopes=["tokens:manage"])).value
    member = rt.tokens.issue(world.as_member, TokenDraft(
        name="member", expires_in_days=30, scopes=["employees:read"])).value
    other = rt.tokens.issue(world.as_other_admin, TokenDraft(
        name="other", expires_in_days=30, scopes=["tokens:manage"])).value
    with TestClient(create_app(rt), client=(IP, 40000), follow_redirects=False) as client:
        yield (client, {"Authorization": f"Bearer {admin}"},
               {"Authorization": f"Bearer {member}"}, {"Authorization": f"Bearer {other}"})


def make_plan(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/plans", headers=admin, json={"name": "pro", **fields})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def make_token(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "on a plan", "kind": "application", "expires_in_days": 30,
        "scopes": ["employees:read"], **fields})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def verify(client: TestClient, token: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return client.post("/api/v1/verify",  # type: ignore[no-any-return]
                       json={"token": token["token"], **fields}).json()


def test_create_list_get_patch_and_delete(api: Api) -> None:
    client, admin, _, _ = api
    made = make_plan(client, admin, description="for paying customers", rate_limits=[LIMIT],
                     refill={"amount": 100, "interval": "daily"},
                     scopes=["employees:read"])
    assert made["rate_limits"] == [{**LIMIT, "shared": None}]
    assert made["refill"] == {"amount": 100, "interval": "daily"}
    assert made["scopes"] == ["employees:read"] and made["tokens"] == 0
    assert client.get("/api/v1/plans/pro", headers=admin).json()["id"] == made["id"]
    patched = client.patch(f"/api/v1/plans/{made['id']}", headers=admin, json={
        "rate_limits": [{"name": "default", "limit": 5, "per_seconds": 60}],
        "refill": None, "scopes": None, "name": "pro-2"})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "pro-2" and body["refill"] is None and body["scopes"] is None
    assert body["rate_limits"][0]["limit"] == 5
    assert body["propagation"]["complete"] is True
    gone = client.delete(f"/api/v1/plans/{made['id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["detached_tokens"] == []
    assert client.get(f"/api/v1/plans/{made['id']}", headers=admin).status_code == 404
    audit = client.get("/api/v1/audit", headers=admin, params={"target_id": made["id"]})
    assert [e["action"] for e in audit.json()["items"]] == [
        "plan.deleted", "plan.updated", "plan.created"]


def test_list_is_paged_by_name(api: Api) -> None:
    client, admin, _, _ = api
    for name in ("c", "a", "e", "b", "d"):
        make_plan(client, admin, name=name)
    seen: list[str] = []
    cursor = None
    while True:
        page = client.get("/api/v1/plans", headers=admin,
                          params={"limit": 2, **({"after": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        seen += [p["name"] for p in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    bad = client.get("/api/v1/plans", headers=admin, params={"after": "%%%"})
    assert bad.status_code == 422 and bad.json()["field"] == "after"


def test_names_are_unique_per_account(api: Api) -> None:
    client, admin, _, other = api
    first = make_plan(client, admin)
    again = client.post("/api/v1/plans", headers=admin, json={"name": "pro"})
    assert again.status_code == 409 and again.json()["plan_id"] == first["id"]
    assert again.json()["error"] == "conflict"
    make_plan(client, other)  # another account may use the name
    second = make_plan(client, admin, name="basic")
    clash = client.patch(f"/api/v1/plans/{second['id']}", headers=admin,
                         json={"name": "pro"})
    assert clash.status_code == 409
    assert client.get(f"/api/v1/plans/{second['id']}", headers=admin).json()["name"] == "basic"


@pytest.mark.parametrize(("fields", "status", "fragment"), [
    ({"name": ""}, 422, "name is required"),
    ({"name": "x" * 101}, 422, "at most 100"),
    ({"name": "x", "rate_limits": [{"limit": 0, "per_seconds": 60}]}, 422, "limit must be"),
    ({"name": "x", "refill": {"amount": 0, "interval": "daily"}}, 422, "refill.amount"),
    ({"name": "x", "refill": {"amount": 5, "interval": "weekly"}}, 422, "interval"),
    ({"name": "x", "scopes": ["nope:read"]}, 422, "Unknown scope"),
    ({"name": "x", "description": "a\x00b"}, 422, "control characters"),
    ({"name": "x", "color": "red"}, 422, "color"),
    ({"name": 5}, 422, "name"),
])
def test_bad_input_is_refused_and_changes_nothing(api: Api, fields: dict[str, Any],
                                                  status: int, fragment: str) -> None:
    client, admin, _, _ = api
    answer = client.post("/api/v1/plans", headers=admin, json=fields)
    assert answer.status_code == status and fragment in answer.text, answer.text
    assert answer.json()["error"] and answer.json()["message"]
    assert client.get("/api/v1/plans", headers=admin).json()["items"] == []


def test_another_account_cannot_see_change_or_attach_a_plan(api: Api) -> None:
    client, admin, _, other = api
    plan = make_plan(client, admin, rate_limits=[LIMIT])
    assert client.get(f"/api/v1/plans/{plan['id']}", headers=other).status_code == 404
    assert client.get("/api/v1/plans", headers=other).json()["items"] == []
    assert client.patch(f"/api/v1/plans/{plan['id']}", headers=other,
                        json={"name": "mine"}).status_code == 404
    assert client.delete(f"/api/v1/plans/{plan['id']}", headers=other).status_code == 404
    refused = client.post("/api/v1/tokens", headers=other, json={
        "name": "steal", "kind": "application", "expires_in_days": 3,
        "scopes": ["employees:read"], "plan_id": plan["id"]})
    assert refused.status_code == 404 and refused.json()["field"] == "plan_id"
    theirs = make_token(client, other)
    moved = client.patch(f"/api/v1/tokens/{theirs['id']}", headers=other,
                         json={"plan_id": plan["id"]})
    assert moved.status_code == 404
    assert client.get(f"/api/v1/tokens/{theirs['id']}", headers=other
                      ).json()["plan_id"] is None
    identity = client.post("/api/v1/identities", headers=other, json={
        "external_id": "c", "plan_id": plan["id"]})
    assert identity.status_code == 404 and identity.json()["field"] == "plan_id"
    assert client.get(f"/api/v1/plans/{plan['id']}", headers=admin).json()["name"] == "pro"


def test_members_read_plans_but_change_or_attach_none(api: Api, rt: Runtime) -> None:
    client, admin, _, _ = api
    plan = make_plan(client, admin)
    with TestClient(create_app(rt), client=(IP, 40001), base_url="https://testserver",
                    follow_redirects=False) as browser:
        signed = browser.post("/api/v1/session", json={"email": "member@acme.test",
                                                        "password": "member password 1"})
        assert signed.status_code == 200, signed.text
        member = {"X-CSRF-Token": signed.json()["csrf_token"]}
        listed = browser.get("/api/v1/plans", headers=member).json()["items"]
        assert [p["id"] for p in listed] == [plan["id"]]
        assert browser.post("/api/v1/plans", headers=member,
                            json={"name": "m"}).status_code == 403
        assert browser.patch(f"/api/v1/plans/{plan['id']}", headers=member,
                             json={"name": "m"}).status_code == 403
        assert browser.delete(f"/api/v1/plans/{plan['id']}",
                              headers=member).status_code == 403
        own = browser.post("/api/v1/tokens", headers=member, json={
            "name": "mine", "expires_in_days": 3, "scopes": ["employees:read"],
            "plan_id": "pro"})
        assert own.status_code == 403 and own.json()["field"] == "plan_id"
    assert client.get("/api/v1/plans/pro", headers=admin).json()["name"] == "pro"


def test_plan_rate_limits_apply_and_a_change_reaches_the_verdict(api: Api) -> None:
    client, admin, _, _ = api
    plan = make_plan(client, admin, rate_limits=[LIMIT])
    token = make_token(client, admin, plan_id="pro")  # by name
    assert token["plan_id"] == plan["id"]
    assert [verify(client, token)["allowed"] for _ in range(4)] == [True] * 3 + [False]
    assert verify(client, token)["reason"] == "rate_limited"
    patched = client.patch(f"/api/v1/plans/{plan['id']}", headers=admin, json={
        "rate_limits": [{"name": "default", "limit": 5, "per_seconds": 3600}]})
    assert patched.json()["propagation"]["complete"] is True
    # The changed limit counts afresh: 5 more pass, then refused.
    assert [verify(client, token)["allowed"] for _ in range(6)] == [True] * 5 + [False]
    client.patch(f"/api/v1/plans/{plan['id']}", headers=admin, json={"rate_limits": []})
    assert all(verify(client, token)["allowed"] for _ in range(10))


def test_a_tokens_own_rate_limits_override_its_plans(api: Api) -> None:
    client, admin, _, _ = api
    make_plan(client, admin, rate_limits=[LIMIT])
    token = make_token(client, admin, plan_id="pro", rate_limits=[
        {"name": "default", "limit": 6, "per_seconds": 3600}])
    assert [verify(client, token)["allowed"] for _ in range(7)] == [True] * 6 + [False]


def test_plan_refill_gives_each_token_its_credits(api: Api) -> None:
    client, admin, _, _ = api
    plan = make_plan(client, admin, refill={"amount": 3, "interval": "daily"})
    first = make_token(client, admin, plan_id=plan["id"])
    second = make_token(client, admin, plan_id=plan["id"])
    answers = [verify(client, first) for _ in range(4)]
    assert [a["allowed"] for a in answers] == [True] * 3 + [False]
    assert [a["credits_remaining"] for a in answers[:3]] == [2, 1, 0]
    assert answers[3]["reason"] == "usage_exhausted" and "plan" in answers[3]["message"]
    assert verify(client, second)["credits_remaining"] == 2  # its own allowance
    # A lowered amount applies at once.
    client.patch(f"/api/v1/plans/{plan['id']}", headers=admin,
                 json={"refill": {"amount": 1, "interval": "daily"}})
    assert verify(client, second)["credits_remaining"] == 0
    assert verify(client, second)["allowed"] is False
    # A token's own credits win over the plan's refill.
    own = make_token(client, admin, plan_id=plan["id"], credits={"remaining": 5})
    assert verify(client, own)["credits_remaining"] == 4


def test_scopes_ceiling_refused_at_create_and_at_verification(api: Api) -> None:
    client, admin, _, _ = api
    plan = make_plan(client, admin, scopes=["employees:read"])
    wide = client.post("/api/v1/tokens", headers=admin, json={
        "name": "wide", "kind": "application", "expires_in_days": 3,
        "scopes": ["employees:read", "employees:write"], "plan_id": plan["id"]})
    assert wide.status_code == 422 and wide.json()["field"] == "scopes"
    assert wide.json()["outside"] == ["employees:write"]
    token = make_token(client, admin, scopes=["employees:read", "employees:write"])
    attach = client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                          json={"plan_id": plan["id"]})
    assert attach.status_code == 422
    assert client.get(f"/api/v1/tokens/{token['id']}", headers=admin).json()["plan_id"] is None
    # Through an identity's plan (or a ceiling narrowed later), verification refuses.
    identity = client.post("/api/v1/identities", headers=admin, json={
        "external_id": "c1", "plan_id": "pro"}).json()
    assert identity["plan_id"] == plan["id"]
    assert verify(client, token, required_scopes=["employees:write"])["allowed"] is True
    client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                 json={"identity_id": "c1", "scopes": ["employees:read"]})
    client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                 json={"scopes": ["employees:read", "employees:write"]})
    narrowed = client.patch(f"/api/v1/plans/{plan['id']}", headers=admin,
                            json={"scopes": []})
    assert narrowed.json()["propagation"]["complete"] is True
    answer = verify(client, token, required_scopes=["employees:read"])
    assert answer["allowed"] is False and answer["reason"] == "insufficient_scope"


def test_token_plan_wins_over_identity_plan(api: Api) -> None:
    client, admin, _, _ = api
    make_plan(client, admin, name="small", rate_limits=[
        {"name": "default", "limit": 1, "per_seconds": 3600}])
    make_plan(client, admin, name="big", rate_limits=[
        {"name": "default", "limit": 4, "per_seconds": 3600}])
    client.post("/api/v1/identities", headers=admin, json={
        "external_id": "c1", "plan_id": "small"})
    via_identity = make_token(client, admin, identity_id="c1")
    own_plan = make_token(client, admin, identity_id="c1", plan_id="big")
    assert [verify(client, via_identity)["allowed"] for _ in range(2)] == [True, False]
    assert [verify(client, own_plan)["allowed"] for _ in range(5)] == [True] * 4 + [False]


def test_delete_in_use_is_a_conflict_unless_detached(api: Api) -> None:
    client, admin, _, _ = api
    plan = make_plan(client, admin, rate_limits=[
        {"name": "default", "limit": 1, "per_seconds": 3600}])
    token = make_token(client, admin, plan_id=plan["id"])
    identity = client.post("/api/v1/identities", headers=admin, json={
        "external_id": "c1", "plan_id": plan["id"]}).json()
    in_use = client.delete(f"/api/v1/plans/{plan['id']}", headers=admin)
    assert in_use.status_code == 409
    assert in_use.json()["tokens"] == 1 and in_use.json()["identities"] == 1
    listed = client.get("/api/v1/plans", headers=admin).json()["items"][0]
    assert (listed["tokens"], listed["identities"]) == (1, 1)
    assert [verify(client, token)["allowed"] for _ in range(2)] == [True, False]
    gone = client.delete(f"/api/v1/plans/{plan['id']}", headers=admin,
                         params={"detach": "true"})
    assert gone.status_code == 200, gone.text
    assert gone.json()["detached_tokens"] == [token["id"]]
    assert gone.json()["detached_identities"] == [identity["id"]]
    assert gone.json()["propagation"]["complete"] is True
    assert client.get(f"/api/v1/tokens/{token['id']}", headers=admin).json()["plan_id"] is None
    assert all(verify(client, token)["allowed"] for _ in range(3))  # no plan limit now
