"""Self-serve webhooks (SPEC §17) over the real app: endpoints, the event filter, secret
rotation with its 24-hour overlap, the delivery log and retries, delivered by the real
worker to a real HTTP receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.errors import SignatureInvalid
from tallykey.notify.models import OutboxMessage, WebhookEndpoint
from tallykey.notify.webhooks import verify_signature
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import HttpReceiver, make_worker

Headers = dict[str, str]


@pytest.fixture
def client(rt: Runtime, world: World) -> Iterator[TestClient]:
    app = create_app(rt)
    with TestClient(app, client=("127.0.0.1", 40000), follow_redirects=False) as made:
        yield made


def bearer(rt: Runtime, world: World, who: str) -> Headers:
    actor = {"admin": world.as_admin, "member": world.as_member,
             "other": world.as_other_admin}[who]
    scopes = ["tokens:manage"] if who != "member" else ["employees:read"]
    value = rt.tokens.issue(actor, TokenDraft(name=f"api {who}", expires_in_days=30,
                                              scopes=scopes)).value
    return {"Authorization": f"Bearer {value}"}


def deliver(rt: Runtime) -> None:
    """One pass of the real worker (the app's background worker may have sent some)."""
    worker = make_worker(rt, None)
    try:
        worker.run_once()
    finally:
        worker.close()


def test_admins_manage_endpoints_and_see_the_secret_once(
        rt: Runtime, world: World, client: TestClient, http_receiver: HttpReceiver) -> None:
    admin = bearer(rt, world, "admin")
    made = client.post("/api/v1/webhooks", headers=admin, json={
        "url": http_receiver.url, "description": "SIEM",
        "events": ["token.revoked", "token.created"]})
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_")
    # catalog order, whatever order was asked
    assert hook["events"] == ["token.created", "token.revoked"]
    assert (hook["description"], hook["enabled"], hook["url"]) == (
        "SIEM", True, http_receiver.url)
    listed = client.get("/api/v1/webhooks", headers=admin).json()
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0] and hook["secret"] not in json.dumps(listed)
    got = client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin).json()
    assert "secret" not in got
    changed = client.patch(f"/api/v1/webhooks/{hook['id']}", headers=admin,
                           json={"events": [], "enabled": False, "description": "all"})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["events"], changed.json()["enabled"]) == ([], False)
    with rt.database.reading() as session:
        actions = [e.action for e in session.scalars(select(AuditEvent).where(
            AuditEvent.target_id == hook["id"]).order_by(AuditEvent.id))]
        stored = session.get_one(WebhookEndpoint, hook["id"])
        assert stored.secret == hook["secret"]  # the HMAC key must stay usable
    assert actions == ["webhook.created", "webhook.updated"]
    assert hook["secret"] not in json.dumps([a for a in actions])
    gone = client.delete(f"/api/v1/webhooks/{hook['id']}", headers=admin)
    assert gone.status_code == 204
    assert client.get("/api/v1/webhooks", headers=admin).json() == []
    assert client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin).status_code == 404
    with rt.database.reading() as session:
        assert session.get_one(WebhookEndpoint, hook["id"]).secret == ""  # forgotten


def test_bad_input_is_refused_clearly_and_changes_nothing(
        rt: Runtime, world: World, client: TestClient) -> None:
    admin = bearer(rt, world, "admin")
    for body, fragment in [
        ({"url": "ftp://hooks.example.com/x"}, "http"),
        ({"url": "https://hooks.example.com/x", "events": ["token.exploded"]},
         "token.exploded"),
        ({"url": "https://hooks.example.com/x", "secret": "mine"}, "secret"),
        ({"url": "https://hooks.example.com/x", "enabled": "yes"}, "enabled"),
        ({"url": "https://hooks.example.com/x", "description": "x" * 501}, "description"),
        ({"url": "https://hooks.example.com/x", "description": "tlk_eu1_" + "a" * 61},
         "description"),
        ({}, "url"),
        ({"url": "http://[::1"}, "valid host"),
        ({"url": "https://hooks.example.com:99999/"}, "valid host and port"),
        ({"url": "https://hooks.example.com/a b"}, "control characters"),
    ]:
        refused = client.post("/api/v1/webhooks", headers=admin, json=body)
        assert refused.status_code == 422, (body, refused.text)
        answer = refused.json()
        assert answer["error"] and answer["message"] and fragment in refused.text, answer
    assert client.get("/api/v1/webhooks", headers=admin).json() == []
    hook = client.post("/api/v1/webhooks", headers=admin,
                       json={"url": "https://hooks.example.com/x"}).json()
    refused = client.patch(f"/api/v1/webhooks/{hook['id']}", headers=admin,
                           json={"events": ["token.created", "nope"]})
    assert refused.status_code == 422 and "nope" in refused.json()["message"]
    assert client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin).json()["events"] == []


def test_only_admins_of_the_account_reach_its_endpoints(
        rt: Runtime, world: World, client: TestClient) -> None:
    admin, member, other = (bearer(rt, world, w) for w in ("admin", "member", "other"))
    hook = client.post("/api/v1/webhooks", headers=admin,
                       json={"url": "https://hooks.example.com/acme"}).json()
    assert client.get("/api/v1/webhooks", headers=member).status_code == 403
    assert client.post("/api/v1/webhooks", headers=member,
                       json={"url": "https://hooks.example.com/m"}).status_code == 403
    assert client.get("/api/v1/webhooks", headers=other).json() == []
    base = f"/api/v1/webhooks/{hook['id']}"
    for method, path, body in [
        ("GET", base, None), ("PATCH", base, {"enabled": False}), ("DELETE", base, None),
        ("POST", base + "/rotate-secret", None), ("GET", base + "/deliveries", None),
        ("POST", base + "/deliveries/x/retry", None),
    ]:
        answer = client.request(method, path, headers=other, json=body)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"] == "not_found"
    still = client.get(base, headers=admin).json()
    assert still["enabled"] is True and still["secret_rotated_at"] is None
    # B's own endpoint, A's delivery id: not found either
    rt.tokens.issue(world.as_admin, TokenDraft(name="for a delivery", expires_in_days=3))
    [a_delivery] = client.get(base + "/deliveries", headers=admin).json()
    theirs = client.post("/api/v1/webhooks", headers=other,
                         json={"url": "https://hooks.example.com/globex"}).json()
    crossed = client.post(f"/api/v1/webhooks/{theirs['id']}/deliveries/{a_delivery['id']}"
                          "/retry", headers=other)
    assert crossed.status_code == 404 and "No such delivery" in crossed.json()["message"]


def test_the_event_filter_decides_what_is_sent(
        rt: Runtime, world: World, client: TestClient, clock: FrozenClock,
        http_receiver: HttpReceiver) -> None:
    admin = bearer(rt, world, "admin")  # this token's token.created precedes the endpoint
    secret = client.post("/api/v1/webhooks", headers=admin, json={
        "url": http_receiver.url, "events": ["token.revoked"]}).json()["secret"]
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30))
    rt.tokens.revoke(world.as_admin, issued.token.id)
    deliver(rt)
    assert [r.headers["Tallykey-Event"] for r in http_receiver.requests] == ["token.revoked"]
    request = http_receiver.requests[0]
    verify_signature(secret, request.headers["Tallykey-Signature"], request.body,
                     clock.now(), delivery=request.headers["Tallykey-Delivery"])


def test_a_rotated_secret_signs_beside_the_old_one_for_24_hours(
        rt: Runtime, world: World, client: TestClient, clock: FrozenClock,
        http_receiver: HttpReceiver) -> None:
    admin = bearer(rt, world, "admin")
    hook = client.post("/api/v1/webhooks", headers=admin, json={
        "url": http_receiver.url, "events": ["token.created"]}).json()
    old = hook["secret"]
    rotated = client.post(f"/api/v1/webhooks/{hook['id']}/rotate-secret", headers=admin)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    assert rotated.json()["previous_secret_expires_at"] == (
        clock.now() + timedelta(hours=24)).isoformat()
    assert "secret" not in client.get(f"/api/v1/webhooks/{hook['id']}", headers=admin).json()

    rt.tokens.issue(world.as_admin, TokenDraft(name="during overlap", expires_in_days=30))
    deliver(rt)
    [request] = http_receiver.requests
    header = request.headers["Tallykey-Signature"]
    assert header.count("v1=") == 2
    for secret in (new, old):  # a receiver knowing either secret accepts it
        verify_signature(secret, header, request.body, clock.now(),
                         delivery=request.headers["Tallykey-Delivery"])
    with pytest.raises(SignatureInvalid):
        verify_signature("whsec_someone-else", header, request.body, clock.now())

    # 24 hours after the rotation (dated back in the database): the old secret is done.
    with rt.database.transaction() as session:
        session.execute(update(WebhookEndpoint).where(WebhookEndpoint.id == hook["id"])
                        .values(secret_rotated_at=clock.now() - timedelta(hours=24)))
    assert client.get(f"/api/v1/webhooks/{hook['id']}",
                      headers=admin).json()["previous_secret_expires_at"] == clock.now(
                      ).isoformat()
    rt.tokens.issue(world.as_admin, TokenDraft(name="after overlap", expires_in_days=30))
    deliver(rt)
    later = http_receiver.requests[1]
    header = later.headers["Tallykey-Signature"]
    assert header.count("v1=") == 1
    verify_signature(new, header, later.body, clock.now())
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify_signature(old, header, later.body, clock.now())
    with rt.database.reading() as session:
        audit = session.scalars(select(AuditEvent).where(
            AuditEvent.action == "webhook.secret_rotated")).one()
    assert new not in json.dumps(audit.details) and old not in json.dumps(audit.details)


def test_the_delivery_log_and_a_retry(rt: Runtime, world: World, client: TestClient,
                                      clock: FrozenClock,
                                      http_receiver: HttpReceiver) -> None:
    admin = bearer(rt, world, "admin")
    hook = client.post("/api/v1/webhooks", headers=admin, json={
        "url": http_receiver.url, "events": ["token.revoked"]}).json()
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30))
    rt.tokens.revoke(world.as_admin, issued.token.id)
    http_receiver.status = 500
    deliver(rt)
    log = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=admin)
    assert log.status_code == 200, log.text
    [entry] = log.json()
    assert (entry["event"], entry["status"], entry["status_code"], entry["attempts"],
            entry["last_error"]) == ("token.revoked", "pending", 500, 1, "HTTP 500")
    # the receiver is fixed; its owner does not wait for the back-off
    http_receiver.status = 200
    with rt.database.transaction() as session:  # gave up already (dead)
        session.execute(update(OutboxMessage).where(OutboxMessage.id == entry["id"])
                        .values(status="dead"))
    retried = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/retry",
                          headers=admin)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    deliver(rt)
    [entry] = client.get(f"/api/v1/webhooks/{hook['id']}/deliveries", headers=admin).json()
    assert (entry["status"], entry["status_code"], entry["attempts"]) == ("sent", None, 1)
    assert entry["sent_at"] is not None
    assert len(http_receiver.requests) == 2
    assert len({r.headers["Tallykey-Delivery"] for r in http_receiver.requests}) == 1
    again = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/{entry['id']}/retry",
                        headers=admin)
    assert again.status_code == 422 and "sent" in again.json()["message"]
    unknown = client.post(f"/api/v1/webhooks/{hook['id']}/deliveries/nope/retry",
                          headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
