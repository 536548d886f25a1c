"""The auditor role in a real browser (SPEC §17): an administrator makes a user an
auditor on the users page; the auditor signs in, reads the token list, a token's page and
the audit log, and finds no button that creates or changes anything (and the new-token
page answers 403 naming the role)."""

from __future__ import annotations

from typing import Any

from .conftest import Site
from .test_console import create_token

ADMIN_EMAIL = "owner@vandelay.example"
ADMIN_PASSWORD = "vandelay owner password"
AUDITOR_EMAIL = "art@vandelay.example"
AUDITOR_PASSWORD = "art auditor password"


def sign_in(page: Any, email: str, password: str) -> None:
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/tokens")


def test_an_auditor_reads_tokens_and_the_audit_log_and_changes_nothing(
        site: Site, new_context: Any) -> None:
    admin = new_context().new_page()
    admin.goto(site.setup_link)
    admin.get_by_label("Company (account) name").fill("Vandelay")
    admin.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    admin.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Create account and administrator").click()
    admin.wait_for_url("**/console/tokens")
    create_token(admin, "latex import feed")
    admin.goto("/console/users")
    admin.get_by_label("E-mail").fill(AUDITOR_EMAIL)
    admin.get_by_label("Role").select_option("auditor")
    admin.get_by_label("Console password").fill(AUDITOR_PASSWORD)
    admin.get_by_role("button", name="Add user").click()
    admin.wait_for_url("**/console/users?done=added")
    assert admin.get_by_role("row", name=AUDITOR_EMAIL).get_by_text("auditor",
                                                                    exact=True).is_visible()

    page = new_context().new_page()
    sign_in(page, AUDITOR_EMAIL, AUDITOR_PASSWORD)
    assert page.get_by_role("heading", name="API tokens").is_visible()
    assert page.get_by_role("link", name="latex import feed").is_visible()
    assert page.get_by_role("link", name="Create token").count() == 0
    assert page.get_by_role("link", name="Revoke…").count() == 0
    assert page.get_by_role("link", name="Users").count() == 0
    site.screenshot(page, "auditor-tokens")

    page.get_by_role("link", name="latex import feed").click()
    assert page.get_by_role("heading", name="Usage").is_visible()
    assert page.get_by_text("Read-only: auditors change nothing.").is_visible()
    for button in ("Suspend", "Rotate secret", "Save changes"):
        assert page.get_by_role("button", name=button).count() == 0, button

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url("**/console/audit")
    assert page.get_by_role("cell", name="token.created").first.is_visible()
    assert page.get_by_role("cell", name="user.created").first.is_visible()
    site.screenshot(page, "auditor-audit")

    refused = page.goto("/console/tokens/new")
    assert refused is not None and refused.status == 403
    assert "Auditors can read but not change anything." in page.content()
