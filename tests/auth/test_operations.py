"""Scopes from the platform's OpenAPI document (`tallykey.auth.operations`, SPEC §15):
the route table, the one-line refusal of a bad document (and exit 78 from `serve`),
`/auth/request` and the middleware deciding per operation. The gateways run the shop
example for real in tests/e2e/test_nginx.py and test_caddy.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient

from tallykey import TallykeyMiddleware, Verifier
from tallykey.accounts.scopes import DEMO_CATALOG, load_catalog
from tallykey.api.verify import AuthRequestEndpoint
from tallykey.auth.operations import Operation, OperationTable
from tallykey.errors import MalformedHeader, OperationsError, UnknownOperation
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop_openapi.json"
SHOP_CATALOG = ROOT / "examples" / "shop_scopes.toml"

#: A document for the test world's catalog (employees:read, employees:write).
DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "staff", "version": "1"},
    "servers": [{"url": "https://api.example.com/v1"}],
    "security": [{"tallykey": []}],
    "paths": {
        "/employees": {"get": {"security": [{"tallykey": ["employees:read"]}]},
                       "post": {"security": [{"tallykey": ["employees:write"]}]}},
        "/employees/{id}": {"get": {"security": [{"tallykey": ["employees:read"]}]},
                            "delete": {"security": [{"tallykey": ["employees:write"]}]}},
        "/employees/me": {"get": {}},
        "/files/{name}.json": {"get": {"security": [{"tallykey": ["employees:read"]}]}},
        "/health": {"get": {"security": []}},
        "/status": {"get": {"security": [{}, {"tallykey": ["employees:read"]}]}},
    },
}


def write(tmp_path: Path, document: Any, name: str = "openapi.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return path


@pytest.fixture
def table(tmp_path: Path) -> OperationTable:
    return OperationTable.load(write(tmp_path, DOCUMENT), DEMO_CATALOG)


def test_the_shop_example_document_matches_its_catalog() -> None:
    shop = OperationTable.load(SHOP, load_catalog(SHOP_CATALOG))
    assert shop.count == 7
    found = shop.decide("GET", "/shops/north/orders/12?x=1")
    assert isinstance(found, Operation) and found.scopes == ("orders:read",)
    with pytest.raises(OperationsError, match="orders:read"):
        OperationTable.load(SHOP, DEMO_CATALOG)  # its scopes are not the demo's


def test_templates_literals_methods_and_base_paths(table: OperationTable) -> None:
    def scopes(method: str, path: str, raw: bool = True) -> tuple[str, ...] | str:
        found = table.decide(method, path, raw)
        if isinstance(found, Operation):
            return "public" if found.public else found.scopes
        return found.reason

    assert scopes("GET", "/v1/employees") == ("employees:read",)
    assert scopes("POST", "/v1/employees") == ("employees:write",)
    assert scopes("GET", "/v1/employees/42") == ("employees:read",)
    assert scopes("DELETE", "/v1/employees/42?force=1") == ("employees:write",)
    assert scopes("GET", "/v1/employees/me") == ()  # the literal path wins over {id}
    assert scopes("DELETE", "/v1/employees/me") == "unknown_operation"  # me has GET only
    assert scopes("HEAD", "/v1/employees/7") == ("employees:read",)  # HEAD falls to GET
    assert scopes("get", "/v1/files/report.json") == ("employees:read",)
    assert scopes("GET", "/v1/files/report.xml") == "unknown_operation"
    assert scopes("GET", "/v1/health") == "public"  # security: []
    assert scopes("GET", "/v1/status") == "public"  # an empty alternative: optional
    for unlisted in ("/employees", "/v1/employees/", "/v1/employees/1/2", "/v1/other"):
        assert scopes("GET", unlisted) == "unknown_operation", unlisted
    assert scopes("PUT", "/v1/employees") == "unknown_operation"
    # percent-decoded like the app's router; a decoded slash is another path
    assert scopes("GET", "/v1/employees/a%20b") == ("employees:read",)
    assert scopes("GET", "/v1/employees/a%2Fb") == "unknown_operation"
    # an ASGI path is decoded already: never twice (its '%2F' is the id's own text)
    assert scopes("GET", "/v1/employees/a%2Fb", raw=False) == ("employees:read",)
    for dotted in ("/v1/health/../employees", "/v1/./employees", "/v1/employees/%2e%2e"):
        assert scopes("GET", dotted) == "malformed_header", dotted


def test_unlisted_operations_may_be_allowed(tmp_path: Path) -> None:
    allowing = OperationTable.load(write(tmp_path, DOCUMENT), DEMO_CATALOG, "allow")
    found = allowing.decide("GET", "/anything/else")
    assert isinstance(found, Operation) and found.scopes == () and not found.public
    refused = OperationTable.load(write(tmp_path, DOCUMENT), DEMO_CATALOG).decide(
        "GET", "/anything/else")
    assert isinstance(refused, UnknownOperation) and refused.status == 404


@pytest.mark.parametrize(("document", "fragment"), [
    ("{not json", "is not valid JSON"),
    ([], "has no 'paths' object"),
    ({"openapi": "3.0.0"}, "has no 'paths' object"),
    ({"paths": {"/a": {"get": {}}}}, "which OpenAPI version"),
    ({"openapi": "3.1.0", "paths": {}}, "lists no operations"),
    ({"openapi": "3.1.0", "paths": {"a": {"get": {}}}}, "does not start with '/'"),
    ({"openapi": "3.1.0", "paths": {"/a": {"get": {"security": {"tallykey": []}}}}},
     "must be a list"),
    ({"openapi": "3.1.0", "paths": {"/a": {"get": {"security": ["tallykey"]}}}},
     "must be an object"),
    ({"openapi": "3.1.0", "paths": {"/a": {"get": {"security": [{"tallykey": "x"}]}}}},
     "list of scope names"),
    ({"openapi": "3.1.0", "paths": {"/a": {"get": {"security": [
        {"tallykey": ["employees:read"]}, {"tallykey": ["employees:write"]}]}}}},
     "2 'tallykey' alternatives"),
    ({"openapi": "3.1.0", "paths": {"/a": {"post": {"security": [
        {"tallykey": ["orders:write"]}]}}}}, "POST /a needs scope 'orders:write'"),
])
def test_a_bad_document_is_one_line(tmp_path: Path, document: Any, fragment: str) -> None:
    with pytest.raises(OperationsError) as refused:
        OperationTable.load(write(tmp_path, document), DEMO_CATALOG)
    message = str(refused.value)
    assert fragment in message and "\n" not in message
    assert message.startswith("TALLYKEY_OPENAPI_FILE ")
    with pytest.raises(OperationsError, match="cannot be read"):
        OperationTable.load(tmp_path / "missing.json", DEMO_CATALOG)


def test_a_yaml_document(tmp_path: Path) -> None:
    yaml_text = ("openapi: 3.1.0\npaths:\n  /employees/{id}:\n    get:\n"
                 "      security:\n        - tallykey: [employees:read]\n")
    table = OperationTable.load(write(tmp_path, yaml_text, "api.yaml"), DEMO_CATALOG)
    found = table.decide("GET", "/employees/3")
    assert isinstance(found, Operation) and found.scopes == ("employees:read",)
    with pytest.raises(OperationsError, match="not valid YAML"):
        OperationTable.load(write(tmp_path, "paths: [\n", "bad.yml"), DEMO_CATALOG)


def test_serve_refuses_a_bad_document_with_one_line_and_exit_78(tmp_path: Path) -> None:
    document = write(tmp_path, {"openapi": "3.1.0", "paths": {"/orders": {"get": {
        "security": [{"tallykey": ["orders:read"]}]}}}})
    env = {"TALLYKEY_DATA_DIR": str(tmp_path / "data"),
           "TALLYKEY_OPENAPI_FILE": str(document), "PATH": "/usr/bin:/bin"}
    ran = subprocess.run([str(Path(sys.executable).with_name("tallykey")), "serve",
                          "--port", "9"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 78, (ran.stdout, ran.stderr)
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "GET /orders needs scope 'orders:read'" in lines[0], lines
    assert "Traceback" not in ran.stderr


@pytest.fixture
def verifier(settings: Settings, rt: Runtime) -> Iterator[Verifier]:
    made = Verifier(settings=settings, clock=rt.clock, background=False)
    yield made
    made.close()


def test_auth_request_decides_by_the_original_operation(world: World, verifier: Verifier,
                                                        settings: Settings,
                                                        table: OperationTable) -> None:
    reader = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="reader", expires_in_days=7, scopes=["employees:read"])).value
    bearer = {"Authorization": f"Bearer {reader}", "Tallykey-Workspace": "sales"}
    client = TestClient(AuthRequestEndpoint(verifier, settings, operations=table))

    def ask(method: str, uri: str, **headers: str) -> Any:
        return client.get("/auth/request", headers={
            **bearer, "X-Original-Method": method, "X-Original-URI": uri, **headers})

    assert ask("GET", "/v1/employees/9").status_code == 204
    denied = ask("DELETE", "/v1/employees/9")
    assert denied.status_code == 403 and denied.json()["reason"] == "insufficient_scope"
    assert "employees:write" in denied.json()["message"]
    unknown = ask("GET", "/v1/payroll")
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_operation"
    assert unknown.headers["tallykey-reason"] == "unknown_operation"
    assert "www-authenticate" not in unknown.headers
    public = client.get("/auth/request", headers={"X-Original-Method": "GET",
                                                  "X-Original-URI": "/v1/health"})
    assert public.status_code == 204 and "tallykey-token-id" not in public.headers
    assert client.get("/auth/request", headers={
        "X-Original-Method": "GET", "X-Original-URI": "/v1/employees"}).status_code == 401
    # the gateway's own scopes still add to the document's
    both = ask("GET", "/v1/employees", **{"Tallykey-Required-Scopes": "employees:write"})
    assert both.status_code == 403
    # without the original request it cannot decide
    blind = client.get("/auth/request", headers=bearer)
    assert blind.status_code == 400 and "X-Original-Method" in blind.json()["hint"]
    # Envoy ext_authz: the method and the path after /auth/request; its query is ignored
    assert client.get("/auth/request/v1/employees/9", headers=bearer).status_code == 204
    assert client.delete("/auth/request/v1/employees/9", headers=bearer).status_code == 403
    alone = {"Authorization": f"Bearer {reader}"}
    assert client.get("/auth/request?workspace=ops", headers={
        **alone, "X-Original-Method": "GET", "X-Original-URI": "/v1/employees/9"}
        ).status_code == 403  # the gateway's ?workspace= is read: not the member's
    assert client.get("/auth/request/v1/employees/9?workspace=ops",
                      headers=alone).status_code == 204  # the client's query is not


def test_the_middleware_decides_by_the_document(world: World, verifier: Verifier,
                                                table: OperationTable) -> None:
    app = FastAPI()

    @app.get("/v1/employees/{id}")
    def employee(id: str) -> dict[str, str]:
        return {"id": id}

    @app.delete("/v1/employees/{id}")
    def remove(id: str) -> dict[str, str]:
        return {"removed": id}

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/undocumented")
    def undocumented() -> dict[str, str]:
        return {"oops": "not in the document"}

    reader = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="reader", expires_in_days=7, scopes=["employees:read"])).value
    client = TestClient(TallykeyMiddleware(app, verifier=verifier, operations=table,
                                           workspace=lambda request: "sales"))
    bearer = {"Authorization": f"Bearer {reader}"}
    assert client.get("/v1/employees/5", headers=bearer).json() == {"id": "5"}
    denied = client.delete("/v1/employees/5", headers=bearer)
    assert denied.status_code == 403 and "employees:write" in denied.json()["message"]
    assert client.get("/v1/health").json() == {"status": "ok"}  # public: no token
    hidden = client.get("/v1/undocumented", headers=bearer)
    assert hidden.status_code == 404 and hidden.json()["error"] == "unknown_operation"
    assert client.get("/v1/employees/5").status_code == 401


def test_the_middleware_loads_the_document_from_the_settings(
        world: World, settings: Settings, rt: Runtime, tmp_path: Path) -> None:
    configured = settings.model_copy(update={"openapi_file": write(tmp_path, DOCUMENT)})
    made = Verifier(settings=configured, clock=rt.clock, background=False)
    try:
        middleware = TallykeyMiddleware(FastAPI(), verifier=made)
        assert middleware.operations is not None and middleware.operations.count == 8
        bad = settings.model_copy(update={"openapi_file": tmp_path / "absent.json"})
        with pytest.raises(OperationsError, match="cannot be read"):
            TallykeyMiddleware(FastAPI(), verifier=Verifier(settings=bad, clock=rt.clock,
                                                            background=False))
    finally:
        made.close()


def test_refusals_are_errors_of_the_one_model(table: OperationTable) -> None:
    assert isinstance(table.decide("GET", "/v1/a/../b"), MalformedHeader)
    assert isinstance(table.decide("GET", "/nope"), UnknownOperation)
