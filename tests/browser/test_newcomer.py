"""What a newcomer meets, in a real browser on desktop and on a 390 px phone: a double
click or a reload never makes a second token, a rotation says when the old secret stops
(and can stop it now), the create form names every problem at once, the token list
shows scopes and a Revoke per row (cards on a phone), the policies form and an outbox
message read well, the usage chart offers hours, and /docs works offline with
"Authorize". Screenshots of each land in artifacts/browser/ (`newcomer-*`)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from .conftest import Site
from .test_console import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, info, sign_in

PHONE = {"width": 390, "height": 844}
TOKEN_URL = re.compile(r"/console/tokens/([0-9a-f-]{36})")


def set_up_admin(site: Site, new_context: Any) -> None:
    if site.notes.get("admin_ready"):
        return
    page = new_context().new_page()
    page.goto(site.setup_link)
    page.get_by_label("Company (account) name").fill("Initech")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")
    site.notes["admin_ready"] = True


def admin(site: Site, new_context: Any, **options: Any) -> Any:
    set_up_admin(site, new_context)
    page = new_context(**options).new_page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    return page


def no_sideways_scroll(page: Any) -> None:
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} scrolls sideways"


def count_named(page: Any, name: str) -> int:
    page.goto("/console/tokens?status=all&q=" + name.replace(" ", "+"))
    return int(page.locator("table.cards tbody tr", has_text=name).count())


def test_a_double_click_and_a_reload_make_one_token(site: Site, new_context: Any) -> None:
    page = admin(site, new_context)
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill("Double clicked")
    page.get_by_role("button", name="Create token").dblclick()
    page.get_by_text("it will not be shown again").wait_for()
    secret = page.locator("#secret").input_value()
    assert secret.startswith("tlk_") and secret not in page.url and "/once?view=" in page.url
    assert "Done — go to the token’s page" in page.content()
    assert page.locator("button[data-copy='curl-example']").count() == 1
    curl = page.locator("#curl-example")
    assert curl.input_value().endswith("/api/v1/verify")  # a plain serve has no demo API
    box = curl.bounding_box()
    assert box and curl.evaluate("e => e.scrollWidth <= e.clientWidth"), "the curl is cut off"
    site.screenshot(page, "newcomer-one-time-view")
    page.reload()
    assert page.get_by_role("heading", name="This secret was shown already").is_visible()
    assert secret not in page.content()
    site.screenshot(page, "newcomer-one-time-view-reloaded")
    page.go_back()
    assert count_named(page, "Double clicked") == 1
    assert info(site, headers=bearer(secret)).status_code == 204


def test_rotation_shows_the_grace_end_and_ends_it_now(site: Site, new_context: Any) -> None:
    page = admin(site, new_context)
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill("Rotated in the browser")
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("it will not be shown again").wait_for()
    old = page.locator("#secret").input_value()
    page.get_by_role("link", name="Done — go to the token’s page").click()
    token_page = page.url
    assert page.get_by_label("Grace period for the current secret").input_value() == "1"
    page.get_by_role("button", name="Rotate secret").click()
    page.get_by_text("it will not be shown again").wait_for()
    assert "The previous secret keeps working until" in page.locator(
        "#previous-secret").inner_text()
    new = page.locator("#secret").input_value()
    site.screenshot(page, "newcomer-rotated")
    assert info(site, headers=bearer(old)).status_code == 204
    page.goto(token_page)
    assert "still works until" in page.locator("#grace-end").inner_text()
    site.screenshot(page, "newcomer-grace")
    page.get_by_role("button", name="End grace now").click()
    page.get_by_text("The previous secret stopped working.").wait_for()
    assert info(site, headers=bearer(old)).status_code == 401
    assert info(site, headers=bearer(new)).status_code == 204
    history = page.locator("table").last.inner_text()
    assert "previous secret expires at" in history and "→" in history


def test_the_create_form_names_every_problem(site: Site, new_context: Any) -> None:
    for name, options in (("desktop", {}), ("phone", {"viewport": PHONE})):
        page = admin(site, new_context, **options)
        page.goto("/console/tokens/new")
        page.get_by_label("IP allow-list").fill("10.0.0.1/8\nnot-an-ip")
        page.get_by_label("On a date:").check()
        page.get_by_label("Expiry date").fill("2099-01-01")
        page.get_by_role("button", name="Create token").click()
        alert = page.get_by_role("alert").inner_text()
        assert "things need fixing" in alert
        for part in ("The name is required", "Line 1:", "Did you mean 10.0.0.0/8?",
                     "Line 2: 'not-an-ip' is not an IP address", "maximum validity"):
            assert part in alert, part
        no_sideways_scroll(page)
        site.screenshot(page, f"newcomer-create-errors-{name}")


def test_token_list_desktop_and_phone_cards(site: Site, new_context: Any) -> None:
    page = admin(site, new_context)
    page.goto("/console/tokens")
    assert page.get_by_role("columnheader", name="Scopes").is_visible()
    search = page.get_by_label("Search")
    assert search.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    site.screenshot(page, "newcomer-tokens")
    page.get_by_role("row", name=re.compile("Double clicked")).get_by_role(
        "link", name="Revoke…").click()
    assert "Double clicked" in page.get_by_role("heading").first.inner_text()
    assert page.get_by_role("button", name="Revoke token").is_visible()

    phone = admin(site, new_context, viewport=PHONE)
    phone.goto("/console/tokens")
    site.screenshot(phone, "newcomer-phone-tokens")
    widest = phone.evaluate("""() => [...document.querySelectorAll('main *')]
        .filter(e => !e.closest('thead') && e.getBoundingClientRect().right
                > document.documentElement.clientWidth)
        .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + e.textContent)""")
    assert not widest, widest
    no_sideways_scroll(phone)
    card = phone.locator("table.cards tbody tr").first
    for label in ("Token", "Name", "Scopes", "Expires", "Last used", "Creator"):
        cell = card.locator(f"td[data-label='{label}']")
        assert cell.is_visible(), label
    assert card.get_by_role("link", name="Revoke…").is_visible()
    site.screenshot(phone, "newcomer-phone-tokens")


def test_policies_outbox_message_and_hourly_chart(site: Site, new_context: Any) -> None:
    for name, options in (("desktop", {}), ("phone", {"viewport": PHONE})):
        page = admin(site, new_context, **options)
        page.goto("/console/account")
        field = page.get_by_label("Account IP allow-list")
        label = page.locator("label[for='ip_allowlist']")
        assert field.bounding_box()["y"] > label.bounding_box()["y"]  # label above its box
        assert field.bounding_box()["height"] > 80
        no_sideways_scroll(page)
        site.screenshot(page, f"newcomer-policies-{name}")
        page.goto("/console/outbox")
        page.locator("table a[href*='/console/outbox/message']",
                     has_text="created in").first.click()
        assert "If you do not recognise this, revoke it" in page.locator(
            "pre.message-body").inner_text()
        no_sideways_scroll(page)
        site.screenshot(page, f"newcomer-outbox-message-{name}")
        page.goto("/console/tokens?q=Double+clicked")
        page.get_by_role("link", name="Double clicked").click()
        page.get_by_role("link", name="Per hour, last 48 hours").click()
        assert page.locator("svg.chart title").first.text_content() == "Requests per hour"
        no_sideways_scroll(page)
        site.screenshot(page, f"newcomer-token-hourly-{name}")


def test_api_docs_work_offline_and_authorize_takes_a_token(site: Site,
                                                           new_context: Any) -> None:
    set_up_admin(site, new_context)
    token = site.notes.get("docs_token")
    if token is None:
        page = admin(site, new_context)
        page.goto("/console/tokens/new")
        page.get_by_label("Name (required)").fill("Docs explorer")
        page.locator("input[name=scopes][value='tokens:manage']").check()
        page.get_by_role("button", name="Create token").click()
        token = page.locator("#secret").input_value()
    context = new_context()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(site.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.goto("/docs")
    page.locator(".swagger-ui .info .title").wait_for()
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    dialog.locator("input").first.fill(token)
    dialog.locator("button.modal-btn.authorize").first.click()
    dialog.locator("button.modal-btn", has_text="Close").first.click()
    page.locator("#operations-tokens-list_tokens_api_v1_tokens_get").click()
    page.get_by_role("button", name="Try it out").click()
    page.get_by_role("button", name="Execute").click()
    status = page.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip() == "200"
    assert "Bearer tlk_" in page.locator(".curl-command").inner_text()
    site.screenshot(page, "newcomer-docs")
    assert outside == [], outside
    assert httpx.get(site.base_url + "/docs/assets/swagger-ui.css").status_code == 200
