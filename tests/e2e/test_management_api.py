"""The management API end to end: every endpoint, its authentication (session + CSRF, or
an administrator's management token) and tenant isolation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Server, within_one_minute


def client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=10)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def admin(server: Server) -> dict[str, str]:
    return bearer(server.seeded["admin"]["token"])


@pytest.fixture(scope="module")
def other(server: Server) -> dict[str, str]:
    return bearer(server.seeded["other_account"]["admin"]["token"])


def create(server: Server, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("name", "managed")
    body.setdefault("expires_in_days", 30)
    with client(server) as http:
        response = http.post("/api/v1/tokens", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_answers_once_with_the_secret_and_lists_never_show_it(
        server: Server, admin: dict[str, str]) -> None:
    made = create(server, admin, description="from e2e", scopes=["employees:read"],
                  ip_allowlist=["10.0.0.0/8"], workspace="hq")
    assert made["token"].startswith(made["prefix"])
    assert made["status"] == "active" and made["workspace"] == "hq"
    assert made["expires_at"].endswith("+00:00")
    with client(server) as http:
        listed = http.get("/api/v1/tokens", params={"search": "from e2e"}, headers=admin)
        shown = http.get(f"/api/v1/tokens/{made['id']}", headers=admin)
    assert listed.status_code == 200 and shown.status_code == 200
    assert made["token"] not in listed.text and made["token"] not in shown.text
    assert made["id"] in {t["id"] for t in listed.json()["items"]}
    assert "token" not in shown.json()


def test_status_filter_and_pagination(server: Server, admin: dict[str, str]) -> None:
    for number in range(3):
        create(server, admin, name=f"page {number}")
    revoked = create(server, admin, name="to revoke")
    with client(server) as http:
        assert http.delete(f"/api/v1/tokens/{revoked['id']}", headers=admin).status_code == 200
        statuses = {s: {t["id"] for t in http.get("/api/v1/tokens", params={"status": s},
                                                   headers=admin).json()["items"]}
                    for s in ("active", "revoked", "expired")}
        first = http.get("/api/v1/tokens", params={"limit": 2}, headers=admin).json()
        second = http.get("/api/v1/tokens", params={"limit": 2, "after": first["next_cursor"]},
                          headers=admin).json()
        bad = http.get("/api/v1/tokens", params={"status": "sleeping"}, headers=admin)
    assert revoked["id"] in statuses["revoked"] and revoked["id"] not in statuses["active"]
    assert len(first["items"]) == 2 and first["next_cursor"]
    assert {t["id"] for t in first["items"]}.isdisjoint({t["id"] for t in second["items"]})
    assert bad.status_code == 422 and "sleeping" in bad.json()["message"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "x", "expires_in_days": 400}, "maximum validity"),
    ({"name": "x"}, "expiry is required"),
    ({"name": "x", "expires_at": "2020-01-01"}, "in the past"),
    ({"name": "x", "expires_at": "31/12/2030"}, "not an ISO 8601"),
    ({"name": "", "expires_in_days": 7}, "name is required"),
    ({"name": "n" * 10_000, "expires_in_days": 7}, "at most 100"),
    ({"name": "🚀 launch", "expires_in_days": 7}, "emoji"),
    ({"name": "x", "expires_in_days": 7, "ip_allowlist": ["10.0.0.300/8"]}, "not an IP address"),
    ({"name": "x", "expires_in_days": 7, "scopes": ["root"]}, "Unknown scope"),
    ({"name": "x", "expires_in_days": 7, "colour": "blue"}, "colour"),
    ({"name": "x", "expires_in_days": "soon"}, "expires_in_days"),
])
def test_bad_input_gets_a_clear_error_and_creates_nothing(
        server: Server, admin: dict[str, str], body: dict[str, Any], fragment: str) -> None:
    with client(server) as http:
        before = http.get("/api/v1/tokens", params={"limit": 200}, headers=admin).json()
        response = http.post("/api/v1/tokens", json=body, headers=admin)
        after = http.get("/api/v1/tokens", params={"limit": 200}, headers=admin).json()
    assert response.status_code in (400, 404, 422), response.text
    assert fragment.lower() in response.text.lower()
    assert [t["id"] for t in before["items"]] == [t["id"] for t in after["items"]]


def test_malformed_and_huge_bodies(server: Server, admin: dict[str, str]) -> None:
    with client(server) as http:
        broken = http.post("/api/v1/tokens", content=b"{not json", headers={
            **admin, "Content-Type": "application/json"})
        huge = http.post("/api/v1/tokens", content=b"x" * (2 * 1024 * 1024), headers={
            **admin, "Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"] == "validation_failed"
    assert huge.status_code == 413 and huge.json()["error"] == "payload_too_large"


def test_expiry_cannot_be_extended(server: Server, admin: dict[str, str]) -> None:
    made = create(server, admin)
    with client(server) as http:
        response = http.patch(f"/api/v1/tokens/{made['id']}", headers=admin,
                              json={"expires_at": "2099-01-01T00:00:00+00:00"})
        renamed = http.patch(f"/api/v1/tokens/{made['id']}", headers=admin,
                             json={"name": "renamed", "ip_allowlist": ["192.0.2.0/24"]})
    assert response.status_code == 422 and "cannot be extended" in response.json()["message"]
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"


def test_rotate_validates_grace(server: Server, admin: dict[str, str]) -> None:
    made = create(server, admin)
    with client(server) as http:
        too_long = http.post(f"/api/v1/tokens/{made['id']}/rotate", headers=admin,
                             json={"grace_seconds": 604801})
        rotated = http.post(f"/api/v1/tokens/{made['id']}/rotate", headers=admin,
                            json={"grace_seconds": 604800})
    assert too_long.status_code == 422
    assert rotated.status_code == 200 and rotated.json()["token"] != made["token"]


def test_every_management_endpoint_is_isolated_between_tenants(
        server: Server, admin: dict[str, str], other: dict[str, str]) -> None:
    mine = create(server, admin, name="isolated")
    with client(server) as http:
        users = http.get("/api/v1/users", headers=admin).json()
        member_id = next(u["id"] for u in users if u["role"] == "member")
        attempts = [
            http.get(f"/api/v1/tokens/{mine['id']}", headers=other),
            http.patch(f"/api/v1/tokens/{mine['id']}", headers=other, json={"name": "pwned"}),
            http.delete(f"/api/v1/tokens/{mine['id']}", headers=other),
            http.post(f"/api/v1/tokens/{mine['id']}/revoke", headers=other),
            http.post(f"/api/v1/tokens/{mine['id']}/rotate", headers=other, json={}),
            http.patch(f"/api/v1/users/{member_id}", headers=other, json={"active": False}),
        ]
        listed = http.get("/api/v1/tokens", params={"limit": 200}, headers=other).json()
        other_users = http.get("/api/v1/users", headers=other).json()
        audit = http.get("/api/v1/audit", params={"target_id": mine["id"]}, headers=other)
        account = http.get("/api/v1/account", headers=other).json()
        after = http.get(f"/api/v1/tokens/{mine['id']}", headers=admin).json()
        still_member = http.get("/api/v1/users", headers=admin).json()
    for response in attempts:
        assert response.status_code == 404, response.text
    assert mine["id"] not in {t["id"] for t in listed["items"]}
    assert {u["email"] for u in other_users} == {"admin@other.example"}
    assert audit.status_code == 200 and audit.json()["items"] == []
    assert account["slug"] == "other"
    assert after["name"] == "isolated" and after["status"] == "active"
    assert all(u["active"] for u in still_member if u["id"] == member_id)


def test_management_needs_an_admin_personal_token_or_a_session(server: Server) -> None:
    member = bearer(server.seeded["member"]["token"])
    with client(server) as http:
        nothing = http.get("/api/v1/tokens")
        as_member = http.get("/api/v1/tokens", headers=member)
        app = create(server, bearer(server.seeded["admin"]["token"]), kind="application",
                     scopes=["tokens:manage"])
        as_app = http.get("/api/v1/tokens", headers=bearer(app["token"]))
    assert nothing.status_code == 401
    assert as_member.status_code == 403 and as_member.json()["scope"] == "tokens:manage"
    assert as_app.status_code == 403 and "personal token" in as_app.json()["message"]


def test_console_session_with_csrf(server: Server) -> None:
    member = server.seeded["member"]
    with client(server) as http:
        wrong = http.post("/api/v1/session", json={"email": member["email"],
                                                   "password": "not it"})
        assert wrong.status_code == 401
        login = http.post("/api/v1/session", json={"email": member["email"],
                                                   "password": member["password"]})
        assert login.status_code == 200
        assert "httponly" in login.headers["set-cookie"].lower()
        assert "samesite=lax" in login.headers["set-cookie"].lower()
        csrf = login.json()["csrf_token"]
        listed = http.get("/api/v1/tokens")
        no_csrf = http.post("/api/v1/tokens", json={"name": "mine", "expires_in_days": 7})
        bad_csrf = http.post("/api/v1/tokens", json={"name": "mine", "expires_in_days": 7},
                             headers={"X-CSRF-Token": "guess"})
        made = http.post("/api/v1/tokens", json={"name": "mine", "expires_in_days": 7},
                         headers={"X-CSRF-Token": csrf})
        application = http.post("/api/v1/tokens", headers={"X-CSRF-Token": csrf}, json={
            "name": "app", "kind": "application", "scopes": ["employees:read"],
            "expires_in_days": 7})
        audit = http.get("/api/v1/audit")
        own = http.get("/api/v1/tokens").json()["items"]
        logout = http.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        after = http.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert no_csrf.status_code == 403 and bad_csrf.status_code == 403
    assert made.status_code == 201 and made.json()["scopes"] == ["employees:read"]
    assert application.status_code == 403
    assert audit.status_code == 403
    assert {t["owner"] for t in own} == {member["email"]}
    assert logout.status_code == 204 and after.status_code == 401


def test_session_api_logins_are_throttled(server: Server) -> None:
    def burst(attempt: int) -> tuple[list[httpx.Response], httpx.Response]:
        # the throttle counts per minute: a burst inside one, from a network of its own
        transport = httpx.HTTPTransport(local_address=f"127.0.{attempt}.4")
        with httpx.Client(base_url=server.base_url, transport=transport) as http:
            answers = [http.post("/api/v1/session", json={"email": f"guess{n}@demo.example",
                                                          "password": f"guess {n}"})
                       for n in range(11)]  # other addresses: the per-network limit
            right = http.post("/api/v1/session", json={
                "email": "admin@demo.example",
                "password": server.seeded["admin"]["password"]})
        return answers, right

    answers, right = within_one_minute(burst)
    assert [a.status_code for a in answers[:10]] == [401] * 10
    assert answers[10].status_code == 429 and int(answers[10].headers["retry-after"]) > 0
    assert right.status_code == 429  # the throttle holds even for the right password


def test_account_policies_and_users(server: Server, other: dict[str, str]) -> None:
    with client(server) as http:
        lowered = http.patch("/api/v1/account", headers=other,
                             json={"max_validity_days": 30, "reminder_days": [5, 1]})
        too_high = http.patch("/api/v1/account", headers=other,
                              json={"max_validity_days": 366})
        refused = http.post("/api/v1/tokens", headers=other,
                            json={"name": "long", "expires_in_days": 60})
        added = http.post("/api/v1/users", headers=other, json={
            "email": "new.member@other.example", "role": "member"})
        duplicate = http.post("/api/v1/users", headers=other, json={
            "email": "NEW.member@other.example"})
        audit = http.get("/api/v1/audit", params={"action": "account.policy_changed"},
                         headers=other).json()
        http.patch("/api/v1/account", headers=other, json={"max_validity_days": 365})
    assert lowered.status_code == 200 and lowered.json()["reminder_days"] == [5, 1]
    assert too_high.status_code == 422
    assert refused.status_code == 422 and "30 days" in refused.json()["message"]
    assert added.status_code == 201 and added.json()["role"] == "member"
    assert duplicate.status_code == 422
    assert audit["items"] and audit["items"][0]["details"]["after"]["max_validity_days"] == 30


def test_openapi_and_docs_are_served(server: Server) -> None:
    with client(server) as http:
        spec = http.get("/openapi.json").json()
        docs = http.get("/docs")
    for path in ("/api/v1/tokens", "/api/v1/tokens/{token_id}", "/api/v1/tokens/{token_id}/revoke",
                 "/api/v1/tokens/{token_id}/rotate", "/api/v1/audit", "/api/v1/users",
                 "/api/v1/account", "/api/v1/verify", "/core/v3/info", "/core/v3/employees"):
        assert path in spec["paths"], path
    assert docs.status_code == 200
