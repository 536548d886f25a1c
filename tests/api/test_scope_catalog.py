"""A platform's own scope catalog through every surface: the management API (list,
create, update, 422 naming an unknown scope), the OpenAPI document, the console forms
and the CLI (SPEC §11)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from tallykey.actor import Actor
from tallykey.cli import app as cli_app
from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

SHOP = """
[scopes."orders:read"]
description = "Read the shop orders"

[scopes."orders:write"]
description = "Create and change orders"

[scopes."invoices:read"]
description = "Read invoices and credit notes"
"""
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
Shop = tuple[Runtime, TestClient, dict[str, str]]


@pytest.fixture
def catalog_file(tmp_path: Path) -> Path:
    path = tmp_path / "shop-scopes.toml"
    path.write_text(SHOP, encoding="utf-8")
    return path


@pytest.fixture
def shop(database_url: str, tmp_path: Path, catalog_file: Path
         ) -> Iterator[Shop]:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data",
                        scopes_file=catalog_file)
    runtime = Runtime.build(settings, FrozenClock())
    account = runtime.accounts.create_account("shop", "Shop", "eu1")
    runtime.accounts.create_workspace(account.id, "north", "North")
    admin = runtime.accounts.create_user(Actor.operator(account.id), "admin@shop.test",
                                         role="admin", password="shop admin password")
    actor = Actor(account.id, admin.id, "admin", admin.email)
    token = runtime.tokens.issue(actor, TokenDraft(
        name="management", expires_in_days=30, scopes=["tokens:manage"])).value
    with TestClient(create_app(runtime), client=("127.0.0.1", 40000),
                    follow_redirects=False) as client:
        yield runtime, client, {"Authorization": f"Bearer {token}"}
    runtime.close()


def test_the_api_lists_the_platform_catalog(shop: Shop) -> None:
    _, client, admin = shop
    listed = client.get("/api/v1/scopes", headers=admin)
    assert listed.status_code == 200
    assert listed.json() == [
        {"name": "orders:read", "description": "Read the shop orders", "admin_only": False},
        {"name": "orders:write", "description": "Create and change orders",
         "admin_only": False},
        {"name": "invoices:read", "description": "Read invoices and credit notes",
         "admin_only": False},
        {"name": "tokens:manage", "description": "Manage tokens, users and policies through "
         "the management API", "admin_only": True},
        {"name": "audit:read", "description": "Read the account's audit log",
         "admin_only": True},
        {"name": "tokens:renew_self", "description": "Renew the token itself before it "
         "expires (POST /api/v1/tokens/self/renew), within the account's maximum validity",
         "admin_only": True},
    ]
    assert client.get("/api/v1/scopes").status_code == 401


def test_tokens_take_catalog_scopes_and_an_unknown_one_gets_422_naming_it(shop: Shop) -> None:
    _, client, admin = shop
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "orders", "expires_in_days": 7, "kind": "application",
        "scopes": ["orders:read", "invoices:read"]})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == ["invoices:read", "orders:read"]
    refused = client.post("/api/v1/tokens", headers=admin, json={
        "name": "demo", "expires_in_days": 7, "kind": "application",
        "scopes": ["orders:read", "employees:read"]})
    assert refused.status_code == 422
    assert "employees:read" in refused.json()["message"]
    assert refused.json()["unknown"] == ["employees:read"]
    assert "orders:write" in refused.json()["hint"]
    updated = client.patch(f"/api/v1/tokens/{made.json()['id']}", headers=admin,
                           json={"scopes": ["orders:write"]})
    assert updated.status_code == 200 and updated.json()["scopes"] == ["orders:write"]
    bad_update = client.patch(f"/api/v1/tokens/{made.json()['id']}", headers=admin,
                              json={"scopes": ["orders:delete"]})
    assert bad_update.status_code == 422 and "orders:delete" in bad_update.json()["message"]
    assert client.get(f"/api/v1/tokens/{made.json()['id']}",
                      headers=admin).json()["scopes"] == ["orders:write"]


def test_the_openapi_document_describes_the_catalog(shop: Shop) -> None:
    _, client, _ = shop
    schema = client.get("/openapi.json").json()
    create = schema["components"]["schemas"]["TokenCreate"]["properties"]["scopes"]
    assert create["items"]["enum"] == ["orders:read", "orders:write", "invoices:read",
                                       "tokens:manage", "audit:read",
                                       "tokens:renew_self"]
    assert "Create and change orders" in create["description"]
    assert "Read invoices and credit notes" in schema["info"]["description"]
    assert "employees:read" not in json.dumps(schema)


def _csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def sign_in(client: TestClient) -> None:
    page = client.get("/console/login")
    answer = client.post("/console/login", data={
        "csrf_token": _csrf_of(page.text),
        "email": "admin@shop.test", "password": "shop admin password", "next": ""})
    assert answer.status_code == 303, answer.text


def test_console_forms_show_descriptions_and_edit_scopes(shop: Shop) -> None:
    _, client, admin = shop
    sign_in(client)
    new_page = client.get("/console/tokens/new").text
    assert "Read the shop orders" in new_page and "employees:read" not in new_page
    users_page = client.get("/console/users").text
    assert "Create and change orders" in users_page
    assert 'value="tokens:manage"' not in users_page  # admin-only: never granted
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "edit me", "expires_in_days": 7, "kind": "application",
        "scopes": ["orders:read"]}).json()
    detail = client.get(f"/console/tokens/{made['id']}")
    assert "Read the shop orders" in detail.text
    csrf = _csrf_of(detail.text)
    saved = client.post(f"/console/tokens/{made['id']}", data={
        "csrf_token": csrf, "name": "edit me", "description": "", "ip_allowlist": "",
        "target": "", "scopes_shown": "1", "scopes": ["orders:read", "invoices:read"]})
    assert saved.status_code == 303, saved.text
    assert client.get(f"/api/v1/tokens/{made['id']}", headers=admin).json()["scopes"] == [
        "invoices:read", "orders:read"]
    refused = client.post(f"/console/tokens/{made['id']}", data={
        "csrf_token": csrf, "name": "edit me", "scopes_shown": "1", "scopes": []})
    assert refused.status_code == 422 and "at least one scope" in refused.text


def test_the_cli_shows_the_catalog_and_updates_scopes(shop: Shop, catalog_file: Path,
                                                      database_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, client, admin = shop
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_SCOPES_FILE", str(catalog_file))
    runner = CliRunner()
    shown = runner.invoke(cli_app, ["scopes", "--json"])
    assert shown.exit_code == 0, shown.output
    assert {"name": "orders:write", "description": "Create and change orders",
            "admin_only": False} in json.loads(shown.stdout)
    human = runner.invoke(cli_app, ["scopes"])
    assert "Read invoices and credit notes" in human.stdout
    made = client.post("/api/v1/tokens", headers=admin, json={
        "name": "cli", "expires_in_days": 7, "kind": "application",
        "scopes": ["orders:read"]}).json()
    updated = runner.invoke(cli_app, ["tokens", "update", made["prefix"], "--scope",
                                      "orders:write", "--scope", "invoices:read", "--json"])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["scopes"] == ["invoices:read", "orders:write"]
    unknown = runner.invoke(cli_app, ["tokens", "update", made["prefix"], "--scope", "x:y"])
    assert unknown.exit_code != 0 and "x:y" in unknown.stderr


def test_serve_refuses_a_malformed_catalog_with_one_line(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scopes."orders read"]\ndescription = "x"\n', encoding="utf-8")
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALLYKEY_SCOPES_FILE", str(bad))
    result = CliRunner().invoke(cli_app, ["serve", "--port", "1"])
    assert result.exit_code == 78  # EX_CONFIG: a setting with a value that cannot be used
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "TALLYKEY_SCOPES_FILE" in lines[0] and "'orders read'" in lines[0]
