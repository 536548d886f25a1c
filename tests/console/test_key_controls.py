"""Key controls in the console (SPEC §13): set on the create and edit pages, shown on the
token page (limits, credits left and the next refill, external id, metadata); a bad
value is shown again with its message and changes nothing; saving other fields never
undoes spent credits."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime

from ..conftest import World
from .test_pages import create

TOKEN_ID = re.compile(r"/console/tokens/([0-9a-f-]{36})")
SECRET = re.compile(r'id="secret" class="secret" type="text" readonly value="([^"]+)"')


def test_create_with_limits_then_edit_them(admin: tuple[TestClient, str], world: World,
                                           rt: Runtime) -> None:
    client, csrf = admin
    made = create(client, csrf, name="Metered", rate_limits="default=100/60\nburst=5/1:owner",
                  credits_remaining="50", refill_amount="50", refill_interval="daily",
                  external_id="cust_42", metadata='{"plan": "pro"}')
    assert made.status_code == 200, made.text
    id_found, secret_found = TOKEN_ID.search(made.text), SECRET.search(made.text)
    assert id_found and secret_found, made.text
    token_id, secret = id_found.group(1), secret_found.group(1)
    page = client.get(f"/console/tokens/{token_id}").text
    assert "100 per 60 s" in page and "shared by the owner's tokens" in page
    assert "50 left; refilled to 50 daily, next at" in page
    assert "cust_42" in page and "default=100/60\nburst=5/1:owner" in page
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)
    try:
        assert verifier.verify(f"Bearer {secret}", "127.0.0.1").credits_remaining == 49
    finally:
        verifier.close()
    shown = re.search(r'name="credits_shown" value="([^"]*)"', page).group(1)  # type: ignore[union-attr]
    base = {"csrf_token": csrf, "name": "Metered", "description": "", "ip_allowlist": "",
            "target": "", "controls_shown": "1", "rate_limits": "default=10/1",
            "credits_remaining": "50", "refill_amount": "50", "refill_interval": "daily",
            "credits_shown": shown, "external_id": "cust_43", "metadata": ""}
    saved = client.post(f"/console/tokens/{token_id}", data=base)
    assert saved.status_code == 303, saved.text
    page = client.get(saved.headers["location"]).text
    assert "10 per 1 s" in page and "cust_43" in page
    assert "49 left" in page  # the page's old 50 was not written back
    bad = client.post(f"/console/tokens/{token_id}", data={**base, "metadata": "[1, 2]",
                                                            "rate_limits": "default=10/1"})
    assert bad.status_code == 422 and "metadata must be a JSON object" in bad.text
    assert "[1, 2]" in bad.text  # the input is shown again
    for field, value, message in [
        ("rate_limits", "default=0/60", "limit must be a whole number from 1"),
        ("rate_limits", "lots", "NAME=LIMIT/SECONDS"),
        ("credits_remaining", "-3", "is not a whole number"),
        ("metadata", "{not json", "metadata is not valid JSON"),
    ]:
        refused = client.post(f"/console/tokens/{token_id}", data={**base, field: value})
        assert refused.status_code == 422 and message in refused.text, (field, refused.text)
    page = client.get(f"/console/tokens/{token_id}").text
    assert "10 per 1 s" in page and "49 left" in page and "cust_43" in page
    credits = client.post(f"/console/tokens/{token_id}", data={
        **base, "credits_remaining": "", "refill_amount": "", "refill_interval": ""})
    assert credits.status_code == 303
    assert 'id="credits"' not in client.get(f"/console/tokens/{token_id}").text


def test_the_create_page_reports_bad_key_controls_and_creates_nothing(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    before = client.get("/console/tokens").text.count("/console/tokens/")
    refused = create(client, csrf, name="Bad", rate_limits="default=5/0",
                     metadata='{"k": "' + "x" * 5000 + '"}', external_id="x" * 300)
    assert refused.status_code == 422
    text = refused.text
    assert "per_seconds must be a whole number from 1" in text
    assert "at most 4096 are allowed" in text and "external_id must be 1 to 255" in text
    assert client.get("/console/tokens").text.count("/console/tokens/") == before
