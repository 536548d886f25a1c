"""Workspaces everywhere (SPEC §11): the management API, the console page and the CLI;
per-user per-workspace grants; archiving stops the workspace's tokens."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from tallykey.auth.verifier import Verifier
from tallykey.cli import app as cli_app
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
IP = "127.0.0.1"
Api = tuple[TestClient, dict[str, str]]


@pytest.fixture
def api(rt: Runtime, world: World) -> Iterator[Api]:
    token = rt.tokens.issue(world.as_admin, TokenDraft(
        name="manage", expires_in_days=30, scopes=["tokens:manage"])).value
    with TestClient(create_app(rt), client=(IP, 40000), follow_redirects=False) as client:
        yield client, {"Authorization": f"Bearer {token}"}


def test_create_list_rename_over_the_api(api: Api, world: World) -> None:
    client, admin = api
    made = client.post("/api/v1/workspaces", headers=admin,
                       json={"slug": "north", "name": "North Shop", "timezone": "Europe/Oslo"})
    assert made.status_code == 201, made.text
    north = made.json()
    assert north["slug"] == "north" and north["archived_at"] is None
    listed = client.get("/api/v1/workspaces", headers=admin).json()
    assert [w["slug"] for w in listed] == ["north", "ops", "sales"]
    renamed = client.patch(f"/api/v1/workspaces/{north['id']}", headers=admin,
                           json={"name": "North Store"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "North Store"
    by_slug = client.get("/api/v1/workspaces/north", headers=admin)
    assert by_slug.json()["id"] == north["id"]
    for body, status, fragment in [
        ({"slug": "North!", "name": "x"}, 422, "lowercase letters"),
        ({"slug": "north", "name": "again"}, 409, "exists already"),
        ({"slug": "tz", "name": "x", "timezone": "Mars/Base"}, 422, "Mars/Base"),
        ({"slug": "x", "name": ""}, 422, "name"),
    ]:
        refused = client.post("/api/v1/workspaces", headers=admin, json=body)
        assert refused.status_code == status and fragment in refused.text, refused.text
    assert len(client.get("/api/v1/workspaces", headers=admin).json()) == 3


def test_grants_per_user_per_workspace_over_the_api(api: Api, world: World) -> None:
    client, admin = api
    granted = client.patch(f"/api/v1/users/{world.member.id}", headers=admin, json={
        "workspaces": {"sales": ["employees:read"], world.ops.id: ["employees:write"]}})
    assert granted.status_code == 200, granted.text
    assert granted.json()["workspaces"] == {world.sales.id: ["employees:read"],
                                            world.ops.id: ["employees:write"]}
    unknown = client.patch(f"/api/v1/users/{world.member.id}", headers=admin, json={
        "workspaces": {"sales": ["employees:fly"]}})
    assert unknown.status_code == 422 and "employees:fly" in unknown.json()["message"]
    admin_only = client.patch(f"/api/v1/users/{world.member.id}", headers=admin, json={
        "workspaces": {"sales": ["tokens:manage"]}})
    assert admin_only.status_code == 422 and "tokens:manage" in admin_only.json()["message"]


def test_members_cannot_manage_workspaces(rt: Runtime, world: World, api: Api) -> None:
    client, _ = api
    login = client.post("/api/v1/session", json={"email": "member@acme.test",
                                                  "password": "member password 1"})
    csrf = {"X-CSRF-Token": login.json()["csrf_token"]}
    mine = client.get("/api/v1/workspaces", headers=csrf).json()
    assert [w["slug"] for w in mine] == ["sales"]  # only where they hold permissions
    assert client.get(f"/api/v1/workspaces/{world.ops.id}", headers=csrf).status_code == 404
    assert client.post("/api/v1/workspaces", headers=csrf,
                       json={"slug": "mine", "name": "Mine"}).status_code == 403
    assert client.delete("/api/v1/workspaces/sales", headers=csrf).status_code == 403
    assert rt.accounts.get_workspace(world.as_admin, "sales").archived_at is None


def test_archiving_stops_the_workspace_tokens_and_its_grants(rt: Runtime, world: World,
                                                            api: Api) -> None:
    client, admin = api
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        pinned = rt.tokens.issue(world.as_admin, TokenDraft(
            name="ops app", kind="application", expires_in_days=30,
            scopes=["employees:read"], workspace="ops")).value
        rt.accounts.update_user(world.as_admin, world.member.id,
                                grants={"sales": ["employees:read"], "ops": ["employees:read"]})
        member = rt.tokens.issue(world.as_member, TokenDraft(
            name="member", expires_in_days=30, scopes=["employees:read"])).value
        assert verifier.verify(f"Bearer {pinned}", IP, ["employees:read"]).allowed
        assert verifier.verify(f"Bearer {member}", IP, ["employees:read"],
                               workspace="ops").allowed
        archived = client.delete("/api/v1/workspaces/ops", headers=admin)
        assert archived.status_code == 200, archived.text
        body = archived.json()
        assert body["tokens_stopped"] == 1 and body["workspace"]["archived_at"]
        assert body["propagation"]["complete"] is True
        verifier.sync()
        stopped = verifier.verify(f"Bearer {pinned}", IP)
        assert stopped.status == 401 and "archived" in stopped.message
        assert verifier.verify(f"Bearer {member}", IP, ["employees:read"],
                               workspace="ops").status == 403
        assert verifier.verify(f"Bearer {member}", IP, ["employees:read"],
                               workspace="sales").allowed
        again = client.delete("/api/v1/workspaces/ops", headers=admin)
        assert again.status_code == 409
        assert [w["slug"] for w in client.get("/api/v1/workspaces", headers=admin).json()
                ] == ["sales"]
        assert "ops" in {w["slug"] for w in client.get(
            "/api/v1/workspaces", params={"archived": "true"}, headers=admin).json()}
        new_token = client.post("/api/v1/tokens", headers=admin, json={
            "name": "in archived", "expires_in_days": 7, "workspace": "ops"})
        assert new_token.status_code == 404
        regrant = client.patch(f"/api/v1/users/{world.member.id}", headers=admin,
                               json={"workspaces": {"ops": ["employees:read"]}})
        assert regrant.status_code == 404
        rename = client.patch("/api/v1/workspaces/ops", headers=admin, json={"name": "x"})
        assert rename.status_code == 409
        reused = client.post("/api/v1/workspaces", headers=admin,
                             json={"slug": "ops", "name": "Ops again"})
        assert reused.status_code == 409 and "archived workspaces keep" in reused.text
        audit = client.get("/api/v1/audit", params={"action": "workspace.archived"},
                           headers=admin).json()["items"]
        assert audit[0]["details"]["tokens_stopped"] == 1
    finally:
        verifier.close()


def _csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def _sign_in(client: TestClient, email: str, password: str) -> str:
    page = client.get("/console/login")
    client.post("/console/login", data={"csrf_token": _csrf_of(page.text),
                                        "email": email, "password": password, "next": ""})
    return _csrf_of(client.get("/console/tokens").text)


def test_the_console_page_creates_renames_and_archives_with_a_count(
        rt: Runtime, world: World, api: Api) -> None:
    client, _ = api
    csrf = _sign_in(client, "admin@acme.test", "correct horse battery")
    rt.tokens.issue(world.as_admin, TokenDraft(
        name="sales app", kind="application", expires_in_days=30,
        scopes=["employees:read"], workspace="sales"))
    page = client.get("/console/workspaces")
    assert page.status_code == 200 and "Operations" in page.text
    made = client.post("/console/workspaces", data={"csrf_token": csrf, "name": "Berlin",
                                                    "slug": "berlin", "timezone": "UTC"})
    assert made.status_code == 303
    bad = client.post("/console/workspaces", data={"csrf_token": csrf, "name": "Bad",
                                                   "slug": "Bad Slug"})
    assert bad.status_code == 422 and "lowercase letters" in bad.text
    berlin = rt.accounts.get_workspace(world.as_admin, "berlin")
    renamed = client.post(f"/console/workspaces/{berlin.id}",
                          data={"csrf_token": csrf, "name": "Berlin Office"})
    assert renamed.status_code == 303
    assert "Berlin Office" in client.get("/console/workspaces").text
    confirm = client.get(f"/console/workspaces/{world.sales.id}/archive")
    assert "1 token will stop working immediately" in confirm.text
    no_csrf = client.post(f"/console/workspaces/{world.sales.id}/archive", data={})
    assert no_csrf.status_code == 403
    assert rt.accounts.get_workspace(world.as_admin, "sales").archived_at is None
    done = client.post(f"/console/workspaces/{world.sales.id}/archive",
                       data={"csrf_token": csrf})
    assert done.status_code == 200
    assert "Sales was archived: 1 token stopped on 1 of 1 nodes" in done.text
    assert rt.accounts.get_workspace(world.as_admin, "sales").archived_at is not None


def test_members_do_not_get_the_workspaces_page(world: World, api: Api) -> None:
    client, _ = api
    _sign_in(client, "member@acme.test", "member password 1")
    assert client.get("/console/workspaces").status_code == 403


def test_the_workspace_label_renames_the_word(database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data",
                        workspace_label="Project")
    runtime = Runtime.build(settings)
    try:
        World(runtime)
        with TestClient(create_app(runtime), client=(IP, 40000),
                        follow_redirects=False) as client:
            _sign_in(client, "admin@acme.test", "correct horse battery")
            page = client.get("/console/workspaces").text
            assert "<h1>Projects</h1>" in page and ">Projects</a>" in page
            assert "Create a project" in page
            new = client.get("/console/tokens/new").text
            assert '<label for="workspace">Project</label>' in new
            assert "Workspace" not in client.get("/console/users").text
    finally:
        runtime.close()


def test_the_cli_manages_workspaces(rt: Runtime, world: World, database_url: str,
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli_app, list(args))

    made = run("workspaces", "create", "-a", "acme", "--slug", "lab", "--name", "Lab",
               "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["slug"] == "lab"
    assert run("workspaces", "create", "-a", "acme", "--slug", "lab", "--name", "L"
               ).exit_code != 0
    renamed = run("workspaces", "rename", "-a", "acme", "lab", "--name", "Laboratory")
    assert renamed.exit_code == 0 and "Laboratory" in renamed.stdout
    rt.tokens.issue(world.as_admin, TokenDraft(
        name="lab app", kind="application", expires_in_days=30, scopes=["employees:read"],
        workspace="lab"))
    archived = run("workspaces", "archive", "-a", "acme", "lab", "--json")
    assert archived.exit_code == 0, archived.output
    assert json.loads(archived.stdout)["tokens_stopped"] == 1
    listed = json.loads(run("workspaces", "list", "-a", "acme", "--json").stdout)
    assert [w["slug"] for w in listed] == ["ops", "sales"]
    everything = json.loads(run("workspaces", "list", "-a", "acme", "--archived",
                                "--json").stdout)
    assert "lab" in {w["slug"] for w in everything}
    unknown = run("workspaces", "archive", "-a", "acme", "nope")
    assert unknown.exit_code == 3 and "No such workspace" in unknown.stderr


def test_the_console_edits_grants_per_workspace(rt: Runtime, world: World, api: Api) -> None:
    client, _ = api
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        token = rt.tokens.issue(world.as_member, TokenDraft(
            name="member", expires_in_days=30, scopes=["employees:read"])).value
        csrf = _sign_in(client, "admin@acme.test", "correct horse battery")
        page = client.get(f"/console/users/{world.member.id}").text
        assert f'name="grant:{world.ops.id}"' in page
        saved = client.post(f"/console/users/{world.member.id}", data={
            "csrf_token": csrf, "role": "member", "active": "yes",
            f"grant:{world.sales.id}": ["employees:write"],
            f"grant:{world.ops.id}": ["employees:read"]})
        assert saved.status_code == 303, saved.text
        user = rt.accounts.get_user(world.as_admin, world.member.id)
        assert {g.workspace_id: g.scopes for g in user.grants} == {
            world.sales.id: ["employees:write"], world.ops.id: ["employees:read"]}
        verifier.sync()
        header = f"Bearer {token}"
        assert verifier.verify(header, IP, ["employees:read"], workspace="ops").allowed
        assert verifier.verify(header, IP, ["employees:read"], workspace="sales").status == 403
    finally:
        verifier.close()
