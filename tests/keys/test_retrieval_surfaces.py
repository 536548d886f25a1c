"""Retrieval through the management API and the console's Edit page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.audit.models import AuditEvent
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from ..console.conftest import csrf_of, sign_in
from .test_vault import app_token, keyed, kworld  # noqa: F401 - fixtures


@pytest.fixture
def client(keyed: Runtime, kworld: World) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(keyed), client=("127.0.0.1", 40000),
                    follow_redirects=False) as http:
        yield http


def test_the_api_hands_credentials_to_admins_only(kworld: World, client: TestClient  # noqa: F811
                                                  ) -> None:
    manage = kworld.rt.tokens.issue(kworld.as_admin, TokenDraft(
        name="m", expires_in_days=7, scopes=["tokens:manage"])).value
    issued = app_token(kworld)
    answer = client.post(f"/api/v1/tokens/{issued.token.id}/secret",
                        headers={"Authorization": f"Bearer {manage}"})
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.json()["username"] + answer.json()["password"] == issued.value
    counts = client.get("/api/v1/targets", headers={"Authorization": f"Bearer {manage}"})
    assert {"target": "Excel", "active": 1, "total": 1} in counts.json()
    member_csrf = sign_in(client, "member@acme.test", "member password 1")
    refused = client.post(f"/api/v1/tokens/{issued.token.id}/secret",
                         headers={"X-CSRF-Token": member_csrf})
    assert refused.status_code in (403, 404)


def test_the_edit_page_shows_them_after_a_post_with_csrf(kworld: World,  # noqa: F811
                                                        client: TestClient) -> None:
    issued = app_token(kworld)
    sign_in(client, "admin@acme.test", "correct horse battery")
    page = client.get(f"/console/tokens/{issued.token.id}")
    assert "Show username and password" in page.text and issued.value not in page.text
    without = client.post(f"/console/tokens/{issued.token.id}/secret", data={})
    assert without.status_code == 403
    shown = client.post(f"/console/tokens/{issued.token.id}/secret",
                        data={"csrf_token": csrf_of(page.text)})
    assert shown.status_code == 200 and issued.secret.password in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert "recorded in the audit log" in shown.text


def test_a_cross_site_link_cannot_retrieve_a_secret(kworld: World,  # noqa: F811
                                                    client: TestClient) -> None:
    """A signed-in admin's browser follows a link (GET, SameSite=Lax sends the cookie) or
    submits a forged form without the session's CSRF token: nothing is retrieved."""
    issued = app_token(kworld)
    csrf = sign_in(client, "admin@acme.test", "correct horse battery")
    url = f"/api/v1/tokens/{issued.token.id}/secret"
    followed = client.get(url)
    assert followed.status_code == 405 and issued.secret.password not in followed.text
    forged = client.post(url)
    assert forged.status_code == 403 and forged.json()["reason"] == "csrf"
    with kworld.rt.database.reading() as session:
        retrievals = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "token.secret_retrieved")).all()
    assert retrievals == []
    shown = client.post(url, headers={"X-CSRF-Token": csrf})
    assert shown.status_code == 200 and shown.json()["password"] == issued.secret.password


def test_the_cli_without_the_key_says_the_key_is_missing_not_to_rotate(
        kworld: World, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from tallykey.cli import app

    issued = app_token(kworld)
    monkeypatch.delenv("TALLYKEY_KEK", raising=False)
    monkeypatch.delenv("TALLYKEY_KEK_FILE", raising=False)
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", settings.resolved_database_url)
    result = CliRunner().invoke(app, ["tokens", "secret", issued.token.prefix])
    assert result.exit_code != 0
    assert "no key-encryption key is configured" in result.stderr
    assert "TALLYKEY_KEK" in result.stderr and "Do not rotate" in result.stderr
    assert "was not kept" not in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 3
    monkeypatch.setenv("TALLYKEY_KEK", kworld.rt.settings.kek or "")
    shown = CliRunner().invoke(app, ["tokens", "secret", issued.token.prefix, "--json"])
    assert shown.exit_code == 0, shown.output
