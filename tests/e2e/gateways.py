"""The cases every shipped gateway configuration must pass, run against the real gateway
(nginx `auth_request` in test_nginx.py, Caddy `forward_auth` in test_caddy.py), a real
tallykey server and a small upstream app that echoes what it receives.

A gateway test module subclasses `GatewayCases` and provides the `gateway` fixture (the
base URL of the running gateway); the `tallykey` and `upstream` fixtures are here.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tallykey.tokens import format as token_format

from .conftest import (
    Server,
    free_port,
    manage,
    new_token,
    running_server,
    server_env,
    within_one_minute,
)

ROOT = Path(__file__).resolve().parents[2]
FAIL_LIMIT = 20
#: Headers tallykey owns: a client's value must never reach the app.
CONTROLLED = ("tallykey-account", "tallykey-scopes", "tallykey-token-id",
              "tallykey-user-id", "tallykey-token-expires", "tallykey-token-kind",
              "tallykey-workspace", "tallykey-external-id", "tallykey-cost",
              "tallykey-required-scopes", "ratelimit-limit", "ratelimit-remaining",
              "ratelimit-reset")


@dataclass
class Upstream:
    """The protected app: answers every request with the headers it received."""

    port: int
    seen: list[dict[str, str]] = field(default_factory=list)

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for h in self.seen if h["path"] == path]


def serve_upstream() -> tuple[Upstream, ThreadingHTTPServer]:
    app = Upstream(free_port())

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            app.seen.append({"path": self.path, **headers})
            body = json.dumps(headers).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_DELETE = do_PUT = do_PATCH = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", app.port), Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return app, httpd


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    app, httpd = serve_upstream()
    yield app
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tallykey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("gateway-tallykey")
    with running_server(tmp, "sqlite", TALLYKEY_TRUSTED_PROXIES="127.0.0.1/32",
                        TALLYKEY_AUTH_FAIL_LIMIT=str(FAIL_LIMIT)) as live:
        yield live


def wait_until_serving(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited: {log.read_text()}")
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    process.send_signal(sig)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def localise(text: str, replacements: list[tuple[str, str]], where: Path) -> str:
    for shipped, local in replacements:
        assert shipped in text, f"{shipped!r} no longer in {where}"
        text = text.replace(shipped, local)
    return text


def get(gateway: str, path: str, token: str | None = None, source: str = "127.0.0.1",
        method: str = "GET", **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.request(method, gateway + path,
                               headers={k.replace("_", "-"): v for k, v in headers.items()})


def direct(tallykey: Server, token: str | None, source: str = "127.0.0.1",
           **headers: str) -> httpx.Response:
    """tallykey's own `/auth/request` answer, for comparing with the gateway's, as for a
    client at `source` (tallykey trusts this test's address as a proxy)."""
    sent = {k.replace("_", "-"): v for k, v in headers.items()}
    sent["X-Forwarded-For"] = source
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    return httpx.get(f"{tallykey.base_url}/auth/request", headers=sent, timeout=10)


def assert_refused(response: httpx.Response, status: int, error: str, reason: str,
                   fragment: str = "") -> dict[str, Any]:
    """The refusal as tallykey makes it: status, JSON body with error, reason, message
    and hint, `Tallykey-Reason`, one RFC 6750 challenge."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert body["error"] == error, body
    assert body["reason"] == reason, body
    assert fragment in body["message"], body
    assert body["hint"], body
    assert response.headers["tallykey-reason"] == reason
    challenges = response.headers.get_list("www-authenticate")
    assert len(challenges) == 1 and challenges[0].startswith('Bearer realm="tallykey"')
    assert "tallykey-refusal" not in response.headers  # tallykey's aid for nginx stays inside
    return body


def assert_rate_headers(response: httpx.Response, limit: int) -> None:
    assert response.headers["ratelimit-limit"] == str(limit), response.headers
    assert int(response.headers["ratelimit-remaining"]) >= 0
    assert int(response.headers["ratelimit-reset"]) > 0


def forged() -> dict[str, str]:
    return {name.replace("-", "_"): "forged" for name in CONTROLLED} | {
        "Tallykey_Cost": "0", "Tallykey_Refusal_Header": "1"}


class GatewayCases:
    """Every case, for any gateway fixture named `gateway`."""

    def test_an_allowed_request_reaches_the_app_with_its_identity(
            self, gateway: str, tallykey: Server, upstream: Upstream) -> None:
        token = tallykey.seeded["admin"]["token"]
        info = httpx.get(f"{tallykey.base_url}/core/v3/info", timeout=10,
                         headers={"Authorization": f"Bearer {token}"}).json()
        response = get(gateway, "/allowed?x=1", token, Tallykey_Account="forged",
                       Tallykey_Token_Id="forged", Tallykey_User_Id="forged")
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["tallykey-account"] == tallykey.seeded["account"]
        assert seen["tallykey-token-id"] == info["token"]["id"]
        assert "tokens:manage" in seen["tallykey-scopes"].split()
        assert seen["tallykey-user-id"] == info["user"]["id"]
        assert seen["tallykey-token-expires"]
        assert seen["tallykey-token-kind"] == "personal"
        assert "authorization" not in seen  # the app gets the identity, not the secret
        assert "ratelimit-limit" not in seen and "ratelimit-limit" not in response.headers
        assert len(upstream.hits("/allowed?x=1")) == 1

    def test_no_header_a_client_sends_reaches_the_app_or_decides(
            self, gateway: str, tallykey: Server, upstream: Upstream) -> None:
        """Issue 25 #8: the identity, the external id, the rate-limit state and the cost
        are tallykey's, never the client's; a header the token lacks does not arrive."""
        made = new_token(tallykey, kind="application", scopes=["employees:read"],
                         credits={"remaining": 3})
        for number in range(3):
            response = get(gateway, f"/forging/{number}", made["token"], **forged())
            assert response.status_code == 200, response.text
            seen = response.json()
            assert seen["tallykey-token-id"] == made["id"]
            assert seen["tallykey-scopes"] == "employees:read"
            assert seen["tallykey-token-kind"] == "application"
            for name in ("tallykey-user-id", "tallykey-workspace", "tallykey-external-id",
                         "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset",
                         "tallykey-cost", "tallykey-required-scopes"):
                assert name not in seen, (name, seen)
        # Tallykey-Cost: 0 bought nothing: three credits, three requests
        refused = get(gateway, "/forging/3", made["token"], Tallykey_Cost="0")
        assert_refused(refused, 429, "usage_exhausted", "usage_exhausted")
        assert upstream.hits("/forging/3") == []

    def test_a_real_external_id_and_rate_limit_reach_the_app_and_the_client(
            self, gateway: str, tallykey: Server) -> None:
        made = new_token(tallykey, external_id="customer-42",
                         rate_limits=[{"limit": 50, "per_seconds": 3600}])
        response = get(gateway, "/external", made["token"],
                       Tallykey_External_Id="customer-1", RateLimit_Remaining="999")
        assert response.status_code == 200, response.text
        seen = response.json()
        assert seen["tallykey-external-id"] == "customer-42"
        assert seen["ratelimit-limit"] == "50"
        assert seen["ratelimit-remaining"] == "49"
        assert_rate_headers(response, 50)  # the client sees its limit too
        assert response.headers["ratelimit-remaining"] == "49"

    def test_the_route_sets_the_cost(self, gateway: str, tallykey: Server,
                                     upstream: Upstream) -> None:
        made = new_token(tallykey, credits={"remaining": 7})
        assert get(gateway, "/reports/a", made["token"], Tallykey_Cost="1").status_code == 200
        left = manage(tallykey, "GET", f"/api/v1/tokens/{made['id']}").json()
        assert left["credits"]["remaining"] == 2  # 5, not the client's 1
        assert_refused(get(gateway, "/reports/b", made["token"]), 429, "usage_exhausted",
                       "usage_exhausted")
        assert upstream.hits("/reports/b") == []

    @pytest.mark.parametrize("case", ["missing", "unknown", "revoked", "expired",
                                      "suspended", "malformed", "wrong_region"])
    def test_each_401_keeps_tallykeys_answer(self, gateway: str, tallykey: Server,
                                             upstream: Upstream, case: str) -> None:
        path = f"/refused-401/{case}"
        source = "127.0.1.1"  # failed attempts count per address: not the other tests'
        if case == "missing":
            response = get(gateway, path, source=source)
            assert response.status_code == 401
            assert response.json()["error"] == "missing_token"
            assert response.json()["reason"] == "missing"
            assert response.headers["tallykey-reason"] == "missing"
            assert response.headers["www-authenticate"] == 'Bearer realm="tallykey"'
            assert "Authorization header is missing" in response.json()["message"]
            assert upstream.hits(path) == []
            return
        token = str(token_format.generate("eu1"))
        if case == "wrong_region":
            token = str(token_format.generate("us1"))
        elif case == "malformed":
            admin = tallykey.seeded["admin"]["token"]
            token = admin[:-1] + ("A" if admin[-1] != "A" else "B")  # a checksum typo
        elif case != "unknown":
            made = new_token(tallykey)
            token = made["token"]
            assert get(gateway, path + "/before", token).status_code == 200
            if case == "revoked":
                changed = manage(tallykey, "POST", f"/api/v1/tokens/{made['id']}/revoke",
                                 json={"reason": "gateway test"})
            elif case == "suspended":
                changed = manage(tallykey, "POST", f"/api/v1/tokens/{made['id']}/suspend",
                                 json={"reason": "gateway test"})
            else:
                soon = time.time() + 2.0  # the PATCH must land before it (a loaded CI)
                changed = manage(tallykey, "PATCH", f"/api/v1/tokens/{made['id']}", json={
                    "expires_at": datetime.fromtimestamp(soon, UTC).isoformat()})
                time.sleep(max(0.0, soon - time.time()) + 0.05)
            assert changed.status_code == 200, changed.text
        response = get(gateway, path, token, source=source)
        expected = direct(tallykey, token, source=source).json()
        assert expected["reason"] == case
        body = assert_refused(response, 401, expected["error"], case)
        assert body == expected  # the same body as tallykey's own, not a summary
        assert upstream.hits(path) == []

    def test_403_for_a_missing_scope(self, gateway: str, tallykey: Server,
                                     upstream: Upstream) -> None:
        member = tallykey.seeded["member"]["token"]
        assert get(gateway, "/member-area", member).status_code == 200
        denied = get(gateway, "/admin/member", member, Tallykey_Required_Scopes="")
        body = assert_refused(denied, 403, "insufficient_scope", "insufficient_scope",
                              "tokens:manage")
        assert body == direct(tallykey, member,
                              Tallykey_Required_Scopes="tokens:manage").json()
        assert 'scope="tokens:manage"' in denied.headers["www-authenticate"]
        assert get(gateway, "/admin/boss", tallykey.seeded["admin"]["token"]
                   ).status_code == 200
        assert upstream.hits("/admin/member") == []

    def test_403_for_a_workspace_the_route_names(self, gateway: str, tallykey: Server,
                                                 upstream: Upstream) -> None:
        """The demo member reads employees only in `hq`: the route's workspace (from the
        path) decides, never a Tallykey-Workspace header the client sends."""
        member = tallykey.seeded["member"]["token"]
        hq = httpx.post(f"{tallykey.base_url}/api/v1/verify", timeout=10,
                        json={"token": member, "workspace": "hq"}).json()["workspace"]
        allowed = get(gateway, "/workspaces/hq/employees", member, Tallykey_Workspace="field")
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["tallykey-workspace"] == hq
        assert allowed.json()["tallykey-scopes"] == "employees:read"
        refused = get(gateway, "/workspaces/field/employees", member, Tallykey_Workspace="hq")
        expected = direct(tallykey, member, Tallykey_Required_Scopes="employees:read",
                          Tallykey_Workspace="field")
        assert refused.status_code == 403
        assert_refused(refused, 403, expected.json()["error"], expected.json()["reason"])
        assert refused.json() == expected.json()
        assert upstream.hits("/workspaces/field/employees") == []
        plain = get(gateway, "/plain-area", member, Tallykey_Workspace="no-such-workspace")
        assert plain.status_code == 200, plain.text  # the client's header never reaches
        assert "tallykey-workspace" not in plain.json()

    def test_429_rate_limited_is_the_tokens_own_limit(self, gateway: str, tallykey: Server,
                                                      upstream: Upstream) -> None:
        made = new_token(tallykey, rate_limits=[{"limit": 2, "per_seconds": 3600}])
        for number in range(2):
            passed = get(gateway, f"/limited/{number}", made["token"])
            assert passed.status_code == 200, passed.text
            assert_rate_headers(passed, 2)
        limited = get(gateway, "/limited/2", made["token"])
        body = assert_refused(limited, 429, "rate_limited", "rate_limited", "rate limit")
        assert body["limit"] == "default" and "Too many failed" not in body["message"]
        assert int(limited.headers["retry-after"]) > 0
        assert_rate_headers(limited, 2)
        assert limited.headers["ratelimit-remaining"] == "0"
        assert upstream.hits("/limited/2") == []

    def test_429_usage_exhausted_with_its_refill(self, gateway: str, tallykey: Server,
                                                 upstream: Upstream) -> None:
        made = new_token(tallykey, credits={"remaining": 1,
                                            "refill": {"amount": 1, "interval": "daily"}},
                         rate_limits=[{"limit": 100, "per_seconds": 3600}])
        assert get(gateway, "/credits/0", made["token"]).status_code == 200
        exhausted = get(gateway, "/credits/1", made["token"])
        assert_refused(exhausted, 429, "usage_exhausted", "usage_exhausted")
        assert int(exhausted.headers["retry-after"]) > 0  # until the daily refill
        assert_rate_headers(exhausted, 100)
        assert upstream.hits("/credits/1") == []

    def test_400_for_a_malformed_header(self, gateway: str, tallykey: Server,
                                        upstream: Upstream) -> None:
        token = tallykey.seeded["admin"]["token"]
        for header in (f"Token {token}", f"Bearer  {token}"):
            response = get(gateway, "/malformed", Authorization=header)
            body = assert_refused(response, 400, "invalid_request", "malformed_header")
            assert body == direct(tallykey, None, Authorization=header).json()
        assert upstream.hits("/malformed") == []

    def test_forged_x_forwarded_for_cannot_pass_an_allow_list(
            self, gateway: str, tallykey: Server, upstream: Upstream) -> None:
        made = new_token(tallykey, ip_allowlist=["127.0.0.5/32"])
        assert get(gateway, "/from-allowed", made["token"],
                   source="127.0.0.5").status_code == 200
        for chain in ("127.0.0.5", "127.0.0.5, 127.0.0.1"):
            forged_ip = get(gateway, "/forged", made["token"], source="127.0.0.6",
                            X_Forwarded_For=chain)
            assert_refused(forged_ip, 403, "ip_not_allowed", "ip_not_allowed", "127.0.0.6")
        assert upstream.hits("/forged") == []

    def test_throttled_clients_get_too_many_attempts(self, gateway: str,
                                                     upstream: Upstream) -> None:
        garbage = str(token_format.generate("eu1"))

        def burst(attempt: int) -> tuple[list[int], httpx.Response]:
            # the throttle counts per clock minute: a burst inside one, from its own network
            source = f"127.0.{attempt}.9"
            statuses = [get(gateway, "/throttle", garbage, source=source).status_code
                        for _ in range(FAIL_LIMIT + 2)]
            return statuses, get(gateway, "/throttle", garbage, source=source)

        statuses, limited = within_one_minute(burst)
        assert statuses[0] == 401 and statuses[-1] == 429, statuses
        assert_refused(limited, 429, "too_many_attempts", "too_many_attempts")
        assert int(limited.headers["retry-after"]) > 0
        assert upstream.hits("/throttle") == []


# --- scopes from the platform's OpenAPI document (SPEC §15) -----------------------------

SHOP_CATALOG = ROOT / "examples" / "shop_scopes.toml"
SHOP_OPENAPI = ROOT / "examples" / "shop_openapi.json"
SHOP_ADMIN = ("owner@acme-shop.example", "acme shop owner password")
SHOP_CLERK = ("clerk@acme-shop.example", "acme shop clerk password")


@dataclass
class Shop:
    """tallykey with the shop's catalog and OpenAPI document, a tenant with shops `north`
    and `south`, and a clerk's token that reads orders in north and writes them in south."""

    server: Server
    workspaces: dict[str, str]
    clerk_token: str


@contextmanager
def _signed_in(server: Server, who: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        login = client.post("/api/v1/session", json={"email": who[0], "password": who[1]})
        assert login.status_code == 200, login.text
        client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        yield client


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    tmp = tmp_path_factory.mktemp("shop-tallykey")
    env = server_env(tmp, None, TALLYKEY_SCOPES_FILE=str(SHOP_CATALOG),
                     TALLYKEY_OPENAPI_FILE=str(SHOP_OPENAPI),
                     TALLYKEY_TRUSTED_PROXIES="127.0.0.1/32")
    server = Server(env=env, port=free_port(), log_path=tmp / "server.log",
                    command=("serve",))
    server.start()
    try:
        made = server.cli("operator-tokens", "create", "--name", "shop back office",
                          "--days", "30", "--json")
        operator = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
        workspaces = {}
        with httpx.Client(base_url=server.base_url, timeout=10, headers=operator) as http:
            assert http.post("/api/v1/operator/accounts", json={
                "slug": "acme-shop", "name": "Acme Shop"}).status_code == 201
            for slug in ("north", "south"):
                ws = http.post("/api/v1/operator/accounts/acme-shop/workspaces",
                               json={"slug": slug, "name": slug.title()})
                assert ws.status_code == 201, ws.text
                workspaces[slug] = ws.json()["id"]
            users = {}
            for (email, password), role in ((SHOP_ADMIN, "admin"), (SHOP_CLERK, "member")):
                user = http.post("/api/v1/operator/accounts/acme-shop/users", json={
                    "email": email, "password": password, "role": role})
                assert user.status_code == 201, user.text
                users[role] = user.json()["id"]
        with _signed_in(server, SHOP_ADMIN) as admin:
            assert admin.patch(f"/api/v1/users/{users['member']}", json={"workspaces": {
                "north": ["orders:read"], "south": ["orders:write"]}}).status_code == 200
        with _signed_in(server, SHOP_CLERK) as clerk:
            token = clerk.post("/api/v1/tokens", json={
                "name": "clerk", "expires_in_days": 30,
                "scopes": ["orders:read", "orders:write"]})
            assert token.status_code == 201, token.text
        yield Shop(server, workspaces, token.json()["token"])
    finally:
        server.stop()


def assert_unknown_operation(response: httpx.Response, operation: str) -> None:
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["error"] == "unknown_operation" and body["reason"] == "unknown_operation"
    assert operation in body["message"], body
    assert response.headers["tallykey-reason"] == "unknown_operation"
    assert "www-authenticate" not in response.headers  # nothing about credentials


class OpenApiCases:
    """The shop example behind a gateway whose configuration names no scope
    (examples/shop_nginx.conf, examples/shop_Caddyfile): the OpenAPI document decides."""

    def test_each_operation_needs_the_scopes_the_document_names(
            self, shop_gateway: str, shop: Shop, upstream: Upstream) -> None:
        token = shop.clerk_token
        read = get(shop_gateway, "/shops/north/orders?page=2", token)
        assert read.status_code == 200, read.text
        assert read.json()["tallykey-workspace"] == shop.workspaces["north"]
        assert read.json()["tallykey-scopes"] == "orders:read"
        one = get(shop_gateway, "/shops/north/orders/7", token)  # two path parameters
        assert one.status_code == 200, one.text
        write = get(shop_gateway, "/shops/south/orders", token, method="POST")
        assert write.status_code == 200, write.text
        assert write.json()["tallykey-workspace"] == shop.workspaces["south"]
        for method, path, missing in (("POST", "/shops/north/orders", "orders:write"),
                                      ("GET", "/shops/south/orders", "orders:read"),
                                      ("DELETE", "/shops/north/orders/7", "orders:write")):
            refused = get(shop_gateway, path, token, method=method,
                          Tallykey_Required_Scopes="", X_Original_Method="GET",
                          X_Original_URI="/openapi.json")
            assert_refused(refused, 403, "insufficient_scope", "insufficient_scope", missing)
        assert not [h for h in upstream.seen if h["path"] in ("/shops/north/orders/7",)
                    and h.get("tallykey-scopes") != "orders:read"]

    def test_an_operation_the_document_does_not_list_is_refused(
            self, shop_gateway: str, shop: Shop, upstream: Upstream) -> None:
        assert_unknown_operation(get(shop_gateway, "/shops/north/refunds", shop.clerk_token),
                                 "GET /shops/north/refunds")
        assert_unknown_operation(get(shop_gateway, "/whoami", shop.clerk_token,
                                     method="PUT"), "PUT /whoami")
        assert_unknown_operation(get(shop_gateway, "/admin/"), "GET /admin/")
        assert upstream.hits("/shops/north/refunds") == [] and upstream.hits("/admin/") == []

    def test_public_and_token_only_operations(self, shop_gateway: str, shop: Shop,
                                              upstream: Upstream) -> None:
        public = get(shop_gateway, "/openapi.json")  # `security: []` in the document
        assert public.status_code == 200, public.text
        assert "tallykey-token-id" not in public.json()
        assert get(shop_gateway, "/whoami", shop.clerk_token).status_code == 200
        missing = get(shop_gateway, "/whoami", X_Original_URI="/openapi.json")
        assert missing.status_code == 401 and missing.json()["reason"] == "missing"
