"""Identities over the management API (SPEC §16): create, list, get, patch, delete;
tokens put in an identity spend its one credit pool and count against its shared rate
limits; the verdict names the identity (`/api/v1/verify`, `/auth/request` headers, the
embedded `Verdict`); tenant isolation; bad input gets a specific 4xx and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "127.0.0.1"
Api = tuple[TestClient, dict[str, str], dict[str, str], dict[str, str]]


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


def make_identity(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/identities", headers=admin, json={"external_id": "cust_1",
                                                                  **fields})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def make_token(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "of identity", "kind": "application", "expires_in_days": 30,
        "scopes": ["employees:read"], **fields})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def test_create_list_get_patch_and_delete(api: Api) -> None:
    client, admin, _, _ = api
    made = make_identity(client, admin, name="Customer One", metadata={"plan": "pro"},
                         credits={"remaining": 50},
                         rate_limits=[{"name": "default", "limit": 10, "per_seconds": 60}])
    assert made["external_id"] == "cust_1" and made["name"] == "Customer One"
    assert made["credits"] == {"remaining": 50, "refill": None, "next_refill_at": None}
    assert made["rate_limits"] == [{"name": "default", "limit": 10, "per_seconds": 60,
                                    "shared": None}]
    listed = client.get("/api/v1/identities", headers=admin).json()
    assert [i["id"] for i in listed] == [made["id"]]
    by_external = client.get("/api/v1/identities/cust_1", headers=admin).json()
    assert by_external["id"] == made["id"] and by_external["token_list"] == []
    patched = client.patch(f"/api/v1/identities/{made['id']}", headers=admin, json={
        "credits": {"remaining": 7, "refill": {"amount": 7, "interval": "daily"}},
        "metadata": {"plan": "max"}})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["credits"]["remaining"] == 7 and body["metadata"] == {"plan": "max"}
    assert body["propagation"]["complete"] is True
    assert client.get(f"/api/v1/identities/{made['id']}", headers=admin
                      ).json()["credits"]["remaining"] == 7
    gone = client.delete(f"/api/v1/identities/{made['id']}", headers=admin)
    assert gone.status_code == 200 and gone.json()["detached_tokens"] == []
    assert client.get(f"/api/v1/identities/{made['id']}", headers=admin).status_code == 404
    audit = client.get("/api/v1/audit", headers=admin, params={"target_id": made["id"]})
    assert [e["action"] for e in audit.json()["items"]] == [
        "identity.deleted", "identity.updated", "identity.created"]


def test_external_id_is_unique_per_account(api: Api) -> None:
    client, admin, _, other = api
    make_identity(client, admin)
    again = client.post("/api/v1/identities", headers=admin, json={"external_id": "cust_1"})
    assert again.status_code == 409 and again.json()["field"] == "external_id"
    assert client.post("/api/v1/identities", headers=other,
                       json={"external_id": "cust_1"}).status_code == 201  # another tenant
    assert len(client.get("/api/v1/identities", headers=admin).json()) == 1


@pytest.mark.parametrize(("fields", "status", "fragment"), [
    ({"external_id": "  "}, 422, "external_id is required"),
    ({"external_id": "x" * 300}, 422, ""),
    ({"external_id": "a", "credits": {"remaining": -1}}, 422, "credits.remaining"),
    ({"external_id": "a", "metadata": {"b": "x" * 5000}}, 422, "at most 4096"),
    ({"external_id": "a", "rate_limits": [{"limit": 0, "per_seconds": 1}]}, 422,
     "limit must be a whole number"),
    ({"external_id": "a", "rate_limits": [{"limit": 1, "per_seconds": 1,
                                           "shared": "owner"}]}, 422, ""),
    ({"external_id": "a", "plan": "x"}, 422, ""),
])
def test_bad_input_is_refused_and_changes_nothing(api: Api, fields: dict[str, Any],
                                                  status: int, fragment: str) -> None:
    client, admin, _, _ = api
    refused = client.post("/api/v1/identities", headers=admin, json=fields)
    assert refused.status_code == status, refused.text
    body = refused.json()
    assert body["error"] and body["message"] and fragment in body["message"]
    assert client.get("/api/v1/identities", headers=admin).json() == []


def test_another_accounts_identity_is_not_found(api: Api) -> None:
    client, admin, _, other = api
    theirs = make_identity(client, other, external_id="globex_cust")
    for call in (client.get, client.delete):
        assert call(f"/api/v1/identities/{theirs['id']}", headers=admin).status_code == 404
    assert client.patch(f"/api/v1/identities/{theirs['id']}", headers=admin,
                        json={"name": "x"}).status_code == 404
    refused = client.post("/api/v1/tokens", headers=admin, json={
        "name": "t", "kind": "application", "expires_in_days": 3,
        "scopes": ["employees:read"], "identity_id": theirs["id"]})
    assert refused.status_code == 404 and refused.json()["field"] == "identity_id"
    assert client.get(f"/api/v1/identities/{theirs['id']}", headers=other).status_code == 200


def test_members_read_only_the_identities_of_their_tokens(api: Api, rt: Runtime) -> None:
    client, admin, _, _ = api
    mine = make_identity(client, admin, external_id="mine")
    make_identity(client, admin, external_id="not_mine")
    with TestClient(create_app(rt), client=(IP, 40001), base_url="https://testserver",
                    follow_redirects=False) as browser:
        signed = browser.post("/api/v1/session", json={"email": "member@acme.test",
                                                        "password": "member password 1"})
        assert signed.status_code == 200, signed.text
        member = {"X-CSRF-Token": signed.json()["csrf_token"]}
        assert browser.get("/api/v1/identities", headers=member).json() == []
        own = browser.post("/api/v1/tokens", headers=member, json={
            "name": "own", "expires_in_days": 3, "scopes": ["employees:read"],
            "identity_id": mine["id"]})
        assert own.status_code == 403  # only administrators put tokens in identities
        token_id = browser.get("/api/v1/tokens", headers=member).json()["items"][0]["id"]
        assert client.patch(f"/api/v1/tokens/{token_id}", headers=admin,
                            json={"identity_id": "mine"}).status_code == 200
        assert [i["external_id"] for i in browser.get("/api/v1/identities", headers=member
                                                      ).json()] == ["mine"]
        assert browser.get("/api/v1/identities/mine", headers=member).status_code == 200
        assert browser.get("/api/v1/identities/not_mine", headers=member).status_code == 404
        assert browser.post("/api/v1/identities", headers=member,
                            json={"external_id": "x"}).status_code == 403
        assert browser.patch("/api/v1/identities/mine", headers=member,
                             json={"name": "x"}).status_code == 403


def test_delete_with_tokens_is_a_conflict_unless_detached(api: Api) -> None:
    client, admin, _, _ = api
    identity = make_identity(client, admin, credits={"remaining": 1})
    token = make_token(client, admin, identity_id=identity["id"])
    assert token["identity_id"] == identity["id"]
    refused = client.delete(f"/api/v1/identities/{identity['id']}", headers=admin)
    assert refused.status_code == 409 and refused.json()["tokens"] == 1
    assert client.get(f"/api/v1/identities/{identity['id']}", headers=admin
                      ).json()["tokens"] == 1
    gone = client.delete(f"/api/v1/identities/{identity['id']}", headers=admin,
                         params={"detach": "true"})
    assert gone.status_code == 200, gone.text
    assert gone.json()["detached_tokens"] == [token["id"]]
    assert gone.json()["propagation"]["complete"] is True
    assert client.get(f"/api/v1/tokens/{token['id']}", headers=admin
                      ).json()["identity_id"] is None
    for _ in range(3):  # no pool any more: the token is not costed
        assert client.post("/api/v1/verify", json={"token": token["token"]}
                           ).json()["allowed"] is True


def test_tokens_of_one_identity_spend_one_pool(api: Api) -> None:
    client, admin, _, _ = api
    identity = make_identity(client, admin, credits={"remaining": 5},
                             metadata={"tier": "gold"})
    first = make_token(client, admin, identity_id=identity["id"])
    second = make_token(client, admin, identity_id="cust_1")  # by external id
    outcomes = [client.post("/api/v1/verify", json={"token": t["token"]}).json()
                for t in (first, second) * 4]
    assert [o["allowed"] for o in outcomes] == [True] * 5 + [False] * 3
    assert outcomes[0]["identity"] == {"id": identity["id"], "external_id": "cust_1",
                                       "metadata": {"tier": "gold"}}
    assert [o["identity_credits_remaining"] for o in outcomes[:5]] == [4, 3, 2, 1, 0]
    assert outcomes[5]["reason"] == "usage_exhausted"
    assert "identity" in outcomes[5]["message"]
    assert client.get(f"/api/v1/identities/{identity['id']}", headers=admin
                      ).json()["credits"]["remaining"] == 0
    # More credits reach the tokens at once (acknowledged like a revocation).
    patched = client.patch(f"/api/v1/identities/{identity['id']}", headers=admin,
                           json={"credits": {"remaining": 1}})
    assert patched.json()["propagation"]["complete"] is True
    assert client.post("/api/v1/verify", json={"token": second["token"]}).json()["allowed"]
    assert not client.post("/api/v1/verify", json={"token": first["token"]}).json()["allowed"]


def test_a_tokens_own_credits_apply_too_and_refusal_spends_nothing(api: Api) -> None:
    client, admin, _, _ = api
    identity = make_identity(client, admin, credits={"remaining": 10})
    token = make_token(client, admin, identity_id=identity["id"], credits={"remaining": 2})
    answers = [client.post("/api/v1/verify", json={"token": token["token"]}).json()
               for _ in range(3)]
    assert [a["allowed"] for a in answers] == [True, True, False]
    assert answers[1]["credits_remaining"] == 0
    assert answers[1]["identity_credits_remaining"] == 8
    assert client.get(f"/api/v1/identities/{identity['id']}", headers=admin
                      ).json()["credits"]["remaining"] == 8  # the refusal gave it back


def test_identity_rate_limits_are_shared_and_named_in_headers(api: Api) -> None:
    client, admin, _, _ = api
    identity = make_identity(client, admin, rate_limits=[
        {"name": "default", "limit": 3, "per_seconds": 3600}])
    first = make_token(client, admin, identity_id=identity["id"])
    second = make_token(client, admin, identity_id=identity["id"])
    statuses = [client.get("/auth/request", headers={
        "Authorization": f"Bearer {t['token']}"}) for t in (first, second, first, second)]
    assert [r.status_code for r in statuses] == [204, 204, 204, 429]
    assert statuses[0].headers["Tallykey-Identity-Id"] == identity["id"]
    assert statuses[0].headers["Tallykey-Identity-External-Id"] == "cust_1"
    assert "identity" in statuses[3].json()["message"]


def test_moving_a_token_between_identities_and_out(api: Api) -> None:
    client, admin, _, _ = api
    one = make_identity(client, admin, external_id="one", credits={"remaining": 0})
    make_identity(client, admin, external_id="two", credits={"remaining": 100})
    token = make_token(client, admin, identity_id="one")
    assert client.post("/api/v1/verify", json={"token": token["token"]}
                       ).json()["reason"] == "usage_exhausted"
    moved = client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                         json={"identity_id": "two"})
    assert moved.status_code == 200 and moved.json()["identity_id"] != one["id"]
    answer = client.post("/api/v1/verify", json={"token": token["token"]}).json()
    assert answer["allowed"] and answer["identity"]["external_id"] == "two"
    out = client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                       json={"identity_id": None})
    assert out.json()["identity_id"] is None
    answer = client.post("/api/v1/verify", json={"token": token["token"]}).json()
    assert answer["allowed"] and answer["identity"] is None
    missing = client.patch(f"/api/v1/tokens/{token['id']}", headers=admin,
                           json={"identity_id": "nope"})
    assert missing.status_code == 404 and missing.json()["field"] == "identity_id"


def test_embedded_verdict_carries_the_identity(rt: Runtime, world: World) -> None:
    from tallykey.identities.service import IdentityDraft

    identity = rt.identities.create(world.as_admin, IdentityDraft(
        external_id="emb", metadata={"k": 1}, credits={"remaining": 1}))
    token = rt.tokens.issue(world.as_admin, TokenDraft(
        name="emb", kind="application", expires_in_days=3, scopes=["employees:read"],
        identity_id=identity.id)).value
    verifier = Verifier(settings=rt.settings, database=rt.database, background=False)
    try:
        verdict = verifier.verify(f"Bearer {token}", IP)
        assert verdict.allowed and verdict.identity == {
            "id": identity.id, "external_id": "emb", "metadata": {"k": 1}}
        assert verdict.identity_credits_remaining == 0
        assert verifier.verify(f"Bearer {token}", IP).reason == "usage_exhausted"
    finally:
        verifier.close()


def test_imported_keys_join_an_identity_and_the_list_filters_by_it(api: Api,
                                                                   rt: Runtime) -> None:
    """SPEC §16: an imported key names its identity (by id or external id) and spends its
    pool; `GET /api/v1/tokens?identity_id=` lists one identity's tokens, of the caller's
    account only; an unknown or another account's identity refuses the whole call."""
    client, admin, _, other = api
    identity = make_identity(client, admin, credits={"remaining": 2})
    native = make_token(client, admin, identity_id=identity["id"])
    make_token(client, admin, name="no identity")
    imported = client.post("/api/v1/tokens/import", headers=admin, json={"keys": [
        {"key": "legacy_live_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c", "name": "legacy one",
         "scopes": ["employees:read"], "identity_id": "cust_1", "expires_in_days": 30},
        {"key": "legacy_live_0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d", "name": "legacy two",
         "scopes": ["employees:read"], "identity_id": identity["id"], "expires_in_days": 30}]})
    assert imported.status_code == 200, imported.text
    ids = [key["id"] for key in imported.json()["keys"]]
    for token_id in ids:
        shown = client.get(f"/api/v1/tokens/{token_id}", headers=admin).json()
        assert shown["identity_id"] == identity["id"] and shown["kind"] == "imported"
    for ref in (identity["id"], "cust_1"):
        listed = client.get("/api/v1/tokens", headers=admin, params={"identity_id": ref})
        assert listed.status_code == 200, listed.text
        assert {t["id"] for t in listed.json()["items"]} == {native["id"], *ids}
    # one pool of 2 credits for the native token and both imported keys
    spent = [client.post("/api/v1/verify", json={"token": key}).json()["allowed"]
             for key in (
        "legacy_live_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
        "legacy_live_0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d",
        "legacy_live_4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c")]
    assert spent == [True, True, False]

    theirs = make_identity(client, other, external_id="globex_cust")
    assert client.get("/api/v1/tokens", headers=admin,
                      params={"identity_id": theirs["id"]}).json()["items"] == []
    def token_ids() -> set[str]:
        listed = client.get("/api/v1/tokens", headers=admin, params={"limit": 200})
        return {token["id"] for token in listed.json()["items"]}

    before = token_ids()
    for ref in (theirs["id"], "globex_cust", "nobody"):
        refused = client.post("/api/v1/tokens/import", headers=admin, json={"keys": [
            {"key": "legacy_live_99887766554433221100aabbccddeeff", "name": "ok",
             "scopes": ["employees:read"], "expires_in_days": 30},
            {"key": "legacy_live_ffeeddccbbaa00112233445566778899", "name": "bad",
             "scopes": ["employees:read"], "expires_in_days": 30, "identity_id": ref}]})
        assert refused.status_code == 404, refused.text
        body = refused.json()
        assert body["field"] == "identity_id" and body["index"] == 1
        assert body["message"].startswith("keys[1]: No identity")
    assert token_ids() == before  # nothing of the refused calls was stored
