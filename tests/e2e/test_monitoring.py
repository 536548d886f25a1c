"""Monitoring against a real server: usage counts equal the requests sent, `/metrics`
parses, and the JSON request log holds one line per request and no secret."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tallykey.tokens.format import TOKEN_PATTERN

from .conftest import Server, running_server

ALLOWED = 2000
DENIED = 600
THREADS = 4


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"monitoring-{request.param}")
    with running_server(tmp, request.param, serve_args=("--log-format", "json"),
                        TALLYKEY_TRUSTED_PROXIES="127.0.0.2/32") as live:
        yield live


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def send(server: Server, token: str, scope: str, count: int) -> list[int]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        return [client.get("/auth/request", params={"scope": scope},
                           headers={**bearer(token), "User-Agent": "load/1"}).status_code
                for _ in range(count)]


def token_id(server: Server, token: str) -> str:
    answer = httpx.get(f"{server.base_url}/core/v3/info", headers=bearer(token), timeout=10)
    assert answer.status_code == 200, answer.text
    found: str = answer.json()["token"]["id"]
    return found


def usage(server: Server, owner: str, subject: str) -> httpx.Response:
    return httpx.get(f"{server.base_url}/api/v1/tokens/{subject}/usage",
                     headers=bearer(owner), timeout=10)


def totals(report: dict[str, Any]) -> tuple[int, dict[str, int]]:
    allowed = sum(point["allowed"] for point in report["hourly"])
    denied: dict[str, int] = {}
    for point in report["hourly"]:
        for reason, count in point["denied_by_reason"].items():
            denied[reason] = denied.get(reason, 0) + count
    return allowed, denied


def test_usage_counts_equal_the_requests_sent(server: Server) -> None:
    admin, member = server.seeded["admin"]["token"], server.seeded["member"]["token"]
    member_id = token_id(server, member)  # one allowed request of its own
    jobs = [("employees:read", ALLOWED // THREADS)] * THREADS + [
        ("employees:write", DENIED // THREADS)] * THREADS
    with ThreadPoolExecutor(THREADS * 2) as pool:
        results = list(pool.map(lambda job: send(server, member, *job), jobs))
    statuses = [status for batch in results for status in batch]
    assert statuses.count(204) == ALLOWED and statuses.count(403) == DENIED
    deadline = time.monotonic() + 15
    while True:  # nodes flush about once a second
        answer = usage(server, admin, member_id)
        assert answer.status_code == 200, answer.text
        report = answer.json()
        if totals(report) == (ALLOWED + 1, {"insufficient_scope": DENIED}):
            break
        assert time.monotonic() < deadline, totals(report)
        time.sleep(0.2)
    assert report["last_used_ip"] == "127.0.0.1" and report["last_used_agent"] == "load/1"
    assert [entry["ip"] for entry in report["recent_ips"]] == ["127.0.0.1"]
    assert sum(p["allowed"] for p in report["daily"]) == ALLOWED + 1
    assert len(report["hourly"]) == 48 and len(report["daily"]) == 30
    time.sleep(1.5)  # another flush: nothing is counted twice
    assert totals(usage(server, admin, member_id).json())[0] == ALLOWED + 1


def test_usage_follows_the_tenant_rules(server: Server) -> None:
    admin = server.seeded["admin"]["token"]
    member = server.seeded["member"]["token"]
    other = server.seeded["other_account"]["admin"]["token"]
    admin_id = token_id(server, admin)
    assert usage(server, other, admin_id).status_code == 404
    assert usage(server, member, admin_id).status_code in (403, 404)
    assert usage(server, admin, "no-such-token").status_code == 404
    assert usage(server, admin, admin_id).status_code == 200
    too_many = httpx.get(f"{server.base_url}/api/v1/tokens/{admin_id}/usage",
                         params={"hours": 100000}, headers=bearer(admin), timeout=10)
    assert too_many.status_code in (400, 422)


def scrape(server: Server) -> dict[str, Any]:
    answer = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items())
                                        if k != "le")
            if "le" in sample.labels:
                continue
            samples[key] = sample.value
    return samples


def test_metrics_parse_and_add_up(server: Server) -> None:
    admin, member = server.seeded["admin"]["token"], server.seeded["member"]["token"]
    send(server, member, "employees:read", 200)
    send(server, member, "employees:write", 10)
    httpx.get(f"{server.base_url}/auth/request", headers={"Authorization": "Bearer x"})
    created = httpx.post(f"{server.base_url}/api/v1/tokens", headers=bearer(admin),
                         json={"name": "to revoke", "expires_in_days": 7}, timeout=10)
    assert created.status_code == 201
    revoked = httpx.post(f"{server.base_url}/api/v1/tokens/{created.json()['id']}/revoke",
                         headers=bearer(admin), timeout=10)
    assert revoked.status_code == 200
    samples = scrape(server)
    assert samples["tallykey_verifications_total|outcome=allowed"] >= 200
    assert samples["tallykey_verifications_total|outcome=insufficient_scope"] >= 10
    assert samples["tallykey_verifications_total|outcome=malformed"] >= 1  # by reason
    assert samples["tallykey_verification_seconds_count"] >= 200 // 64
    assert 0 < samples["tallykey_verification_cache_hit_ratio"] <= 1
    assert samples["tallykey_verification_cache_hits_total"] > 0
    assert samples["tallykey_verification_cache_misses_total"] >= 1
    assert samples["tallykey_propagation_lag_seconds_count"] >= 1
    assert "tallykey_outbox_backlog|status=pending" in samples
    # A new token mailed the admins; without SMTP the mail waits in the outbox.
    assert samples["tallykey_outbox_backlog|status=pending"] >= 1


def test_json_request_logs_parse_and_hold_no_secret(server: Server) -> None:
    member = server.seeded["member"]["token"]
    member_id = token_id(server, member)
    send(server, member, "employees:read", 5)
    pasted = httpx.get(f"{server.base_url}/core/v3/{member}", timeout=10)  # a token in a path
    assert pasted.status_code == 404
    time.sleep(0.3)
    lines = [line for line in Path(server.log_path).read_text().splitlines()
             if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    requests = [r for r in records if r.get("logger") == "tallykey.access"]
    assert requests, lines[-5:]
    for record in requests:
        assert {"method", "path", "status", "duration_ms", "client_ip", "token_id"} <= set(record)
    mine = [r for r in requests if r["path"] == "/auth/request" and r["status"] == 204]
    assert len(mine) >= 5 and {r["token_id"] for r in mine} == {member_id}
    assert {r["client_ip"] for r in mine} == {"127.0.0.1"}
    text = Path(server.log_path).read_text()
    for seeded in (server.seeded["admin"]["token"], member,
                   server.seeded["other_account"]["admin"]["token"]):
        assert seeded not in text
    assert not TOKEN_PATTERN.search(text)
    assert "authorization" not in text.lower()
    assert any("[redacted token]" in r["path"] for r in requests)


def test_the_access_log_names_the_client_every_other_surface_sees(server: Server) -> None:
    """Two `X-Forwarded-For` lines (an outer proxy's, then the trusted inner proxy's own):
    the access log, like every other surface, walks all of them from the right (issue
    #15, item 1); the last line alone would name the proxy."""
    transport = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.base_url, transport=transport, timeout=10) as client:
        answer = client.get("/healthz", headers=[("X-Forwarded-For", "203.0.113.7"),
                                                 ("X-Forwarded-For", "127.0.0.2")])
    assert answer.status_code == 200
    deadline = time.monotonic() + 5
    seen: set[str] = set()
    while time.monotonic() < deadline and "203.0.113.7" not in seen:
        seen = {json.loads(line).get("client_ip", "")
                for line in Path(server.log_path).read_text().splitlines()
                if line.startswith("{") and '"/healthz"' in line}
        time.sleep(0.05)
    assert "203.0.113.7" in seen and "127.0.0.2" not in seen


def test_metrics_cover_every_worker_process(tmp_path: Path) -> None:
    """`--workers 2`: whichever worker answers `/metrics` reports all of them
    (prometheus-client multiprocess mode)."""
    with running_server(tmp_path, "sqlite", serve_args=("--workers", "2")) as live:
        member = live.seeded["member"]["token"]
        before = scrape(live).get("tallykey_verifications_total|outcome=allowed", 0)
        with ThreadPoolExecutor(4) as pool:  # new connections: both workers get some
            list(pool.map(lambda _: httpx.get(
                f"{live.base_url}/auth/request", params={"scope": "employees:read"},
                headers=bearer(member), timeout=10).status_code, range(300)))
        deadline = time.monotonic() + 10
        while True:
            seen = [scrape(live).get("tallykey_verifications_total|outcome=allowed", 0)
                    for _ in range(4)]
            if all(value - before >= 300 for value in seen):
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.3)
