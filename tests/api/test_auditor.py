"""The auditor role over the JSON API (SPEC §17): an auditor reads every token of the
account, its usage and the audit log, and changes nothing.

`test_every_write_route_refuses_an_auditor` walks the app's own OpenAPI document: every
POST, PUT, PATCH and DELETE under /api/v1 answers an auditor's session 403 naming the
role, except the routes listed below (a person's own sign-in, and routes that take other
credentials than a person's session); a dump of every table before and after shows that
nothing changed. A write route added later is walked too: it must refuse an auditor
(by taking `ManagementActor`) or be listed here with a reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.actor import Actor
from tallykey.errors import AUDITOR_READ_ONLY, ReadOnlyRole
from tallykey.identities.service import IdentityDraft
from tallykey.people.sessions import CSRF_HEADER
from tallykey.plans.service import PlanDraft
from tallykey.runtime import Runtime
from tallykey.schema.tables import Token, metadata
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

AUDITOR_EMAIL = "auditor@acme.test"
AUDITOR_PASSWORD = "auditor password 1"
WRITE_METHODS = ("post", "put", "patch", "delete")

#: A person's own sign-in: an auditor may change their own password, end their own
#: sessions and sign out (`api.deps.OwnActor`); `test_an_auditor_manages_their_own_sign_in`
#: shows each works.
SELF_SERVICE = {
    ("DELETE", "/api/v1/session"),
    ("POST", "/api/v1/session/password"),
    ("DELETE", "/api/v1/session/sessions/{session_id}"),
}
#: Routes a person's session does not authenticate: signing in (and its second step),
#: asking for a reset link (anyone may, for any address), a token renewing itself (the
#: token is the credential; an auditor's tokens hold no scope), the verify endpoint and
#: leak reports (no session), and the operator API (an operator token only). With an
#: auditor's session they change nothing either (the dump shows it).
OTHER_CREDENTIALS = {
    ("POST", "/api/v1/session"),
    ("POST", "/api/v1/session/second-factor"),
    ("POST", "/api/v1/password-reset"),
    ("POST", "/api/v1/tokens/self/renew"),
    ("POST", "/api/v1/verify"),
    ("POST", "/api/v1/leaks"),
}
OPERATOR_PREFIX = "/api/v1/operator/"


#: The verification nodes' own heartbeats (leases), written in the background by every
#: running node: no account's data.
HEARTBEATS = {"nodes"}


def dump(rt: Runtime) -> dict[str, set[tuple[str, ...]]]:
    """Every row of every table, as text."""
    with rt.database.reading() as session:
        return {table.name: {tuple(repr(v) for v in row)
                             for row in session.execute(select(table)).all()}
                for table in metadata.sorted_tables if table.name not in HEARTBEATS}


def changed_tables(before: dict[str, set[tuple[str, ...]]],
                   after: dict[str, set[tuple[str, ...]]]) -> dict[str, Any]:
    return {name: {"gone": sorted(rows - after[name])[:2],
                   "new": sorted(after[name] - rows)[:2]}
            for name, rows in before.items() if rows != after[name]}


class Auditing:
    """Acme with tokens of an admin and of a member, and a signed-in auditor."""

    def __init__(self, world: World, rt: Runtime, client: TestClient) -> None:
        self.world, self.rt, self.client = world, rt, client
        operator = Actor.operator(world.acme_id)
        self.auditor = rt.accounts.create_user(operator, AUDITOR_EMAIL, role="auditor",
                                               password=AUDITOR_PASSWORD)
        self.tokens = [
            rt.tokens.issue(world.as_admin, TokenDraft(
                name="admin crm token", expires_in_days=30, scopes=["employees:read"])),
            rt.tokens.issue(world.as_admin, TokenDraft(
                name="ops application", kind="application", expires_in_days=30,
                scopes=["employees:read"], workspace="sales")),
            rt.tokens.issue(world.as_member, TokenDraft(
                name="member token", expires_in_days=30, workspace="sales")),
        ]
        self.webhook, _ = rt.webhooks.add(world.as_admin, "https://hooks.example.com/acme")
        self.identity = rt.identities.create(world.as_admin, IdentityDraft(
            external_id="acme-customer", credits={"remaining": 5}))
        self.plan = rt.plans.create(world.as_admin, PlanDraft(
            name="acme-plan", rate_limits=[{"limit": 5, "per_seconds": 60}]))
        signed_in = client.post("/api/v1/session", json={"email": AUDITOR_EMAIL,
                                                         "password": AUDITOR_PASSWORD})
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.json()["user"]["role"] == "auditor"
        self.csrf = signed_in.json()["csrf_token"]
        self.own_session = client.get("/api/v1/session/sessions").json()[0]["id"]

    def send(self, method: str, path: str, body: Any = None) -> Any:
        return self.client.request(method, path, json=body, headers={CSRF_HEADER: self.csrf})

    def fill(self, path: str) -> str:
        values: dict[str, str] = {
            "token_id": self.tokens[0].token.id, "user_id": self.world.member.id,
            "workspace_id": self.world.sales.id, "session_id": self.own_session,
            "slug": "acme", "webhook_id": self.webhook.id,
            "identity_id": self.identity.id, "plan_id": self.plan.id,
            "delivery_id": "00000000-0000-4000-8000-000000000000"}

        def value(match: re.Match[str]) -> str:
            assert match.group(1) in values, f"{path}: fill {match.group(1)}"
            return values[match.group(1)]

        return re.sub(r"{(\w+)}", value, path)


@pytest.fixture
def auditing(world: World, rt: Runtime) -> Iterator[Auditing]:
    with TestClient(create_app(rt, demo=True), base_url="http://testserver",
                    client=("127.0.0.1", 40100), follow_redirects=False) as client:
        yield Auditing(world, rt, client)


def write_routes(document: dict[str, Any]) -> list[tuple[str, str]]:
    return sorted((method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in WRITE_METHODS
                  and path.startswith("/api/v1/"))


def test_every_write_route_refuses_an_auditor(auditing: Auditing, rt: Runtime) -> None:
    document = auditing.client.get("/openapi.json").json()
    routes = write_routes(document)
    assert len(routes) >= 30, routes  # the walk is not vacuous
    listed = SELF_SERVICE | OTHER_CREDENTIALS
    assert listed <= set(routes), f"listed routes that no longer exist: {listed - set(routes)}"
    audit_before = auditing.send("GET", "/api/v1/audit", None).json()["items"]
    before = dump(rt)
    problems: list[str] = []
    refused = 0
    for method, path in routes:
        if (method, path) in SELF_SERVICE:
            continue
        for body in ({}, {"name": "auditor was here", "expires_in_days": 7,
                          "role": "admin", "active": False, "reason": "auditor"}):
            answer = auditing.send(method, auditing.fill(path), body)
            label = f"{method} {path} {body}"
            if (method, path) in OTHER_CREDENTIALS or path.startswith(OPERATOR_PREFIX):
                if answer.status_code == 500 or (answer.status_code < 300 and answer.json()
                                                 not in ([], {}) and not path.endswith(
                                                     "/verify")) or '"allowed":true' in \
                        answer.text:
                    problems.append(f"{label}: {answer.status_code} {answer.text[:200]}")
                continue
            refused += 1
            if answer.status_code != 403:
                problems.append(f"{label}: {answer.status_code} {answer.text[:200]}")
                continue
            error = answer.json()
            if (error.get("error"), error.get("reason"), error.get("role")) != (
                    "forbidden", AUDITOR_READ_ONLY, "auditor") \
                    or "Auditors" not in error.get("message", ""):
                problems.append(f"{label}: {error}")
    assert not problems, "\n".join(problems)
    assert refused >= 2 * 15, refused
    assert not changed_tables(before, dump(rt))
    assert auditing.send("GET", "/api/v1/audit", None).json()["items"] == audit_before
    with rt.database.reading() as session:
        assert all(t.revoked_at is None for t in session.scalars(select(Token)))


def test_an_auditor_reads_every_token_the_usage_and_the_audit_log(
        auditing: Auditing, rt: Runtime) -> None:
    listed = auditing.send("GET", "/api/v1/tokens")
    assert listed.status_code == 200, listed.text
    names = {t["name"] for t in listed.json()["items"]}
    assert names == {"admin crm token", "ops application", "member token"}
    member_token = auditing.tokens[2].token.id
    detail = auditing.send("GET", f"/api/v1/tokens/{member_token}")
    assert detail.status_code == 200 and detail.json()["name"] == "member token"
    usage = auditing.send("GET", f"/api/v1/tokens/{member_token}/usage")
    assert usage.status_code == 200 and "daily" in usage.text, usage.text
    audit = auditing.send("GET", "/api/v1/audit")
    assert audit.status_code == 200
    actions = [e["action"] for e in audit.json()["items"]]
    assert actions.count("token.created") == 3 and "user.login" in actions
    workspaces = auditing.send("GET", "/api/v1/workspaces")
    assert {w["slug"] for w in workspaces.json()} == {"sales", "ops"}
    assert auditing.send("GET", "/api/v1/account").status_code == 200
    # every read of the API answers, none refuses the role
    document = auditing.client.get("/openapi.json").json()
    for path, item in document["paths"].items():
        if "get" in item and path.startswith("/api/v1/") \
                and not path.startswith(OPERATOR_PREFIX):
            answer = auditing.send("GET", auditing.fill(path))
            assert answer.status_code < 500 and AUDITOR_READ_ONLY not in answer.text, (
                path, answer.status_code, answer.text[:200])


def test_an_auditor_manages_their_own_sign_in(auditing: Auditing, rt: Runtime) -> None:
    """The self-service routes: their own password, their own sessions, signing out."""
    changed = auditing.send("POST", "/api/v1/session/password", {
        "current_password": AUDITOR_PASSWORD, "new_password": "auditor password 2"})
    assert changed.status_code == 200, changed.text
    other = TestClient(auditing.client.app, base_url="http://testserver",
                       client=("127.0.0.1", 40101))
    second = other.post("/api/v1/session", json={"email": AUDITOR_EMAIL,
                                                 "password": "auditor password 2"})
    assert second.status_code == 200, second.text
    sessions = auditing.send("GET", "/api/v1/session/sessions").json()
    others = [s["id"] for s in sessions if not s["current"]]
    assert len(others) == 1
    ended = auditing.send("DELETE", f"/api/v1/session/sessions/{others[0]}")
    assert ended.status_code == 204, ended.text
    assert other.get("/api/v1/tokens").status_code == 401
    signed_out = auditing.send("DELETE", "/api/v1/session")
    assert signed_out.status_code == 204
    assert auditing.send("GET", "/api/v1/tokens").status_code == 401
    other.close()


def test_the_services_refuse_an_auditor_too(auditing: Auditing, rt: Runtime,
                                            world: World) -> None:
    """Below the API: every change is audited, and the audit trail records no change by
    an auditor, so a path that forgot the rule (the CLI acting as a user, a new route)
    still rolls back."""
    auditor = Actor(world.acme_id, auditing.auditor.id, "auditor", AUDITOR_EMAIL)
    before = dump(rt)
    token_id = auditing.tokens[2].token.id
    with pytest.raises(ReadOnlyRole):
        rt.tokens.revoke(auditor, token_id, "auditor")
    with pytest.raises(ReadOnlyRole):
        rt.tokens.issue(auditor, TokenDraft(name="mine", expires_in_days=7))
    with pytest.raises(ReadOnlyRole):
        rt.tokens.suspend(auditor, token_id)
    assert not changed_tables(before, dump(rt))


def test_an_auditors_tokens_grant_nothing(auditing: Auditing, rt: Runtime,
                                          world: World) -> None:
    """A member's token keeps its rows when the member becomes an auditor, but the
    auditor holds no scope: the token is refused, as the management API is."""
    value = auditing.tokens[2].value
    client = auditing.client
    verify = {"token": value, "required_scopes": ["employees:read"], "workspace": "sales"}
    assert client.post("/api/v1/verify", json=verify).json()["allowed"]
    rt.accounts.update_user(world.as_admin, world.member.id, role="auditor")
    rt.propagation.settle(world.member.id)
    refused = client.post("/api/v1/verify", json=verify).json()
    assert not refused["allowed"] and refused["reason"] == "insufficient_scope", refused
