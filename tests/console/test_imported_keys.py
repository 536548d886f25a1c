"""Imported keys (SPEC §16) in the console: listed and filtered by kind `imported` with
their `imported:<hash>` prefix (never a character of the key), and their page opens;
suspend and revoke work through the console's own forms."""

from __future__ import annotations

import secrets

from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.tokens.imports import ImportItem

from ..conftest import World


def test_the_console_lists_and_manages_an_imported_key(
        world: World, rt: Runtime, admin: tuple[TestClient, str]) -> None:
    client, csrf = admin
    key = "legacy_" + secrets.token_urlsafe(24)
    report = rt.tokens.import_keys(world.as_admin, [ImportItem(
        key=key, name="legacy CRM", expires_in_days=30, scopes=["employees:read"])])
    result = report.results[0]
    assert result.outcome == "created" and result.token_id is not None
    listed = client.get("/console/tokens?kind=imported")
    assert listed.status_code == 200
    assert 'value="imported" selected' in listed.text
    assert "legacy CRM" in listed.text and result.prefix in listed.text
    assert key not in listed.text and key[:12] not in listed.text
    page = client.get(f"/console/tokens/{result.token_id}")
    assert page.status_code == 200, page.text
    assert result.prefix in page.text and key[:12] not in page.text
    assert 'id="imported-note"' in page.text
    assert f"/tokens/{result.token_id}/rotate" not in page.text
    assert f"/tokens/{result.token_id}/renew" not in page.text
    assert f"/tokens/{result.token_id}/revoke" in page.text
    form = client.get(f"/console/tokens/{result.token_id}/revoke")
    assert form.status_code == 200, form.text
    answer = client.post(f"/console/tokens/{result.token_id}/revoke",
                         data={"csrf_token": csrf, "reason": "migrated"})
    assert answer.status_code in (200, 303), answer.text
    assert rt.tokens.get(world.as_admin, result.token_id).revoked_at is not None
