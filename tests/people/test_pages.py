"""The console's sign-in pages in-process: your account (password, sessions), forgotten
passwords and reset links, and the administrators' buttons on a user's page."""

from __future__ import annotations

import re

from sqlalchemy import select
from starlette.testclient import TestClient

from tallykey.audit.models import AuditEvent
from tallykey.notify.models import OutboxMessage
from tallykey.runtime import Runtime

from ..conftest import World
from ..console.conftest import Browser, csrf_of, sign_in
from ..notify.conftest import SmtpServer, make_worker, text_of
from .conftest import PUBLIC_URL

NEW_PASSWORD = "violet harbour engine"
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/console/reset/[A-Za-z0-9_-]+)")


def outbox(rt: Runtime) -> list[OutboxMessage]:
    with rt.database.reading() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.created_at)))


def reset_path(rt: Runtime, smtp: SmtpServer, address: str) -> str:
    """The reset link as the real SMTP server received it (the stored row has none)."""
    bodies = [m.body for m in outbox(rt) if m.recipient == address]
    assert bodies and not LINK.search(bodies[-1]), "a usable link is stored in the outbox"
    make_worker(rt, smtp).run_once()
    found = LINK.search(text_of(smtp.to(address)[-1].message))
    assert found
    return found.group(1)


def test_your_account_page_changes_the_password_and_signs_out_elsewhere(
        world: World, new_client: Browser) -> None:
    here, there = new_client(), new_client()
    csrf = sign_in(here, "member@acme.test", "member password 1")
    sign_in(there, "member@acme.test", "member password 1")
    page = here.get("/console/me")
    assert page.status_code == 200 and "this session" in page.text
    assert page.text.count("/end\"") == 2  # one "sign out" button per session

    wrong = here.post("/console/me/password", data={
        "csrf_token": csrf, "current_password": "nope", "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD})
    assert wrong.status_code == 422 and "current password is wrong" in wrong.text
    differ = here.post("/console/me/password", data={
        "csrf_token": csrf, "current_password": "member password 1",
        "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD + "!"})
    assert differ.status_code == 422 and "differ" in differ.text
    forged = here.post("/console/me/password", data={
        "current_password": "member password 1", "password": NEW_PASSWORD,
        "password_confirm": NEW_PASSWORD})
    assert forged.status_code == 403  # no CSRF token

    done = here.post("/console/me/password", data={
        "csrf_token": csrf, "current_password": "member password 1",
        "password": NEW_PASSWORD, "password_confirm": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/console/me?done=password"
    assert "Your password was changed" in here.get("/console/me?done=password").text
    assert there.get("/console/tokens").status_code == 303  # signed out there
    assert world.rt.accounts.check_login("member@acme.test", NEW_PASSWORD)


def test_a_session_is_ended_from_the_list(world: World, new_client: Browser) -> None:
    here, there = new_client(), new_client()
    csrf = sign_in(here, "member@acme.test", "member password 1")
    sign_in(there, "member@acme.test", "member password 1")
    listed = world.rt.sessions.list_for(world.member.id)
    mine = here.get("/console/me").text
    on_page = [s.public_id for s in listed if f"{s.public_id}/end" in mine]
    assert len(on_page) == 2
    ended = here.post("/console/me/sessions/end-others", data={"csrf_token": csrf})
    assert ended.status_code == 303
    assert there.get("/console/tokens").status_code == 303
    assert here.get("/console/tokens").status_code == 200
    assert len(world.rt.sessions.list_for(world.member.id)) == 1
    unknown = here.post("/console/me/sessions/00000000-0000-0000-0000-000000000000/end",
                        data={"csrf_token": csrf})
    assert unknown.status_code == 404


def test_forgot_password_answers_the_same_for_any_address(world: World,
                                                          new_client: Browser) -> None:
    answers = []
    for address in ("member@acme.test", "nobody@acme.test", "not-an-address"):
        client = new_client()
        form = client.get("/console/forgot")
        answer = client.post("/console/forgot", data={"csrf_token": csrf_of(form.text),
                                                      "email": address})
        answers.append((answer.status_code, answer.text.replace(csrf_of(answer.text), "")))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0][0] == 200 and "If that address belongs to a tallykey user" in answers[0][1]
    assert world.rt.resets.settled()
    assert [m.recipient for m in outbox(world.rt)] == ["member@acme.test"]


def test_the_reset_link_page_sets_the_password_and_refuses_reuse(
        world: World, new_client: Browser, smtp_server: SmtpServer) -> None:
    world.rt.resets.request("member@acme.test", None)
    path = reset_path(world.rt, smtp_server, "member@acme.test")
    client = new_client()
    page = client.get(path)
    assert page.status_code == 200 and "member@acme.test" in page.text
    weak = client.post(path, data={"csrf_token": csrf_of(page.text), "password": "1q2w3e4r5t6y",
                                   "password_confirm": "1q2w3e4r5t6y"})
    assert weak.status_code == 422 and "commonly used" in weak.text
    done = client.post(path, data={"csrf_token": csrf_of(weak.text), "password": NEW_PASSWORD,
                                   "password_confirm": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/console/login?done=reset"
    assert "Your password was set" in client.get(done.headers["location"]).text
    sign_in(new_client(), "member@acme.test", NEW_PASSWORD)

    again = new_client().get(path)
    assert again.status_code == 410 and "used already" in again.text
    forged = new_client().get("/console/reset/" + "A" * 43)
    assert forged.status_code == 410 and "not valid" in forged.text


def test_admins_send_reset_links_and_sign_users_out(world: World, new_client: Browser,
                                                   admin: tuple[TestClient, str],
                                                   member: tuple[TestClient, str],
                                                   smtp_server: SmtpServer) -> None:
    client, csrf = admin
    page = client.get(f"/console/users/{world.member.id}")
    assert "Send a password reset link" in page.text
    sent = client.post(f"/console/users/{world.member.id}/password-reset",
                       data={"csrf_token": csrf})
    assert sent.status_code == 303
    assert "reset link was mailed" in client.get(sent.headers["location"]).text
    assert reset_path(world.rt, smtp_server, "member@acme.test")

    member_client, member_csrf = member
    refused = member_client.post(f"/console/users/{world.admin.id}/sessions/end",
                                 data={"csrf_token": member_csrf})
    assert refused.status_code == 403
    ended = client.post(f"/console/users/{world.member.id}/sessions/end",
                        data={"csrf_token": csrf})
    assert ended.status_code == 303
    assert member_client.get("/console/tokens").status_code == 303
    with world.rt.database.reading() as session:
        entry = session.scalar(select(AuditEvent).where(
            AuditEvent.action == "user.sessions_ended"))
    assert entry is not None and entry.actor_id == world.admin.id
