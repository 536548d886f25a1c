"""`GET /api/v1/analytics/verifications` (SPEC §16) through the real app: requests verified
through `/api/v1/verify` and `/auth/request`, written by the app's usage flush, then
counted for every `group_by` and interval, as JSON and as CSV; another account's usage
never shows; a member sees their own tokens' only; bad parameters get 422 naming the
field and the reason and the answer changes nothing.

Management calls here use a console session (cookie), not a token, so every usage row
is one of the requests the test sent and the ledger accounts for every count."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.monitor import analytics
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "127.0.0.1"
Key = tuple[str | None, str]  # (series key, bucket start)


def app_verifier(app: Any) -> Verifier:
    """The verifier of an app from `create_app` (its usage flush is ours to call)."""
    node = app
    while not hasattr(node, "fast_path"):
        node = node.app
    verifier: Verifier = node.fast_path.verifier
    return verifier


class Setup:
    def __init__(self, rt: Runtime, world: World, client: TestClient) -> None:
        self.rt, self.world, self.client = rt, world, client
        signed = client.post("/api/v1/session", json={"email": "admin@acme.test",
                                                       "password": "correct horse battery"})
        assert signed.status_code == 200, signed.text
        self.csrf = {"X-CSRF-Token": signed.json()["csrf_token"]}
        made = client.post("/api/v1/identities", headers=self.csrf,
                           json={"external_id": "cust_a"})
        assert made.status_code == 201, made.text
        self.identity = made.json()["id"]
        self.tokens: dict[str, dict[str, Any]] = {}
        for name, fields in (("crm", {"identity_id": self.identity,
                                      "workspace": world.sales.id}),
                             ("erp", {"identity_id": self.identity}),
                             ("ops", {"workspace": world.ops.id})):
            answer = client.post("/api/v1/tokens", headers=self.csrf, json={
                "name": name, "kind": "application", "expires_in_days": 30,
                "scopes": ["employees:read"], **fields})
            assert answer.status_code == 201, answer.text
            self.tokens[name] = answer.json()
            self.tokens[name]["workspace_id"] = fields.get("workspace")  # the view: slug
        other = rt.tokens.issue(world.as_other_admin, TokenDraft(
            name="globex manage", expires_in_days=30, scopes=["tokens:manage"]))
        self.other_admin = {"Authorization": f"Bearer {other.value}"}
        self.other_id = other.token.id
        #: (token id, outcome) of every request the test sent
        self.sent: list[tuple[str, str]] = []

    def verify(self, name: str, times: int, scope: str = "employees:read") -> None:
        token = self.tokens[name]
        for number in range(times):
            if number % 2:
                answer = self.client.get("/auth/request", params={"scope": scope}, headers={
                    "Authorization": f"Bearer {token['token']}"})
                outcome = "allowed" if answer.status_code == 204 else \
                    answer.headers["Tallykey-Reason"]
            else:
                body = self.client.post("/api/v1/verify", json={
                    "token": token["token"], "required_scopes": [scope]}).json()
                outcome = "allowed" if body["allowed"] else body["reason"]
            self.sent.append((token["id"], outcome))

    def expected(self, group_by: str) -> dict[str | None, Counter[str]]:
        keys = {t["id"]: {"token": t["id"], "identity": t["identity_id"],
                          "workspace": t["workspace_id"]} for t in self.tokens.values()}
        found: dict[str | None, Counter[str]] = {}
        for token_id, outcome in self.sent:
            key = outcome if group_by == "outcome" else keys[token_id][group_by]
            found.setdefault(key, Counter())[outcome] += 1
        return found

    def get(self, headers: dict[str, str] | None = None, **params: str) -> Any:
        return self.client.get("/api/v1/analytics/verifications", params=params,
                               headers=headers or {})


@pytest.fixture
def setup(rt: Runtime, world: World) -> Iterator[Setup]:
    app = create_app(rt)
    with TestClient(app, client=(IP, 40000), base_url="https://testserver",
                    follow_redirects=False) as client:
        made = Setup(rt, world, client)
        made.verify("crm", 5)
        made.verify("erp", 3)
        made.verify("ops", 4)
        made.verify("crm", 3, scope="payroll:write")  # refused: a scope it lacks
        other = client.post("/api/v1/verify", json={"token": "tlk_eu1_nosuchtoken"})
        assert other.json()["allowed"] is False  # an unknown token: no usage row
        app_verifier(app).flush_usage()  # the rest (the app flushes every second too)
        yield made


def series_counts(body: dict[str, Any]) -> dict[str | None, Counter[str]]:
    """key -> outcomes summed over the buckets (and the bucket sums checked)."""
    found: dict[str | None, Counter[str]] = {}
    for one in body["series"]:
        outcomes: Counter[str] = Counter()
        for bucket in one["buckets"]:
            assert bucket["refused"] == sum(bucket["by_reason"].values())
            outcomes["allowed"] += bucket["allowed"]
            outcomes.update(bucket["by_reason"])
        assert one["allowed"] == outcomes["allowed"]
        assert one["refused"] == sum(outcomes.values()) - outcomes["allowed"]
        found[one["key"]] = +outcomes
    return found


def csv_counts(text: str, group_by: str) -> dict[Key, tuple[int, int, dict[str, int]]]:
    rows = list(csv.DictReader(text.splitlines()))
    found = {}
    for row in rows:
        assert row["group_by"] == group_by
        by_reason = {c.removeprefix("refused_"): int(v) for c, v in row.items()
                     if c.startswith("refused_") and int(v)}
        found[(row["key"] or None, row["start"])] = (int(row["allowed"]),
                                                     int(row["refused"]), by_reason)
    return found


def json_rows(body: dict[str, Any]) -> dict[Key, tuple[int, int, dict[str, int]]]:
    return {(s["key"], b["start"]): (b["allowed"], b["refused"], b["by_reason"])
            for s in body["series"] for b in s["buckets"]}


@pytest.mark.parametrize("group_by", analytics.GROUPS)
@pytest.mark.parametrize("interval", analytics.INTERVALS)
def test_counts_equal_the_requests_sent_as_json_and_csv(setup: Setup, group_by: str,
                                                        interval: str) -> None:
    answer = setup.get(headers=setup.csrf, group_by=group_by, interval=interval)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["group_by"], body["interval"]) == (group_by, interval)
    assert body["retention_days"] == setup.rt.settings.usage_retention_days
    assert series_counts(body) == setup.expected(group_by)
    assert "payroll:write" not in str(body)  # reasons, never the scopes asked for
    as_csv = setup.get(headers={**setup.csrf, "Accept": "text/csv"}, group_by=group_by,
                       interval=interval)
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    assert csv_counts(as_csv.text, group_by) == json_rows(body)
    assert sum(a + r for a, r, _ in csv_counts(as_csv.text, group_by).values()) == len(
        setup.sent)


def test_labels_and_filters(setup: Setup, world: World) -> None:
    by_token = setup.get(headers=setup.csrf).json()
    assert {s["key"]: s["label"] for s in by_token["series"]} == {
        t["id"]: name for name, t in setup.tokens.items()}
    of_identity = setup.get(headers=setup.csrf, identity="cust_a", group_by="token").json()
    assert {s["key"] for s in of_identity["series"]} == {setup.tokens["crm"]["id"],
                                                          setup.tokens["erp"]["id"]}
    of_sales = setup.get(headers=setup.csrf, workspace="sales", group_by="outcome").json()
    crm = setup.tokens["crm"]["id"]
    assert series_counts(of_sales) == {o: Counter({o: n}) for o, n in Counter(
        outcome for token_id, outcome in setup.sent if token_id == crm).items()}
    one = setup.get(headers=setup.csrf, token=setup.tokens["ops"]["id"]).json()
    assert [(s["key"], s["allowed"]) for s in one["series"]] == [
        (setup.tokens["ops"]["id"], 4)]


def test_nothing_of_another_account(setup: Setup) -> None:
    theirs = setup.get(headers=setup.other_admin)
    assert theirs.status_code == 200, theirs.text
    ours = {t["id"] for t in setup.tokens.values()}
    assert not ours & {s["key"] for s in theirs.json()["series"]}
    for group_by in analytics.GROUPS:
        body = setup.get(headers=setup.other_admin, group_by=group_by).json()
        assert sum(s["allowed"] + s["refused"] for s in body["series"]) == 0 or all(
            s["key"] not in ours and s["key"] != setup.identity for s in body["series"])
    as_csv = setup.get(headers={**setup.other_admin, "Accept": "text/csv"})
    assert not any(token_id in as_csv.text for token_id in ours)
    for params in ({"token": setup.tokens["crm"]["id"]}, {"identity": setup.identity},
                   {"identity": "cust_a"}, {"workspace": "sales"}):
        refused = setup.get(headers=setup.other_admin, **params)
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"] == "not_found"


def test_a_member_sees_only_their_own_tokens(setup: Setup, rt: Runtime,
                                             world: World) -> None:
    with TestClient(setup.client.app, client=(IP, 40001), base_url="https://testserver",
                    follow_redirects=False) as member:
        assert member.post("/api/v1/session", json={
            "email": "member@acme.test", "password": "member password 1"}).status_code == 200
        own = rt.tokens.issue(world.as_member, TokenDraft(
            name="own", expires_in_days=3, scopes=["employees:read"]))
        for _ in range(2):
            assert member.post("/api/v1/verify", json={"token": own.value}
                               ).json()["allowed"] is True
        app_verifier(setup.client.app).flush_usage()
        for group_by in analytics.GROUPS:
            body = member.get("/api/v1/analytics/verifications",
                              params={"group_by": group_by}).json()
            assert sum(s["allowed"] for s in body["series"]) == 2
            assert sum(s["refused"] for s in body["series"]) == 0
        assert member.get("/api/v1/analytics/verifications", params={
            "token": setup.tokens["crm"]["id"]}).status_code == 404


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({"interval": "minute"}, "interval", "invalid_interval"),
    ({"group_by": "ip"}, "group_by", "invalid_group_by"),
    ({"since": "last week"}, "since", "invalid_time"),
    ({"since": "2030-01-02", "until": "2030-01-01"}, "since", "invalid_range"),
    ({"since": "2020-01-01", "until": "2030-01-01"}, "since", "range_too_long"),
    ({"since": "2029-11-01", "until": "2030-01-01", "interval": "hour"}, "since",
     "range_too_long"),
])
def test_bad_parameters_are_refused_with_a_reason(setup: Setup, params: dict[str, str],
                                                  field: str, reason: str) -> None:
    refused = setup.get(headers=setup.csrf, **params)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "validation_failed" and body["message"]
    assert (body["field"], body["reason"]) == (field, reason)
    as_csv = setup.get(headers={**setup.csrf, "Accept": "text/csv"}, **params)
    assert as_csv.status_code == 422 and as_csv.json()["reason"] == reason
    assert setup.get(headers=setup.csrf, since="x" * 41).status_code == 422


def test_without_credentials_and_in_the_openapi_document(setup: Setup) -> None:
    with TestClient(setup.client.app, client=(IP, 40002)) as anonymous:
        assert anonymous.get("/api/v1/analytics/verifications").status_code == 401
        document = anonymous.get("/openapi.json").json()
    operation = document["paths"]["/api/v1/analytics/verifications"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {
        "since", "until", "interval", "group_by"}
    assert "text/csv" in operation["responses"]["200"]["content"]
