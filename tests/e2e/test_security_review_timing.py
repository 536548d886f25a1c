"""The second security review's findings (issue #15) that hold a bound on time, replayed
against a real server: the sign-in back-off must end by itself while it is waited for,
and the failed-authentication throttle must let a token the node has cached (for the
cache's lifetime) pass. Serial (tests/conftest.py `SERIAL_FILES`): seconds matter. The
rest of the review is `test_security_review.py`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from .conftest import Server, running_server, within_one_minute
from .test_security_review import admin, api_sign_in, form_sign_in, send

# --- 5 and #20.19. sign-in limits per account; failures audited ------------------------


def test_distributed_guessing_of_one_account_is_slowed_and_audited(server: Server) -> None:
    password = "the victim's long password"
    created = admin(server, "POST", "/api/v1/users", json={
        "email": "victim@demo.example", "role": "member", "password": password})
    assert created.status_code == 201, created.text
    victim = created.json()["id"]
    statuses = []
    for attempt in range(12):  # every attempt from another address, console and API
        source = f"127.0.0.{10 + attempt}"
        answer = (form_sign_in(server, "victim@demo.example", "guess", source)
                  if attempt % 2 else api_sign_in(server, "Victim@demo.example", "guess", source))
        statuses.append(answer.status_code)
    assert statuses[:5] == [401] * 5 and 429 in statuses, statuses
    right = api_sign_in(server, "victim@demo.example", password, "127.0.0.40")
    assert right.status_code == 429, right.text  # blocked: not even the right password
    assert int(right.headers["retry-after"]) >= 1
    assert "e-mail address" in right.json()["message"]
    deadline = time.monotonic() + 90  # a back-off, not a lockout: it ends by itself
    while right.status_code == 429 and time.monotonic() < deadline:
        time.sleep(min(int(right.headers["retry-after"]), 5))
        right = api_sign_in(server, "victim@demo.example", password, "127.0.0.41")
    assert right.status_code == 200, right.text
    failed = admin(server, "GET", "/api/v1/audit", params={
        "action": "user.login_failed", "target_id": victim, "limit": 100}).json()["items"]
    assert len(failed) == statuses.count(401)
    assert {entry["details"]["via"] for entry in failed} == {"api", "console"}
    assert {entry["ip"] for entry in failed} >= {"127.0.0.10", "127.0.0.11"}
    assert all(entry["details"]["reason"] == "wrong_password" for entry in failed)
    assert any("blocked_seconds" in entry["details"] for entry in failed)
    logins = admin(server, "GET", "/api/v1/audit", params={
        "action": "user.login", "target_id": victim}).json()["items"]
    assert [entry["ip"] for entry in logins] == ["127.0.0.41"]  # API sign-ins audited too
    assert "guess" not in json.dumps(failed) and password not in json.dumps(failed)


METRICS_TOKEN = "scrape-credential-for-tests"

# --- 15. the failed-authentication throttle per network; valid cached tokens pass -------


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def hardened(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Server]:
    """A server configured the careful way: auth-failure limit on, an https public URL."""
    tmp = tmp_path_factory.mktemp(f"hardened-{request.param}")
    with running_server(tmp, request.param, TALLYKEY_AUTH_FAIL_LIMIT="5",
                        TALLYKEY_TRUSTED_PROXIES="127.0.0.2/32",
                        TALLYKEY_PUBLIC_URL="https://tallykey.example",
                        TALLYKEY_METRICS_TOKEN=METRICS_TOKEN) as live:
        yield live


def test_the_auth_throttle_counts_per_network_and_lets_valid_tokens_pass(
        hardened: Server) -> None:
    valid = hardened.seeded["member"]["token"]
    wrong = valid[:-8] + ("A" * 8 if not valid.endswith("A" * 8) else "B" * 8)

    def info(token: str, client: str) -> int:
        return send(hardened, "GET", "/core/v3/info",
                    [("Authorization", f"Bearer {token}"), ("X-Forwarded-For", client)],
                    source="127.0.0.2").status_code

    def burst(attempt: int) -> tuple[int, list[int], int, int]:
        # the throttle counts per clock minute: a burst inside one, from a /64 (and a
        # neighbouring /64) not used before
        network = f"2001:db8:{5 + attempt:x}"
        cached = info(valid, f"{network}:5::1")  # now cached on this node
        statuses = [info(wrong, f"{network}:5::{n:x}") for n in range(2, 9)]
        return (cached, statuses, info(valid, f"{network}:5::99"),
                info(wrong, f"{network}:6::1"))

    cached, statuses, shared, other = within_one_minute(burst)
    assert cached == 200
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
    assert shared == 200  # the shared network's valid token passes
    assert other == 401  # another /64 has its own budget


def test_an_https_public_url_makes_cookies_secure_and_sends_hsts(hardened: Server) -> None:
    signed = send(hardened, "POST", "/api/v1/session", json={
        "email": hardened.seeded["admin"]["email"],
        "password": hardened.seeded["admin"]["password"]})
    assert "secure" in signed.headers["set-cookie"].lower()
    for path in ("/healthz", "/console/login", "/api/v1/tokens"):
        response = send(hardened, "GET", path)
        assert response.headers["strict-transport-security"].startswith("max-age="), path


def test_metrics_need_the_scrape_credential_when_one_is_set(hardened: Server) -> None:
    assert send(hardened, "GET", "/metrics").status_code == 401
    wrong = send(hardened, "GET", "/metrics", [("Authorization", "Bearer guess")])
    assert wrong.status_code == 401 and METRICS_TOKEN not in wrong.text
    scraped = send(hardened, "GET", "/metrics",
                   [("Authorization", f"Bearer {METRICS_TOKEN}")])
    assert scraped.status_code == 200 and "tallykey_" in scraped.text
