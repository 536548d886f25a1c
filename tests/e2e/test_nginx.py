"""deploy/nginx/tallykey.conf with a real nginx, a real tallykey server and a small
upstream app that echoes what it receives: who gets through, and with which identity."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tallykey.tokens import format as token_format

from ..conftest import IN_CI
from .conftest import Server, free_port, manage, new_token, running_server

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "tallykey.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)
FAIL_LIMIT = 20

if NGINX is None and not IN_CI:
    pytest.skip("nginx is not installed (apt-get install nginx)", allow_module_level=True)


@dataclass
class Upstream:
    """The protected app: answers every request with the headers it received."""

    port: int
    seen: list[dict[str, str]] = field(default_factory=list)

    def hits(self, path: str) -> list[dict[str, str]]:
        return [h for h in self.seen if h["path"] == path]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
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

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", app.port), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield app
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tallykey(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("nginx-tallykey")
    with running_server(tmp, "sqlite", TALLYKEY_TRUSTED_PROXIES="127.0.0.1/32",
                        TALLYKEY_AUTH_FAIL_LIMIT=str(FAIL_LIMIT)) as live:
        yield live


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, tallykey: Server,
          upstream: Upstream) -> Iterator[str]:
    """nginx in the foreground with its own prefix, config, pid and logs in a tmp dir."""
    assert NGINX is not None, "nginx is required in CI"
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    site = CONFIG.read_text()
    for shipped, local in (("127.0.0.1:8000", f"127.0.0.1:{tallykey.port}"),
                           ("127.0.0.1:9000", f"127.0.0.1:{upstream.port}"),
                           ("listen 8080;", f"listen 127.0.0.1:{port};")):
        assert shipped in site, f"{shipped!r} no longer in {CONFIG}"
        site = site.replace(shipped, local)
    (tmp / "tallykey.conf").write_text(site)
    temp_paths = "\n".join(f"    {kind}_temp_path {tmp}/{kind};"
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (tmp / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 128; }}
http {{
    access_log {tmp}/access.log;
{temp_paths}
    include {tmp}/tallykey.conf;
}}
""")
    log = (tmp / "nginx.out").open("wb")
    process = subprocess.Popen([NGINX, "-e", str(tmp / "error.log"), "-p", str(tmp), "-c",
                                str(tmp / "nginx.conf")], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx exited: {(tmp / 'nginx.out').read_text()}"
                                     f"{(tmp / 'error.log').read_text()}")
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, (tmp / "error.log").read_text()
                time.sleep(0.05)
        yield base
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def get(proxy: str, path: str, token: str | None = None, source: str = "127.0.0.1",
        **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(proxy + path, headers={k.replace("_", "-"): v
                                                 for k, v in headers.items()})






def assert_denied(response: httpx.Response, status: int, error: str, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert fragment in body["message"], body
    assert response.headers["www-authenticate"].startswith('Bearer realm="tallykey"')
    assert len(response.headers.get_list("www-authenticate")) == 1


def test_an_allowed_request_reaches_the_app_with_its_identity(
        proxy: str, tallykey: Server, upstream: Upstream) -> None:
    token = tallykey.seeded["admin"]["token"]
    info = httpx.get(f"{tallykey.base_url}/core/v3/info", timeout=10,
                     headers={"Authorization": f"Bearer {token}"}).json()
    response = get(proxy, "/allowed?x=1", token, Tallykey_Account="forged",
                   Tallykey_Token_Id="forged", Tallykey_User_Id="forged")
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["tallykey-account"] == tallykey.seeded["account"]
    assert seen["tallykey-token-id"] == info["token"]["id"]
    assert "tokens:manage" in seen["tallykey-scopes"].split()
    assert seen["tallykey-user-id"] == info["user"]["id"]
    assert seen["tallykey-token-expires"]
    assert "authorization" not in seen  # the app gets the identity, not the secret
    assert len(upstream.hits("/allowed?x=1")) == 1


def test_identity_headers_a_token_lacks_cannot_be_forged(
        proxy: str, tallykey: Server) -> None:
    made = new_token(tallykey, kind="application", scopes=["employees:read"])
    response = get(proxy, "/application", made["token"], Tallykey_User_Id="forged-user",
                   Tallykey_Scopes="tokens:manage")
    assert response.status_code == 200, response.text
    seen = response.json()
    assert "tallykey-user-id" not in seen  # application tokens have no user
    assert seen["tallykey-scopes"] == "employees:read"
    assert seen["tallykey-token-kind"] == "application"


def test_missing_or_invalid_tokens_never_reach_the_app(
        proxy: str, tallykey: Server, upstream: Upstream) -> None:
    missing = get(proxy, "/missing")
    assert_denied(missing, 401, "missing_token", "Authorization header is missing")
    assert missing.headers["www-authenticate"] == 'Bearer realm="tallykey"'
    token = tallykey.seeded["admin"]["token"]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert_denied(get(proxy, "/invalid", flipped), 401, "invalid_token", "checksum")
    assert_denied(get(proxy, "/invalid", token[:40]), 401, "invalid_token",
                  "copied incompletely")
    assert_denied(get(proxy, "/invalid", str(token_format.generate("eu1"))), 401,
                  "invalid_token", "not recognised")
    assert_denied(get(proxy, "/invalid", str(token_format.generate("us1"))), 401,
                  "invalid_token", "region")
    assert_denied(get(proxy, "/invalid", Authorization=f"Token {token}"), 400,
                  "invalid_request", "Unsupported authorization scheme")
    assert_denied(get(proxy, "/invalid", Authorization=f"Bearer  {token}"), 400,
                  "invalid_request", "Exactly one space")
    assert upstream.hits("/missing") == [] and upstream.hits("/invalid") == []


def test_a_revoked_token_is_refused_at_once(proxy: str, tallykey: Server,
                                            upstream: Upstream) -> None:
    made = new_token(tallykey)
    assert get(proxy, "/before-revoke", made["token"]).status_code == 200
    assert manage(tallykey, "POST", f"/api/v1/tokens/{made['id']}/revoke",
                  json={"reason": "nginx test"}).status_code == 200
    assert_denied(get(proxy, "/after-revoke", made["token"]), 401, "invalid_token", "revoked")
    assert upstream.hits("/after-revoke") == []


def test_required_scopes_per_location(proxy: str, tallykey: Server,
                                      upstream: Upstream) -> None:
    member = tallykey.seeded["member"]["token"]
    assert get(proxy, "/member-area", member).status_code == 200
    denied = get(proxy, "/admin/member", member, Tallykey_Required_Scopes="")
    assert_denied(denied, 403, "insufficient_scope", "tokens:manage")
    assert 'scope="tokens:manage"' in denied.headers["www-authenticate"]
    assert get(proxy, "/admin/boss", tallykey.seeded["admin"]["token"]).status_code == 200
    assert upstream.hits("/admin/member") == []


def test_forged_x_forwarded_for_cannot_pass_an_allow_list(
        proxy: str, tallykey: Server, upstream: Upstream) -> None:
    made = new_token(tallykey, ip_allowlist=["127.0.0.5/32"])
    assert get(proxy, "/from-allowed", made["token"], source="127.0.0.5").status_code == 200
    forged = get(proxy, "/forged", made["token"], source="127.0.0.6",
                 X_Forwarded_For="127.0.0.5")
    assert_denied(forged, 403, "ip_not_allowed", "127.0.0.6")
    spoofed = get(proxy, "/forged", made["token"], source="127.0.0.6",
                  X_Forwarded_For="127.0.0.5, 127.0.0.1")
    assert_denied(spoofed, 403, "ip_not_allowed", "127.0.0.6")
    assert upstream.hits("/forged") == []


def test_throttled_clients_get_429_with_retry_after(proxy: str, upstream: Upstream) -> None:
    garbage = str(token_format.generate("eu1"))
    if time.time() % 60 > 45:  # the throttle counts per clock minute: stay inside one
        time.sleep(60 - time.time() % 60 + 0.2)
    statuses = [get(proxy, "/throttle", garbage, source="127.0.0.9").status_code
                for _ in range(FAIL_LIMIT + 2)]
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    limited = get(proxy, "/throttle", garbage, source="127.0.0.9")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert limited.json()["error"] == "too_many_attempts"
    assert upstream.hits("/throttle") == []


def test_the_verification_location_is_internal(proxy: str, tallykey: Server) -> None:
    response = get(proxy, "/_tallykey/auth", tallykey.seeded["admin"]["token"])
    assert response.status_code == 404


def test_a_location_names_the_workspace_and_the_client_cannot(
        proxy: str, tallykey: Server, upstream: Upstream) -> None:
    """The demo member reads employees only in `hq`: the location's workspace (from the
    path) decides, never a Tallykey-Workspace header the client sends."""
    member = tallykey.seeded["member"]["token"]
    hq = httpx.post(f"{tallykey.base_url}/api/v1/verify", timeout=10,
                    json={"token": member, "workspace": "hq"}).json()["workspace"]
    allowed = get(proxy, "/workspaces/hq/employees", member, Tallykey_Workspace="field")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["tallykey-workspace"] == hq
    assert allowed.json()["tallykey-scopes"] == "employees:read"
    refused = get(proxy, "/workspaces/field/employees", member, Tallykey_Workspace="hq")
    assert refused.status_code == 403
    assert upstream.hits("/workspaces/field/employees") == []
    forged = get(proxy, "/plain-area", member, Tallykey_Workspace="no-such-workspace")
    assert forged.status_code == 200, forged.text  # the client's header never reaches
    assert "tallykey-workspace" not in forged.json()
