"""The console in a real browser, in the order a new customer meets it: first-admin
setup, sign-in, tokens of each kind copied from the show-once page and used against the
platform API, edit, rotate, revoke, Expired & Revoked, a member's view, CSRF refusal,
keyboard-only use, phone width. Screenshots of each main page land in artifacts/browser/."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tallykey.runtime import Runtime
from tallykey.settings import Settings

from .conftest import Site

ADMIN_EMAIL = "owner@initech.example"
ADMIN_PASSWORD = "initech owner password"
MEMBER_EMAIL = "peter@initech.example"
MEMBER_PASSWORD = "peter member password"
UUID = re.compile(r"/console/tokens/([0-9a-f-]{36})")


def info(site: Site, **request: Any) -> httpx.Response:
    """The credential checked by the reverse-proxy endpoint (204 when it is good)."""
    return httpx.get(f"{site.base_url}/auth/request", timeout=10, **request)


def try_it(site: Site, command: str) -> dict[str, Any]:
    """Run the show-once page's "Try it" command (a POST to /api/v1/verify; its host is
    the region's public URL, so it is sent to this server) with httpx."""
    match = re.fullmatch(r"""curl -H "Content-Type: application/json" -d '(.*)' (\S+)""",
                         command.strip())
    assert match and match.group(2).endswith("/api/v1/verify"), command
    answer = httpx.post(f"{site.base_url}/api/v1/verify", content=match.group(1),
                        headers={"Content-Type": "application/json"}, timeout=10)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in(page: Any, email: str, password: str) -> None:
    page.goto("/console/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/tokens")


def admin_page(site: Site, new_context: Any) -> Any:
    page = new_context().new_page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    return page


def copied(page: Any, button_for: str) -> str:
    """Click the Copy button next to a field and read what landed on the clipboard."""
    page.locator(f"button[data-copy='{button_for}']").click()
    page.get_by_text("Copied to the clipboard.").wait_for(state="attached")
    value = page.evaluate("navigator.clipboard.readText()")
    assert value == page.locator(f"#{button_for}").input_value()
    return str(value)


def create_token(page: Any, name: str, *, kind: str = "personal",
                 scopes: tuple[str, ...] = ("employees:read",), expiry: str = "30 days"
                 ) -> None:
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill(name)
    page.locator(f"input[name=kind][value='{kind}']").check()
    for scope in scopes:
        page.locator(f"input[name=scopes][value='{scope}']").check()
    page.get_by_label(expiry, exact=False).first.check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("it will not be shown again").wait_for()


def test_first_admin_setup_link_works_once_then_sign_in(site: Site, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto(site.setup_link)
    site.screenshot(page, "setup")
    page.get_by_label("Company (account) name").fill("Initech")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")
    assert page.get_by_role("heading", name="API tokens").is_visible()

    again = new_context().new_page()
    again.goto(site.setup_link)
    assert again.get_by_role("heading", name="This setup link cannot be used").is_visible()

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.get_by_label("E-mail").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text().startswith("The e-mail or password is wrong")
    assert page.get_by_label("E-mail").input_value() == ADMIN_EMAIL
    site.screenshot(page, "login-error")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/tokens")

    rt = runtime_for(site)
    try:  # workspaces have no console page yet: the service makes one for the member
        account = rt.accounts.find_account("initech")
        rt.accounts.create_workspace(account.id, "sales", "Sales")
    finally:
        rt.close()


def runtime_for(site: Site) -> Runtime:
    env = site.server.env
    return Runtime.build(Settings(data_dir=env["TALLYKEY_DATA_DIR"],
                                  database_url=env.get("TALLYKEY_DATABASE_URL")))


def test_tokens_of_each_kind_are_copied_from_the_show_once_page_and_work(
        site: Site, new_context: Any) -> None:
    page = admin_page(site, new_context)
    create_token(page, "Payroll sync", scopes=("employees:read", "employees:write"))
    assert page.locator("#secret").input_value() not in page.url
    site.screenshot(page, "show-once-personal")
    personal = copied(page, "secret")
    assert personal.startswith("tlk_")
    assert info(site, headers=bearer(personal)).status_code == 204

    create_token(page, "BI export", kind="application", expiry="1 year")
    assert page.get_by_text("Tokens valid for more than 3 months are discouraged").count() >= 1
    site.screenshot(page, "show-once-application")
    application = copied(page, "secret")
    username, password = copied(page, "basic-username"), copied(page, "basic-password")
    assert try_it(site, page.locator("#curl-example").input_value())["allowed"] is True
    assert try_it(site, page.locator("#curl-basic-example").input_value())["allowed"] is True
    assert info(site, headers=bearer(application)).status_code == 204
    answer = info(site, auth=(username, password))
    assert answer.status_code == 204, answer.text
    site.notes.update(personal=personal, application=application)

    page.goto("/console/tokens")
    table = page.locator("table").inner_text()
    assert "Payroll sync" in table and "BI export" in table
    assert personal not in page.content() and application not in page.content()
    page.get_by_label("Kind").select_option("application")
    page.get_by_role("button", name="Apply").click()
    assert "BI export" in page.locator("table").inner_text()
    assert "Payroll sync" not in page.locator("table").inner_text()
    site.screenshot(page, "tokens")


def test_edit_rotate_and_revoke_a_token(site: Site, new_context: Any) -> None:
    page = admin_page(site, new_context)
    page.get_by_role("link", name="Payroll sync").click()
    page.get_by_label("Name", exact=True).fill("Payroll sync (prod)")
    page.get_by_label("IP allow-list").fill("10.0.0.1/8")
    page.get_by_role("button", name="Save changes").click()
    assert "Did you mean 10.0.0.0/8?" in page.locator(".field-error").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == "Payroll sync (prod)"
    page.get_by_label("IP allow-list").fill("127.0.0.0/8\n::1/128")
    page.get_by_label("Target software").select_option("Workday")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Changes saved.").wait_for()
    assert page.get_by_role("heading", name=re.compile("Payroll sync \\(prod\\)")).is_visible()
    assert "cannot be extended" in page.locator("#expiry-note").inner_text()
    token_url = page.url.split("?")[0]

    old = site.notes["personal"]
    page.get_by_label("Grace period for the current secret").select_option("0")
    page.get_by_role("button", name="Rotate secret").click()
    page.get_by_text("it will not be shown again").wait_for()
    new = copied(page, "secret")
    assert new != old
    assert info(site, headers=bearer(old)).status_code == 401
    assert info(site, headers=bearer(new)).status_code == 204

    page.goto(token_url)
    assert "token.rotated" in page.locator("table").inner_text()
    assert page.locator("svg.chart").count() == 1
    site.screenshot(page, "token-detail")
    page.get_by_role("link", name="Revoke…").click()
    site.screenshot(page, "revoke-confirm")
    page.get_by_label("Reason").fill("Payroll moved to the new system")
    page.get_by_role("button", name="Revoke token").click()
    page.wait_for_url("**/console/tokens/inactive?done=revoked*")
    revoked = page.locator("table").first.inner_text()
    assert "Payroll sync (prod)" in revoked and "Payroll moved to the new system" in revoked
    assert ADMIN_EMAIL in revoked
    site.screenshot(page, "expired-and-revoked")
    denied = info(site, headers=bearer(new))
    assert denied.status_code == 401 and "revoked" in denied.text


def test_a_member_sees_only_their_own_tokens(site: Site, new_context: Any) -> None:
    admin = admin_page(site, new_context)
    admin.goto("/console/users")
    admin.get_by_label("E-mail").fill(MEMBER_EMAIL)
    admin.get_by_label("Role").select_option("member")
    admin.get_by_label(re.compile("^Console password")).fill(MEMBER_PASSWORD)
    admin.locator("input[name^='grant:'][value='employees:read']").check()
    admin.get_by_role("button", name="Add user").click()
    admin.get_by_text("User added.").wait_for()
    site.screenshot(admin, "users")
    admin.goto("/console/tokens")
    admin_token = UUID.search(admin.content())
    assert admin_token

    member = new_context().new_page()
    sign_in(member, MEMBER_EMAIL, MEMBER_PASSWORD)
    assert member.get_by_role("link", name="Audit log").count() == 0
    assert "BI export" not in member.content()
    member.goto("/console/tokens/new")
    assert member.locator("input[value='application']").count() == 0
    assert member.locator("input[name=scopes]").count() == 1  # only what they hold
    create_token(member, "Peter's laptop")
    peters = copied(member, "secret")
    assert info(site, headers=bearer(peters)).status_code == 204
    member.goto("/console/tokens?status=all")
    listed = member.locator("table").inner_text()
    assert "Peter's laptop" in listed and "BI export" not in listed
    assert "Payroll" not in listed
    missing = member.goto(f"/console/tokens/{admin_token.group(1)}")
    assert missing is not None and missing.status == 404
    assert member.goto("/console/audit").status == 403


def test_a_post_without_the_csrf_token_is_refused(site: Site, new_context: Any) -> None:
    page = admin_page(site, new_context)
    answer = page.request.post(f"{site.base_url}/console/tokens/new",
                               form={"name": "forged", "expiry": "30", "kind": "personal"})
    assert answer.status == 403
    assert "This form has expired" in answer.text()
    page.goto("/console/tokens?q=forged&status=all")
    assert "forged" not in page.locator("table").inner_text()


def test_audit_policies_outbox_pages_and_export(site: Site, new_context: Any) -> None:
    page = admin_page(site, new_context)
    page.goto("/console/audit")
    page.get_by_label("Action").select_option("token.revoked")
    page.get_by_role("button", name="Apply").click()
    assert "Payroll" in page.locator("table").inner_text()
    site.screenshot(page, "audit")
    with page.expect_download() as download:
        page.get_by_role("link", name="CSV").click()
    lines = download.value.path().read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("id,occurred_at,account_id,action") and len(lines) == 2

    page.goto("/console/account")
    page.get_by_label("Maximum token validity (days, 1–365)").fill("60")
    page.get_by_role("button", name="Save policies").click()
    page.get_by_text("Changes saved.").wait_for()
    site.screenshot(page, "policies")
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill("Too long")
    page.get_by_label("90 days").check()
    page.get_by_role("button", name="Create token").click()
    assert "maximum validity of 60 days" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name (required)").input_value() == "Too long"
    site.screenshot(page, "create-refused")

    page.goto("/console/outbox")
    assert page.get_by_role("heading", name="Outbox").is_visible()
    site.screenshot(page, "outbox")


def test_keyboard_only_sign_in_and_create(site: Site, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto("/console/login")
    assert page.evaluate("document.activeElement.id") == "email"  # autofocus
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.type(ADMIN_EMAIL)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type(ADMIN_PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/tokens")
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").focus()
    page.keyboard.type("Keyboard made")
    for _ in range(40):  # walk the form in focus order to the submit button
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Create token":
            break
    else:
        raise AssertionError("the Create button is not reachable with Tab")
    page.keyboard.press("Enter")
    page.get_by_text("it will not be shown again").wait_for()
    page.locator("button[data-copy='secret']").focus()
    page.keyboard.press("Enter")
    page.get_by_text("Copied to the clipboard.").wait_for(state="attached")


def test_pages_are_readable_at_phone_width(site: Site, new_context: Any) -> None:
    page = new_context(viewport={"width": 375, "height": 740}).new_page()
    sign_in(page, ADMIN_EMAIL, ADMIN_PASSWORD)
    for path, name in (("/console/tokens", "phone-tokens"),
                       ("/console/tokens/new", "phone-create")):
        page.goto(path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways at phone width"
        site.screenshot(page, name)
