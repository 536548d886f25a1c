"""The operator API (SPEC §11): the platform provisions tenants over HTTP with its own
credential, audited under that credential; account tokens never open it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tallykey.auth.verifier import Verifier
from tallykey.cli import app as cli_app
from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.schema.tables import OperatorToken
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "127.0.0.1"


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture
def cli_token(rt: Runtime, cli_env: None) -> str:
    """An operator token (on the tests' frozen clock; the CLI's is tested below)."""
    return rt.operators.issue("back office", 30).value


@pytest.fixture
def client(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), client=(IP, 40000), follow_redirects=False) as http:
        yield http


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_token_is_printed_once_and_stored_hashed(rt: Runtime, cli_env: None) -> None:
    made = CliRunner().invoke(cli_app, ["operator-tokens", "create", "--name", "back office",
                                        "--days", "30", "--json"])
    assert made.exit_code == 0, made.output
    cli_token = json.loads(made.stdout)["token"]
    assert cli_token.startswith("tlk_operator_")
    for days in ("0", "400"):
        refused = CliRunner().invoke(cli_app, ["operator-tokens", "create", "--name", "x",
                                               "--days", days])
        assert refused.exit_code != 0 and "1 to 365 days" in refused.stderr
    with rt.database.reading() as session:
        stored = session.scalars(select(OperatorToken)).one()
    assert cli_token not in repr(vars(stored)) and len(stored.secret_hash) == 64
    listed = CliRunner().invoke(cli_app, ["operator-tokens", "list", "--json"])
    assert listed.exit_code == 0 and cli_token not in listed.stdout
    assert json.loads(listed.stdout)[0]["name"] == "back office"


def test_provision_a_tenant_its_admin_and_workspaces(rt: Runtime, client: TestClient,
                                                     cli_token: str) -> None:
    op = bearer(cli_token)
    made = client.post("/api/v1/operator/accounts", headers=op, json={
        "slug": "shop-42", "name": "Shop 42", "max_validity_days": 90})
    assert made.status_code == 201, made.text
    assert made.json()["region"] == "eu1" and made.json()["max_validity_days"] == 90
    assert made.json()["active"] is True
    north = client.post("/api/v1/operator/accounts/shop-42/workspaces", headers=op,
                        json={"slug": "north", "name": "North"})
    south = client.post("/api/v1/operator/accounts/shop-42/workspaces", headers=op,
                        json={"slug": "south", "name": "South"})
    assert north.status_code == 201 and south.status_code == 201
    admin = client.post("/api/v1/operator/accounts/shop-42/users", headers=op, json={
        "email": "owner@shop42.test", "password": "owner password 42"})
    assert admin.status_code == 201 and admin.json()["role"] == "admin"
    member = client.post("/api/v1/operator/accounts/shop-42/users", headers=op, json={
        "email": "clerk@shop42.test", "role": "member",
        "workspaces": {"north": ["employees:read"], "south": ["employees:write"]}})
    assert member.status_code == 201
    assert member.json()["workspaces"] == {north.json()["id"]: ["employees:read"],
                                           south.json()["id"]: ["employees:write"]}
    auditor = client.post("/api/v1/operator/accounts/shop-42/users", headers=op, json={
        "email": "books@shop42.test", "role": "auditor"})
    assert auditor.status_code == 201 and auditor.json()["role"] == "auditor"
    # the new admin signs in and manages their account
    login = client.post("/api/v1/session", json={"email": "owner@shop42.test",
                                                  "password": "owner password 42"})
    assert login.status_code == 200
    listed = client.get("/api/v1/workspaces",
                        headers={"X-CSRF-Token": login.json()["csrf_token"]}).json()
    assert [w["slug"] for w in listed] == ["north", "south"]
    named = client.post("/api/v1/operator/accounts/shop-42/workspaces", headers=op,
                        json={"name": "Zürich Store"})
    assert named.status_code == 201 and named.json()["slug"] == "zurich-store"
    for body, status in [({"slug": "shop-42"}, 422), ({"slug": "Bad Slug"}, 422),
                         ({"slug": "x", "max_validity_days": 999}, 422),
                         ({"slug": "y", "region": "us1"}, 422)]:
        assert client.post("/api/v1/operator/accounts", headers=op, json=body
                           ).status_code == status, body
    assert client.post("/api/v1/operator/accounts/nope/users", headers=op, json={
        "email": "x@y.test"}).status_code == 404
    # audited in the tenant, under the operator token
    account_id = made.json()["id"]
    entries = client.get("/api/v1/audit", headers={
        "X-CSRF-Token": login.json()["csrf_token"]}).json()["items"]
    actions = {e["action"]: e for e in entries}
    assert {"account.created", "account.policy_changed", "workspace.created",
            "user.created"} <= set(actions)
    created = actions["account.created"]
    assert created["actor_type"] == "operator" and created["target_id"] == account_id
    assert created["actor"].startswith("operator token back office (tlk_operator_")


def test_list_pages_by_slug(client: TestClient, cli_token: str) -> None:
    op = bearer(cli_token)
    for slug in ("a-one", "b-two", "c-three"):
        assert client.post("/api/v1/operator/accounts", headers=op,
                           json={"slug": slug}).status_code == 201
    first = client.get("/api/v1/operator/accounts", params={"limit": 2}, headers=op).json()
    second = client.get("/api/v1/operator/accounts", headers=op,
                        params={"limit": 2, "after": first["next_cursor"]}).json()
    assert [a["slug"] for a in first["items"]] == ["a-one", "b-two"]
    assert [a["slug"] for a in second["items"]] == ["c-three"]
    assert second["next_cursor"] is None


def test_suspending_an_account_stops_its_tokens_and_sign_ins(
        rt: Runtime, world: World, client: TestClient, cli_token: str) -> None:
    op = bearer(cli_token)
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        token = rt.tokens.issue(world.as_admin, TokenDraft(
            name="acme", expires_in_days=30, scopes=["employees:read"])).value
        other = rt.tokens.issue(world.as_other_admin, TokenDraft(
            name="globex", expires_in_days=30, scopes=["employees:read"])).value
        assert verifier.verify(f"Bearer {token}", IP).allowed
        suspended = client.patch("/api/v1/operator/accounts/acme", headers=op,
                                 json={"active": False, "ip_allowlist": []})
        assert suspended.status_code == 200, suspended.text
        assert suspended.json()["active"] is False
        assert suspended.json()["propagation"]["complete"] is True
        verifier.sync()
        refused = verifier.verify(f"Bearer {token}", IP)
        assert refused.status == 401 and "suspended" in refused.message
        assert verifier.verify(f"Bearer {other}", IP).allowed
        login = client.post("/api/v1/session", json={"email": "admin@acme.test",
                                                      "password": "correct horse battery"})
        assert login.status_code == 401
        resumed = client.patch("/api/v1/operator/accounts/acme", headers=op,
                               json={"active": True})
        assert resumed.status_code == 200
        verifier.sync()
        assert verifier.verify(f"Bearer {token}", IP).allowed
    finally:
        verifier.close()


def test_only_operator_tokens_open_the_operator_api(
        rt: Runtime, world: World, client: TestClient, cli_token: str,
        clock: FrozenClock) -> None:
    tenant_admin = rt.tokens.issue(world.as_admin, TokenDraft(
        name="manage", expires_in_days=30, scopes=["tokens:manage"])).value
    for headers, fragment in [({}, "needs an operator token"),
                              (bearer(tenant_admin), "not an operator token"),
                              ({"Authorization": "Basic " + cli_token}, "Bearer"),
                              (bearer(cli_token[:-1] + ("x" if cli_token[-1] != "x"
                                                        else "y")), "checksum")]:
        answer = client.get("/api/v1/operator/accounts", headers=headers)
        assert answer.status_code == 401 and fragment in answer.json()["message"], headers
        assert cli_token not in answer.text
    assert client.get("/api/v1/operator/accounts", headers=bearer(cli_token)
                      ).status_code == 200
    clock.advance(timedelta(days=31))
    expired = client.get("/api/v1/operator/accounts", headers=bearer(cli_token))
    assert expired.status_code == 401 and "expired" in expired.json()["message"]
    clock.advance(timedelta(days=-31))
    assert CliRunner().invoke(cli_app, ["operator-tokens", "revoke", cli_token[:25]]
                              ).exit_code == 0
    revoked = client.get("/api/v1/operator/accounts", headers=bearer(cli_token))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["message"]
    # 6 failures so far; after the 10th in a minute one address is refused with 429
    statuses = [client.get("/api/v1/operator/accounts", headers=bearer(tenant_admin)
                           ).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 401, 429]


def test_the_operator_api_has_its_own_openapi_section(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    tags = {t["name"]: t for t in schema.get("tags", [])}
    assert "operator token" in tags["operator"]["description"]
    operator_paths = [p for p in schema["paths"] if p.startswith("/api/v1/operator/")]
    assert {"/api/v1/operator/accounts", "/api/v1/operator/accounts/{slug}",
            "/api/v1/operator/accounts/{slug}/users",
            "/api/v1/operator/accounts/{slug}/workspaces"} <= set(operator_paths)
    for path in operator_paths:
        for operation in schema["paths"][path].values():
            assert operation["tags"] == ["operator"]


def test_the_operator_token_is_read_as_every_credential_is(client: TestClient,
                                                           cli_token: str) -> None:
    """In the URL or in two Authorization headers the operator token is refused like any
    credential (the reader every surface shares), and it appears in no answer."""
    in_url = client.get(f"/api/v1/operator/accounts?access_token={cli_token}",
                        headers=bearer(cli_token))
    assert in_url.status_code == 400 and "never in a URL" in in_url.json()["message"]
    twice = client.get("/api/v1/operator/accounts",
                       headers=[("Authorization", f"Bearer {cli_token}")] * 2)
    assert twice.status_code == 400 and "More than one" in twice.json()["message"]
    assert cli_token not in in_url.text + twice.text
    assert client.get("/api/v1/operator/accounts", headers=bearer(cli_token)
                      ).status_code == 200
