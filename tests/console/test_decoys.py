"""The console plants decoys (SPEC §17) with the create form and lists them with their
last trips on the Decoys page (administrators only, one account's alone); the policies
form sets the containment policy."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.tokens.models import DECOY
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

SECRET = re.compile(r'id="secret" class="secret" type="text" readonly value="([^"]+)"')


def test_a_decoy_planted_in_the_console_lists_its_trips(
        world: World, rt: Runtime, admin: tuple[TestClient, str],
        member: tuple[TestClient, str]) -> None:
    client, csrf = admin
    form = client.get("/console/tokens/new").text
    assert 'value="decoy"' in form
    answer = client.post("/console/tokens/new", data={
        "csrf_token": csrf, "name": "wiki decoy", "expiry": "90", "kind": "decoy"})
    assert answer.status_code == 303, answer.text
    shown = client.get(answer.headers["location"])
    found = SECRET.search(shown.text)
    assert found, "the show-once page carries the secret"
    secret = found.group(1)
    page = client.get("/console/decoys")
    assert page.status_code == 200 and "wiki decoy" in page.text and "never used" in page.text
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        assert verifier.verify(f"Bearer {secret}", "203.0.113.66", user_agent="sqlmap/1.7",
                               path="/api/v1/admin").reason == "unknown"
        verifier.flush_usage()
    finally:
        verifier.close()
    page = client.get("/console/decoys").text
    assert "203.0.113.66" in page and "/api/v1/admin" in page and "sqlmap/1.7" in page
    assert "1 use from" in page and secret not in page
    listed = client.get("/console/tokens?kind=decoy").text
    assert "wiki decoy" in listed
    token_id = re.search(r'href="/console/tokens/([0-9a-f-]{36})"', page)
    assert token_id
    detail = client.get(f"/console/tokens/{token_id.group(1)}").text
    assert "never works" in detail and 'href="/console/decoys"' in detail
    member_client, _ = member
    assert member_client.get("/console/decoys").status_code == 403
    world.rt.tokens.issue(world.as_other_admin, TokenDraft(name="globex trap", kind=DECOY,
                                                           expires_in_days=30))
    assert "globex trap" not in client.get("/console/decoys").text  # another tenant's


def test_the_policies_form_sets_containment(world: World, rt: Runtime,
                                            admin: tuple[TestClient, str]) -> None:
    client, csrf = admin
    page = client.get("/console/account").text
    assert 'name="contain" value="suspend"' in page and "checked" not in page.split(
        'name="contain"')[1].split(">")[0]
    base = {"csrf_token": csrf, "max_validity_days": "365", "reminder_days": "7, 2",
            "new_network_alerts": "on"}
    assert client.post("/console/account", data={**base, "contain": "suspend"}
                       ).status_code == 303
    assert rt.accounts.find_account(world.acme_id).contain == "suspend"
    assert client.post("/console/account", data=base).status_code == 303
    assert rt.accounts.find_account(world.acme_id).contain == "off"
