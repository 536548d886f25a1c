"""Round three's token findings (issue #25: 6, 10, 11 and the external-id counter),
replayed against a real server on SQLite and on PostgreSQL: each test attacks the way the
red team did and fails on the code before the fix."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from .conftest import Server, manage, new_token

FORM_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')
#: A window no test run straddles (30 days, the longest a rate limit may have).
LONG_WINDOW = 30 * 86_400


def spend(server: Server, token: str) -> int:
    """One request through the proxy endpoint: 204 admitted, 429 refused."""
    return httpx.get(f"{server.base_url}/auth/request", timeout=15,
                     headers={"Authorization": f"Bearer {token}"}).status_code


def self_renew(server: Server, token: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}/api/v1/tokens/self/renew", timeout=15,
                      headers={"Authorization": f"Bearer {token}"},
                      json={"expires_in_days": 30, "grace_seconds": 3600})


def verifies(server: Server, token: str) -> bool:
    answer = httpx.post(f"{server.base_url}/api/v1/verify", json={"token": token},
                        timeout=15).json()
    return bool(answer["allowed"])


def assert_refused(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason, response.text
    assert "tlk_" not in response.text


@contextmanager
def member_session(server: Server) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """The demo member signed in through the session API: the client and its CSRF header."""
    with httpx.Client(base_url=server.base_url, timeout=15, follow_redirects=False) as client:
        signed = client.post("/api/v1/session", json={
            "email": server.seeded["member"]["email"],
            "password": server.seeded["member"]["password"]})
        assert signed.status_code == 200, signed.text
        yield client, {"X-CSRF-Token": signed.json()["csrf_token"]}


def form_csrf(client: httpx.Client, path: str) -> str:
    found = FORM_FIELD.search(client.get(path).text)
    assert found
    return found.group(1)


def concurrently(server: Server, tokens: list[str], each: int) -> dict[int, int]:
    """`each` requests per client, one client per entry of `tokens`, all at once."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Barrier(len(tokens))

    def client(token: str) -> None:
        with httpx.Client(base_url=server.base_url, timeout=15) as http:
            start.wait()
            for _ in range(each):
                status = http.get("/auth/request", headers={
                    "Authorization": f"Bearer {token}"}).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
    threads = [threading.Thread(target=client, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


# --- 6. a rotated-out or renewed secret cannot renew or manage its own token ------------


def test_a_rotated_out_secret_cannot_renew_or_manage_its_token(server: Server) -> None:
    made = new_token(server, name="leaked", scopes=["tokens:renew_self", "tokens:manage"])
    leaked, token_id = made["token"], made["id"]
    rotated = manage(server, "POST", f"/api/v1/tokens/{token_id}/rotate",
                     json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    current = rotated.json()["token"]
    assert verifies(server, leaked), "the grace period keeps the old secret verifying"
    # the red team's attack: the old secret renews itself during the grace
    assert_refused(self_renew(server, leaked), 403, "retiring_secret")
    # nor may it do anything else to its own token through the management API
    for method, path, body in (
            ("POST", "rotate", {"grace_seconds": 0}),
            ("POST", "renew", {"expires_in_days": 30, "grace_seconds": 0}),
            ("PATCH", "", {"name": "taken over", "ip_allowlist": ["0.0.0.0/0"]}),
            ("POST", "end-grace", None), ("POST", "suspend", None),
            ("POST", "revoke", None)):
        url = f"/api/v1/tokens/{token_id}" + (f"/{path}" if path else "")
        refused = manage(server, method, url, token=leaked, json=body)
        assert_refused(refused, 403, "retiring_secret")
    shown = manage(server, "GET", f"/api/v1/tokens/{token_id}").json()
    assert shown["name"] == "leaked" and shown["status"] == "active"
    assert shown["successor_id"] is None
    assert verifies(server, current), "the owner keeps the token"
    # the current secret may renew; then its own secret is in the renewal's grace ...
    renewed = self_renew(server, current)
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()
    assert verifies(server, current)
    assert_refused(self_renew(server, current), 403, "retiring_secret")
    # ... and may not manage the successor either (the rotation's old secret neither)
    for secret in (current, leaked):
        refused = manage(server, "POST", f"/api/v1/tokens/{successor['id']}/rotate",
                         token=secret, json={"grace_seconds": 0})
        assert_refused(refused, 403, "retiring_secret")
    again = self_renew(server, successor["token"])
    assert again.status_code == 201, again.text
    # a replaced secret changes no other token either; a current one does as before
    other = new_token(server, name="other")
    assert_refused(manage(server, "PATCH", f"/api/v1/tokens/{other['id']}",
                          token=successor["token"], json={"name": "renamed"}),
                   403, "retiring_secret")
    assert manage(server, "PATCH", f"/api/v1/tokens/{other['id']}",
                  token=again.json()["token"], json={"name": "renamed"}).status_code == 200


# --- 10. admin-set suspensions and limits bind members --------------------------------


def test_a_member_cannot_resume_an_admin_suspension_nor_lift_admin_limits(
        server: Server) -> None:
    with member_session(server) as (member, csrf):
        made = member.post("/api/v1/tokens", headers=csrf,
                           json={"name": "member metered", "expires_in_days": 7})
        assert made.status_code == 201, made.text
        token, url = made.json()["token"], f"/api/v1/tokens/{made.json()['id']}"
        limited = manage(server, "PATCH", url, json={
            "rate_limits": [{"name": "default", "limit": 5, "per_seconds": LONG_WINDOW}],
            "credits": {"remaining": 10}})
        assert limited.status_code == 200, limited.text
        # the red team's attack: lift what the administrator set
        attacks: tuple[dict[str, Any], ...] = (
            {"credits": {"remaining": 1_000_000}},
            {"credits": None},
            {"credits": {"remaining": 10, "refill": {"amount": 10, "interval": "daily"}}},
            {"rate_limits": []},
            {"rate_limits": [{"name": "default", "limit": 50, "per_seconds": LONG_WINDOW}]},
            {"rate_limits": [{"name": "default", "limit": 5, "per_seconds": 1}]},
            {"rate_limits": [{"name": "other", "limit": 1, "per_seconds": 60}]})
        for body in attacks:
            refused = member.patch(url, headers=csrf, json=body)
            assert_refused(refused, 403, "admin_limit")
            assert refused.json()["field"] in ("credits", "rate_limits")
        # the console's edit form is refused the same way
        page = member.get(url.replace("/api/v1", "/console"))
        found = FORM_FIELD.search(page.text)
        assert found
        form = {"csrf_token": found.group(1), "name": "member metered", "description": "",
                "ip_allowlist": "", "target": "", "controls_shown": "1",
                "rate_limits": f"default=5/{LONG_WINDOW}", "credits_remaining": "1000000",
                "refill_amount": "", "refill_interval": "", "credits_shown": "10||",
                "metadata": "", "external_id": ""}
        posted = member.post(url.replace("/api/v1", "/console"), data=form)
        assert posted.status_code == 403, posted.status_code
        assert "administrator" in posted.text
        # tightening is the member's right
        tighter = member.patch(url, headers=csrf, json={
            "rate_limits": [{"name": "default", "limit": 3, "per_seconds": LONG_WINDOW},
                            {"name": "burst", "limit": 2, "per_seconds": 1}],
            "credits": {"remaining": 4}})
        assert tighter.status_code == 200, tighter.text
        back = member.patch(url, headers=csrf, json={"rate_limits": [
            {"name": "default", "limit": 5, "per_seconds": LONG_WINDOW}]})
        assert back.status_code == 200, back.text
        assert_refused(member.patch(url, headers=csrf, json={"credits": {"remaining": 10}}),
                       403, "admin_limit")
        shown = manage(server, "GET", url).json()
        assert shown["credits"]["remaining"] == 4
        assert [r["limit"] for r in shown["rate_limits"]] == [5]
        # an administrator's suspension binds the member on the API and in the console
        assert manage(server, "POST", f"{url}/suspend").status_code == 200
        assert_refused(member.post(f"{url}/resume", headers=csrf), 403, "admin_suspension")
        console_url = url.replace("/api/v1", "/console")
        resumed = member.post(f"{console_url}/resume",
                              data={"csrf_token": form_csrf(member, console_url)})
        assert resumed.status_code == 403 and "administrator" in resumed.text
        assert spend(server, token) == 401
        assert manage(server, "GET", url).json()["status"] == "suspended"
        # the member resumes a suspension of their own; the admin resumes theirs
        assert manage(server, "POST", f"{url}/resume").status_code == 200
        assert member.post(f"{url}/suspend", headers=csrf).status_code == 200
        assert member.post(f"{url}/resume", headers=csrf).status_code == 200
        assert spend(server, token) == 204
        # the administrator may lift what they set
        lifted = manage(server, "PATCH", url, json={"rate_limits": [], "credits": None})
        assert lifted.status_code == 200, lifted.text
        free = member.patch(url, headers=csrf, json={"credits": {"remaining": 1000}})
        assert free.status_code == 200, free.text


# --- 11. renewal (and rotation) move credits and windows, never copy them ----------------


def test_renewal_moves_credits_exactly_under_concurrency(server: Server) -> None:
    made = new_token(server, kind="application", scopes=["employees:read"],
                     credits={"remaining": 10})
    old = made["token"]
    assert spend(server, old) == 204
    renewed = manage(server, "POST", f"/api/v1/tokens/{made['id']}/renew",
                     json={"expires_in_days": 30, "grace_seconds": 3600})
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()["token"]
    # old and new secret, 8 clients each, all at once: one balance of 9 between them
    statuses = concurrently(server, [old, successor] * 8, each=3)
    assert statuses == {204: 9, 429: 2 * 8 * 3 - 9}, statuses
    assert spend(server, old) == 429 and spend(server, successor) == 429
    assert manage(server, "GET", f"/api/v1/tokens/{renewed.json()['id']}").json()[
        "credits"]["remaining"] == 0


def test_rotation_shares_credits_between_old_and_new_secret(server: Server) -> None:
    made = new_token(server, kind="application", scopes=["employees:read"],
                     credits={"remaining": 10})
    rotated = manage(server, "POST", f"/api/v1/tokens/{made['id']}/rotate",
                     json={"grace_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    statuses = concurrently(server, [made["token"], rotated.json()["token"]] * 8, each=3)
    assert statuses == {204: 10, 429: 2 * 8 * 3 - 10}, statuses


def test_renewal_does_not_restart_a_rate_limit_window(server: Server) -> None:
    made = new_token(server, kind="application", scopes=["employees:read"], rate_limits=[
        {"name": "default", "limit": 4, "per_seconds": LONG_WINDOW}])
    old = made["token"]
    assert [spend(server, old) for _ in range(3)] == [204, 204, 204]
    renewed = manage(server, "POST", f"/api/v1/tokens/{made['id']}/renew",
                     json={"expires_in_days": 30, "grace_seconds": 3600})
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()["token"]
    assert [spend(server, successor) for _ in range(3)] == [204, 429, 429]
    assert spend(server, old) == 429
    # and a renewal of the renewal continues the same window
    again = manage(server, "POST", f"/api/v1/tokens/{renewed.json()['id']}/renew",
                   json={"expires_in_days": 30, "grace_seconds": 0})
    assert again.status_code == 201, again.text
    assert spend(server, again.json()["token"]) == 429


# --- low: a member's token cannot join a customer's external-id counter ----------------


def test_a_members_token_cannot_spend_a_customers_external_id_counter(
        server: Server) -> None:
    shared = [{"name": "customer", "limit": 3, "per_seconds": LONG_WINDOW,
               "shared": "external_id"}]
    customer = new_token(server, kind="application", scopes=["employees:read"],
                         external_id="cust-e2e-42", rate_limits=shared)
    with member_session(server) as (member, csrf):
        made = member.post("/api/v1/tokens", headers=csrf, json={
            "name": "joins the customer", "expires_in_days": 7,
            "external_id": "cust-e2e-42", "rate_limits": shared})
        assert made.status_code == 201, made.text
        intruder = made.json()["token"]
        # the member's requests count on the member's own counter only
        assert [spend(server, intruder) for _ in range(4)] == [204, 204, 204, 429]
    # the customer's counter is untouched, and its application tokens still share it
    second = new_token(server, kind="application", scopes=["employees:read"],
                       external_id="cust-e2e-42", rate_limits=shared)
    assert [spend(server, customer["token"]) for _ in range(2)] == [204, 204]
    assert [spend(server, second["token"]) for _ in range(2)] == [204, 429]
    assert spend(server, customer["token"]) == 429
