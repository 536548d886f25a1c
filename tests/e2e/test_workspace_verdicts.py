"""The attack of security review #15 item 2, replayed against a real server: a member
who may read only in `hq` and write only in `field`, with a personal token pinned to no
workspace, must not write in `hq` nor read `field` employees, through `/auth/request`,
`/api/v1/verify` or the demo platform's `/core/v3`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Server

READ, WRITE = "employees:read", "employees:write"


@pytest.fixture(scope="module")
def attack(server: Server) -> dict[str, Any]:
    """Grant the split permissions (admin, over the API), then make the member's own
    token (member, console session over the API)."""
    admin = {"Authorization": f"Bearer {server.seeded['admin']['token']}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        users = http.get("/api/v1/users", headers=admin).json()
        member = next(u for u in users if u["email"] == server.seeded["member"]["email"])
        workspaces = {w["slug"]: w["id"] for w in _workspaces(http, admin)}
        granted = http.patch(f"/api/v1/users/{member['id']}", headers=admin, json={
            "workspaces": {workspaces["hq"]: [READ], workspaces["field"]: [WRITE]}})
        assert granted.status_code == 200, granted.text
        login = http.post("/api/v1/session", json={
            "email": server.seeded["member"]["email"],
            "password": server.seeded["member"]["password"]})
        made = http.post("/api/v1/tokens", json={
            "name": "split member", "expires_in_days": 7, "scopes": [READ, WRITE]},
            headers={"X-CSRF-Token": login.json()["csrf_token"]})
        assert made.status_code == 201, made.text
    return {"token": made.json()["token"], "hq": workspaces["hq"],
            "field": workspaces["field"]}


def _workspaces(http: httpx.Client, admin: dict[str, str]) -> list[dict[str, Any]]:
    """The demo's workspaces, from the employees the admin sees (every workspace)."""
    employees = http.get("/core/v3/employees", headers=admin).json()["employees"]
    slugs = {e["workspace"] for e in employees}
    found = []
    for slug in sorted(slugs):
        verdict = http.post("/api/v1/verify", json={
            "token": admin["Authorization"].split()[1], "workspace": slug}).json()
        found.append({"slug": slug, "id": verdict["workspace"]})
    return found


def auth_request(server: Server, token: str, **params: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if "header" in params:
        headers["Tallykey-Workspace"] = params.pop("header")
    return httpx.get(server.base_url + "/auth/request", params=params, headers=headers)


def test_auth_request_never_flattens(server: Server, attack: dict[str, Any]) -> None:
    token = attack["token"]
    assert auth_request(server, token, scope=WRITE).status_code == 403
    assert auth_request(server, token, scope=READ).status_code == 403
    assert auth_request(server, token, scope=WRITE, header="hq").status_code == 403
    assert auth_request(server, token, scope=WRITE, workspace=attack["hq"]).status_code == 403
    assert auth_request(server, token, scope=READ, header="field").status_code == 403
    write = auth_request(server, token, scope=WRITE, header="field")
    assert write.status_code == 204
    assert write.headers["tallykey-workspace"] == attack["field"]
    assert write.headers["tallykey-scopes"] == WRITE
    read = auth_request(server, token, scope=READ, workspace="hq")
    assert read.status_code == 204 and read.headers["tallykey-scopes"] == READ
    ambiguous = auth_request(server, token, scope=READ, workspace="hq", header="field")
    assert ambiguous.status_code == 400


def test_verify_answers_per_workspace(server: Server, attack: dict[str, Any]) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        flat = http.post("/api/v1/verify", json={"token": attack["token"],
                                                 "required_scopes": [WRITE]}).json()
        field = http.post("/api/v1/verify", json={
            "token": attack["token"], "required_scopes": [WRITE], "workspace": "field"}).json()
        plain = http.post("/api/v1/verify", json={"token": attack["token"]}).json()
    assert not flat["allowed"] and flat["status"] == 403
    assert field["allowed"] and field["workspace"] == attack["field"]
    assert plain["workspaces"] == {attack["hq"]: [READ], attack["field"]: [WRITE]}


def test_the_demo_platform_checks_read_and_write_per_workspace(
        server: Server, attack: dict[str, Any]) -> None:
    headers = {"Authorization": f"Bearer {attack['token']}"}
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        listed = http.get("/core/v3/employees", headers=headers)
        field = http.get("/core/v3/employees", params={"workspace": "field"}, headers=headers)
        in_hq = http.post("/core/v3/employees", headers=headers, json={
            "name": "Intruder", "email": "intruder@example.com", "workspace": "hq"})
        in_field = http.post("/core/v3/employees", headers=headers, json={
            "name": "Allowed Writer", "email": "writer@example.com", "workspace": "field"})
    assert listed.status_code == 200
    assert {e["workspace"] for e in listed.json()["employees"]} == {"hq"}
    assert field.status_code == 403 and field.json()["error"] == "insufficient_scope"
    assert in_hq.status_code == 403 and in_hq.json()["scope"] == WRITE
    assert in_field.status_code == 201 and in_field.json()["workspace"] == "field"
