"""Tenant isolation, enumerated: every route the app serves, walked from the app itself.

Account A (acme) has tokens, users, workspaces and employees; the administrator of
account B (globex) attacks with everything they have: the JSON API with a management
token, the JSON API with a console session (and its CSRF token), and the console pages
(session + CSRF form posts). For every route:

- with an id of A's (a token, a user): 404, the same answer as for an id that does not
  exist anywhere;
- without an id: the answer names nothing of A's (ids, prefixes, names, e-mails), even
  when B filters or writes with A's ids (workspace, target, actor);

and a dump of every table before and after shows that no row of A's changed, appeared
or disappeared.

The route table below is checked against the app's routes: a route added later that the
table does not name fails `test_every_route_is_probed`, so it cannot be forgotten.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.api.responses import served_routes
from tallykey.people.sessions import CSRF_HEADER
from tallykey.runtime import Runtime
from tallykey.schema.tables import DecoyTrip, Employee, Workspace, metadata
from tallykey.server.app import AUTH_REQUEST_PATH, Dispatcher, create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

B_PASSWORD = "globex admin password"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')

#: Routes that hold no tenant data at all (documents, health, sign-in and first-run
#: forms before any session, static files, the unauthenticated verify endpoint).
PUBLIC = {
    ("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/docs/oauth2-redirect"),
    ("MOUNT", "/docs/assets"), ("GET", "/healthz"), ("POST", "/api/v1/verify"),
    ("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console/"),
    ("GET", "/console/setup/{key}"), ("POST", "/console/setup/{key}"),
    ("MOUNT", "/console/static"), ("GET", "/auth/request"),
    # secret-scanning reports: signed by the scanner, and they can only name tokens the
    # reporter has seen in the wild
    ("POST", "/api/v1/leaks"),
    # forgotten passwords: the same answer for any address; reset links carry their own
    # secret (tests/people prove a link only ever reaches its own user)
    ("GET", "/console/forgot"), ("POST", "/console/forgot"), ("POST", "/api/v1/password-reset"),
    ("GET", "/console/reset/{token}"), ("POST", "/console/reset/{token}"),
    # a token renewing itself: authenticated by that token, it can name no other
    ("POST", "/api/v1/tokens/self/renew"),
    # single sign-on: the provider's answer names the user (tests/people/test_sso.py)
    ("GET", "/console/oidc/start"), ("GET", "/console/oidc/callback"),
}
#: The operator API: cross-tenant by design, for the platform's operator token only;
#: `test_account_credentials_never_open_the_operator_api` probes it with B's credentials.
OPERATOR = {
    ("GET", "/api/v1/operator/accounts"), ("POST", "/api/v1/operator/accounts"),
    ("GET", "/api/v1/operator/accounts/{slug}"), ("PATCH", "/api/v1/operator/accounts/{slug}"),
    ("POST", "/api/v1/operator/accounts/{slug}/users"),
    ("POST", "/api/v1/operator/accounts/{slug}/workspaces"),
}
#: Sign-in and sign-out of the JSON API: the session mode of this test runs through them.
SESSION_ROUTES = {("POST", "/api/v1/session"), ("DELETE", "/api/v1/session"),
                  ("POST", "/console/logout"), ("GET", "/console/login/code"),
                  ("POST", "/console/login/code"), ("POST", "/api/v1/session/second-factor")}


@dataclass
class Tenants:
    """A's identifiers (what must never show or change) and B's credentials."""

    world: World
    a_ids: set[str] = field(default_factory=set)
    a_markers: set[str] = field(default_factory=set)
    a_token_ids: list[str] = field(default_factory=list)
    a_user_ids: list[str] = field(default_factory=list)
    a_workspace_id: str = ""
    a_session_ids: list[str] = field(default_factory=list)
    a_prefix: str = ""
    a_webhook_id: str = ""
    #: SHA-256 of A's first token: B importing it learns nothing of A (SPEC §16).
    a_secret_hash: str = ""
    a_identity_id: str = ""
    a_plan_id: str = ""
    b_token: str = ""
    b_workspace: str = ""


@pytest.fixture
def tenants(world: World, rt: Runtime) -> Tenants:
    from tallykey.accounts.permissions import SCOPES

    t = Tenants(world)
    admin_a, member_a = world.as_admin, world.as_member
    hook, _ = rt.webhooks.add(admin_a, "https://hooks.acme-private.example/in",
                              description="acme private hook")
    t.a_webhook_id = hook.id
    from tallykey.identities.service import IdentityDraft
    t.a_identity_id = rt.identities.create(admin_a, IdentityDraft(
        external_id="acme-private-customer", name="acme private identity",
        credits={"remaining": 10}, metadata={"acme private": True})).id
    from tallykey.plans.service import PlanDraft
    t.a_plan_id = rt.plans.create(admin_a, PlanDraft(
        name="acme-private-plan", description="acme private plan",
        rate_limits=[{"limit": 7, "per_seconds": 60}])).id
    issued = [
        rt.tokens.issue(admin_a, TokenDraft(
            name="acme private crm token", expires_in_days=30, scopes=["employees:read"])),
        rt.tokens.issue(admin_a, TokenDraft(
            name="acme private app token", kind="application", expires_in_days=30,
            scopes=["employees:read"], workspace="sales", target=None,
            identity_id=t.a_identity_id, plan_id=t.a_plan_id)),
        rt.tokens.issue(member_a, TokenDraft(
            name="acme member private token", expires_in_days=30, workspace="sales")),
        rt.tokens.issue(admin_a, TokenDraft(
            name="acme private decoy token", kind="decoy", expires_in_days=30)),
        rt.tokens.issue(admin_a, TokenDraft(
            name="acme revoked private token", expires_in_days=30)),
    ]
    with rt.database.transaction() as session:  # the decoy was tripped once
        session.add(DecoyTrip(token_id=issued[-2].token.id, account_id=world.acme_id,
                              first_at=rt.clock.now(), last_at=rt.clock.now(), count=1,
                              ip="203.0.113.99", user_agent="acme private agent",
                              path="/acme-private-path"))
    rt.tokens.revoke(admin_a, issued[-1].token.id, "acme private reason")
    t.a_token_ids = [i.token.id for i in issued]
    t.a_prefix = issued[0].token.prefix
    t.a_secret_hash = issued[0].secret.secret_hash
    t.a_user_ids = [world.admin.id, world.member.id]
    t.a_workspace_id = world.sales.id
    with rt.database.transaction() as session:
        session.add(Employee(account_id=world.acme_id, workspace_id=world.sales.id,
                             name="Acme Private Employee", email="private@acme.test",
                             job_title="Secret", created_at=rt.clock.now()))
    t.a_session_ids = [rt.sessions.open(world.admin, "198.51.100.9").public_id,
                       rt.sessions.open(world.member, "198.51.100.9").public_id]
    t.a_ids = {world.acme_id, world.sales.id, world.ops.id, *t.a_user_ids, *t.a_token_ids,
               *t.a_session_ids, t.a_webhook_id, t.a_identity_id, t.a_plan_id}
    t.a_markers = {*t.a_ids, "acme-private-customer", "acme-private-plan",
                   *(i.token.public_id for i in issued), "acme private",
                   "acme member private", "admin@acme.test", "member@acme.test",
                   "Acme Private Employee", "private@acme.test"}

    admin_b = world.as_other_admin
    rt.accounts.set_password(admin_b, world.other_admin.id, B_PASSWORD)
    workspace_b = rt.accounts.create_workspace(world.globex_id, "main", "Main")
    t.b_workspace = workspace_b.id
    with rt.database.transaction() as session:
        session.add(Employee(account_id=world.globex_id, workspace_id=workspace_b.id,
                             name="Globex Employee", email="e@globex.test", job_title="",
                             created_at=rt.clock.now()))
    t.b_token = rt.tokens.issue(admin_b, TokenDraft(
        name="globex management", expires_in_days=30, scopes=sorted(SCOPES))).value
    return t


# --- what B sends where -------------------------------------------------------------

#: A request without a tenant id in its path: (params, JSON body or form fields).
Probe = tuple[dict[str, str], dict[str, Any] | None]


def collection_probes(t: Tenants) -> dict[tuple[str, str], list[Probe]]:
    """Each route without an id in its path, and what B sends it: reads filtered by A's
    ids, writes that name A's workspace. Answers are checked for A's markers."""
    a_token, a_user, a_ws = t.a_token_ids[0], t.a_user_ids[0], t.a_workspace_id
    analytics: list[Probe] = [({}, None)]
    analytics += [({"group_by": group}, None)
                  for group in ("token", "identity", "outcome", "workspace")]
    analytics += [({"token": a_token}, None), ({"identity": t.a_identity_id}, None),
                  ({"identity": "acme-private-customer"}, None), ({"workspace": a_ws}, None),
                  ({"workspace": "sales"}, None), ({"interval": "hour", "group_by": "token"},
                                                   None)]
    return {
        ("GET", "/api/v1/tokens"): [
            ({}, None), ({"status": "revoked"}, None), ({"search": t.a_prefix}, None),
            ({"search": "acme private"}, None), ({"workspace": a_ws}, None),
            ({"workspace": "sales"}, None), ({"identity_id": t.a_identity_id}, None),
            ({"identity_id": "acme-private-customer"}, None)],
        ("GET", "/api/v1/analytics/verifications"): analytics,
        ("POST", "/api/v1/tokens"): [
            ({}, {"name": "cross", "expires_in_days": 7, "kind": "application",
                  "scopes": ["employees:read"], "identity_id": t.a_identity_id}),
            ({}, {"name": "cross", "expires_in_days": 7, "kind": "application",
                  "scopes": ["employees:read"], "identity_id": "acme-private-customer"}),
            ({}, {"name": "cross", "expires_in_days": 7, "kind": "application",
                  "scopes": ["employees:read"], "plan_id": t.a_plan_id}),
            ({}, {"name": "cross", "expires_in_days": 7, "kind": "application",
                  "scopes": ["employees:read"], "plan_id": "acme-private-plan"}),
            ({}, {"name": "cross", "expires_in_days": 7, "workspace": a_ws}),
            ({}, {"name": "cross", "expires_in_days": 7, "workspace": "sales"})],
        ("POST", "/api/v1/tokens/import"): [
            ({}, {"keys": [{"hash": f"sha256:{t.a_secret_hash}", "name": "cross",
                            "expires_in_days": 7}]})],
        ("GET", "/api/v1/targets"): [({}, None)],
        ("GET", "/api/v1/scopes"): [({}, None)],
        ("GET", "/api/v1/workspaces"): [({}, None), ({"archived": "true"}, None)],
        ("POST", "/api/v1/workspaces"): [({}, {"slug": "sales", "name": "Cross"})],
        ("GET", "/console/workspaces"): [({}, None)],
        ("POST", "/console/workspaces"): [({}, {"slug": "sales", "name": "Cross"})],
        ("GET", "/metrics"): [({}, None)],
        ("GET", "/api/v1/audit"): [({}, None), ({"target_id": a_token}, None),
                                   ({"actor_id": a_user}, None)],
        ("GET", "/api/v1/users"): [({}, None)],
        ("POST", "/api/v1/users"): [
            ({}, {"email": f"new-{uuid.uuid4().hex[:6]}@globex.test",
                  "workspaces": {a_ws: ["employees:read"]}})],
        ("GET", "/api/v1/account"): [({}, None)],
        ("PATCH", "/api/v1/account"): [({}, {"max_validity_days": 200})],
        ("GET", "/core/v3/info"): [({}, None)],
        ("GET", "/core/v3/employees"): [({}, None)],
        ("POST", "/core/v3/employees"): [
            ({}, {"name": "Cross", "email": "cross@globex.test", "workspace": a_ws}),
            ({}, {"name": "Cross", "email": "cross@globex.test", "workspace": "sales"})],
        ("GET", "/console/tokens"): [({}, None), ({"q": t.a_prefix, "status": "all"}, None),
                                     ({"q": "acme private", "status": "all"}, None)],
        ("GET", "/console/tokens/inactive"): [({}, None), ({"q": "acme"}, None)],
        ("POST", "/console/tokens"): [({}, {"q": t.a_prefix, "status": "all"})],
        ("POST", "/console/tokens/inactive"): [({}, {"q": t.a_prefix})],
        ("GET", "/console/tokens/new"): [({}, None)],
        ("POST", "/console/tokens/new"): [
            ({}, {"name": "cross", "expiry": "30", "kind": "personal", "workspace": a_ws}),
            ({}, {"name": "cross", "expiry": "30", "kind": "personal", "workspace": "sales"})],
        ("GET", "/console/audit"): [({}, None), ({"token": a_token}, None),
                                    ({"actor": a_user}, None), ({"actor": "admin@acme.test"},
                                                                None)],
        ("GET", "/console/audit/export.csv"): [({}, None), ({"token": a_token}, None)],
        ("GET", "/console/audit/export.jsonl"): [({}, None), ({"actor": a_user}, None)],
        ("GET", "/console/users"): [({}, None)],
        ("POST", "/console/users"): [
            ({}, {"email": f"form-{uuid.uuid4().hex[:6]}@globex.test", "role": "member",
                  f"grant:{a_ws}": "employees:read"})],
        ("GET", "/console/account"): [({}, None)],
        ("POST", "/console/account"): [({}, {"max_validity_days": "180",
                                             "reminder_days": "7, 2", "ip_allowlist": ""})],
        ("GET", "/console/outbox"): [({}, None)],
        ("GET", "/console/decoys"): [({}, None)],
        ("GET", "/console/outbox/message"): [({"id": m}, None) for m in _a_messages(t)],
        ("GET", "/api/v1/session/sessions"): [({}, None)],
        ("POST", "/api/v1/session/password"): [
            ({}, {"current_password": "not it", "new_password": "violet harbour engine"})],
        ("GET", "/console/me"): [({}, None)],
        ("POST", "/console/me/password"): [
            ({}, {"current_password": "not it", "password": "violet harbour engine",
                  "password_confirm": "violet harbour engine"})],
        ("POST", "/console/me/sessions/end-others"): [({}, {})],
        ("GET", "/console/me/two-factor"): [({}, None)],
        ("POST", "/console/me/two-factor"): [({}, {"code": "000000"})],
        ("POST", "/console/me/two-factor/disable"): [({}, {"password": "not it"})],
        ("POST", "/console/account/two-factor"): [({}, {"two_factor_policy": "off"})],
        ("GET", "/console/approvals"): [({}, None)],
        ("POST", "/console/account/governance"): [
            ({}, {"token_approval": "members", "revoke_inactive_days": "30"})],
        ("PATCH", "/api/v1/session/settings"): [({}, {"weekly_digest": False})],
        ("POST", "/console/me/digest"): [({}, {})],
        ("GET", "/api/v1/webhooks"): [({}, None)],
        ("POST", "/api/v1/webhooks"): [({}, {"url": "https://hooks.example.com/globex"})],
        ("GET", "/console/webhooks"): [({}, None)],
        ("POST", "/console/webhooks"): [({}, {"url": "https://hooks.example.com/globex"})],
        ("GET", "/api/v1/identities"): [({}, None), ({"search": "acme"}, None)],
        ("POST", "/api/v1/identities"): [({}, {"external_id": "globex-own"})],
        ("GET", "/console/identities"): [({}, None)],
        ("POST", "/console/identities"): [({}, {"external_id": "globex-form"})],
        ("GET", "/api/v1/plans"): [({}, None)],
        ("POST", "/api/v1/plans"): [({}, {"name": "globex-own"})],
        ("GET", "/console/plans"): [({}, None)],
        ("POST", "/console/plans"): [({}, {"name": "globex-form"})],
    }


def _a_messages(t: Tenants) -> list[str]:
    from tallykey.notify.models import OutboxMessage

    with t.world.rt.database.reading() as session:
        ids = list(session.scalars(select(OutboxMessage.id).where(
            OutboxMessage.account_id == t.world.acme_id)))
    assert ids, "account A has outbox messages to try"
    return ids[:2]


#: Bodies for the routes with an id: enough to pass validation, so that only the
#: tenant check can stop them.
OBJECT_BODIES: dict[tuple[str, str], dict[str, Any] | None] = {
    ("GET", "/api/v1/tokens/{token_id}"): None,
    ("PATCH", "/api/v1/tokens/{token_id}"): {"name": "taken over", "ip_allowlist": []},
    ("DELETE", "/api/v1/tokens/{token_id}"): None,
    ("POST", "/api/v1/tokens/{token_id}/revoke"): {"reason": "taken over"},
    ("POST", "/api/v1/tokens/{token_id}/rotate"): {"grace_seconds": 0},
    ("POST", "/api/v1/tokens/{token_id}/renew"): {"expires_in_days": 30, "grace_seconds": 0},
    ("POST", "/api/v1/tokens/{token_id}/suspend"): None,
    ("POST", "/api/v1/tokens/{token_id}/resume"): None,
    ("POST", "/api/v1/tokens/{token_id}/approve"): None,
    ("POST", "/api/v1/tokens/{token_id}/deny"): None,
    ("POST", "/console/approvals/{token_id}/approve"): {},
    ("POST", "/console/approvals/{token_id}/deny"): {},
    ("POST", "/api/v1/tokens/{token_id}/secret"): None,
    ("GET", "/api/v1/tokens/{token_id}/usage"): None,
    ("PATCH", "/api/v1/users/{user_id}"): {"role": "member", "active": False},
    ("GET", "/api/v1/workspaces/{workspace_id}"): None,
    ("PATCH", "/api/v1/workspaces/{workspace_id}"): {"name": "taken over"},
    ("DELETE", "/api/v1/workspaces/{workspace_id}"): None,
    ("POST", "/console/workspaces/{workspace_id}"): {"name": "taken over"},
    ("GET", "/console/workspaces/{workspace_id}/archive"): None,
    ("POST", "/console/workspaces/{workspace_id}/archive"): {},
    ("GET", "/console/tokens/{token_id}"): None,
    ("POST", "/console/tokens/{token_id}"): {"name": "taken over", "description": "",
                                             "ip_allowlist": "", "target": ""},
    ("POST", "/console/tokens/{token_id}/rotate"): {"grace": "0"},
    ("GET", "/console/tokens/{token_id}/once"): None,
    ("POST", "/console/tokens/{token_id}/end-grace"): {},
    ("POST", "/console/tokens/{token_id}/suspend"): {},
    ("POST", "/console/tokens/{token_id}/resume"): {},
    ("GET", "/console/tokens/{token_id}/renew"): None,
    ("POST", "/console/tokens/{token_id}/renew"): {"expiry": "30", "grace_days": "0"},
    ("POST", "/api/v1/tokens/{token_id}/end-grace"): None,
    ("POST", "/console/tokens/{token_id}/secret"): {},
    ("GET", "/console/tokens/{token_id}/revoke"): None,
    ("POST", "/console/tokens/{token_id}/revoke"): {"reason": "taken over"},
    ("GET", "/console/users/{user_id}"): None,
    ("POST", "/console/users/{user_id}"): {"role": "member", "active": ""},
    ("DELETE", "/api/v1/users/{user_id}/sessions"): None,
    ("DELETE", "/api/v1/users/{user_id}/two-factor"): None,
    ("POST", "/api/v1/users/{user_id}/password-reset"): None,
    ("POST", "/console/users/{user_id}/sessions/end"): {},
    ("POST", "/console/users/{user_id}/two-factor/reset"): {},
    ("POST", "/console/users/{user_id}/password-reset"): {},
    ("DELETE", "/api/v1/session/sessions/{session_id}"): None,
    ("POST", "/console/me/sessions/{public_id}/end"): {},
    ("GET", "/api/v1/webhooks/{webhook_id}"): None,
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): {"url": "https://hooks.example.com/taken",
                                                 "events": [], "enabled": False},
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): None,
    ("POST", "/api/v1/webhooks/{webhook_id}/rotate-secret"): None,
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): None,
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): None,
    ("GET", "/console/webhooks/{webhook_id}"): None,
    ("POST", "/console/webhooks/{webhook_id}"): {"url": "https://hooks.example.com/taken"},
    ("POST", "/console/webhooks/{webhook_id}/rotate"): {},
    ("POST", "/console/webhooks/{webhook_id}/delete"): {"confirm": "yes"},
    ("POST", "/console/webhooks/{webhook_id}/deliveries/{delivery_id}/retry"): {},
    ("GET", "/api/v1/identities/{identity_id}"): None,
    ("PATCH", "/api/v1/identities/{identity_id}"): {"credits": {"remaining": 1000},
                                                    "name": "taken over"},
    ("DELETE", "/api/v1/identities/{identity_id}"): None,
    ("GET", "/console/identities/{identity_id}"): None,
    ("POST", "/console/identities/{identity_id}"): {"external_id": "taken", "credits": "9"},
    ("POST", "/console/identities/{identity_id}/delete"): {"detach": "yes"},
    ("POST", "/console/identities/{identity_id}/tokens"): {"token": "x"},
    ("GET", "/api/v1/plans/{plan_id}"): None,
    ("PATCH", "/api/v1/plans/{plan_id}"): {"rate_limits": [], "name": "taken over"},
    ("DELETE", "/api/v1/plans/{plan_id}"): None,
    ("GET", "/console/plans/{plan_id}"): None,
    ("POST", "/console/plans/{plan_id}"): {"name": "taken", "rate_limits": ""},
    ("POST", "/console/plans/{plan_id}/delete"): {"detach": "yes"},
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of everything the app serves; mounts as ("MOUNT", path). The ASGI
    layers around the FastAPI app are unwrapped; `/auth/request`, served before the
    framework, is counted too."""
    found: set[tuple[str, str]] = set()
    while not isinstance(app, FastAPI):
        if isinstance(app, Dispatcher):
            found.add(("GET", AUTH_REQUEST_PATH))
        app = app.app
    for route in served_routes(app):
        methods = getattr(route, "methods", None)
        if methods is None:
            found.add(("MOUNT", route.path))
            continue
        found.update((m, route.path) for m in methods if m != "HEAD")
    return found


def known_routes(t: Tenants) -> set[tuple[str, str]]:
    return (PUBLIC | SESSION_ROUTES | OPERATOR | set(collection_probes(t))
            | set(OBJECT_BODIES))


# --- the three ways B comes in ------------------------------------------------------


@dataclass
class Caller:
    """One of B's ways in: sends a request the way that surface expects."""

    name: str
    client: TestClient
    surface: str  # "api" or "console"
    send: Callable[[str, str, dict[str, str], dict[str, Any] | None], Any]


def _csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found, "page has no CSRF field"
    return found.group(1)


def api_with_token(client: TestClient, token: str) -> Caller:
    def send(method: str, path: str, params: dict[str, str], body: Any) -> Any:
        return client.request(method, path, params=params, json=body,
                              headers={"Authorization": f"Bearer {token}"})
    return Caller("api+token", client, "api", send)


def api_with_session(client: TestClient, email: str, password: str) -> Caller:
    login = client.post("/api/v1/session", json={"email": email, "password": password})
    assert login.status_code == 200, login.text
    csrf = login.json()["csrf_token"]

    def send(method: str, path: str, params: dict[str, str], body: Any) -> Any:
        return client.request(method, path, params=params, json=body,
                              headers={CSRF_HEADER: csrf})
    return Caller("api+session", client, "api", send)


def console_session(client: TestClient, email: str, password: str) -> Caller:
    page = client.get("/console/login")
    signed_in = client.post("/console/login", data={
        "csrf_token": _csrf_of(page.text), "email": email, "password": password, "next": ""})
    assert signed_in.status_code == 303, signed_in.text
    csrf = _csrf_of(client.get("/console/tokens").text)

    def send(method: str, path: str, params: dict[str, str], body: Any) -> Any:
        if method == "GET":
            return client.get(path, params=params)
        return client.request(method, path, params=params,
                              data={"csrf_token": csrf, **(body or {})})
    return Caller("console", client, "console", send)


# --- the dump -------------------------------------------------------------------------


def rows_of(rt: Runtime, ids: set[str]) -> dict[str, set[tuple[str, ...]]]:
    """Every row of every table that names one of `ids` in any column, as text."""
    dump: dict[str, set[tuple[str, ...]]] = {}
    with rt.database.reading() as session:
        for table in metadata.sorted_tables:
            rows = session.execute(select(table)).all()
            mine = {tuple(repr(v) for v in row) for row in rows
                    if any(isinstance(v, str) and v in ids for v in row)}
            dump[table.name] = mine
    return dump


# --- the tests ------------------------------------------------------------------------


@pytest.fixture
def app(rt: Runtime) -> Any:
    return create_app(rt, demo=True)


@pytest.fixture
def callers(app: Any, tenants: Tenants) -> Iterator[list[Caller]]:
    clients = [TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000 + n),
                          follow_redirects=False) for n in range(3)]
    email = tenants.world.other_admin.email
    yield [api_with_token(clients[0], tenants.b_token),
           api_with_session(clients[1], email, B_PASSWORD),
           console_session(clients[2], email, B_PASSWORD)]
    for client in clients:
        client.close()


def test_every_route_is_probed(app: Any, tenants: Tenants) -> None:
    """A route nobody taught this test to probe fails here, instead of going untested."""
    served = app_routes(app)
    unknown = served - known_routes(tenants)
    assert not unknown, (
        f"routes without an isolation probe: {sorted(unknown)}. Add each to "
        "PUBLIC, collection_probes or OBJECT_BODIES in this file.")
    stale = known_routes(tenants) - served
    assert not stale, f"probes for routes that no longer exist: {sorted(stale)}"
    for method, path in served - PUBLIC - OPERATOR:
        parameters = set(re.findall(r"{(\w+)}", path))
        assert parameters <= {"token_id", "user_id", "workspace_id", "session_id",
                              "public_id", "webhook_id", "delivery_id",
                              "identity_id", "plan_id"}, (
            f"{method} {path}: this test does not know how to fill {parameters}")


def test_account_credentials_never_open_the_operator_api(
        rt: Runtime, tenants: Tenants, callers: list[Caller]) -> None:
    before = rows_of(rt, tenants.a_ids)
    for caller in callers[:2]:
        for method, path in sorted(OPERATOR):
            body = {"slug": "taken", "email": "x@globex.test", "name": "x", "active": False}
            answer = caller.send(method, path.replace("{slug}", "acme"), {},
                                 None if method == "GET" else body)
            assert answer.status_code in (401, 429), (caller.name, method, path, answer.text)
            assert not _leaks(answer.text, tenants)
    assert rows_of(rt, tenants.a_ids) == before


def _ids_for(path: str, t: Tenants) -> list[str]:
    if "{token_id}" in path:
        return t.a_token_ids
    if "{user_id}" in path:
        return t.a_user_ids
    if "{workspace_id}" in path:
        return [t.a_workspace_id, t.world.ops.id]
    if "{session_id}" in path or "{public_id}" in path:
        return t.a_session_ids
    if "{identity_id}" in path:  # by id and by external id
        return [t.a_identity_id, "acme-private-customer"]
    if "{plan_id}" in path:  # by id and by name
        return [t.a_plan_id, "acme-private-plan"]
    if "{webhook_id}" in path:  # and its deliveries (`_fill` puts A's delivery id in)
        return [t.a_webhook_id]
    raise AssertionError(f"{path}: no ids of A to try")


def _leaks(text: str, t: Tenants, sent: object = None) -> list[str]:
    """A's markers in an answer, except those B itself sent (a search box or an error
    message may repeat B's own input)."""
    echoed = repr(sent)
    return sorted(m for m in t.a_markers if m in text and m not in echoed)


def test_account_b_can_neither_read_nor_change_anything_of_account_a(
        rt: Runtime, app: Any, tenants: Tenants, callers: list[Caller]) -> None:
    before = rows_of(rt, tenants.a_ids)
    a_delivery = _a_delivery(tenants)
    problems: list[str] = []
    probed = 0
    routes = app_routes(app)
    for caller in callers:
        for (method, path), body in OBJECT_BODIES.items():
            if path.startswith("/console") != (caller.surface == "console") \
                    or (method, path) not in routes:
                continue
            nowhere = str(uuid.uuid4())
            missing = caller.send(method, _fill(path, nowhere), {}, body)
            for a_id in _ids_for(path, tenants):
                answer = caller.send(method, _fill(path, a_id, a_delivery), {}, body)
                probed += 1
                label = f"{caller.name} {method} {path} with A's id"
                if answer.status_code != 404:
                    problems.append(f"{label}: {answer.status_code} {answer.text[:200]}")
                elif answer.text.replace(a_id, "ID") != missing.text.replace(nowhere, "ID"):
                    problems.append(f"{label}: answers unlike a nonexistent id")
                if leaked := _leaks(answer.text, tenants):
                    problems.append(f"{label}: shows {leaked}")
        for (method, path), probes in collection_probes(tenants).items():
            if path.startswith("/console") != (caller.surface == "console"):
                continue
            for params, body in probes:
                answer = caller.send(method, path, params, body)
                probed += 1
                label = f"{caller.name} {method} {path} {params or ''}{body or ''}"
                if answer.status_code >= 500:
                    problems.append(f"{label}: {answer.status_code}")
                if leaked := _leaks(answer.text, tenants, (params, body)):
                    problems.append(f"{label}: shows {leaked}")
    after = rows_of(rt, tenants.a_ids)
    for table, rows in before.items():
        if rows != after[table]:
            problems.append(f"table {table}: A's rows changed: "
                            f"-{sorted(rows - after[table])[:3]} "
                            f"+{sorted(after[table] - rows)[:3]}")
    assert probed >= 100, probed
    assert not problems, "\n".join(problems)


def _fill(path: str, value: str, delivery: str | None = None) -> str:
    """`path` with `value` for its id; a delivery id is `delivery` (default: `value`)."""
    path = path.replace("{delivery_id}", delivery or value)
    return re.sub(r"{(token_id|user_id|workspace_id|session_id|public_id|webhook_id|"
                  r"identity_id|plan_id)}",
                  value, path)


def _a_delivery(t: Tenants) -> str:
    from tallykey.notify.models import OutboxMessage

    with t.world.rt.database.reading() as session:
        found = session.scalar(select(OutboxMessage.id).where(
            OutboxMessage.endpoint_id == t.a_webhook_id).limit(1))
    assert found, "account A's webhook has deliveries to try"
    return found


def test_b_sees_its_own_objects_through_the_same_routes(
        rt: Runtime, tenants: Tenants, callers: list[Caller]) -> None:
    """The probes above are not vacuous: the same routes do answer B about B."""
    with rt.database.reading() as session:
        b_workspace = session.scalar(select(Workspace).where(
            Workspace.id == tenants.b_workspace))
    assert b_workspace is not None
    own_user = tenants.world.other_admin.id
    for caller in callers:
        if caller.surface == "api":
            listed = caller.send("GET", "/api/v1/tokens", {}, None)
            assert listed.status_code == 200 and listed.json()["items"], listed.text
            token_id = listed.json()["items"][0]["id"]
            assert caller.send("GET", f"/api/v1/tokens/{token_id}", {}, None).status_code == 200
            assert caller.send("PATCH", f"/api/v1/users/{own_user}", {},
                               {}).status_code == 200
        else:
            listed = caller.send("GET", "/console/tokens", {}, None)
            assert listed.status_code == 200 and "globex management" in listed.text
            assert caller.send("GET", f"/console/users/{own_user}", {},
                               None).status_code == 200
