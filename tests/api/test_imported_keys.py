"""Imported keys (SPEC §16) over the management API, the real app in-process on a real
store: `POST /api/v1/tokens/import`, what an imported key then gets from every
verification surface, its lifecycle, idempotency by hash, tenant isolation, and the
refusals that change nothing."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey import TallykeyMiddleware, Verifier
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.people.sessions import CSRF_HEADER
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.imports import ImportItem
from tallykey.tokens.models import Token, TokenSecret

from ..conftest import World
from .test_idempotency import management_token
from .test_key_lifecycle import Surfaces, lifecycle


@pytest.fixture
def app(rt: Runtime) -> Any:
    return create_app(rt)


@pytest.fixture
def api(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000)) as client:
        yield client


@pytest.fixture
def embedded(rt: Runtime) -> Iterator[TestClient]:
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(TallykeyMiddleware(plain, verifier=verifier),
                        client=("127.0.0.1", 40002))
    yield client
    client.close()
    verifier.close()


def foreign_key(style: str = "sk") -> str:
    """A key in some other platform's format (never `tlk_…`)."""
    if style == "sk":
        return "legacy_live_" + secrets.token_urlsafe(24)
    if style == "hex":
        return secrets.token_hex(20)
    return "acme-" + secrets.token_urlsafe(18) + ".v2"


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def imported(api: TestClient, headers: dict[str, str], *keys: dict[str, Any]) -> Any:
    answer = api.post("/api/v1/tokens/import", headers=headers, json={"keys": [
        {"name": "legacy", "expires_in_days": 30, "scopes": ["employees:read"], **key}
        for key in keys]})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_imported_key_verifies_with_its_own_string_on_every_surface(
        api: TestClient, embedded: TestClient, world: World, rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    by_key, by_hash, other = foreign_key("sk"), foreign_key("hex"), foreign_key("dotted")
    answer = imported(api, admin, {"key": by_key, "metadata": {"plan": "pro"},
                                   "external_id": "cust-7"},
                      {"hash": f"sha256:{sha(by_hash)}", "name": "by hash"},
                      {"key": other})
    assert (answer["created"], answer["existing"], answer["unavailable"]) == (3, 0, 0)
    first = answer["keys"][0]
    assert first["outcome"] == "created" and first["prefix"] == f"imported:{sha(by_key)[:8]}"
    surfaces = Surfaces(api, embedded)
    for key in (by_key, by_hash, other):
        assert surfaces.statuses(key) == [200, 204, 200], key
    verdict = surfaces.verify(by_key)
    assert verdict["token_id"] == first["id"] and verdict["kind"] == "imported"
    assert verdict["metadata"] == {"plan": "pro"}
    assert verdict["scopes"] == ["employees:read"]

    # No plaintext anywhere: only the SHA-256 is stored.
    with rt.database.reading() as session:
        token = session.get_one(Token, first["id"])
        stored = session.scalars(select(TokenSecret.secret_hash).where(
            TokenSecret.token_id == token.id)).all()
        dump = str([tuple(row) for row in session.execute(select(Token.__table__))])
    assert stored == [sha(by_key)]
    assert by_key not in dump and token.kind == "imported"

    listed = api.get("/api/v1/tokens?kind=imported", headers=admin).json()["items"]
    assert {t["prefix"] for t in listed} == {k["prefix"] for k in answer["keys"]}
    assert all(t["kind"] == "imported" and t["status"] == "active" for t in listed)


def test_lifecycle_revoke_suspend_resume_expire_update(
        api: TestClient, embedded: TestClient, world: World, clock: FrozenClock) -> None:
    admin = management_token(world, world.as_admin)
    key, gone = foreign_key(), foreign_key("hex")
    made = imported(api, admin, {"key": key}, {"key": gone})["keys"]
    token_id, gone_id = made[0]["id"], made[1]["id"]
    surfaces = Surfaces(api, embedded)
    assert surfaces.statuses(key) == [200, 204, 200]

    assert api.post(f"/api/v1/tokens/{token_id}/suspend", headers=admin).is_success
    assert surfaces.verify(key)["error"] == "token_suspended"
    assert surfaces.statuses(key) == [401, 401, 401]
    assert api.post(f"/api/v1/tokens/{token_id}/resume", headers=admin).is_success
    assert surfaces.statuses(key) == [200, 204, 200]

    changed = api.patch(f"/api/v1/tokens/{token_id}", headers=admin,
                        json={"name": "renamed", "scopes": ["employees:write"]})
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "renamed"
    auth = {"Authorization": f"Bearer {key}"}
    assert api.get("/auth/request?scope=employees:read", headers=auth).status_code == 403
    assert api.get("/auth/request?scope=employees:write", headers=auth).status_code == 204

    for verb in ("rotate", "renew"):
        refused = api.post(f"/api/v1/tokens/{token_id}/{verb}", headers=admin,
                           json={} if verb == "rotate" else {"expires_in_days": 7})
        assert refused.status_code == 409, refused.text
        assert "imported key cannot be" in refused.json()["message"]

    assert api.post(f"/api/v1/tokens/{gone_id}/revoke", headers=admin).is_success
    assert surfaces.verify(gone)["reason"] == "revoked"
    assert surfaces.statuses(gone) == [401, 401, 401]
    soon = (clock.now() + timedelta(days=2)).date().isoformat()
    shortened = api.patch(f"/api/v1/tokens/{token_id}", headers=admin,
                          json={"expires_at": soon})
    assert shortened.status_code == 200, shortened.text
    assert surfaces.statuses(key) == [200, 204, 200]
    clock.advance(timedelta(days=3))
    assert surfaces.verify(key)["reason"] == "expired"
    assert surfaces.statuses(key) == [401, 401, 401]


def test_import_is_idempotent_by_hash_and_never_reveals_another_account(
        api: TestClient, world: World, rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    other = management_token(world, world.as_other_admin)
    key = foreign_key()
    first = imported(api, admin, {"key": key})["keys"][0]
    again = imported(api, admin, {"hash": f"sha256:{sha(key).upper()}"}, {"key": key})
    assert (again["created"], again["existing"]) == (0, 2)
    assert [k["id"] for k in again["keys"]] == [first["id"], first["id"]]
    twice = imported(api, admin, *[{"key": fresh} for fresh in [foreign_key()] * 2])
    assert twice["created"] == 1 and twice["existing"] == 1
    assert twice["keys"][0]["id"] == twice["keys"][1]["id"]

    elsewhere = imported(api, other, {"key": key})
    assert (elsewhere["created"], elsewhere["unavailable"]) == (0, 1)
    item = elsewhere["keys"][0]
    assert item["id"] is None and item["outcome"] == "unavailable"
    assert "acme" not in json.dumps(elsewhere) and first["id"] not in json.dumps(elsewhere)
    listed = api.get("/api/v1/tokens?kind=imported", headers=other).json()["items"]
    assert listed == []

    with rt.database.reading() as session:
        audits = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "token.imported").order_by(AuditEvent.id)).all()
    assert [a.details for a in audits][:2] == [
        {"created": 1, "existing": 0, "unavailable": 0},
        {"created": 0, "existing": 2, "unavailable": 0}]
    assert all(key not in json.dumps(a.details) for a in audits)


@pytest.mark.parametrize(("item", "says"), [
    ({"key": "short-key-1"}, "characters long"),
    ({"key": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "too easy to guess"),
    ({"key": "abcdefgh ijklmnopqrstu"}, "whitespace"),
    ({"key": "tlk_eu1_" + "A" * 61}, "shaped like a tallykey token"),
    ({"hash": "sha256:1234"}, "not a SHA-256 hash"),
    ({"hash": "md5:" + "0" * 32}, "not a SHA-256 hash"),
    ({}, "exactly one of 'key' and 'hash'"),
    ({"key": "x-" + "Ab1" * 10, "hash": "sha256:" + "0" * 64}, "exactly one"),
    ({"key": "x-" + "Ab1cD2" * 4, "expires_in_days": 9999}, "maximum validity"),
    ({"key": "x-" + "Ab1cD2" * 4, "scopes": ["nope:nope"]}, "nope:nope"),
])
def test_a_bad_item_refuses_the_whole_call_and_changes_nothing(
        api: TestClient, world: World, rt: Runtime, item: dict[str, Any], says: str) -> None:
    admin = management_token(world, world.as_admin)
    before = lifecycle(rt)
    body = {"keys": [{"name": "fine", "key": foreign_key(), "expires_in_days": 30},
                     {"name": "bad", "expires_in_days": 30, **item}]}
    answer = api.post("/api/v1/tokens/import", headers=admin, json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()
    assert says in error["message"] and "keys[1]" in error["message"]
    assert item.get("key", "\0") not in answer.text
    assert lifecycle(rt) == before


def test_only_administrators_import_and_the_size_is_bounded(
        api: TestClient, world: World, rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    signed = api.post("/api/v1/session", json={"email": "member@acme.test",
                                               "password": "member password 1"})
    member = {CSRF_HEADER: signed.json()["csrf_token"]}
    before = lifecycle(rt)
    body = {"keys": [{"name": "x", "key": foreign_key(), "expires_in_days": 30}]}
    refused = api.post("/api/v1/tokens/import", headers=member, json=body)
    assert refused.status_code == 403, refused.text
    assert "Only account administrators can import keys" in refused.json()["message"]
    api.cookies.clear()
    assert api.post("/api/v1/tokens/import", json=body).status_code == 401
    too_many = {"keys": [{"name": "x", "hash": "sha256:" + "0" * 64,
                          "expires_in_days": 30}] * 10_001}
    answer = api.post("/api/v1/tokens/import", headers=admin, json=too_many)
    assert answer.status_code in (413, 422), answer.text
    assert "10000" in answer.text.replace(",", "")
    empty = api.post("/api/v1/tokens/import", headers=admin, json={"keys": []})
    assert empty.status_code == 422
    assert lifecycle(rt) == before


def test_foreign_garbage_is_refused_as_before_until_a_key_is_imported(
        api: TestClient, world: World) -> None:
    garbage = "legacy_live_" + secrets.token_urlsafe(24)
    refused = api.post("/api/v1/verify", json={"token": garbage}).json()
    assert refused["status"] == 401 and "tlk_" in refused["message"]
    auth = {"Authorization": "Bearer not-a-key"}
    assert api.get("/auth/request", headers=auth).status_code == 401


def test_concurrent_imports_of_the_same_keys_create_each_once(
        world: World, rt: Runtime) -> None:
    keys = [ImportItem(key=foreign_key(), name=f"k{n}", expires_in_days=30)
            for n in range(300)]
    with ThreadPoolExecutor(3) as pool:
        reports = list(pool.map(lambda _: rt.tokens.import_keys(world.as_admin, keys),
                                range(3)))
    ids = [[r.token_id for r in report.results] for report in reports]
    assert ids[0] == ids[1] == ids[2] and None not in ids[0]
    assert sum(report.count("created") for report in reports) == 300
    with rt.database.reading() as session:
        assert len(session.scalars(select(Token.id).where(Token.kind == "imported")).all()
                   ) == 300
