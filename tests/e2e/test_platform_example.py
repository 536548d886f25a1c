"""docs/platform.md, end to end: a platform with its own scope catalog
(`examples/shop_scopes.toml`: orders:read, orders:write, invoices:read) and its own API
(`examples/shop_platform.py`), three tallykey nodes on one PostgreSQL.

Provision a tenant, its admin and two workspaces over the operator API; grant a member
read in one and write in the other; create tokens over the API and in the console (a
real browser); check `/auth/request` on every node and the embedded middleware per
workspace; archive a workspace and see its tokens stop on all three nodes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import fresh_postgres_database
from .conftest import Server, assert_no_secrets, free_port, server_env

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
CATALOG = ROOT / "examples" / "shop_scopes.toml"
ADMIN = ("owner@acme-shop.example", "acme shop owner password")
CLERK = ("clerk@acme-shop.example", "acme shop clerk password")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Three tallykey nodes with the shop catalog, the shop API beside them, and an
    operator token."""
    tmp = tmp_path_factory.mktemp("platform")
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database())
        nodes = [Server(env=server_env(tmp, url, TALLYKEY_NODE_NAME=f"node{n}",
                                       TALLYKEY_SCOPES_FILE=str(CATALOG)),
                        port=free_port(), log_path=tmp / f"node{n}.log", command=("serve",))
                 for n in (1, 2, 3)]
        for node in nodes:
            node.start()
            stack.callback(assert_no_secrets, node)
            stack.callback(node.stop)
        made = nodes[0].cli("operator-tokens", "create", "--name", "shop back office",
                            "--days", "30", "--json")
        operator = json.loads(made.stdout)["token"]
        shop_port = free_port()
        shop = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.shop_platform:app", "--port",
             str(shop_port)], cwd=ROOT, env={**nodes[0].env, "TALLYKEY_NODE_NAME": "shop-api"},
            stdout=(tmp / "shop.log").open("wb"), stderr=subprocess.STDOUT)

        def stop_shop() -> None:
            shop.terminate()
            shop.wait(timeout=10)

        stack.callback(stop_shop)
        shop_url = f"http://127.0.0.1:{shop_port}"
        _wait_for(shop_url + "/whoami")
        yield {"nodes": nodes, "operator": operator, "shop": shop_url}


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not start")


@contextmanager
def session(node: Server, who: tuple[str, str]) -> Iterator[httpx.Client]:
    """A signed-in API client (console session with its CSRF token)."""
    with httpx.Client(base_url=node.base_url, timeout=10) as client:
        login = client.post("/api/v1/session", json={"email": who[0], "password": who[1]})
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        yield client


def test_1_provision_a_tenant_over_the_operator_api(platform: dict[str, Any]) -> None:
    node = platform["nodes"][0]
    op = {"Authorization": f"Bearer {platform['operator']}"}
    with httpx.Client(base_url=node.base_url, timeout=10, headers=op) as http:
        account = http.post("/api/v1/operator/accounts",
                            json={"slug": "acme-shop", "name": "Acme Shop"})
        assert account.status_code == 201, account.text
        for slug, name in (("north", "North Shop"), ("south", "South Shop")):
            made = http.post("/api/v1/operator/accounts/acme-shop/workspaces",
                             json={"slug": slug, "name": name})
            assert made.status_code == 201, made.text
            platform[slug] = made.json()["id"]
        for (email, password), role in ((ADMIN, "admin"), (CLERK, "member")):
            user = http.post("/api/v1/operator/accounts/acme-shop/users", json={
                "email": email, "password": password, "role": role})
            assert user.status_code == 201, user.text
            platform[role] = user.json()["id"]
    # the tenant's admin grants the clerk read in north and write in south
    with session(platform["nodes"][1], ADMIN) as admin:
        scopes = [s["name"] for s in admin.get("/api/v1/scopes").json()]
        assert scopes == ["orders:read", "orders:write", "invoices:read", "tokens:manage",
                          "audit:read", "tokens:renew_self"]
        granted = admin.patch(f"/api/v1/users/{platform['member']}", json={
            "workspaces": {"north": ["orders:read"], "south": ["orders:write"]}})
        assert granted.status_code == 200, granted.text
        assert granted.json()["workspaces"] == {platform["north"]: ["orders:read"],
                                                platform["south"]: ["orders:write"]}


def test_2_tokens_over_the_api(platform: dict[str, Any]) -> None:
    node = platform["nodes"][2]
    with session(node, CLERK) as clerk:
        made = clerk.post("/api/v1/tokens", json={
            "name": "clerk integration", "expires_in_days": 30,
            "scopes": ["orders:read", "orders:write"]})
        assert made.status_code == 201, made.text
        platform["clerk_token"] = made.json()["token"]
        demo_scope = clerk.post("/api/v1/tokens", json={
            "name": "x", "expires_in_days": 30, "scopes": ["employees:read"]})
        assert demo_scope.status_code == 422
        assert "employees:read" in demo_scope.json()["message"]
    with session(node, ADMIN) as admin:
        made = admin.post("/api/v1/tokens", json={
            "name": "south fulfilment", "kind": "application", "workspace": "south",
            "expires_in_days": 30, "scopes": ["orders:write", "invoices:read"]})
        assert made.status_code == 201, made.text
        platform["south_app_token"] = made.json()["token"]


def test_3_a_token_created_in_the_console(platform: dict[str, Any], browser: Any) -> None:
    node = platform["nodes"][0]
    context = browser.new_context(base_url=node.base_url)
    try:
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.goto("/console/login")
        page.get_by_label("E-mail").fill(ADMIN[0])
        page.get_by_label("Password").fill(ADMIN[1])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/console/tokens")
        page.goto("/console/workspaces")
        assert "North Shop" in page.locator("#workspaces").inner_text()
        page.goto("/console/tokens/new")
        assert page.get_by_text("Read invoices and credit notes").is_visible()
        page.get_by_label("Name (required)").fill("north reporting")
        page.get_by_label("Workspace", exact=True).select_option("north")
        page.locator("input[name=scopes][value='orders:read']").check()
        page.get_by_label("30 days").first.check()
        page.get_by_role("button", name="Create token").click()
        page.get_by_text("it will not be shown again").wait_for()
        platform["console_token"] = page.locator("#secret").input_value()
    finally:
        context.close()
    assert platform["console_token"].startswith("tlk_eu1_")


def auth_request(node: Server, token: str, scope: str, workspace: str | None
                 ) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if workspace:
        headers["Tallykey-Workspace"] = workspace
    return httpx.get(node.base_url + "/auth/request", params={"scope": scope},
                     headers=headers, timeout=10)


def test_4_auth_request_answers_per_workspace_on_every_node(platform: dict[str, Any]
                                                            ) -> None:
    clerk = platform["clerk_token"]
    for node in platform["nodes"]:
        assert auth_request(node, clerk, "orders:write", None).status_code == 403
        assert auth_request(node, clerk, "orders:read", None).status_code == 403
        assert auth_request(node, clerk, "orders:write", "north").status_code == 403
        assert auth_request(node, clerk, "orders:read", "south").status_code == 403
        write = auth_request(node, clerk, "orders:write", "south")
        assert write.status_code == 204 and write.headers["tallykey-workspace"] == \
            platform["south"]
        assert auth_request(node, clerk, "orders:read", platform["north"]).status_code == 204
        app = platform["south_app_token"]
        assert auth_request(node, app, "invoices:read", "south").status_code == 204
        assert auth_request(node, app, "invoices:read", "north").status_code == 403
        if "console_token" in platform:
            console = platform["console_token"]
            assert auth_request(node, console, "orders:read", "north").status_code == 204
            assert auth_request(node, console, "orders:read", "south").status_code == 403


def test_5_the_embedded_middleware_checks_per_workspace(platform: dict[str, Any]) -> None:
    clerk = {"Authorization": f"Bearer {platform['clerk_token']}"}
    app = {"Authorization": f"Bearer {platform['south_app_token']}"}
    order = {"item": "umbrella", "quantity": 2}
    with httpx.Client(base_url=platform["shop"], timeout=10) as shop:
        assert shop.get("/shops/north/orders", headers=clerk).status_code == 200
        assert shop.post("/shops/north/orders", headers=clerk, json=order).status_code == 403
        assert shop.post("/shops/south/orders", headers=clerk, json=order).status_code == 201
        refused = shop.get("/shops/south/orders", headers=clerk)
        assert refused.status_code == 403
        assert refused.json()["scope"] == "orders:read"
        whoami = shop.get("/whoami", headers=clerk).json()
        assert whoami["workspaces"] == {platform["north"]: ["orders:read"],
                                        platform["south"]: ["orders:write"]}
        assert shop.get("/shops/south/invoices", headers=app).status_code == 200
        outside = shop.get("/shops/north/invoices", headers=app)
        assert outside.status_code == 403 and outside.json()["error"] == \
            "workspace_not_allowed"
        assert shop.get("/shops/north/orders").status_code == 401
        if "console_token" in platform:
            console = {"Authorization": f"Bearer {platform['console_token']}"}
            assert shop.get("/shops/north/orders", headers=console).status_code == 200
            assert shop.get("/shops/south/orders", headers=console).status_code == 403


def test_6_archiving_a_workspace_stops_its_tokens_on_three_nodes(platform: dict[str, Any]
                                                                 ) -> None:
    nodes = platform["nodes"]
    app = platform["south_app_token"]
    for node in nodes:
        assert auth_request(node, app, "orders:write", "south").status_code == 204
    with session(nodes[1], ADMIN) as admin:
        archived = admin.delete("/api/v1/workspaces/south")
    assert archived.status_code == 200, archived.text
    body = archived.json()
    assert body["tokens_stopped"] == 1
    assert body["propagation"]["complete"] is True
    assert {"node1", "node2", "node3"} <= set(body["propagation"]["confirmed"])
    for node in nodes:  # right after the answer: every node
        stopped = auth_request(node, app, "orders:write", None)
        assert stopped.status_code == 401 and "archived" in stopped.json()["message"]
        clerk = auth_request(node, platform["clerk_token"], "orders:write", "south")
        assert clerk.status_code == 403
        assert auth_request(node, platform["clerk_token"], "orders:read", "north"
                            ).status_code == 204
    embedded = httpx.get(platform["shop"] + "/shops/south/invoices",
                         headers={"Authorization": f"Bearer {app}"}, timeout=10)
    assert embedded.status_code == 401
