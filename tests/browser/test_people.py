"""Signing in as a person would, in a real browser: a forgotten password reset through a
link mailed to a real SMTP server, a password change, and two-factor sign-in (password,
then the authenticator code, then the tokens page), including an account policy that
requires it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from ..conftest import fresh_postgres_database
from ..e2e.conftest import Server, free_port, server_env
from ..notify.conftest import Recorder, SmtpServer
from .conftest import Site, _read_setup_link

ADMIN_EMAIL = "owner@hooli.example"
ADMIN_PASSWORD = "hooli owner password"
NEW_PASSWORD = "violet harbour engine"
MEMBER_EMAIL = "dinesh@hooli.example"
MEMBER_PASSWORD = "dinesh member password"


@dataclass
class MailSite(Site):
    smtp: SmtpServer | None = None

    def link_for(self, address: str, seen: int) -> str:
        assert self.smtp is not None
        pattern = re.compile(re.escape(self.base_url) + r"/console/reset/[A-Za-z0-9_-]+")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            mails = self.smtp.to(address)
            if len(mails) > seen:
                body = mails[-1].message.get_body(("plain",))
                assert body is not None
                found = pattern.search(body.get_content())
                assert found, body.get_content()
                return found.group(0)
            time.sleep(0.05)
        raise AssertionError(f"no mail for {address}")


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[MailSite]:
    """An empty store served by the real CLI, mailing through a real SMTP server."""
    tmp = tmp_path_factory.mktemp(f"browser-people-{request.param}")
    with ExitStack() as stack:
        smtp = SmtpServer("127.0.0.1", free_port(), Recorder())
        smtp.start()
        stack.callback(smtp.stop)
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        port = free_port()
        server = Server(env=server_env(tmp, url, TALLYKEY_SMTP_URL=smtp.url,
                                       TALLYKEY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                                       TALLYKEY_WORKER_INTERVAL="0.2"),
                        port=port, log_path=tmp / "server.log")
        if url:
            server.cli("migrate")
        server.start()
        stack.callback(server.stop)
        yield MailSite(server, request.param, _read_setup_link(server), smtp=smtp)


def sign_in_with_password(page: Any, email: str, password: str) -> None:
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_a_forgotten_password_is_reset_through_the_mailed_link(site: MailSite,
                                                               new_context: Any) -> None:
    page = new_context().new_page()
    page.goto(site.setup_link)
    page.get_by_label("Company (account) name").fill("Hooli")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")

    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("E-mail").fill(ADMIN_EMAIL)
    page.get_by_role("button", name="Send the link").click()
    assert "a link to set a new password is on its way" in page.get_by_role(
        "status").inner_text()
    site.screenshot(page, "forgot-sent")
    link = site.link_for(ADMIN_EMAIL, 0)

    page.goto(link)
    page.get_by_label("New password (at least").fill("1q2w3e4r5t6y")
    page.get_by_label("New password again").fill("1q2w3e4r5t6y")
    page.get_by_role("button", name="Set password").click()
    assert "commonly used" in page.get_by_role("alert").inner_text()
    page.get_by_label("New password (at least").fill(NEW_PASSWORD)
    page.get_by_label("New password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    page.wait_for_url("**/console/login?done=reset")
    assert "Your password was set" in page.get_by_role("status").inner_text()

    sign_in_with_password(page, ADMIN_EMAIL, NEW_PASSWORD)
    page.wait_for_url("**/console/tokens")
    again = new_context().new_page()
    again.goto(link)
    assert again.get_by_role("heading", name="This link cannot be used").is_visible()
    assert "used already" in again.content()


def test_the_password_is_changed_on_your_account_page(site: MailSite,
                                                      new_context: Any) -> None:
    elsewhere = new_context().new_page()
    sign_in_with_password(elsewhere, ADMIN_EMAIL, NEW_PASSWORD)
    elsewhere.wait_for_url("**/console/tokens")
    page = new_context().new_page()
    sign_in_with_password(page, ADMIN_EMAIL, NEW_PASSWORD)
    page.wait_for_url("**/console/tokens")
    page.get_by_role("link", name=ADMIN_EMAIL).click()
    page.wait_for_url("**/console/me")
    assert page.locator("table >> text=this session").count() == 1
    page.get_by_label("Current password").fill(NEW_PASSWORD)
    page.get_by_label("New password (at least").fill(ADMIN_PASSWORD)
    page.get_by_label("New password again").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    page.wait_for_url("**/console/me?done=password")
    site.screenshot(page, "your-account")
    elsewhere.goto("/console/tokens")
    elsewhere.wait_for_url("**/console/login?next=*")  # signed out there
