"""The auditor role in the console (SPEC §17): an auditor reads every token, its usage
and the audit log, sees no button that changes anything, and every form that changes
something answers 403 (the console's error page, naming the role) and changes nothing.

`test_every_console_form_refuses_an_auditor` walks every POST route of the console
router, from the app itself: a form added later is walked too; it must refuse an auditor
(by taking `FormDep`) or be listed here with a reason.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.actor import Actor
from tallykey.api.responses import served_routes
from tallykey.console.web import PREFIX
from tallykey.identities.service import IdentityDraft
from tallykey.plans.service import PlanDraft
from tallykey.runtime import Runtime
from tallykey.schema.tables import metadata
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import sign_in

AUDITOR_EMAIL = "auditor@acme.test"
AUDITOR_PASSWORD = "auditor password 1"
REFUSAL = "Auditors can read but not change anything."

#: Forms shown before any session (sign-in, its second step, first-run setup, forgotten
#: passwords and their links, setting up a second factor while signing in): no role yet.
BEFORE_A_SESSION = {"/console/login", "/console/login/code", "/console/setup/{key}",
                    "/console/forgot", "/console/reset/{token}", "/console/me/two-factor"}
#: Forms that change nothing of the account: the token searches (they redirect to a GET
#: with the query), and the auditor's own sign-in (password, second factor, their own
#: sessions, signing out): `console.web.OwnFormDep`.
ALLOWED = {"/console/tokens", "/console/tokens/inactive", "/console/logout",
           "/console/me/password", "/console/me/two-factor/disable",
           "/console/me/sessions/{public_id}/end", "/console/me/sessions/end-others"}


#: The verification nodes' own heartbeats (leases), written in the background by every
#: running node: no account's data.
HEARTBEATS = {"nodes"}


def dump(rt: Runtime) -> dict[str, set[tuple[str, ...]]]:
    with rt.database.reading() as session:
        return {table.name: {tuple(repr(v) for v in row)
                             for row in session.execute(select(table)).all()}
                for table in metadata.sorted_tables if table.name not in HEARTBEATS}


def setup_auditor(world: World, rt: Runtime) -> list[Any]:
    rt.accounts.create_user(Actor.operator(world.acme_id), AUDITOR_EMAIL, role="auditor",
                            password=AUDITOR_PASSWORD)
    return [
        rt.tokens.issue(world.as_admin, TokenDraft(
            name="admin crm token", expires_in_days=30, scopes=["employees:read"])),
        rt.tokens.issue(world.as_member, TokenDraft(
            name="member sales token", expires_in_days=30, workspace="sales")),
    ]


def test_every_console_form_refuses_an_auditor(world: World, rt: Runtime) -> None:
    issued = setup_auditor(world, rt)
    app = create_app(rt)
    inner: Any = app
    while not isinstance(inner, FastAPI):  # the ASGI layers around the framework
        inner = inner.app
    forms = sorted(route.path for route in served_routes(inner)
                   if route.path.startswith(PREFIX + "/")
                   and "POST" in (getattr(route, "methods", None) or ()))
    assert set(forms) >= (BEFORE_A_SESSION | ALLOWED), (BEFORE_A_SESSION | ALLOWED) - set(
        forms)
    walked = [path for path in forms if path not in BEFORE_A_SESSION | ALLOWED]
    assert len(walked) >= 15, walked
    webhook, _ = rt.webhooks.add(world.as_admin, "https://hooks.example.com/acme")
    identity = rt.identities.create(world.as_admin, IdentityDraft(external_id="acme-cust"))
    plan = rt.plans.create(world.as_admin, PlanDraft(name="acme-plan"))
    values = {"token_id": issued[1].token.id, "user_id": world.member.id,
              "identity_id": identity.id, "plan_id": plan.id,
              "workspace_id": world.sales.id, "webhook_id": webhook.id,
              "delivery_id": "00000000-0000-4000-8000-000000000000"}
    with TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40200),
                    follow_redirects=False) as client:
        csrf = sign_in(client, AUDITOR_EMAIL, AUDITOR_PASSWORD)
        before = dump(rt)
        problems = []
        for path in walked:
            url = re.sub(r"{(\w+)}", lambda m: values[m.group(1)], path)
            answer = client.post(url, data={
                "csrf_token": csrf, "name": "auditor was here", "expiry": "30",
                "kind": "personal", "role": "admin", "active": "no", "reason": "auditor",
                "grace_days": "0", "max_validity_days": "1", "two_factor_policy": "everyone",
                "email": "new@acme.test", "slug": "audited"})
            if answer.status_code != 403 or REFUSAL not in answer.text \
                    or "text/html" not in answer.headers["content-type"]:
                problems.append(f"POST {path}: {answer.status_code} {answer.text[:300]}")
        assert not problems, "\n".join(problems)
        after = dump(rt)
        assert {name for name, rows in before.items() if rows != after[name]} == set()
        # the searches an auditor may post still work, and the session is intact
        search = client.post("/console/tokens", data={"csrf_token": csrf, "q": "member",
                                                      "status": "all"})
        assert search.status_code == 303
        assert "member sales token" in client.get(search.headers["location"]).text
        # and their own sign-in is theirs: end their other sessions, sign out
        ended = client.post("/console/me/sessions/end-others", data={"csrf_token": csrf})
        assert ended.status_code == 303 and ended.headers["location"].endswith("done=others")
        out = client.post("/console/logout", data={"csrf_token": csrf})
        assert out.status_code == 303 and client.get("/console/tokens").status_code == 303


def test_an_auditor_reads_the_console_without_a_button_that_changes_anything(
        world: World, rt: Runtime) -> None:
    issued = setup_auditor(world, rt)
    with TestClient(create_app(rt), base_url="http://testserver",
                    client=("127.0.0.1", 40201), follow_redirects=False) as client:
        sign_in(client, AUDITOR_EMAIL, AUDITOR_PASSWORD)
        tokens = client.get("/console/tokens")
        assert tokens.status_code == 200
        assert "admin crm token" in tokens.text and "member sales token" in tokens.text
        assert "Create token" not in tokens.text and "/tokens/new" not in tokens.text
        assert "Revoke…" not in tokens.text and "/revoke" not in tokens.text
        assert 'href="/console/audit"' in tokens.text  # the audit log is in the menu
        assert 'href="/console/users"' not in tokens.text
        detail = client.get(f"/console/tokens/{issued[1].token.id}")
        assert detail.status_code == 200 and "member sales token" in detail.text
        assert "Usage" in detail.text and "Read-only" in detail.text
        assert 'method="post"' not in detail.text.replace(
            'method="post" action="/console/logout"', "")
        audit = client.get("/console/audit")
        assert audit.status_code == 200 and "token.created" in audit.text
        exported = client.get("/console/audit/export.jsonl")
        assert exported.status_code == 200 and "token.created" in exported.text
        for page in ("/console/tokens/new", f"/console/tokens/{issued[0].token.id}/revoke",
                     f"/console/tokens/{issued[0].token.id}/renew"):
            refused = client.get(page)
            assert refused.status_code == 403 and REFUSAL in refused.text, page
        users = client.get("/console/users")
        assert users.status_code == 403
        me = client.get("/console/me")
        assert me.status_code == 200 and "auditor" in me.text


def test_an_admin_makes_a_user_an_auditor_in_the_console(
        world: World, rt: Runtime) -> None:
    with TestClient(create_app(rt), base_url="http://testserver",
                    client=("127.0.0.1", 40202), follow_redirects=False) as client:
        csrf = sign_in(client, "admin@acme.test", "correct horse battery")
        page = client.get("/console/users")
        assert "<option>auditor</option>" in page.text and 'id="role-help"' in page.text
        added = client.post("/console/users", data={
            "csrf_token": csrf, "email": AUDITOR_EMAIL, "name": "", "role": "auditor"})
        assert added.status_code == 303, added.text
        changed = client.post(f"/console/users/{world.member.id}", data={
            "csrf_token": csrf, "role": "auditor", "active": "yes"})
        assert changed.status_code == 303, changed.text
    roles = {u.email: u.role for u in rt.accounts.list_users(world.as_admin)}
    assert roles[AUDITOR_EMAIL] == "auditor" and roles["member@acme.test"] == "auditor"
