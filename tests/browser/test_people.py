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

import pyotp
import pytest

from ..conftest import fresh_postgres_database
from ..e2e.conftest import Server, free_port, server_env
from ..notify.conftest import Recorder, SmtpServer
from ..people.openid import CLIENT_SECRET, client, new_signing_key, running_provider
from .conftest import Site, _read_setup_link

ADMIN_EMAIL = "owner@hooli.example"
ADMIN_PASSWORD = "hooli owner password"
NEW_PASSWORD = "violet harbour engine"
MEMBER_EMAIL = "dinesh@hooli.example"
MEMBER_PASSWORD = "dinesh member password"
SSO_EMAIL = "gilfoyle@hooli.example"


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
        provider = stack.enter_context(running_provider(
            [client("tallykey", f"http://127.0.0.1:{port}/console/oidc/callback")],
            {"gilfoyle": {"email": SSO_EMAIL, "email_verified": True, "name": "Gilfoyle"}},
            [new_signing_key("browser-1")], tmp / "provider.log"))
        server = Server(env=server_env(tmp, url, TALLYKEY_SMTP_URL=smtp.url,
                                       TALLYKEY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                                       TALLYKEY_WORKER_INTERVAL="0.2",
                                       TALLYKEY_OIDC_ISSUER=provider.issuer,
                                       TALLYKEY_OIDC_CLIENT_ID="tallykey",
                                       TALLYKEY_OIDC_CLIENT_SECRET=CLIENT_SECRET,
                                       TALLYKEY_OIDC_NAME="Hooli ID",
                                       TALLYKEY_OIDC_DOMAINS="hooli.example=hooli"),
                        port=port, log_path=tmp / "server.log", command=("serve",))
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


def test_two_factor_sign_in_goes_password_then_code_then_tokens(site: MailSite,
                                                                new_context: Any) -> None:
    page = new_context().new_page()
    sign_in_with_password(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/console/tokens")
    page.goto("/console/me")
    page.get_by_role("link", name="Set up two-factor sign-in").click()
    page.wait_for_url("**/console/me/two-factor*")
    qr = page.get_by_role("img", name="QR code for your authenticator app")
    qr.wait_for()
    assert page.evaluate("document.querySelector('img.qr').naturalWidth") > 100  # CSP allows it
    site.screenshot(page, "two-factor-enrol")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_label("Your password").fill(ADMIN_PASSWORD)  # re-authentication
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    page.get_by_text("Save these recovery codes now").wait_for()
    assert page.locator("#recovery-codes li").count() == 10
    site.notes["recovery"] = page.locator("#recovery-codes code").all_inner_texts()
    page.get_by_role("link", name="I saved them, continue").click()
    page.wait_for_url("**/console/me")
    assert "You have 10 unused recovery codes" in page.content()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")

    sign_in_with_password(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    page.wait_for_url("**/console/login/code*")
    page.goto("/console/tokens")  # nothing else is usable before the code
    page.wait_for_url("**/console/login/code*")
    page.get_by_label("Code").fill("000000" if totp.now() != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    assert "The code is wrong" in page.get_by_role("alert").inner_text()
    site.screenshot(page, "two-factor-code")
    page.get_by_label("Code").fill(totp.at(time.time() + 30))  # the next step: never replayed
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/console/tokens")
    assert page.get_by_role("heading", name="API tokens").is_visible()


def test_a_policy_requiring_two_factor_sends_a_member_to_set_it_up(site: MailSite,
                                                                   new_context: Any) -> None:
    admin = new_context().new_page()
    sign_in_with_password(admin, ADMIN_EMAIL, ADMIN_PASSWORD)
    admin.wait_for_url("**/console/login/code*")
    admin.get_by_label("Code").fill(site.notes["recovery"][0])  # a recovery code, once
    admin.get_by_role("button", name="Verify").click()
    admin.wait_for_url("**/console/tokens")
    admin.goto("/console/users")
    admin.get_by_label("E-mail").fill(MEMBER_EMAIL)
    admin.get_by_label("Console password").fill(MEMBER_PASSWORD)
    admin.get_by_role("button", name="Add user").click()
    admin.wait_for_url("**/console/users?done=added")
    admin.goto("/console/account")
    admin.get_by_label("Everyone").check()
    admin.get_by_role("button", name="Save two-factor policy").click()
    admin.wait_for_url("**/console/account?done=policy")

    member = new_context().new_page()
    sign_in_with_password(member, MEMBER_EMAIL, MEMBER_PASSWORD)
    member.wait_for_url("**/console/me/two-factor*")
    assert "requires two-factor sign-in" in member.content()
    member.goto("/console/tokens/new")
    member.wait_for_url("**/console/me/two-factor*")
    totp = pyotp.TOTP(member.locator("#totp-secret").inner_text())
    member.get_by_label("Code from the app").fill(totp.now())
    member.get_by_role("button", name="Turn on two-factor sign-in").click()
    member.get_by_role("link", name="I saved them, continue").click()
    member.wait_for_url("**/console/tokens/new")
    assert member.get_by_role("button", name="Create token").is_visible()


def test_single_sign_on_goes_provider_then_tokens_page(site: MailSite,
                                                       new_context: Any) -> None:
    """The policy of the test before requires two-factor sign-in of everyone: a user
    created by single sign-on sets it up too, then reaches the page they asked for."""
    context = new_context()
    # the provider's development sign-in page links a web font; nothing leaves this machine
    context.route(re.compile(r"^https?://(?!127\.0\.0\.1[:/])"),
                  lambda route: route.fulfill(status=204, body=""))
    page = context.new_page()
    page.goto("/console/tokens/new")
    page.wait_for_url("**/console/login?next=*")
    page.get_by_role("link", name="Sign in with Hooli ID").click()
    page.locator("input[name=login]").fill("gilfoyle")
    page.locator("input[name=password]").fill("any password")
    site.screenshot(page, "sso-provider")
    page.locator("button[type=submit]").first.click()
    page.wait_for_url("**/console/me/two-factor*")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    page.get_by_role("link", name="I saved them, continue").click()
    page.wait_for_url("**/console/tokens/new")
    assert page.get_by_role("link", name=SSO_EMAIL).is_visible()
    site.screenshot(page, "sso-signed-in")
