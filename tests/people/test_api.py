"""The sign-in endpoints of the management API, in-process over the real app and store:
password change, your sessions, reset requests, and administrators' actions."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from starlette.testclient import TestClient

from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.notify.models import OutboxMessage

from ..conftest import World
from ..console.conftest import Browser, csrf_of
from .test_twofactor import enrol

NEW_PASSWORD = "violet harbour engine"


def api_session(client: TestClient, email: str, password: str) -> dict[str, str]:
    answer = client.post("/api/v1/session", json={"email": email, "password": password})
    assert answer.status_code == 200, answer.text
    return {"X-CSRF-Token": answer.json()["csrf_token"]}


def test_changing_your_password_over_the_api(world: World, new_client: Browser) -> None:
    client, other = new_client(), new_client()
    headers = api_session(client, "member@acme.test", "member password 1")
    api_session(other, "member@acme.test", "member password 1")
    wrong = client.post("/api/v1/session/password", headers=headers, json={
        "current_password": "nope", "new_password": NEW_PASSWORD})
    assert wrong.status_code == 422 and wrong.json()["field"] == "current_password"
    weak = client.post("/api/v1/session/password", headers=headers, json={
        "current_password": "member password 1", "new_password": "123456qwerty"})
    assert weak.status_code == 422 and "commonly used" in weak.json()["message"]
    assert client.post("/api/v1/session/password", json={
        "current_password": "member password 1", "new_password": NEW_PASSWORD}
    ).status_code == 403  # a session needs its CSRF token
    done = client.post("/api/v1/session/password", headers=headers, json={
        "current_password": "member password 1", "new_password": NEW_PASSWORD})
    assert done.status_code == 200 and done.json() == {"sessions_ended": 1}
    assert client.get("/api/v1/users").status_code == 200
    assert other.get("/api/v1/users").status_code == 401


def test_listing_and_ending_your_sessions(world: World, new_client: Browser) -> None:
    client, other = new_client(), new_client()
    headers = api_session(client, "member@acme.test", "member password 1")
    api_session(other, "member@acme.test", "member password 1")
    listed = client.get("/api/v1/session/sessions").json()
    assert sorted(s["current"] for s in listed) == [False, True]
    theirs = next(s["id"] for s in listed if not s["current"])
    assert client.delete(f"/api/v1/session/sessions/{theirs}", headers=headers
                         ).status_code == 204
    assert other.get("/api/v1/users").status_code == 401
    assert client.delete(f"/api/v1/session/sessions/{theirs}", headers=headers
                         ).status_code == 404
    admin = new_client()
    admin_headers = api_session(admin, "admin@acme.test", "correct horse battery")
    mine = next(s["id"] for s in client.get("/api/v1/session/sessions").json())
    assert admin.delete(f"/api/v1/session/sessions/{mine}", headers=admin_headers
                        ).status_code == 404  # not the admin's session
    assert client.get("/api/v1/users").status_code == 200


def test_reset_requests_answer_alike(world: World, new_client: Browser) -> None:
    client = new_client()
    answers = {client.post("/api/v1/password-reset", json={"email": address}).text
               for address in ("member@acme.test", "ghost@acme.test", "bad")}
    assert len(answers) == 1
    assert world.rt.resets.settled()
    with world.rt.database.reading() as session:
        assert [m.recipient for m in session.scalars(select(OutboxMessage))] == [
            "member@acme.test"]


def test_asking_for_a_reset_does_the_same_work_for_any_address(
        world: World, new_client: Browser) -> None:
    """The request for a known address and for an unknown one run the very same SQL (no
    lookup of the address among it): only the background thread, after the answer,
    looks the address up and queues the mail. On the API and the console form alike."""
    engine = world.rt.database.engine
    seen: list[tuple[str, str]] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append((threading.current_thread().name, statement))

    client = new_client()
    work: dict[tuple[str, str], list[str]] = {}
    event.listen(engine, "before_cursor_execute", record)
    try:
        for address in ("member@acme.test", "ghost@acme.test"):
            for via in ("api", "console"):
                assert world.rt.resets.settled()
                form = client.get("/console/forgot") if via == "console" else None
                seen.clear()
                if form is None:
                    answer = client.post("/api/v1/password-reset", json={"email": address})
                    assert answer.status_code == 202
                else:
                    answer = client.post("/console/forgot", data={
                        "csrf_token": csrf_of(form.text), "email": address})
                    assert answer.status_code == 200
                work[address, via] = [statement for thread, statement in seen
                                      if thread != "tallykey-password-resets"]
        assert world.rt.resets.settled()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    for via in ("api", "console"):
        assert work["member@acme.test", via] == work["ghost@acme.test", via], via
        assert not any("FROM users" in statement for statement in work["ghost@acme.test", via])
    with world.rt.database.reading() as session:  # the background did the rest: one mail
        assert [m.recipient for m in session.scalars(select(OutboxMessage))] == [
            "member@acme.test"]


def test_admin_actions_on_a_user(world: World, clock: FrozenClock,
                                 new_client: Browser) -> None:
    enrol(world, clock, world.as_member)
    clock.advance(timedelta(seconds=1))
    member = new_client()
    api_session(member, "member@acme.test", "member password 1")  # awaits its code
    admin = new_client()
    headers = api_session(admin, "admin@acme.test", "correct horse battery")
    member_id, other_id = world.member.id, world.other_admin.id

    assert admin.delete(f"/api/v1/users/{member_id}/sessions", headers=headers
                        ).json() == {"sessions_ended": 1}
    assert admin.post(f"/api/v1/users/{member_id}/password-reset", headers=headers
                      ).status_code == 202
    assert admin.delete(f"/api/v1/users/{member_id}/two-factor", headers=headers
                        ).status_code == 204
    assert world.rt.two_factor.status(member_id) == (False, 0)
    for method, path in (("DELETE", f"/api/v1/users/{other_id}/sessions"),
                         ("POST", f"/api/v1/users/{other_id}/password-reset"),
                         ("DELETE", f"/api/v1/users/{other_id}/two-factor")):
        assert admin.request(method, path, headers=headers).status_code == 404  # tenant
    patched = admin.patch("/api/v1/account", headers=headers,
                          json={"two_factor_policy": "admins"})
    assert patched.status_code == 200 and patched.json()["two_factor_policy"] == "admins"
    assert admin.patch("/api/v1/account", headers=headers,
                       json={"two_factor_policy": "never"}).status_code == 422
    with world.rt.database.reading() as session:
        done = {e.action for e in session.scalars(select(AuditEvent).where(
            AuditEvent.actor_id == world.admin.id))}
    assert {"user.sessions_ended", "user.password_reset_requested", "user.two_factor_reset",
            "account.policy_changed"} <= done
