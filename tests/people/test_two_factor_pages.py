"""Two-factor sign-in through the console and the API, in-process: after the password
only the code page is usable; a policy sends users to set it up before any other page."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

import pyotp
from starlette.testclient import TestClient

from tallykey.clock import FrozenClock

from ..conftest import World
from ..console.conftest import Browser, csrf_of
from .test_twofactor import enrol

SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')


def password_step(client: TestClient, email: str, password: str,
                  next_page: str = "/console/tokens") -> str:
    """Sign in with the password; returns where the console sends the browser."""
    page = client.get("/console/login")
    answer = client.post("/console/login", data={
        "csrf_token": csrf_of(page.text), "email": email, "password": password,
        "next": next_page})
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def test_password_then_code_then_the_tokens_page(world: World, clock: FrozenClock,
                                                 new_client: Browser) -> None:
    secret, _ = enrol(world, clock)
    client = new_client()
    where = password_step(client, "admin@acme.test", "correct horse battery")
    assert where == "/console/login/code?next=" + quote("/console/tokens", safe="")
    blocked = client.get("/console/tokens")  # not signed in yet: back to the code page
    assert blocked.status_code == 303 and blocked.headers["location"].startswith(
        "/console/login/code")
    assert client.get("/api/v1/tokens").status_code == 401
    page = client.get(where)
    assert page.status_code == 200 and "authenticator app" in page.text

    wrong = client.post("/console/login/code", data={
        "csrf_token": csrf_of(page.text), "code": "12345", "next": "/console/tokens"})
    assert wrong.status_code == 401 and "The code is wrong" in wrong.text
    right = client.post("/console/login/code", data={
        "csrf_token": csrf_of(page.text), "code": pyotp.TOTP(secret).at(clock.now()),
        "next": "/console/tokens"})
    assert right.status_code == 303 and right.headers["location"] == "/console/tokens"
    assert client.get("/console/tokens").status_code == 200


def test_too_many_wrong_codes_end_the_sign_in(world: World, clock: FrozenClock,
                                              new_client: Browser) -> None:
    enrol(world, clock)
    client = new_client()
    where = password_step(client, "admin@acme.test", "correct horse battery")
    csrf = csrf_of(client.get(where).text)
    statuses = [client.post("/console/login/code", data={"csrf_token": csrf,
                                                         "code": "000000"}).status_code
                for _ in range(5)]
    assert statuses == [401] * 5
    assert client.get(where).headers["location"].startswith("/console/login?")


def test_the_api_sign_in_needs_the_code_too(world: World, clock: FrozenClock,
                                            new_client: Browser) -> None:
    secret, codes = enrol(world, clock)
    client = new_client()
    first = client.post("/api/v1/session", json={"email": "admin@acme.test",
                                                 "password": "correct horse battery"})
    assert first.status_code == 200 and first.json()["awaiting"] == "code"
    waiting = client.get("/api/v1/users")
    assert waiting.status_code == 401 and "second factor" in waiting.json()["message"]
    no_csrf = client.post("/api/v1/session/second-factor", json={"code": codes[0]})
    assert no_csrf.status_code == 403
    headers = {"X-CSRF-Token": first.json()["csrf_token"]}
    replay = pyotp.TOTP(secret).at(clock.now() - timedelta(seconds=30))
    refused = client.post("/api/v1/session/second-factor", json={"code": replay},
                          headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"] == "second_factor_refused"
    assert refused.json()["reason"] == "replayed"
    done = client.post("/api/v1/session/second-factor", json={"code": codes[0]},
                       headers=headers)
    assert done.status_code == 200 and done.json()["awaiting"] is None
    assert client.get("/api/v1/users").status_code == 200
    listed = client.get("/api/v1/session/sessions").json()
    assert len(listed) == 1 and listed[0]["current"] is True


def test_a_required_policy_sends_users_to_set_it_up_first(world: World, clock: FrozenClock,
                                                          new_client: Browser) -> None:
    admin = new_client()
    password_step(admin, "admin@acme.test", "correct horse battery")
    policies = admin.get("/console/account")
    assert "Who must sign in with an authenticator app" in policies.text
    saved = admin.post("/console/account/two-factor", data={
        "csrf_token": csrf_of(policies.text), "two_factor_policy": "everyone"})
    assert saved.status_code == 303
    assert admin.get("/api/v1/account").json()["two_factor_policy"] == "everyone"

    member = new_client()
    where = password_step(member, "member@acme.test", "member password 1")
    assert where.startswith("/console/me/two-factor?next=")
    assert member.get("/console/tokens").headers["location"].startswith(
        "/console/me/two-factor")
    assert member.get("/console/login/code").headers["location"].startswith(
        "/console/me/two-factor")
    page = member.get(where)
    assert page.status_code == 200 and "requires two-factor sign-in" in page.text
    secret = SECRET.search(page.text)
    assert secret and 'src="data:image/svg+xml' in page.text
    codes = member.post("/console/me/two-factor", data={
        "csrf_token": csrf_of(page.text), "next": "/console/tokens",
        "code": pyotp.TOTP(secret.group(1)).at(clock.now())})
    assert codes.status_code == 200 and codes.text.count("<code>") == 10
    assert member.get("/console/tokens").status_code == 200

    # the admin's own next sign-in must enrol too (the policy covers everyone)
    again = new_client()
    assert password_step(again, "admin@acme.test", "correct horse battery").startswith(
        "/console/me/two-factor")


def test_an_admin_resets_a_members_second_factor_from_the_user_page(
        world: World, clock: FrozenClock, new_client: Browser) -> None:
    enrol(world, clock, world.as_member)
    admin = new_client()
    password_step(admin, "admin@acme.test", "correct horse battery")
    page = admin.get(f"/console/users/{world.member.id}")
    assert "Two-factor sign-in: on" in page.text
    reset = admin.post(f"/console/users/{world.member.id}/two-factor/reset",
                       data={"csrf_token": csrf_of(page.text)})
    assert reset.status_code == 303
    assert "Two-factor sign-in: off" in admin.get(reset.headers["location"]).text
    assert world.rt.two_factor.status(world.member.id) == (False, 0)


def test_enrolling_in_one_browser_sends_another_waiting_browser_to_sign_in_again(
        world: World, clock: FrozenClock, new_client: Browser) -> None:
    world.rt.two_factor.set_policy(world.as_admin, "everyone")
    first, second = new_client(), new_client()
    for client in (first, second):
        assert password_step(client, "member@acme.test", "member password 1").startswith(
            "/console/me/two-factor")
    page = first.get("/console/me/two-factor")
    secret = SECRET.search(page.text)
    assert secret
    first.post("/console/me/two-factor", data={
        "csrf_token": csrf_of(page.text), "code": pyotp.TOTP(secret.group(1)).at(clock.now())})
    assert first.get("/console/tokens").status_code == 200
    again = second.get("/console/me/two-factor")
    assert again.status_code == 303 and again.headers["location"].startswith("/console/login")
    assert second.get("/console/tokens").headers["location"].startswith("/console/login?")
