"""The second security review's findings (issue #15), replayed against a real server:
each test attacks the way the review did and fails on the code before the fix. The ones
that wait out a back-off or rely on a cached verdict's lifetime are in
`test_security_review_timing.py` (serial)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from defusedxml import ElementTree as SafeElementTree
from sqlalchemy import select, update

from tallykey.audit.models import AuditChainHead, AuditEvent
from tallykey.db.engine import Database
from tallykey.settings import normalise_database_url

from ..conftest import fresh_postgres_database
from .conftest import Server, free_port, server_env, within_one_minute


def send(server: Server, method: str, path: str, headers: list[tuple[str, str]] | None = None,
         source: str = "127.0.0.1", **kwargs: Any) -> httpx.Response:
    """A request from `source`; headers as a list, so a name may repeat."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=15) as client:
        return client.request(method, path, headers=headers or [], **kwargs)


def admin(server: Server, method: str, path: str, **kwargs: Any) -> httpx.Response:
    token = server.seeded["admin"]["token"]
    return send(server, method, path, [("Authorization", f"Bearer {token}")], **kwargs)


def new_token(server: Server, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "review token")
    body.setdefault("expires_in_days", 30)
    response = admin(server, "POST", "/api/v1/tokens", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


# --- 1. one client IP for every surface ----------------------------------------------


def test_two_forwarded_for_lines_are_one_list_on_every_surface(server: Server) -> None:
    """A proxy that adds its own `X-Forwarded-For` line (HAProxy `option forwardfor`)
    after the client's forged one: every surface sees the address the proxy saw."""
    allowed_ip, real_ip = "203.0.113.7", "198.51.100.9"
    made = new_token(server, scopes=["tokens:manage", "employees:read"],
                     ip_allowlist=[f"{allowed_ip}/32"])
    bearer = ("Authorization", f"Bearer {made['token']}")
    forged = [bearer, ("X-Forwarded-For", allowed_ip), ("X-Forwarded-For", real_ip)]
    surfaces = [("GET", "/api/v1/tokens"), ("GET", "/core/v3/info"),
                ("GET", "/auth/request")]
    for method, path in surfaces:
        response = send(server, method, path, forged, source="127.0.0.2")
        assert response.status_code == 403, (path, response.text)
        assert response.json()["ip"] == real_ip, path
    verified = send(server, "POST", "/api/v1/verify", [("X-Forwarded-For", allowed_ip),
                                                       ("X-Forwarded-For", real_ip)],
                    source="127.0.0.2", json={"token": made["token"]})
    assert verified.json()["allowed"] is False and verified.json()["client_ip"] == real_ip
    # the other order: the proxy's line names the allowed client, and every surface agrees
    honest = [bearer, ("X-Forwarded-For", "192.0.2.1"), ("X-Forwarded-For", allowed_ip)]
    for method, path in surfaces:
        response = send(server, method, path, honest, source="127.0.0.2")
        assert response.status_code in (200, 204), (path, response.text)
    # audit entries record the same address
    created = send(server, "POST", "/api/v1/tokens", honest, source="127.0.0.2",
                   json={"name": "made via proxy", "expires_in_days": 7})
    assert created.status_code == 201, created.text
    entries = admin(server, "GET", "/api/v1/audit",
                    params={"target_id": created.json()["id"]}).json()["items"]
    assert entries and {entry["ip"] for entry in entries} == {allowed_ip}


# --- 7. no secret in any error --------------------------------------------------------


def test_no_error_echoes_a_secret(server: Server) -> None:
    token = server.seeded["member"]["token"]
    secret = token[-40:]  # secret material, well past the public prefix
    # `Basic base64(token + ":")` (curl -u token:) is a valid credential since #20.13
    encoded = base64.b64encode(f"{token}x:".encode()).decode()
    hostile = [f"{token} x", f"{token}", f"x{token}", f"Bearer {token}x", f"Bearer {token} x",
               f"Bearer x{token}", f"Token {token}", f"Basic {encoded}", f"Bearer {token[:-1]}",
               f"Bearer  {token}", f"Bearer {token},{token}", f"Basic {token}:"]
    for value in hostile:
        for path in ("/core/v3/info", "/auth/request", "/api/v1/tokens"):
            response = send(server, "GET", path, [("Authorization", value)])
            assert response.status_code in (400, 401), (value[:10], path, response.text)
            shown = response.text + response.headers.get("www-authenticate", "")
            assert secret not in shown and token[-12:] not in shown, (value[:10], path, shown)
        verified = send(server, "POST", "/api/v1/verify", json={"authorization": value})
        assert verified.json()["allowed"] is False
        assert secret not in verified.text and token[-12:] not in verified.text, value[:10]
    for body in ({"token": token + "x"}, {"token": "x" + token}, {"token": token[:-2]}):
        verified = send(server, "POST", "/api/v1/verify", json=body)
        assert verified.status_code in (200, 422) and secret not in verified.text, verified.text


def test_the_cli_never_prints_a_secret_it_was_given(server: Server) -> None:
    token = server.seeded["member"]["token"]
    secret = token[-40:]
    shown = server.cli("tokens", "show", token, check=False)
    assert shown.returncode == 0, shown.stderr  # a pasted token finds its record
    assert secret not in shown.stdout + shown.stderr
    assert token[:20] in shown.stdout
    damaged = server.cli("tokens", "show", token[:-1] + "x", check=False)
    assert secret not in damaged.stdout + damaged.stderr
    unknown = server.cli("tokens", "show", token[:8] + "Z" * (len(token) - 8), check=False)
    assert unknown.returncode != 0 and "Z" * 20 not in unknown.stdout + unknown.stderr


# --- 13. inputs that answered 500 -------------------------------------------------------

FORM_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=15, follow_redirects=False)


def console_sign_in(client: httpx.Client, email: str, password: str) -> httpx.Response:
    page = client.get("/console/login")
    found = FORM_FIELD.search(page.text)
    assert found, page.text
    return client.post("/console/login", data={"csrf_token": found.group(1), "email": email,
                                               "password": password, "next": ""})


def page_csrf(client: httpx.Client, path: str = "/console/tokens") -> str:
    found = FORM_FIELD.search(client.get(path).text)
    assert found
    return found.group(1)


def test_a_chunked_body_over_the_limit_is_413_not_500(server: Server) -> None:
    def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 8192

    for path in ("/api/v1/leaks", "/console/login", "/api/v1/tokens", "/api/v1/verify"):
        with console_client(server) as client:
            client.get("/console/login")
            response = client.post(path, content=chunks(), headers={
                "Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413, (path, response.status_code, response.text[:200])


def test_out_of_range_dates_are_refused_not_500(server: Server) -> None:
    for value in ("9999-12-31", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00",
                  "0001-01-01"):
        response = admin(server, "POST", "/api/v1/tokens",
                         json={"name": "far", "expires_at": value})
        assert response.status_code == 422, (value, response.text)
        assert response.json()["field"] == "expires_at"
    made = new_token(server)
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00"):
        response = admin(server, "PATCH", f"/api/v1/tokens/{made['id']}",
                         json={"expires_at": value})
        assert response.status_code == 422, (value, response.text)
    for params in ({"since": "0001-01-01T00:00:00+01:00"}, {"until": "9999-12-31T23:59:59-05:00"},
                   {"before": "1000000000000000000000000000000"}, {"before": "-5"}):
        response = admin(server, "GET", "/api/v1/audit", params=params)
        assert response.status_code == 422, (params, response.text)
    with console_client(server) as client:
        assert console_sign_in(client, server.seeded["admin"]["email"],
                               server.seeded["admin"]["password"]).status_code == 303
        csrf = page_csrf(client, "/console/tokens/new")
        for day in ("9999-12-31", "0001-01-01"):
            response = client.post("/console/tokens/new", data={
                "csrf_token": csrf, "name": "far console", "kind": "personal",
                "expiry": "date", "expires_on": day})
            assert response.status_code == 422, (day, response.status_code)
            assert "expiry" in response.text.lower()
        for expiry in ("²", "٣٠"):
            response = client.post("/console/tokens/new", data={
                "csrf_token": csrf, "name": "odd digits", "kind": "personal", "expiry": expiry})
            assert response.status_code == 422, (expiry, response.status_code)


# --- 3. an administrator never obtains another user's personal token ------------------


def token_id_of(server: Server, token: str) -> str:
    listed = admin(server, "GET", "/api/v1/tokens", params={"limit": 200}).json()["items"]
    found: str = next(item["id"] for item in listed if token.startswith(item["prefix"]))
    return found


def test_an_admin_cannot_rotate_a_members_personal_token(server: Server) -> None:
    member_token = server.seeded["member"]["token"]
    member_id = token_id_of(server, member_token)
    response = admin(server, "POST", f"/api/v1/tokens/{member_id}/rotate",
                     json={"grace_seconds": 604800})
    assert response.status_code == 403, response.text
    assert "token" not in response.json() and "owner" in response.json()["message"]
    with console_client(server) as client:
        console_sign_in(client, server.seeded["admin"]["email"],
                        server.seeded["admin"]["password"])
        csrf = page_csrf(client, f"/console/tokens/{member_id}")
        page = client.post(f"/console/tokens/{member_id}/rotate",
                           data={"csrf_token": csrf, "grace": "7"})
        assert page.status_code == 403, page.status_code
        assert "tlk_" not in page.text.replace(member_token[:20], "")
    # the owner notices nothing: the one secret still works, nothing was rotated
    info = send(server, "GET", "/core/v3/info", [("Authorization", f"Bearer {member_token}")])
    assert info.status_code == 200
    rotations = admin(server, "GET", "/api/v1/audit",
                      params={"target_id": member_id, "action": "token.rotated"}).json()
    assert rotations["items"] == []
    # the owner may rotate their own personal token; the admin may revoke it
    with console_client(server) as client:
        signed = client.post("/api/v1/session", json={
            "email": server.seeded["member"]["email"],
            "password": server.seeded["member"]["password"]})
        csrf_header = [("X-CSRF-Token", signed.json()["csrf_token"])]
        made = client.post("/api/v1/tokens", headers=csrf_header,
                           json={"name": "member own", "expires_in_days": 7})
        assert made.status_code == 201, made.text
        own = client.post(f"/api/v1/tokens/{made.json()['id']}/rotate", headers=csrf_header,
                          json={"grace_seconds": 0})
        assert own.status_code == 200 and own.json()["token"] != made.json()["token"]
    revoked = admin(server, "POST", f"/api/v1/tokens/{made.json()['id']}/revoke")
    assert revoked.status_code == 200, revoked.text


# --- 11. an owner tightens an administrator's restrictions, never loosens them ---------


def test_a_member_cannot_loosen_an_allow_list_an_admin_set(server: Server) -> None:
    with console_client(server) as member:
        signed = member.post("/api/v1/session", json={
            "email": server.seeded["member"]["email"],
            "password": server.seeded["member"]["password"]})
        csrf = [("X-CSRF-Token", signed.json()["csrf_token"])]
        made = member.post("/api/v1/tokens", headers=csrf,
                           json={"name": "member sheet", "expires_in_days": 7}).json()
        url = f"/api/v1/tokens/{made['id']}"
        pinned = admin(server, "PATCH", url, json={"ip_allowlist": ["203.0.113.0/24"]})
        assert pinned.status_code == 200, pinned.text
        for wider in ([], ["198.51.100.0/24"], ["203.0.0.0/16"], ["::/0"]):
            refused = member.patch(url, headers=csrf, json={"ip_allowlist": wider})
            assert refused.status_code == 403, (wider, refused.text)
            assert refused.json()["field"] == "ip_allowlist"
        # the console's edit form is refused the same way
        page = member.get(f"/console/tokens/{made['id']}")
        form_csrf = FORM_FIELD.search(page.text)
        assert form_csrf
        cleared = member.post(f"/console/tokens/{made['id']}", data={
            "csrf_token": form_csrf.group(1), "name": "member sheet", "description": "",
            "ip_allowlist": "", "target": ""})
        assert cleared.status_code in (403, 422), cleared.status_code
        narrower = member.patch(url, headers=csrf, json={"ip_allowlist": ["203.0.113.7/32"]})
        assert narrower.status_code == 200 and narrower.json()["ip_allowlist"] == [
            "203.0.113.7/32"]
        back = member.patch(url, headers=csrf, json={"ip_allowlist": ["203.0.113.0/24"]})
        assert back.status_code == 200, back.text
        renamed = member.patch(url, headers=csrf, json={"name": "renamed sheet"})
        assert renamed.status_code == 200
    shown = admin(server, "GET", url).json()
    assert shown["ip_allowlist"] == ["203.0.113.0/24"]
    # the administrator may loosen what they set
    assert admin(server, "PATCH", url, json={"ip_allowlist": []}).status_code == 200


# --- 8. the setup link is spent once, however many submissions race ---------------------


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_the_setup_link_makes_one_account_under_concurrency(
        backend: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if backend == "postgresql" else None
        fresh = Server(env=server_env(tmp_path, url), port=free_port(),
                       log_path=tmp_path / "server.log", command=("serve",))
        if url:
            fresh.cli("migrate")
        fresh.start()
        stack.callback(fresh.stop)
        found = re.search(r"(/console/setup/[A-Za-z0-9_-]+)", fresh.log_path.read_text())
        assert found, fresh.log_path.read_text()
        path = found.group(1)
        clients = [stack.enter_context(console_client(fresh)) for _ in range(8)]
        keys = []
        for client in clients:
            page = client.get(path)
            assert page.status_code == 200
            form = FORM_FIELD.search(page.text)
            assert form
            keys.append(form.group(1))
        barrier = threading.Barrier(len(clients))

        def submit(number: int) -> int:
            barrier.wait()
            return clients[number].post(path, data={
                "csrf_token": keys[number], "account_name": f"Race {number}",
                "email": f"boss{number}@race.test",
                "password": "a long enough password"}).status_code

        with ThreadPoolExecutor(len(clients)) as pool:
            statuses = list(pool.map(submit, range(len(clients))))
        assert statuses.count(303) == 1, statuses
        assert all(status in (303, 410, 422) for status in statuses), statuses
        listed = fresh.cli("accounts", "list", "--json")
        assert len(json.loads(listed.stdout)) == 1, listed.stdout


# --- 5 and #20.19. sign-in limits per account and per network; failures audited --------


def api_sign_in(server: Server, email: str, password: str, source: str = "127.0.0.1",
                forwarded: str | None = None) -> httpx.Response:
    headers = [("X-Forwarded-For", forwarded)] if forwarded else []
    return send(server, "POST", "/api/v1/session", headers, source=source,
                json={"email": email, "password": password})


def form_sign_in(server: Server, email: str, password: str, source: str) -> httpx.Response:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=15) as client:
        return console_sign_in(client, email, password)


def test_every_address_of_an_ipv6_64_shares_one_sign_in_budget(server: Server) -> None:
    def burst(attempt: int) -> tuple[list[int], int]:
        # the per-network limit counts per clock minute: a burst inside one, from a /64
        # (and a neighbouring /64) not used before
        network = f"2001:db8:{1 + attempt:x}"
        statuses = [api_sign_in(server, f"nobody{n}@demo.example", "guess", "127.0.0.2",
                                f"{network}:2::{n + 1:x}").status_code for n in range(11)]
        elsewhere = api_sign_in(server, "nobody@demo.example", "guess", "127.0.0.2",
                                f"{network}:3::1")
        return statuses, elsewhere.status_code

    statuses, elsewhere = within_one_minute(burst)
    assert statuses[:10] == [401] * 10 and statuses[10] == 429, statuses
    assert elsewhere == 401


# --- 14. the sign-in form's anti-CSRF pair must be one the server issued ----------------


def test_a_planted_form_key_pair_is_refused(server: Server) -> None:
    genuine = FORM_FIELD.search(httpx.get(f"{server.base_url}/console/login").text)
    assert genuine
    made_up = ["attacker-chosen-value", f"{int(time.time())}.attackernonce.{'0' * 64}"]
    parts = genuine.group(1).split(".")
    if len(parts) == 3:  # a genuine signature moved onto another nonce
        made_up.append(f"{parts[0]}.{parts[1][::-1]}.{parts[2]}")
    for planted in made_up:
        with console_client(server) as client:
            client.cookies.set("tallykey_form_key", planted, path="/console")
            answer = client.post("/console/login", data={
                "csrf_token": planted, "email": server.seeded["admin"]["email"],
                "password": server.seeded["admin"]["password"], "next": ""})
            assert answer.status_code == 403, (planted, answer.status_code)
            assert "tallykey_session" not in answer.headers.get("set-cookie", "")
    with console_client(server) as client:  # the server's own pair still signs in
        assert console_sign_in(client, server.seeded["admin"]["email"],
                               server.seeded["admin"]["password"]).status_code == 303


# --- 4. Secure cookies and HSTS whenever the client came over HTTPS ---------------------


def test_https_behind_a_trusted_proxy_gets_secure_cookies_and_hsts(server: Server) -> None:
    admin_login = {"email": server.seeded["admin"]["email"],
                   "password": server.seeded["admin"]["password"]}
    proxied = send(server, "POST", "/api/v1/session", [("X-Forwarded-Proto", "https")],
                   source="127.0.0.2", json=admin_login)
    assert proxied.status_code == 200
    assert "secure" in proxied.headers["set-cookie"].lower()
    assert proxied.headers["strict-transport-security"].startswith("max-age=")
    page = send(server, "GET", "/console/login", [("X-Forwarded-Proto", "https")],
                source="127.0.0.2")
    assert "secure" in page.headers["set-cookie"].lower()
    assert "strict-transport-security" in page.headers
    # the header means nothing from anyone but a trusted proxy
    forged = send(server, "POST", "/api/v1/session", [("X-Forwarded-Proto", "https")],
                  json=admin_login)
    assert "secure" not in forged.headers["set-cookie"].lower()
    assert "strict-transport-security" not in forged.headers
    plain = send(server, "POST", "/api/v1/session", source="127.0.0.2", json=admin_login)
    assert "secure" not in plain.headers["set-cookie"].lower()


# --- 12. searching by a pasted token never puts it in a URL ------------------------------


def test_searching_by_a_pasted_token_keeps_it_out_of_urls(server: Server) -> None:
    token = server.seeded["member"]["token"]
    prefix = token[:len("tlk_eu1_") + 12]
    with console_client(server) as client:
        console_sign_in(client, server.seeded["admin"]["email"],
                        server.seeded["admin"]["password"])
        page = client.get("/console/tokens")
        assert 'method="post" action="/console/tokens"' in page.text  # the search form
        searched = client.post("/console/tokens", data={
            "csrf_token": page_csrf(client), "q": token, "status": "all"})
        assert searched.status_code == 303
        location = searched.headers["location"]
        assert token[len(prefix):][:10] not in location and prefix in location
        results = client.get(location)
        assert "Demo member token" in results.text and token not in results.text
        forged = client.post("/console/tokens", data={"q": token})
        assert forged.status_code == 403  # a CSRF-checked form like every other
        typed = client.get("/console/tokens", params={"q": token})
        assert typed.status_code == 303 and token not in typed.headers["location"]
        for path in ("/console/tokens/inactive",):
            answer = client.post(path, data={"csrf_token": page_csrf(client), "q": token})
            assert answer.status_code == 303 and token not in answer.headers["location"]


# --- 16. the rest: webhooks, header limits, /metrics, XML -------------------------------


def test_webhooks_to_private_addresses_are_refused(server: Server) -> None:
    account = server.seeded["account"]
    for url in ("http://127.0.0.1:5432/", "http://169.254.169.254/latest/meta-data/"):
        added = server.cli("webhooks", "add", "-a", account, "--url", url, check=False)
        assert added.returncode != 0 and "TALLYKEY_WEBHOOK_PRIVATE_TARGETS" in added.stderr
    listed = server.cli("webhooks", "list", "-a", account, "--json")
    assert json.loads(listed.stdout) == []


def test_header_floods_are_refused(server: Server) -> None:
    many = [(f"X-Filler-{n}", "x") for n in range(150)]
    assert send(server, "GET", "/healthz", many).status_code == 431
    huge = [("X-Filler", "x" * 200_000)]
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        try:
            status = client.get("/healthz", headers=huge).status_code
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            status = 0  # the connection was dropped: refused as well
    assert status in (0, 431), status
    assert send(server, "GET", "/healthz").status_code == 200
    # a large body right behind small headers is no header flood
    body = send(server, "POST", "/api/v1/verify", json={"token": "x" * 200_000})
    assert body.status_code == 422, body.status_code


def test_xml_answers_survive_control_characters(server: Server) -> None:
    created = admin(server, "POST", "/core/v3/employees", json={
        "name": "Control Person", "email": "control@employees.example",
        "job_title": "Ops\x0b\x1bLead", "workspace": "hq"})
    assert created.status_code == 201, created.text
    token = server.seeded["admin"]["token"]
    answer = send(server, "GET", "/core/v3/employees", [
        ("Authorization", f"Bearer {token}"), ("Accept", "application/xml")])
    assert answer.status_code == 200
    document = SafeElementTree.fromstring(answer.content)  # a parser accepts it
    titles = [element.text for element in document.iter("job_title")]
    assert "Ops\ufffd\ufffdLead" in titles


# --- 9. audit heads: saved (and signed) elsewhere, they reveal a cut or rewritten chain --


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_saved_heads_reveal_a_truncated_audit_chain(backend: str, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    with ExitStack() as stack:
        url = stack.enter_context(fresh_postgres_database()) if backend == "postgresql" else None
        store = Server(env=server_env(tmp_path, url, TALLYKEY_AUDIT_SIGNING_KEY=pem), port=0,
                       log_path=tmp_path / "cli.log")
        if url:
            store.cli("migrate")
        seeded = json.loads(store.cli("demo", "--seed-only", "--json").stdout)
        table = store.cli("audit", "heads").stdout
        assert seeded["account"] in table
        saved = tmp_path / "heads.json"
        saved.write_text(store.cli("audit", "heads", "--sign").stdout)
        document = json.loads(saved.read_text())
        assert document["signature"]["alg"] == "Ed25519"
        [head] = [h for h in document["heads"] if h["account"] == seeded["account"]]
        assert head["seq"] >= 2
        assert store.cli("audit", "verify", "--heads", str(saved)).returncode == 0

        # the review's attack: delete the newest entry and reset the head to the one before
        database = Database(normalise_database_url(
            url or f"sqlite:///{tmp_path / 'data' / 'tallykey.db'}"))
        stack.callback(database.dispose)
        with database.transaction() as session:
            last = session.scalar(select(AuditEvent).where(
                AuditEvent.chain == head["chain"], AuditEvent.seq == head["seq"]))
            assert last is not None
            session.execute(update(AuditChainHead).where(
                AuditChainHead.chain == head["chain"]).values(seq=last.seq - 1,
                                                              hash=last.prev_hash))
            session.delete(last)
        assert store.cli("audit", "verify").returncode == 0  # the chain alone cannot tell
        anchored = store.cli("audit", "verify", "--heads", str(saved), check=False)
        assert anchored.returncode == 1 and "is gone" in anchored.stderr, anchored.stderr

        # a saved document edited to match the cut chain fails its signature
        document["heads"] = [dict(h, seq=h["seq"] - 1) if h["chain"] == head["chain"] else h
                             for h in document["heads"]]
        edited = tmp_path / "edited.json"
        edited.write_text(json.dumps(document))
        forged = store.cli("audit", "verify", "--heads", str(edited), check=False)
        assert forged.returncode == 1 and "signature" in forged.stderr, forged.stderr
