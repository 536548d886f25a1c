"""Usage analytics against a real `tallykey` server (SPEC §16), on SQLite and PostgreSQL:
N verifications through `/auth/request` and `/api/v1/verify`, then, once the server's own
usage flush has written them (waited for, never slept), `GET
/api/v1/analytics/verifications` answers exactly N, as JSON and as CSV, per token, per
identity and per outcome."""

from __future__ import annotations

import csv
import json
import time
from typing import Any

import httpx

from .conftest import Server, manage, new_token

ALLOWED = 25
REFUSED = 5


def analytics(server: Server, accept: str = "application/json", **params: str
              ) -> httpx.Response:
    return httpx.get(f"{server.base_url}/api/v1/analytics/verifications", params=params,
                     timeout=10, headers={"Accept": accept, "Authorization":
                                          f"Bearer {server.seeded['admin']['token']}"})


def test_the_counts_equal_the_verifications_sent(server: Server) -> None:
    identity = manage(server, "POST", "/api/v1/identities",
                      json={"external_id": f"e2e_analytics_{server.port}"})
    assert identity.status_code == 201, identity.text
    token = new_token(server, name="analytics e2e", kind="application",
                      scopes=["employees:read"], identity_id=identity.json()["id"])
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        for number in range(ALLOWED):
            if number % 2:
                answer = http.get("/auth/request", params={"scope": "employees:read"},
                                  headers={"Authorization": f"Bearer {token['token']}"})
                assert answer.status_code == 204, answer.text
            else:
                assert http.post("/api/v1/verify", json={"token": token["token"]}
                                 ).json()["allowed"] is True
        for _ in range(REFUSED):
            answer = http.get("/auth/request", params={"scope": "payroll:write"},
                              headers={"Authorization": f"Bearer {token['token']}"})
            assert answer.status_code == 403
            reason = answer.headers["Tallykey-Reason"]

    def counted() -> dict[str, Any]:
        body: dict[str, Any] = analytics(server, token=token["id"], group_by="outcome",
                                         interval="hour").json()
        return {s["key"]: s["allowed"] + s["refused"] for s in body["series"]}

    deadline = time.monotonic() + 30
    while counted() != {"allowed": ALLOWED, reason: REFUSED}:  # flushed about every second
        assert time.monotonic() < deadline, f"not flushed in 30 s: {counted()}"
        time.sleep(0.2)

    by_token = analytics(server, group_by="token", identity=identity.json()["id"]).json()
    [series] = by_token["series"]
    assert (series["key"], series["label"]) == (token["id"], "analytics e2e")
    assert (series["allowed"], series["refused"]) == (ALLOWED, REFUSED)
    assert sum(b["by_reason"].get(reason, 0) for b in series["buckets"]) == REFUSED
    by_identity = analytics(server, group_by="identity",
                            identity=identity.json()["external_id"]).json()
    assert [(s["key"], s["allowed"], s["refused"]) for s in by_identity["series"]] == [
        (identity.json()["id"], ALLOWED, REFUSED)]
    as_csv = analytics(server, "text/csv", group_by="token", token=token["id"])
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(as_csv.text.splitlines()))
    assert sum(int(r["allowed"]) for r in rows) == ALLOWED
    assert sum(int(r["refused"]) for r in rows) == sum(int(r[f"refused_{reason}"])
                                                       for r in rows) == REFUSED
    cli = server.cli("analytics", "verifications", "-a", server.seeded["account"],
                     "--token", token["id"], "--json")
    body = json.loads(cli.stdout)
    assert [(s["allowed"], s["refused"]) for s in body["series"]] == [(ALLOWED, REFUSED)]
    other = manage(server, "GET", "/api/v1/analytics/verifications",
                   token=server.seeded["other_account"]["admin"]["token"])
    assert other.status_code == 200, other.text
    assert token["id"] not in other.text  # another account's usage never shows
