"""The console session lives 12 hours from sign-in; a sign-in awaiting its second factor
lives 10 minutes (SECURITY.md, "console sessions"): checked on the clock, through the
console, one minute either side of each bound."""

from __future__ import annotations

from datetime import timedelta

import pyotp

from tallykey.clock import FrozenClock
from tallykey.people.sessions import PENDING_LIFETIME, SESSION_LIFETIME

from ..conftest import World
from ..people.test_two_factor_pages import password_step
from ..people.test_twofactor import enrol
from .conftest import Browser, csrf_of, sign_in


def test_the_lifetimes_are_the_promised_ones() -> None:
    assert timedelta(hours=12) == SESSION_LIFETIME
    assert timedelta(minutes=10) == PENDING_LIFETIME


def test_a_console_session_ends_twelve_hours_after_sign_in(
        world: World, clock: FrozenClock, new_client: Browser) -> None:
    client = new_client()
    sign_in(client, "admin@acme.test", "correct horse battery")
    clock.advance(timedelta(hours=11, minutes=59))
    assert client.get("/console/tokens").status_code == 200  # use does not extend it
    clock.advance(timedelta(minutes=2))
    gone = client.get("/console/tokens")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/console/login")


def test_a_sign_in_awaiting_its_code_lasts_ten_minutes(
        world: World, clock: FrozenClock, new_client: Browser) -> None:
    secret, _ = enrol(world, clock)
    late = new_client()
    where = password_step(late, "admin@acme.test", "correct horse battery")
    clock.advance(timedelta(minutes=10, seconds=1))
    page = late.get(where)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/login")

    clock.advance(timedelta(minutes=1))  # a fresh time step for the code
    in_time = new_client()
    where = password_step(in_time, "admin@acme.test", "correct horse battery")
    clock.advance(timedelta(minutes=9))
    page = in_time.get(where)
    assert page.status_code == 200
    done = in_time.post("/console/login/code", data={
        "csrf_token": csrf_of(page.text), "code": pyotp.TOTP(secret).at(clock.now()),
        "next": "/console/tokens"})
    assert done.status_code == 303 and done.headers["location"] == "/console/tokens"
    clock.advance(timedelta(hours=11, minutes=59))  # the full session counts from the code
    assert in_time.get("/console/tokens").status_code == 200
    clock.advance(timedelta(minutes=2))
    assert in_time.get("/console/tokens").status_code == 303
