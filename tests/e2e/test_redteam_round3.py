"""Variants of issue 25's attacks that the first fixes missed, replayed against a real
server (SQLite and PostgreSQL): each test fails on the code before its fix."""

from __future__ import annotations

import httpx

from .conftest import Server, manage, new_token
from .test_token_attacks import LONG_WINDOW, member_session, spend


def refused_as(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason, response.text
    assert "tlk_" not in response.text


# --- 6. a rotated-out secret mints no successor of its own ----------------------------


def test_a_rotated_out_secret_cannot_mint_a_token_or_a_user(server: Server) -> None:
    made = new_token(server, name="leaked admin", scopes=["tokens:manage"])
    leaked = made["token"]
    rotated = manage(server, "POST", f"/api/v1/tokens/{made['id']}/rotate",
                     json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    current = rotated.json()["token"]
    users_before = len(manage(server, "GET", "/api/v1/users").json())
    # the attack: the old secret makes itself a brand-new token (or an admin user) that
    # outlives the rotation meant to cut it off
    refused_as(manage(server, "POST", "/api/v1/tokens", token=leaked, json={
        "name": "persistence", "expires_in_days": 30, "scopes": ["tokens:manage"]}),
        403, "retiring_secret")
    refused_as(manage(server, "POST", "/api/v1/users", token=leaked, json={
        "email": "persistence@evil.test", "name": "Evil", "role": "admin"}),
        403, "retiring_secret")
    other = new_token(server, name="someone else's")
    refused_as(manage(server, "POST", f"/api/v1/tokens/{other['id']}/rotate", token=leaked,
                      json={"grace_seconds": 0}), 403, "retiring_secret")
    refused_as(manage(server, "PATCH", "/api/v1/account", token=leaked,
                      json={"max_validity_days": 365}), 403, "retiring_secret")
    listed = manage(server, "GET", "/api/v1/tokens?limit=200").json()["items"]
    assert "persistence" not in {t["name"] for t in listed}
    assert len(manage(server, "GET", "/api/v1/users").json()) == users_before
    # it may still read (it verifies during the grace), and the current secret acts
    assert manage(server, "GET", "/api/v1/tokens", token=leaked).status_code == 200
    assert manage(server, "POST", "/api/v1/tokens", token=current, json={
        "name": "fine", "expires_in_days": 1}).status_code == 201



def test_a_rotated_out_secret_cannot_replay_its_rotation_for_the_new_secret(
        server: Server) -> None:
    """An automation rotates its token with its own secret and an Idempotency-Key; the
    stored answer (the new secret) is sealed under that secret, so whoever else holds
    the old secret could replay the key and read the new one."""
    made = new_token(server, name="self-rotating", scopes=["tokens:manage"])
    leaked, url = made["token"], f"/api/v1/tokens/{made['id']}"
    keyed = {"Authorization": f"Bearer {leaked}", "Idempotency-Key": "nightly-rotation"}
    for path, body in (("rotate", {"grace_seconds": 3600}),
                       ("renew", {"expires_in_days": 30, "grace_seconds": 3600})):
        first = httpx.post(f"{server.base_url}{url}/{path}", headers=keyed, json=body,
                           timeout=15)
        if path == "renew":  # the rotation made `leaked` a retiring secret already
            refused_as(first, 403, "retiring_secret")
            continue
        assert first.status_code == 200, first.text
        fresh = first.json()["token"]
        replayed = httpx.post(f"{server.base_url}{url}/{path}", headers=keyed, json=body,
                              timeout=15)
        refused_as(replayed, 403, "retiring_secret")
        assert fresh not in replayed.text
        assert "Idempotent-Replayed" not in replayed.headers

# --- 10. an admin's limit counted per external id binds the external id too -----------


def test_a_member_cannot_restart_an_admin_limit_by_changing_the_external_id(
        server: Server) -> None:
    with member_session(server) as (member, csrf):
        made = member.post("/api/v1/tokens", headers=csrf, json={
            "name": "member by customer", "expires_in_days": 7, "external_id": "cust-a"})
        assert made.status_code == 201, made.text
        token, url = made.json()["token"], f"/api/v1/tokens/{made.json()['id']}"
        limited = manage(server, "PATCH", url, json={"rate_limits": [
            {"name": "daily", "limit": 2, "per_seconds": LONG_WINDOW,
             "shared": "external_id"}]})
        assert limited.status_code == 200, limited.text
        assert [spend(server, token) for _ in range(3)] == [204, 204, 429]
        # the attack: a new external id is a new counter, so a fresh window (2 more each)
        for external_id in ("cust-b", ""):
            refused = member.patch(url, headers=csrf, json={"external_id": external_id})
            refused_as(refused, 403, "admin_limit")
            assert refused.json()["field"] == "external_id"
            assert spend(server, token) == 429
        assert manage(server, "GET", url).json()["external_id"] == "cust-a"
        # the same value, and other changes, are still the member's to make
        assert member.patch(url, headers=csrf, json={
            "external_id": "cust-a", "name": "renamed"}).status_code == 200
        # the administrator may change it
        assert manage(server, "PATCH", url, json={"external_id": "cust-b"}).status_code == 200


# --- 10. an admin's suspension of a token its member suspended first -------------------


def test_an_admin_suspension_binds_even_when_the_member_suspended_first(
        server: Server) -> None:
    with member_session(server) as (member, csrf):
        made = member.post("/api/v1/tokens", headers=csrf,
                           json={"name": "member suspends first", "expires_in_days": 7})
        assert made.status_code == 201, made.text
        token, url = made.json()["token"], f"/api/v1/tokens/{made.json()['id']}"
        assert member.post(f"{url}/suspend", headers=csrf).status_code == 200
        # the administrator suspends it too (was 409 "already suspended", leaving the
        # member's own suspension, which the member then lifted)
        taken = manage(server, "POST", f"{url}/suspend")
        assert taken.status_code == 200, taken.text
        refused_as(member.post(f"{url}/resume", headers=csrf), 403, "admin_suspension")
        assert spend(server, token) == 401
        # a second suspension by the administrator is still a conflict
        assert manage(server, "POST", f"{url}/suspend").status_code == 409
        assert manage(server, "POST", f"{url}/resume").status_code == 200
        assert spend(server, token) == 204
