"""The console's webhooks page: admins only, CSRF on every form, tenant isolated, the
secret shown once on the form's answer (never cached), bad input answered on the page."""

from __future__ import annotations

from starlette.testclient import TestClient

from tallykey.actor import Actor

from ..conftest import World
from .conftest import csrf_of


def test_forms_need_the_session_csrf_token_and_an_admin(
        world: World, admin: tuple[TestClient, str], member: tuple[TestClient, str]) -> None:
    client, csrf = admin
    refused = client.post("/console/webhooks", data={"url": "https://hooks.example.com/x"})
    assert refused.status_code == 403 and "This form has expired" in refused.text
    forged = client.post("/console/webhooks", data={"url": "https://hooks.example.com/x",
                                                    "csrf_token": "forged"})
    assert forged.status_code == 403
    assert world.rt.webhooks.list(Actor.operator(world.acme_id)) == []

    member_client, member_csrf = member
    assert member_client.get("/console/webhooks").status_code == 403
    assert member_client.post("/console/webhooks", data={
        "url": "https://hooks.example.com/x", "csrf_token": member_csrf}).status_code == 403
    assert 'href="/console/webhooks"' not in member_client.get("/console/tokens").text
    assert 'href="/console/webhooks"' in client.get("/console/tokens").text

    added = client.post("/console/webhooks", data={
        "url": "https://hooks.example.com/x", "description": "SIEM", "events": "token.revoked",
        "enabled": "on", "csrf_token": csrf})
    assert added.status_code == 200 and added.headers["cache-control"] == "no-store"
    [endpoint] = world.rt.webhooks.list(Actor.operator(world.acme_id))
    assert endpoint.secret in added.text and endpoint.events == ["token.revoked"]
    detail = client.get(f"/console/webhooks/{endpoint.id}")
    assert detail.status_code == 200 and endpoint.secret not in detail.text
    rotated = client.post(f"/console/webhooks/{endpoint.id}/rotate",
                          data={"csrf_token": csrf_of(detail.text)})
    [endpoint] = world.rt.webhooks.list(Actor.operator(world.acme_id))
    assert endpoint.secret in rotated.text and endpoint.previous_secret not in rotated.text


def test_bad_input_is_answered_on_the_page_and_other_accounts_are_not_found(
        world: World, admin: tuple[TestClient, str]) -> None:
    client, csrf = admin
    bad = client.post("/console/webhooks", data={"url": "ftp://x.example/", "csrf_token": csrf,
                                                 "description": "kept"})
    assert bad.status_code == 422 and "http://" in bad.text and 'value="kept"' in bad.text
    unknown = client.post("/console/webhooks", data={
        "url": "https://hooks.example.com/x", "events": "token.nope", "csrf_token": csrf})
    assert unknown.status_code == 422 and "token.nope" in unknown.text
    assert world.rt.webhooks.list(Actor.operator(world.acme_id)) == []
    theirs, _ = world.rt.webhooks.add(Actor.operator(world.globex_id),
                                      "https://hooks.example.com/globex")
    assert client.get(f"/console/webhooks/{theirs.id}").status_code == 404
    for path in ("", "/rotate", "/delete", "/deliveries/x/retry"):
        answer = client.post(f"/console/webhooks/{theirs.id}{path}", data={
            "csrf_token": csrf, "url": "https://hooks.example.com/mine"})
        assert answer.status_code == 404, path
    [still] = world.rt.webhooks.list(Actor.operator(world.globex_id))
    assert still.url == "https://hooks.example.com/globex" and still.previous_secret is None
