"""Suspend, resume and renew over the management API (the real app in-process, a real
store), and what a suspended or renewed token then gets from `/api/v1/verify`,
`/auth/request` and the embedded middleware."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey import TallykeyMiddleware, Verifier
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.notify.models import OutboxMessage
from tallykey.people.sessions import CSRF_HEADER
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.models import Token, TokenSecret

from ..conftest import World
from .test_idempotency import management_token


@pytest.fixture
def app(rt: Runtime) -> Any:
    return create_app(rt)


@pytest.fixture
def api(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40000)) as client:
        yield client


@pytest.fixture
def member_api(app: Any, world: World) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The member, signed in over the API (members hold no management token)."""
    with TestClient(app, base_url="http://testserver", client=("127.0.0.1", 40001)) as client:
        signed = client.post("/api/v1/session", json={"email": "member@acme.test",
                                                      "password": "member password 1"})
        assert signed.status_code == 200, signed.text
        yield client, {CSRF_HEADER: signed.json()["csrf_token"]}


@pytest.fixture
def embedded(rt: Runtime) -> Iterator[TestClient]:
    """A service protected in-process by the middleware, on the same store."""
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=rt.clock,
                        background=False)

    async def plain(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    client = TestClient(TallykeyMiddleware(plain, verifier=verifier),
                        client=("127.0.0.1", 40002))
    yield client
    client.close()
    verifier.close()


def lifecycle(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """What suspend, resume and renew may change (usage counts, flushed in the background
    from the management calls themselves, left out)."""
    with rt.database.reading() as session:
        return {
            "tokens": [tuple(row) for row in session.execute(select(
                Token.id, Token.expires_at, Token.updated_at, Token.suspended_at,
                Token.revoked_at, Token.successor_id).order_by(Token.id))],
            "secrets": [tuple(row) for row in session.execute(select(
                TokenSecret.id, TokenSecret.retires_at).order_by(TokenSecret.id))],
            "audit": [tuple(row) for row in session.execute(select(AuditEvent.id))],
            "outbox": [tuple(row) for row in session.execute(select(OutboxMessage.id))],
        }


def create(api: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    body = {"name": "Payroll sync", "expires_in_days": 30, "kind": "application",
            "scopes": ["employees:read"], **body}
    answer = api.post("/api/v1/tokens", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


class Surfaces:
    """One token checked on every verification surface."""

    def __init__(self, api: TestClient, embedded: TestClient) -> None:
        self.api, self.embedded = api, embedded

    def verify(self, token: str) -> dict[str, Any]:
        return dict(self.api.post("/api/v1/verify", json={"token": token}).json())

    def statuses(self, token: str) -> list[int]:
        auth = {"Authorization": f"Bearer {token}"}
        return [self.verify(token)["status"],
                self.api.get("/auth/request", headers=auth).status_code,
                self.embedded.get("/", headers=auth).status_code]


def test_a_suspended_token_is_refused_everywhere_until_resumed(
        api: TestClient, embedded: TestClient, world: World) -> None:
    admin = management_token(world, world.as_admin)
    made = create(api, admin)
    surfaces = Surfaces(api, embedded)
    assert surfaces.statuses(made["token"]) == [200, 204, 200]

    answer = api.post(f"/api/v1/tokens/{made['id']}/suspend", headers=admin)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "suspended" and body["suspended_by"] == "admin@acme.test"
    assert body["propagation"]["complete"] is True
    assert "unconfirmed=0" in answer.headers["tallykey-propagation"]
    assert surfaces.statuses(made["token"]) == [401, 401, 401]

    verdict = surfaces.verify(made["token"])
    assert verdict["error"] == "token_suspended"
    assert verdict["message"] == (f"This token was suspended by admin@acme.test at "
                                  f"{body['suspended_at']}; ask an administrator.")
    auth = {"Authorization": f"Bearer {made['token']}"}
    for refused in (api.get("/auth/request", headers=auth), embedded.get("/", headers=auth)):
        assert refused.json()["error"] == "token_suspended"
        assert refused.json()["reason"] == "suspended"
        assert "suspended by admin@acme.test at" in refused.json()["message"]
        assert refused.headers["www-authenticate"].startswith(
            'Bearer realm="tallykey", error="invalid_token"')

    again = api.post(f"/api/v1/tokens/{made['id']}/suspend", headers=admin)
    assert again.status_code == 409 and "already suspended" in again.json()["message"]
    resumed = api.post(f"/api/v1/tokens/{made['id']}/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json()["status"] == "active"
    summary = resumed.json()["propagation"]["summary"]  # said for a resume, not a stop
    assert re.fullmatch(r"works again on (\d+) of \1 nodes", summary), summary
    assert resumed.json()["propagation"]["complete"] is True
    assert surfaces.statuses(made["token"]) == [200, 204, 200]
    assert api.post(f"/api/v1/tokens/{made['id']}/resume", headers=admin).status_code == 409
    audit = api.get("/api/v1/audit", params={"target_id": made["id"]}, headers=admin).json()
    assert [e["action"] for e in audit["items"] if e["action"].startswith("token.")] == [
        "token.resumed", "token.suspended", "token.created"]
    listed = api.get("/api/v1/tokens", params={"status": "active"}, headers=admin).json()
    assert made["id"] in [t["id"] for t in listed["items"]]


def test_suspend_follows_the_revoke_rules_and_refusals_change_nothing(
        api: TestClient, member_api: tuple[TestClient, dict[str, str]], world: World,
        rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    other = management_token(world, world.as_other_admin)
    member_client, member = member_api
    made = create(api, admin)
    revoked = create(api, admin, name="gone")
    assert api.post(f"/api/v1/tokens/{revoked['id']}/revoke", headers=admin).is_success
    before = lifecycle(rt)
    for client, headers, token_id, status in [
            (member_client, member, made["id"], 404), (api, other, made["id"], 404),
            (api, admin, revoked["id"], 409), (api, admin, "nope", 404),
            (api, {}, made["id"], 401)]:
        for verb in ("suspend", "resume"):
            answer = client.post(f"/api/v1/tokens/{token_id}/{verb}", headers=headers)
            assert answer.status_code == status, (verb, answer.text)
    assert "revoked and cannot be suspended" in api.post(
        f"/api/v1/tokens/{revoked['id']}/suspend", headers=admin).json()["message"]
    assert lifecycle(rt) == before
    mine = member_client.post("/api/v1/tokens", headers=member, json={
        "name": "mine", "expires_in_days": 7}).json()
    assert member_client.post(f"/api/v1/tokens/{mine['id']}/suspend",
                              headers=member).json()["status"] == "suspended"
    assert member_client.post(f"/api/v1/tokens/{mine['id']}/resume",
                              headers=member).json()["status"] == "active"


def test_a_renewed_token_has_a_successor_and_its_old_secret_stops_after_the_grace(
        api: TestClient, embedded: TestClient, world: World, clock: FrozenClock) -> None:
    admin = management_token(world, world.as_admin)
    made = create(api, admin, expires_in_days=7, ip_allowlist=["127.0.0.0/8"],
                  description="nightly")
    surfaces = Surfaces(api, embedded)
    answer = api.post(f"/api/v1/tokens/{made['id']}/renew", headers=admin,
                      json={"expires_in_days": 90, "grace_seconds": 60})
    assert answer.status_code == 201, answer.text
    successor = answer.json()
    assert successor["id"] != made["id"] and successor["renewed_from_id"] == made["id"]
    assert successor["token"] != made["token"] and successor["username"]
    for name in ("name", "description", "kind", "scopes", "ip_allowlist", "workspace",
                 "target"):
        assert successor[name] == made[name], name
    assert successor["expires_at"] == (clock.now() + timedelta(days=90)).isoformat()
    assert successor["previous_secret_expires_at"] == (
        clock.now() + timedelta(seconds=60)).isoformat()
    old = api.get(f"/api/v1/tokens/{made['id']}", headers=admin).json()
    assert old["expires_at"] == made["expires_at"] and old["successor_id"] == successor["id"]

    assert surfaces.statuses(made["token"]) == [200, 204, 200]  # within the grace
    assert surfaces.statuses(successor["token"]) == [200, 204, 200]
    clock.advance(timedelta(seconds=61))
    assert surfaces.statuses(made["token"]) == [401, 401, 401]
    retired = surfaces.verify(made["token"])
    assert retired["message"].startswith("This token was renewed: its secret stopped working")
    assert retired["hint"] == "Use its successor, issued by the renewal."
    assert surfaces.statuses(successor["token"]) == [200, 204, 200]
    again = api.post(f"/api/v1/tokens/{made['id']}/renew", headers=admin,
                     json={"expires_in_days": 30})
    assert again.status_code == 409 and again.json()["successor_id"] == successor["id"]


@pytest.mark.parametrize(("body", "fragment"), [
    ({"expires_in_days": 366}, "maximum validity of 365 days"),
    ({"expires_at": "2999-01-01"}, "maximum validity"),
    ({"expires_in_days": 30, "expires_at": "2031-01-01"}, "not both"),
    ({}, "expiry is required"),
    ({"expires_in_days": 30, "grace_seconds": 604801}, "grace_seconds"),
    ({"expires_in_days": "30"}, "valid integer"),
    ({"expires_in_days": 30, "extend": True}, "Extra inputs"),
])
def test_bad_renewals_are_refused_with_422_and_change_nothing(
        api: TestClient, world: World, rt: Runtime, body: dict[str, Any],
        fragment: str) -> None:
    admin = management_token(world, world.as_admin)
    made = create(api, admin)
    before = lifecycle(rt)
    answer = api.post(f"/api/v1/tokens/{made['id']}/renew", headers=admin, json=body)
    assert answer.status_code == 422 and fragment in answer.text, answer.text
    assert lifecycle(rt) == before


def test_renewal_of_a_personal_token_is_for_its_owner(
        api: TestClient, member_api: tuple[TestClient, dict[str, str]], world: World,
        rt: Runtime) -> None:
    member_client, member = member_api
    admin = management_token(world, world.as_admin)
    mine = create(member_client, member, kind="personal", scopes=[])
    before = lifecycle(rt)
    refused = api.post(f"/api/v1/tokens/{mine['id']}/renew", headers=admin,
                       json={"expires_in_days": 30})
    assert refused.status_code == 403 and refused.json()["reason"] == "not_owner"
    assert lifecycle(rt) == before
    renewed = member_client.post(f"/api/v1/tokens/{mine['id']}/renew", headers=member,
                                 json={"expires_in_days": 30, "grace_seconds": 0})
    assert renewed.status_code == 201 and renewed.json()["owner"] == "member@acme.test"
    assert renewed.headers["tallykey-propagation"].startswith("confirmed=")
    assert api.post("/api/v1/verify", json={"token": mine["token"]}).json()["status"] == 401


def test_a_repeated_renewal_with_the_same_idempotency_key_renews_once(
        api: TestClient, world: World, rt: Runtime) -> None:
    headers = {**management_token(world, world.as_admin), "Idempotency-Key": "renew-1"}
    made = create(api, headers | {"Idempotency-Key": "create-1"})
    body = {"expires_in_days": 60}
    first = api.post(f"/api/v1/tokens/{made['id']}/renew", json=body, headers=headers)
    again = api.post(f"/api/v1/tokens/{made['id']}/renew", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    other = api.post(f"/api/v1/tokens/{made['id']}/renew", json={"expires_in_days": 90},
                     headers=headers)
    assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
    with rt.database.reading() as session:
        assert session.scalars(select(Token.id).where(
            Token.renewed_from_id == made["id"])).all() == [first.json()["id"]]


def test_a_token_with_renew_self_renews_itself_within_the_account_maximum(
        api: TestClient, world: World, rt: Runtime, clock: FrozenClock) -> None:
    admin = management_token(world, world.as_admin)
    made = create(api, admin, scopes=["employees:read", "tokens:renew_self"],
                  expires_in_days=7)
    own = {"Authorization": f"Bearer {made['token']}"}
    before = lifecycle(rt)
    too_long = api.post("/api/v1/tokens/self/renew", headers=own,
                        json={"expires_in_days": 400})
    assert too_long.status_code == 422 and "maximum validity" in too_long.text
    assert lifecycle(rt) == before
    renewed = api.post("/api/v1/tokens/self/renew", headers=own,
                       json={"expires_in_days": 30, "grace_seconds": 60})
    assert renewed.status_code == 201, renewed.text
    successor = renewed.json()
    assert successor["renewed_from_id"] == made["id"]
    assert successor["scopes"] == ["employees:read", "tokens:renew_self"]
    assert successor["expires_at"] == (clock.now() + timedelta(days=30)).isoformat()
    assert renewed.headers["cache-control"] == "no-store"
    again = api.post("/api/v1/tokens/self/renew", headers=own, json={"expires_in_days": 30})
    # the renewed token's secret is in its grace period: it cannot renew again (#25)
    assert again.status_code == 403 and again.json()["reason"] == "retiring_secret"
    audit = api.get("/api/v1/audit", params={"target_id": made["id"],
                                             "action": "token.renewed"}, headers=admin)
    assert audit.json()["items"][0]["details"]["successor_id"] == successor["id"]
    clock.advance(timedelta(seconds=61))
    assert api.post("/api/v1/verify", json={"token": made["token"]}).json()["status"] == 401
    assert api.post("/api/v1/verify", json={"token": successor["token"]}).json()["allowed"]


def test_self_renewal_needs_the_scope_and_a_working_token(api: TestClient, world: World,
                                                         rt: Runtime) -> None:
    admin = management_token(world, world.as_admin)
    plain = create(api, admin)
    before = lifecycle(rt)
    refused = api.post("/api/v1/tokens/self/renew", json={"expires_in_days": 30},
                       headers={"Authorization": f"Bearer {plain['token']}"})
    assert refused.status_code == 403 and refused.json()["scope"] == "tokens:renew_self"
    assert api.post("/api/v1/tokens/self/renew",
                    json={"expires_in_days": 30}).status_code == 401
    assert lifecycle(rt) == before
    paused = create(api, admin, name="paused", scopes=["tokens:renew_self"])
    api.post(f"/api/v1/tokens/{paused['id']}/suspend", headers=admin)
    suspended = api.post("/api/v1/tokens/self/renew", json={"expires_in_days": 30},
                         headers={"Authorization": f"Bearer {paused['token']}"})
    assert suspended.status_code == 401 and suspended.json()["error"] == "token_suspended"


def test_self_renewal_reads_its_credential_as_every_surface_does(
        api: TestClient, world: World, rt: Runtime) -> None:
    """The token renewing itself is read by the same reader as the middleware's: in the
    URL, in two Authorization headers or in X-API-Key it is refused, and nothing
    changes."""
    admin = management_token(world, world.as_admin)
    made = create(api, admin, scopes=["tokens:renew_self"])
    before = lifecycle(rt)
    in_url = api.post(f"/api/v1/tokens/self/renew?access_token={made['token']}",
                      json={"expires_in_days": 30},
                      headers={"Authorization": f"Bearer {made['token']}"})
    assert in_url.status_code == 400 and "never in a URL" in in_url.json()["message"]
    twice = api.post("/api/v1/tokens/self/renew", json={"expires_in_days": 30},
                     headers=[("Authorization", f"Bearer {made['token']}"),
                              ("Authorization", f"Bearer {made['token']}")])
    assert twice.status_code == 400 and "More than one" in twice.json()["message"]
    elsewhere = api.post("/api/v1/tokens/self/renew", json={"expires_in_days": 30},
                         headers={"X-API-Key": made["token"]})
    assert elsewhere.status_code == 401 and "X-API-Key" in elsewhere.json()["message"]
    assert lifecycle(rt) == before
