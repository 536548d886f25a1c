"""Console suspend, resume and renew (the real app in-process, a real store): buttons on
the token page, forms with CSRF, the renew page prefilled, the successor's secret shown
once, and refusals that say why and change nothing."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from tallykey.runtime import Runtime
from tallykey.tokens.models import Token

from ..conftest import World
from .test_pages import SECRET, create

TOKEN_ID = re.compile(r"/console/tokens/([0-9a-f-]{36})")
ISSUE_KEY = re.compile(r'name="issue_key" value="([^"]+)"')


def made_token(client: TestClient, csrf: str, **fields: Any) -> str:
    made = create(client, csrf, **fields)
    return TOKEN_ID.search(made.text).group(1)  # type: ignore[union-attr]


def stored(rt: Runtime, token_id: str) -> Token:
    with rt.database.reading() as session:
        return session.get_one(Token, token_id)


def test_suspend_and_resume_from_the_token_page(admin: tuple[TestClient, str],
                                                world: World) -> None:
    client, csrf = admin
    token_id = made_token(client, csrf, name="Pausable")
    page = client.get(f"/console/tokens/{token_id}")
    assert f'action="/console/tokens/{token_id}/suspend"' in page.text
    assert f'href="/console/tokens/{token_id}/renew"' in page.text

    suspended = client.post(f"/console/tokens/{token_id}/suspend", data={"csrf_token": csrf})
    assert suspended.status_code == 303
    assert "done=suspended" in suspended.headers["location"]
    page = client.get(suspended.headers["location"])
    assert "The token was suspended: it is refused until resumed." in page.text
    assert "It stopped on 1 of 1 nodes." in page.text
    assert 'class="badge suspended"' in page.text and "by admin@acme.test" in page.text
    assert f'action="/console/tokens/{token_id}/resume"' in page.text
    assert "token.suspended" in page.text  # the history
    assert stored(world.rt, token_id).suspended_at is not None
    listed = client.get("/console/tokens", params={"status": "suspended"})
    assert "Pausable" in listed.text
    again = client.post(f"/console/tokens/{token_id}/suspend", data={"csrf_token": csrf})
    assert again.status_code == 409 and "already suspended" in again.text

    resumed = client.post(f"/console/tokens/{token_id}/resume", data={"csrf_token": csrf})
    assert resumed.status_code == 303
    page = client.get(resumed.headers["location"])
    assert "The token was resumed. It works again on 1 of 1 nodes." in page.text
    assert "stopped" not in page.text.split('class="notice"')[1].split("</")[0]
    assert stored(world.rt, token_id).suspended_at is None
    again = client.post(f"/console/tokens/{token_id}/resume", data={"csrf_token": csrf})
    assert again.status_code == 409 and "not suspended" in again.text


def test_renew_page_is_prefilled_and_shows_the_successor_once(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    token_id = made_token(client, csrf, name="Yearly", expiry="90")
    page = client.get(f"/console/tokens/{token_id}/renew")
    assert page.status_code == 200
    assert re.search(r'value="90" data-days="90" checked', page.text)
    assert re.search(r'<option value="1" selected>1 day</option>', page.text)
    key = ISSUE_KEY.search(page.text).group(1)  # type: ignore[union-attr]
    form = {"csrf_token": csrf, "issue_key": key, "expiry": "60", "grace_days": "2"}
    renewed = client.post(f"/console/tokens/{token_id}/renew", data=form)
    assert renewed.status_code == 303
    location = renewed.headers["location"]
    successor_id = TOKEN_ID.search(location).group(1)  # type: ignore[union-attr]
    assert successor_id != token_id
    shown = client.get(location)
    assert shown.status_code == 200 and "“Yearly” renewed: its successor" in shown.text
    assert SECRET.search(shown.text) and "keeps working until" in shown.text
    assert client.get(location).status_code == 410  # once
    repost = client.post(f"/console/tokens/{token_id}/renew", data=form)
    assert repost.status_code == 303 and repost.headers["location"] == location
    old = stored(world.rt, token_id)
    assert old.successor_id == successor_id
    assert stored(world.rt, successor_id).renewed_from_id == token_id
    detail = client.get(f"/console/tokens/{token_id}")
    successor = stored(world.rt, successor_id)
    assert re.search(rf'id="successor">by <a href="/console/tokens/{successor_id}">Yearly</a> '
                     rf'<code>{successor.prefix}</code>', detail.text)
    assert f'href="/console/tokens/{token_id}/renew"' not in detail.text
    after = client.get(f"/console/tokens/{successor_id}")
    assert re.search(rf'id="renewed-from"><a href="/console/tokens/{token_id}">Yearly</a> '
                     rf'<code>{old.prefix}</code>', after.text)
    assert "the token it succeeds" not in after.text
    twice = client.get(f"/console/tokens/{token_id}/renew")
    assert "renewed already" in twice.text and "<form" not in twice.text.split("renew-what")[1]


def test_renew_form_errors_are_shown_and_change_nothing(admin: tuple[TestClient, str],
                                                        world: World) -> None:
    client, csrf = admin
    token_id = made_token(client, csrf, name="Strict")
    for data, fragment in [
            ({"expiry": "date", "expires_on": "2999-01-01"}, "maximum validity"),
            ({"expiry": "date", "expires_on": "soon"}, "Pick the expiry date"),
            ({"expiry": "30", "grace_days": "9"}, "0 to 7 days"),
            ({"expiry": "12"}, "Choose how long the token is valid")]:
        answer = client.post(f"/console/tokens/{token_id}/renew",
                             data={"csrf_token": csrf, **data})
        assert answer.status_code == 422 and fragment in answer.text, data
    assert stored(world.rt, token_id).successor_id is None
    for path in ("suspend", "resume", "renew"):
        refused = client.post(f"/console/tokens/{token_id}/{path}",
                              data={"expiry": "30", "csrf_token": "wrong"})
        assert refused.status_code == 403 and "This form has expired" in refused.text
    assert stored(world.rt, token_id).suspended_at is None


def test_members_cannot_reach_other_tokens_lifecycle(
        admin: tuple[TestClient, str], member: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    admin_token = made_token(client, csrf, name="Admin's")
    member_client, member_csrf = member
    for path in ("suspend", "resume", "renew"):
        answer = member_client.post(f"/console/tokens/{admin_token}/{path}",
                                    data={"csrf_token": member_csrf, "expiry": "30"})
        assert answer.status_code == 404, path
    assert member_client.get(f"/console/tokens/{admin_token}/renew").status_code == 404
    token = stored(world.rt, admin_token)
    assert token.suspended_at is None and token.successor_id is None
