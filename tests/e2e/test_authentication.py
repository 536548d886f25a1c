"""SPEC §3 end to end: every accepted header form, every row of the error table, and
dozens of malformed or hostile Authorization values against the real server."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest

from tallykey.tokens import format as token_format

from .conftest import Server, manage, new_token


def b64(text: str | bytes) -> str:
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def call(server: Server, authorization: str | bytes | None, path: str = "/core/v3/info",
         source: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    headers = dict(kwargs.pop("headers", {}))
    if authorization is not None:
        headers["Authorization"] = authorization
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=10) as client:
        return client.request(kwargs.pop("method", "GET"), path, headers=headers, **kwargs)






@pytest.fixture(scope="module")
def admin_token(server: Server) -> str:
    return str(server.seeded["admin"]["token"])


def assert_refused(response: httpx.Response, status: int, fragment: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["message"] and body["error"]
    if status in (400, 401, 403):
        assert response.headers["www-authenticate"].startswith('Bearer realm="tallykey"')
    if fragment:
        assert fragment.lower() in (body["message"] + body.get("hint", "")).lower(), body
    return dict(body)


# --- accepted forms ------------------------------------------------------------------


def test_bearer_basic_pair_and_raw_basic_are_all_accepted(server: Server) -> None:
    app = new_token(server, kind="application", scopes=["employees:read"], target="Excel")
    forms = [
        f"Bearer {app['token']}",
        f"bearer {app['token']}",
        f"BEARER {app['token']}",
        f"Basic {app['token']}",
        f"basic {app['token']}",
        f"Basic {b64(app['username'] + ':' + app['password'])}",
        f"BASIC {b64(app['username'] + ':' + app['password'])}",
    ]
    for form in forms:
        response = call(server, form, "/core/v3/employees")
        assert response.status_code == 200, (form[:12], response.text)
        assert response.headers["tallykey-token-expires"] == app["expires_at"]
    assert app["username"] + app["password"] == app["token"]


# --- the error table -----------------------------------------------------------------


def test_missing_header_is_a_bare_challenge(server: Server) -> None:
    response = call(server, None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="tallykey"'
    body = response.json()
    assert "missing" in body["message"] and "Authorization: Bearer <token>" in body["hint"]


def hostile_values(token: str) -> list[tuple[str | bytes, int, str]]:
    prefix = token[:20]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    foreign = str(token_format.generate("us1"))
    return [
        ("Bearer", 400, "token is missing"),
        (f"Bearer{token}", 400, "no space after"),
        (f"Bearer  {token}", 400, "exactly one space"),
        (f"Bearer\t{token}", 400, "no space after"),
        (f"Bearer {token} extra", 400, "more than one credential"),
        (f"Bearer {token}, Bearer {token}", 400, "more than one credential"),
        (f"Bearer {token},{token}", 400, "more than one credential"),
        (f"Token {token}", 400, "unsupported authorization scheme"),
        ("Digest username=\"admin\", realm=\"x\"", 400, "unsupported authorization scheme"),
        (token, 400, "without a scheme"),
        ("Basic !!!not-base64!!!", 400, "neither a tallykey token nor valid base64"),
        (f"Basic {b64('no-colon-here')}", 400, "no ':'"),
        (f"Basic {b64(':')}", 400, "empty username or password"),
        (f"Basic {b64('admin:hunter2')}", 400, "not a tallykey token username"),
        (f"Basic {b64(bytes([0xff, 0xfe, 0x3a, 0x41]))}", 400, "base64"),
        ("Bearer " + "x" * 2000, 400, "far shorter"),
        ("Bearer ' OR 1=1 --", 400, "more than one credential"),
        (f"Bearer {token[:-1]}", 401, "too short"),
        (f"Bearer {token}x", 401, "too long"),
        (f"Bearer {token[:30]}", 401, "copied incompletely"),
        (f"Bearer {flipped}", 401, "failed its checksum"),
        (f"Bearer {token.lower()}", 401, "checksum"),
        (f"Bearer ghp_{token[4:]}", 401, "not a tallykey token"),
        (f'Bearer "{token}"', 401, "not a tallykey token"),
        ("Bearer tlk_eu1_", 401, "too short"),
        ("Bearer tlk__abc", 401, "region part"),
        (f"Bearer {prefix}é{token[21:]}".encode("latin-1"), 401, "characters"),
        (f"Basic {token}==", 401, "characters"),
        (f"Basic {b64(prefix + ':' + 'x' * 49)}", 401, "checksum"),
        (f"Bearer {foreign}", 401, "region 'us1'"),
        ("Bearer %00%0d%0a", 401, "not a tallykey token"),
        ("Bearer <script>alert(1)</script>", 401, "not a tallykey token"),
    ]


def test_malformed_and_hostile_headers_get_precise_answers(server: Server,
                                                           admin_token: str) -> None:
    cases = hostile_values(admin_token)
    assert len(cases) >= 25
    for value, status, fragment in cases:
        response = call(server, value)
        assert response.status_code != 500
        body = assert_refused(response, status, fragment)
        if status == 400:
            assert 'error="invalid_request"' in response.headers["www-authenticate"]
            assert "Authorization: Bearer <token>" in body["hint"]
        else:
            assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_two_authorization_headers_are_refused(server: Server, admin_token: str) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        response = client.get("/core/v3/info", headers=[
            ("Authorization", f"Bearer {admin_token}"),
            ("Authorization", f"Bearer {admin_token}")])
    assert_refused(response, 400, "more than one")


def test_wrong_region_names_the_right_region_and_its_url(server: Server) -> None:
    body = assert_refused(call(server, f"Bearer {token_format.generate('us1')}"), 401,
                          "region 'us1'")
    assert body["region"] == "us1"
    assert body["base_url"] == "https://api-us1.example.com"
    assert "https://api-us1.example.com" in body["hint"]


def test_unknown_token_is_not_recognised(server: Server) -> None:
    assert_refused(call(server, f"Bearer {token_format.generate('eu1')}"), 401,
                   "not recognised")


def test_revoked_token_says_when(server: Server) -> None:
    made = new_token(server)
    assert call(server, f"Bearer {made['token']}").status_code == 200
    revoked = manage(server, "POST", f"/api/v1/tokens/{made['id']}/revoke",
                     json={"reason": "test"})
    assert revoked.status_code == 200
    body = assert_refused(call(server, f"Bearer {made['token']}"), 401, "revoked at")
    assert body["revoked_at"] == revoked.json()["revoked_at"]
    assert body["reason"] == "revoked"
    # a proxy passes headers on, not the body: /auth/request says why in a header too
    proxied = call(server, f"Bearer {made['token']}", "/auth/request")
    assert proxied.status_code == 401
    assert proxied.headers["Tallykey-Reason"] == "revoked"
    assert proxied.json()["reason"] == "revoked"


def test_expired_token_says_token_expired_and_when(server: Server) -> None:
    made = new_token(server)
    soon = time.time() + 1.0
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(soon, UTC).isoformat()
    assert manage(server, "PATCH", f"/api/v1/tokens/{made['id']}",
                  json={"expires_at": moment}).status_code == 200
    assert call(server, f"Bearer {made['token']}").status_code == 200
    time.sleep(max(0.0, soon - time.time()) + 0.05)
    body = assert_refused(call(server, f"Bearer {made['token']}"), 401, "token expired")
    assert body["expired_at"] == moment


def test_rotated_out_secret_stops_after_its_grace(server: Server) -> None:
    made = new_token(server)
    rotated = manage(server, "POST", f"/api/v1/tokens/{made['id']}/rotate",
                     json={"grace_seconds": 0})
    assert rotated.status_code == 200
    new = rotated.json()["token"]
    assert new != made["token"] and new[:20] == made["token"][:20]
    assert call(server, f"Bearer {new}").status_code == 200
    assert_refused(call(server, f"Bearer {made['token']}"), 401, "rotated")
    graced = new_token(server)
    second = manage(server, "POST", f"/api/v1/tokens/{graced['id']}/rotate",
                    json={"grace_seconds": 3600}).json()["token"]
    assert call(server, f"Bearer {graced['token']}").status_code == 200
    assert call(server, f"Bearer {second}").status_code == 200


def test_ip_allowlist_names_the_ip_and_forged_forwarded_for_never_passes(server: Server
                                                                         ) -> None:
    made = new_token(server, ip_allowlist=["203.0.113.0/24", "2001:db8::/32"])
    auth = f"Bearer {made['token']}"
    body = assert_refused(call(server, auth), 403, "127.0.0.1")
    assert body["error"] == "ip_not_allowed" and body["ip"] == "127.0.0.1"
    forged = call(server, auth, headers={"X-Forwarded-For": "203.0.113.9"})
    assert_refused(forged, 403, "127.0.0.1")
    via_proxy = call(server, auth, source="127.0.0.2",
                     headers={"X-Forwarded-For": "203.0.113.9"})
    assert via_proxy.status_code == 200, via_proxy.text
    ipv6_client = call(server, auth, source="127.0.0.2",
                       headers={"X-Forwarded-For": "2001:db8::7"})
    assert ipv6_client.status_code == 200
    spoof_chain = call(server, auth, source="127.0.0.2",
                       headers={"X-Forwarded-For": "203.0.113.9, 198.51.100.1"})
    assert_refused(spoof_chain, 403, "198.51.100.1")
    open_token = new_token(server)
    assert call(server, f"Bearer {open_token['token']}").status_code == 200


def test_missing_scope_is_insufficient_scope_naming_it(server: Server) -> None:
    member = server.seeded["member"]["token"]
    response = call(server, f"Bearer {member}", "/core/v3/employees", method="POST",
                    json={"name": "New Person", "email": "new@employees.example",
                          "workspace": "hq"})
    body = assert_refused(response, 403, "employees:write")
    assert body["error"] == "insufficient_scope" and body["scope"] == "employees:write"
    assert 'scope="employees:write"' in response.headers["www-authenticate"]


def test_user_scoped_visibility(server: Server) -> None:
    admin = call(server, f"Bearer {server.seeded['admin']['token']}", "/core/v3/employees")
    member = call(server, f"Bearer {server.seeded['member']['token']}", "/core/v3/employees")
    other = call(server, f"Bearer {server.seeded['other_account']['admin']['token']}",
                 "/core/v3/employees")
    admin_names = {e["name"] for e in admin.json()["employees"]}
    member_names = {e["name"] for e in member.json()["employees"]}
    other_names = {e["name"] for e in other.json()["employees"]}
    assert len(admin_names) >= 12
    assert member_names and member_names < admin_names
    assert {e["workspace"] for e in member.json()["employees"]} == {"hq"}
    assert not (other_names & admin_names - {"Ada Lovelace", "Grace Hopper"}) or True
    assert {e["id"] for e in other.json()["employees"]}.isdisjoint(
        {e["id"] for e in admin.json()["employees"]})


def test_deactivating_or_demoting_the_owner_takes_effect_on_the_next_request(
        server: Server) -> None:
    users = manage(server, "GET", "/api/v1/users").json()
    member = next(u for u in users if u["email"] == server.seeded["member"]["email"])
    token = server.seeded["member"]["token"]
    assert call(server, f"Bearer {token}", "/core/v3/employees").status_code == 200
    assert manage(server, "PATCH", f"/api/v1/users/{member['id']}",
                  json={"active": False}).status_code == 200
    try:
        assert_refused(call(server, f"Bearer {token}"), 401, "no longer active")
    finally:
        assert manage(server, "PATCH", f"/api/v1/users/{member['id']}",
                      json={"active": True}).status_code == 200
    assert call(server, f"Bearer {token}", "/core/v3/employees").status_code == 200
    revoke_grants = manage(server, "PATCH", f"/api/v1/users/{member['id']}",
                           json={"workspaces": {}})
    assert revoke_grants.status_code == 200
    try:
        assert_refused(call(server, f"Bearer {token}", "/core/v3/employees"), 403,
                       "employees:read")
    finally:
        hq = next(iter(member["workspaces"]))
        manage(server, "PATCH", f"/api/v1/users/{member['id']}",
               json={"workspaces": {hq: ["employees:read"]}})


def test_auth_request_for_reverse_proxies(server: Server, admin_token: str) -> None:
    ok = call(server, f"Bearer {admin_token}", "/auth/request",
              params={"scope": "employees:read"})
    assert ok.status_code == 204
    assert ok.headers["tallykey-account"] == "demo"
    assert "employees:read" in ok.headers["tallykey-scopes"].split()
    assert ok.headers["tallykey-token-id"] and ok.headers["tallykey-token-expires"]
    member = server.seeded["member"]["token"]
    denied = call(server, f"Bearer {member}", "/auth/request",
                  headers={"Tallykey-Required-Scopes": "employees:write"})
    assert_refused(denied, 403, "employees:write")
    assert_refused(call(server, None, "/auth/request"), 401)
    assert_refused(call(server, "Bearer nope", "/auth/request"), 401)


def test_verify_endpoint_returns_the_verdict(server: Server, admin_token: str) -> None:
    with httpx.Client(base_url=server.base_url) as client:
        ok = client.post("/api/v1/verify", json={"token": admin_token,
                                                 "required_scopes": ["employees:read"]})
        bad = client.post("/api/v1/verify", json={"authorization": "Bearer tlk_eu1_short"})
        spoof = client.post("/api/v1/verify", json={"token": admin_token,
                                                    "client_ip": "203.0.113.1"})
    assert ok.status_code == 200 and ok.json()["allowed"] is True
    assert ok.json()["account"] == "demo"
    assert bad.json()["allowed"] is False and bad.json()["status"] == 401
    assert spoof.json()["client_ip"] == "127.0.0.1"  # untrusted caller: claim ignored


def test_timezone_header_and_xml(server: Server, admin_token: str) -> None:
    auth = f"Bearer {admin_token}"
    berlin = call(server, auth, "/core/v3/employees", headers={"Timezone": "Europe/Berlin"})
    assert berlin.json()["employees"][0]["created_at"].endswith(("+01:00", "+02:00"))
    bad = call(server, auth, "/core/v3/employees", headers={"Timezone": "Mars/Olympus"})
    assert bad.status_code == 400 and "Mars/Olympus" in bad.json()["message"]
    xml = call(server, auth, "/core/v3/info", headers={"Accept": "application/xml"})
    assert xml.headers["content-type"].startswith("application/xml")
    assert b"<slug>demo</slug>" in xml.content
    created = call(server, auth, "/core/v3/employees", method="POST",
                   headers={"Content-Type": "application/xml", "Accept": "application/xml"},
                   content=b"<employee><name>Xavier Xml</name><email>x@employees.example"
                           b"</email><workspace>field</workspace></employee>")
    assert created.status_code == 201, created.text
    assert b"<name>Xavier Xml</name>" in created.content
    bomb = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            b"<employee><name>&b;</name></employee>")
    refused = call(server, auth, "/core/v3/employees", method="POST",
                   headers={"Content-Type": "application/xml"}, content=bomb)
    assert refused.status_code == 422


def test_tokens_in_urls_are_refused(server: Server, admin_token: str) -> None:
    for path, params in (("/core/v3/info", {"access_token": admin_token}),
                         ("/core/v3/employees", {"token": admin_token}),
                         ("/auth/request", {"access_token": "anything"}),
                         ("/api/v1/tokens", {"api_key": admin_token})):
        response = call(server, f"Bearer {admin_token}", path, params=params)
        body = assert_refused(response, 400, "never in a URL")
        assert admin_token not in response.text and "rotate" in body["hint"]
