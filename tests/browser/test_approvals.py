"""The approval queue in a real browser (SPEC §17): with the account's `token_approval`
policy on, a member's new token is refused (`token_pending`) until an administrator
approves it on the Approvals page; then it works. A fresh `tallykey serve` of its own."""

from __future__ import annotations

from typing import Any

from tallykey.actor import Actor

from .conftest import Site
from .test_console import bearer, copied, create_token, info, runtime_for, sign_in

ADMIN_EMAIL = "boss@hooli.example"
ADMIN_PASSWORD = "hooli owner password"
MEMBER_EMAIL = "gavin@hooli.example"
MEMBER_PASSWORD = "gavin member password"


def test_a_pending_token_is_refused_until_an_admin_approves_it_in_the_console(
        site: Site, new_context: Any) -> None:
    admin = new_context().new_page()
    admin.goto(site.setup_link)
    admin.get_by_label("Company (account) name").fill("Hooli")
    admin.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    admin.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    admin.get_by_role("button", name="Create account and administrator").click()
    admin.wait_for_url("**/console/tokens")
    rt = runtime_for(site)
    try:
        account = rt.accounts.find_account("hooli")
        sales = rt.accounts.create_workspace(account.id, "sales", "Sales")
        rt.accounts.create_user(Actor.operator(account.id), MEMBER_EMAIL, role="member",
                                password=MEMBER_PASSWORD,
                                grants={sales.id: ["employees:read"]})
    finally:
        rt.close()

    admin.goto("/console/account")
    admin.get_by_label("Members' new tokens wait for an administrator's approval").check()
    admin.get_by_role("button", name="Save governance policies").click()
    admin.get_by_text("Changes saved.").wait_for()
    assert admin.get_by_label(
        "Members' new tokens wait for an administrator's approval").is_checked()

    member = new_context().new_page()
    sign_in(member, MEMBER_EMAIL, MEMBER_PASSWORD)
    assert member.get_by_role("link", name="Approvals").count() == 0
    create_token(member, "Gavin's laptop")
    assert "awaits an administrator's approval" in member.locator("#pending-note").inner_text()
    secret = copied(member, "secret")
    refused = info(site, headers=bearer(secret))
    assert refused.status_code == 401
    assert refused.json()["error"] == "token_pending"
    assert member.goto("/console/approvals").status == 403

    admin.get_by_role("link", name="Approvals").click()
    admin.wait_for_url("**/console/approvals")
    row = admin.locator("#approvals tbody tr", has_text="Gavin's laptop")
    assert MEMBER_EMAIL in row.inner_text()
    site.screenshot(admin, "approvals")
    # the decision forms carry the CSRF token: a forged POST changes nothing
    forged = admin.request.post(
        f"{site.base_url}{row.locator('form').first.get_attribute('action')}", form={})
    assert forged.status == 403
    assert info(site, headers=bearer(secret)).status_code == 401
    row.get_by_role("button", name="Approve Gavin's laptop").click()
    admin.get_by_text("Token approved: it works from now on.").wait_for()
    assert admin.locator("#no-approvals").is_visible()

    assert info(site, headers=bearer(secret)).status_code == 204
    member.goto("/console/tokens")
    assert "Gavin's laptop" in member.locator("table").inner_text()
