"""The identities pages in a real browser against a real `tallykey serve`: an
administrator finds *Identities* in the navigation, creates one with a credit pool,
sees its tokens, the credits they spent and their usage on its page, edits it (the change
acknowledged by every node), and deletes it (refused while it has tokens, then with its
tokens taken out)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from .conftest import Site

ADMIN_EMAIL = "owner@initech.example"
ADMIN_PASSWORD = "initech owner password"


def test_an_admin_runs_an_identity_from_the_console(site: Site,
                                                    new_context: Callable[..., Any]) -> None:
    page = new_context().new_page()
    page.goto(site.setup_link)
    page.get_by_label("Company (account) name").fill("Initech")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")
    [account] = json.loads(site.server.cli("accounts", "list", "--json").stdout)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Identities").click()
    page.wait_for_url("**/console/identities")
    assert "No identities yet" in page.locator("#identities").inner_text()
    page.get_by_label("External id").fill("cust_7")
    page.get_by_label("Name (optional)").fill("Customer Seven")
    page.get_by_label("Credits").fill("5")
    page.get_by_label("Metadata").fill('{"plan": "pro"}')
    page.get_by_role("button", name="Create identity").click()
    page.wait_for_url("**/console/identities/*?done=added")
    assert page.get_by_role("status").inner_text() == "Identity created."
    assert page.locator("#credits-left").inner_text() == "5"
    assert "No tokens belong to this identity" in page.locator("#identity-tokens").inner_text()

    made = site.server.cli("tokens", "create", "-a", account["slug"], "--user", ADMIN_EMAIL,
                           "--name", "Seven's CRM", "--kind", "application", "--scope",
                           "employees:read", "--days", "30", "--identity", "cust_7",
                           "--json")
    token = json.loads(made.stdout)
    for _ in range(2):
        answer = httpx.get(f"{site.base_url}/auth/request", timeout=10,
                           headers={"Authorization": f"Bearer {token['token']}"})
        assert answer.status_code == 204
        assert answer.headers["Tallykey-Identity-External-Id"] == "cust_7"
    deadline = time.monotonic() + 15
    while True:  # usage is flushed about once a second
        page.reload()
        if page.locator("#usage-total").inner_text().startswith("2 allowed"):
            break
        assert time.monotonic() < deadline, page.locator("#usage-total").inner_text()
        time.sleep(0.5)
    assert page.locator("#credits-left").inner_text() == "3"
    assert "Seven's CRM" in page.locator("#identity-tokens").inner_text()
    site.screenshot(page, "identity")

    other = json.loads(site.server.cli(
        "tokens", "create", "-a", account["slug"], "--user", ADMIN_EMAIL, "--name",
        "Seven's billing", "--days", "30", "--json").stdout)
    page.get_by_label("Token prefix or id").fill(other["prefix"])
    page.get_by_role("button", name="Add to this identity").click()
    assert "Seven's billing now belongs to this identity" in page.get_by_role(
        "status").inner_text()
    assert "Seven's billing" in page.locator("#identity-tokens").inner_text()
    page.get_by_role("link", name=other["prefix"]).click()
    page.get_by_role("link", name="its identity").click()
    page.wait_for_url("**/console/identities/*")
    page.locator("#id-credits").fill("10")
    page.get_by_role("button", name="Save changes").click()
    assert page.get_by_role("status").inner_text().startswith("Changes saved: applied on")
    assert page.locator("#credits-left").inner_text() == "10"

    page.get_by_role("button", name="Delete identity").click()
    assert "still has 2 token" in page.get_by_role("alert").inner_text()
    page.get_by_role("checkbox").check()
    page.get_by_role("button", name="Delete identity").click()
    assert "2 token(s) left it" in page.get_by_role("status").inner_text()
    assert "No identities yet" in page.locator("#identities").inner_text()
    after = httpx.get(f"{site.base_url}/auth/request", timeout=10,
                      headers={"Authorization": f"Bearer {token['token']}"})
    assert after.status_code == 204 and "Tallykey-Identity-Id" not in after.headers
