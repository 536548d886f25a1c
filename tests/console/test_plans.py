"""Plans in the console (SPEC §16): the list with its create form, a page per plan with
its edit form and deletion (with detach); a bad value is shown again with its message
and changes nothing; a saved change reaches the token's verdict before the page answers;
members read plans without a form that changes them; forms are CSRF-checked."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.plans.service import PlanDraft
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft, TokenQuery

from ..conftest import World

PLAN_ID = re.compile(r"/console/plans/([0-9a-f-]{36})")


def fields(csrf: str, **changes: str | list[str]) -> dict[str, str | list[str]]:
    return {"csrf_token": csrf, "name": "pro", "description": "paying customers",
            "rate_limits": "default=3/3600", "refill_amount": "", "refill_interval": "daily",
            **changes}


def test_create_edit_and_delete_a_plan(admin: tuple[TestClient, str], world: World,
                                       rt: Runtime) -> None:
    client, csrf = admin
    made = client.post("/console/plans", data=fields(csrf))
    assert made.status_code == 303, made.text
    found = PLAN_ID.search(made.headers["location"])
    assert found, made.headers
    plan_id = found.group(1)
    page = client.get(made.headers["location"]).text
    assert "Plan created." in page and "default: 3 per 3600 s" in page
    listed = client.get("/console/plans").text
    assert 'data-name="pro"' in listed and "3/3600 s" in listed
    # A bad value is shown again, with its message, and nothing changes.
    bad = client.post(f"/console/plans/{plan_id}", data=fields(csrf, rate_limits="lots"))
    assert bad.status_code == 422 and "NAME=LIMIT/SECONDS" in bad.text
    assert rt.plans.get(world.as_admin, plan_id).rate_limits == [
        {"name": "default", "limit": 3, "per_seconds": 3600, "shared": None}]
    taken = client.post("/console/plans", data=fields(csrf))
    assert taken.status_code == 422 and "already has a plan named" in taken.text
    # A token on the plan: the saved change reaches its verdict before the page answers.
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="on pro", kind="application", expires_in_days=3, scopes=["employees:read"],
        plan_id=plan_id))
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        bearer = f"Bearer {issued.value}"
        assert [verifier.verify(bearer, "127.0.0.1").allowed for _ in range(4)] == [
            True, True, True, False]
        saved = client.post(f"/console/plans/{plan_id}", data=fields(
            csrf, rate_limits="default=5/3600", ceiling="yes", scopes=["employees:read"]))
        assert saved.status_code == 200, saved.text
        assert "Changes saved" in saved.text and "default: 5 per 3600 s" in saved.text
        verifier.sync()
        assert [verifier.verify(bearer, "127.0.0.1").allowed for _ in range(6)] == [
            True] * 5 + [False]
    finally:
        verifier.close()
    assert rt.plans.get(world.as_admin, plan_id).scopes == ["employees:read"]
    in_use = client.post(f"/console/plans/{plan_id}/delete", data={"csrf_token": csrf})
    assert in_use.status_code == 409 and "still used by 1 token" in in_use.text
    gone = client.post(f"/console/plans/{plan_id}/delete",
                       data={"csrf_token": csrf, "detach": "yes"})
    assert gone.status_code == 200 and "Plan pro deleted; 1 token(s)" in gone.text
    assert rt.tokens.get(world.as_admin, issued.token.id).plan_id is None


def test_members_read_plans_without_forms(admin: tuple[TestClient, str],
                                          member: tuple[TestClient, str]) -> None:
    client, csrf = admin
    made = client.post("/console/plans", data=fields(csrf))
    plan_url = made.headers["location"].split("?")[0]
    reader, member_csrf = member
    listed = reader.get("/console/plans")
    assert listed.status_code == 200 and 'data-name="pro"' in listed.text
    assert "Create plan" not in listed.text
    page = reader.get(plan_url)
    assert page.status_code == 200 and "Save changes" not in page.text
    refused = reader.post(plan_url, data=fields(member_csrf, name="mine"))
    assert refused.status_code == 403
    no_csrf = client.post("/console/plans", data=fields("forged", name="other"))
    assert no_csrf.status_code in (400, 403)
    assert 'data-name="other"' not in client.get("/console/plans").text


def test_the_token_forms_choose_a_plan(admin: tuple[TestClient, str],
                                       member: tuple[TestClient, str], world: World,
                                       rt: Runtime) -> None:
    from .test_pages import create

    client, csrf = admin
    plan = rt.plans.create(world.as_admin, PlanDraft(name="pro", scopes=["employees:read"]))
    form = client.get("/console/tokens/new").text
    assert 'name="plan"' in form and f'value="{plan.id}">pro</option>' in form
    wide = create(client, csrf, name="too wide", kind="application",
                  scopes=["employees:read", "employees:write"], plan=plan.id)
    assert wide.status_code == 422 and "outside the plan" in wide.text
    made = create(client, csrf, name="on pro", kind="application",
                  scopes=["employees:read"], plan=plan.id)
    assert made.status_code == 200, made.text
    token = next(t for t in rt.tokens.list_tokens(world.as_admin, TokenQuery()).items
                 if t.name == "on pro")
    assert token.plan_id == plan.id
    page = client.get(f"/console/tokens/{token.id}").text
    assert f'value="{plan.id}" selected>pro</option>' in page
    saved = client.post(f"/console/tokens/{token.id}", data={
        "csrf_token": csrf, "name": "on pro", "description": "", "ip_allowlist": "",
        "target": "", "plan_shown": "1", "plan": ""})
    assert saved.status_code == 303, saved.text
    assert rt.tokens.get(world.as_admin, token.id).plan_id is None
    reader, _ = member
    assert 'name="plan"' not in reader.get("/console/tokens/new").text


def test_the_identity_forms_choose_a_plan(admin: tuple[TestClient, str], world: World,
                                          rt: Runtime) -> None:
    client, csrf = admin
    plan = rt.plans.create(world.as_admin, PlanDraft(name="pro"))
    page = client.get("/console/identities").text
    assert 'name="plan"' in page and f'value="{plan.id}">pro</option>' in page
    made = client.post("/console/identities", data={
        "csrf_token": csrf, "external_id": "cust_1", "plan_shown": "1", "plan": plan.id})
    assert made.status_code == 303, made.text
    identity = rt.identities.get(world.as_admin, "cust_1")
    assert identity.plan_id == plan.id
    detail = client.get(made.headers["location"]).text
    assert f'value="{plan.id}" selected>pro</option>' in detail
    base = {"csrf_token": csrf, "external_id": "cust_1", "name": "Customer"}
    kept = client.post(f"/console/identities/{identity.id}", data=base)  # no select shown
    assert kept.status_code == 200, kept.text
    assert rt.identities.get(world.as_admin, "cust_1").plan_id == plan.id
    off = client.post(f"/console/identities/{identity.id}",
                      data={**base, "plan_shown": "1", "plan": ""})
    assert off.status_code == 200 and "Changes saved" in off.text
    assert rt.identities.get(world.as_admin, "cust_1").plan_id is None
