"""Key controls over the management API, `/api/v1/verify`, `/auth/request` and the
embedded middleware (SPEC §13): rate limits, credits, metadata and external id; bad
input gets a specific 4xx and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tallykey.auth.middleware import TallykeyMiddleware
from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "127.0.0.1"
LIMITS = [{"name": "default", "limit": 3, "per_seconds": 3600, "shared": None}]


@pytest.fixture
def api(rt: Runtime, world: World) -> Iterator[tuple[TestClient, dict[str, str]]]:
    token = rt.tokens.issue(world.as_admin, TokenDraft(
        name="manage", expires_in_days=30, scopes=["tokens:manage"])).value
    with TestClient(create_app(rt), client=(IP, 40000), follow_redirects=False) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def create(client: TestClient, admin: dict[str, str], **fields: Any) -> dict[str, Any]:
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "controlled", "expires_in_days": 30, "scopes": ["employees:read"], **fields})
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def test_create_show_patch_and_search_key_controls(api) -> None:  # type: ignore[no-untyped-def]
    client, admin = api
    made = create(client, admin, rate_limits=LIMITS, credits={
        "remaining": 100, "refill": {"amount": 100, "interval": "monthly"}},
        metadata={"plan": "pro", "seats": 3}, external_id="cust_42")
    assert made["rate_limits"] == LIMITS
    assert made["credits"]["remaining"] == 100
    assert made["credits"]["refill"] == {"amount": 100, "interval": "monthly"}
    assert made["credits"]["next_refill_at"].endswith("T00:00:00+00:00")
    assert made["metadata"] == {"plan": "pro", "seats": 3}
    assert made["external_id"] == "cust_42"
    create(client, admin, external_id="cust_7")
    found = client.get("/api/v1/tokens", headers=admin, params={"external_id": "cust_42"})
    assert [t["id"] for t in found.json()["items"]] == [made["id"]]
    patched = client.patch(f"/api/v1/tokens/{made['id']}", headers=admin, json={
        "rate_limits": [{"name": "burst", "limit": 10, "per_seconds": 1,
                         "shared": "external_id"}],
        "credits": None, "metadata": {}, "external_id": ""})
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["rate_limits"] == [{"name": "burst", "limit": 10, "per_seconds": 1,
                                    "shared": "external_id"}]
    assert body["credits"] is None and body["metadata"] is None and body["external_id"] is None
    untouched = client.patch(f"/api/v1/tokens/{made['id']}", headers=admin,
                             json={"name": "renamed"}).json()
    assert untouched["rate_limits"] == body["rate_limits"]


@pytest.mark.parametrize(("fields", "fragment"), [
    ({"rate_limits": [{"name": "default", "limit": -1, "per_seconds": 60}]},
     "limit must be a whole number from 1"),
    ({"rate_limits": [{"name": "default", "limit": 10, "per_seconds": 0}]},
     "per_seconds must be a whole number from 1"),
    ({"rate_limits": [{"name": "a", "limit": 1, "per_seconds": 1},
                      {"name": "a", "limit": 2, "per_seconds": 1}]}, "Two rate limits"),
    ({"credits": {"remaining": -5}}, "credits.remaining"),
    ({"metadata": {"blob": "x" * 5000}}, "at most 4096 are allowed"),
    ({"metadata": ["not", "an", "object"]}, "metadata"),
    ({"metadata": "text"}, "metadata"),
    ({"external_id": "x" * 256}, "external_id"),
])
def test_bad_key_controls_get_a_422_naming_the_field_and_change_nothing(
        api: tuple[TestClient, dict[str, str]], fields: dict[str, Any], fragment: str
) -> None:
    client, admin = api
    made = create(client, admin, rate_limits=LIMITS, metadata={"keep": True})
    def controls() -> list[tuple[Any, ...]]:  # (last use is written in the background)
        return [(t["id"], t["name"], t["rate_limits"], t["credits"], t["metadata"],
                 t["external_id"]) for t in client.get("/api/v1/tokens", headers=admin
                                                       ).json()["items"]]
    before = controls()
    refused = client.post("/api/v1/tokens", headers=admin, json={
        "name": "bad", "expires_in_days": 30, "scopes": ["employees:read"], **fields})
    assert refused.status_code == 422 and fragment in refused.text, refused.text
    patched = client.patch(f"/api/v1/tokens/{made['id']}", headers=admin, json=fields)
    assert patched.status_code == 422 and fragment in patched.text, patched.text
    assert controls() == before


def test_verify_reports_limits_credits_metadata_and_external_id(api) -> None:  # type: ignore[no-untyped-def]
    client, admin = api
    made = create(client, admin, rate_limits=LIMITS, credits={"remaining": 10},
                  metadata={"plan": "pro"}, external_id="cust_42")
    answer = client.post("/api/v1/verify", json={"token": made["token"], "cost": 4}).json()
    assert answer["allowed"] and answer["credits_remaining"] == 6
    assert answer["metadata"] == {"plan": "pro"} and answer["external_id"] == "cust_42"
    assert answer["rate_limits"] == [{"name": "default", "limit": 3, "per_seconds": 3600,
                                      "remaining": 2, "reset": answer["rate_limits"][0]["reset"]}]
    assert 0 < answer["rate_limits"][0]["reset"] <= 3600
    client.post("/api/v1/verify", json={"token": made["token"]})
    client.post("/api/v1/verify", json={"token": made["token"]})
    limited = client.post("/api/v1/verify", json={"token": made["token"]}).json()
    assert limited["status"] == 429 and limited["error"] == "rate_limited"
    assert limited["retry_after"] > 0
    refused = client.post("/api/v1/verify", json={"token": made["token"], "cost": 1001})
    assert refused.status_code == 422


def test_auth_request_costs_limits_and_external_id_headers(api) -> None:  # type: ignore[no-untyped-def]
    client, admin = api
    made = create(client, admin, rate_limits=LIMITS, credits={"remaining": 5},
                  external_id="cust_42")
    bearer = {"Authorization": f"Bearer {made['token']}"}
    passed = client.get("/auth/request", headers={**bearer, "Tallykey-Cost": "2"})
    assert passed.status_code == 204, passed.text
    assert passed.headers["Tallykey-External-Id"] == "cust_42"
    assert passed.headers["RateLimit-Limit"] == "3"
    assert passed.headers["RateLimit-Remaining"] == "2"
    assert 0 < int(passed.headers["RateLimit-Reset"]) <= 3600
    for bad in ("-1", "1001", "two", "1.5", ""):
        refused = client.get("/auth/request", headers={**bearer, "Tallykey-Cost": bad})
        assert refused.status_code == 400, bad
        assert refused.json()["reason"] == "invalid_cost"
        assert "Tallykey-Cost" in refused.json()["message"]
    exhausted = client.get("/auth/request", headers={**bearer, "Tallykey-Cost": "4"})
    assert exhausted.status_code == 429 and exhausted.json()["error"] == "usage_exhausted"
    assert client.get("/auth/request", headers={**bearer, "Tallykey-Cost": "3"}
                      ).status_code == 204  # the refused request spent nothing
    limited = client.get("/auth/request", headers=bearer)
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"] == "rate_limited"
    assert limited.json()["reason"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


def test_the_embedded_middleware_enforces_limits_and_carries_the_verdict(
        rt: Runtime, world: World) -> None:
    token = rt.tokens.issue(world.as_admin, TokenDraft(
        name="embedded", expires_in_days=30, rate_limits=[
            {"name": "default", "limit": 2, "per_seconds": 3600}],
        metadata={"tier": "gold"}, external_id="cust_9")).value
    verifier = Verifier(settings=rt.settings, database=rt.database, background=False)

    async def whoami(request: Request) -> JSONResponse:
        verdict = request.state.tallykey
        return JSONResponse({"metadata": dict(verdict.metadata),
                             "external_id": verdict.external_id,
                             "remaining": verdict.rate_limits[0].remaining})
    app = TallykeyMiddleware(Starlette(routes=[Route("/", whoami)]), verifier=verifier)
    try:
        with TestClient(app) as client:
            first = client.get("/", headers={"Authorization": f"Bearer {token}"})
            assert first.status_code == 200
            assert first.json() == {"metadata": {"tier": "gold"}, "external_id": "cust_9",
                                    "remaining": 1}
            assert first.headers["RateLimit-Remaining"] == "1"
            assert client.get("/", headers={"Authorization": f"Bearer {token}"}
                              ).status_code == 200
            third = client.get("/", headers={"Authorization": f"Bearer {token}"})
            assert third.status_code == 429 and third.json()["error"] == "rate_limited"
            assert "Retry-After" in third.headers
    finally:
        verifier.close()
