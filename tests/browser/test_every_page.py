"""Every console page, in a real browser at 1280 px and at 390 px (a phone): no page is
wider than the window, every field has a label, and every label sits above or beside
its own field (never run together with another field on one line). A screenshot of
each page at both sizes lands in artifacts/browser/ (`page-<name>-<width>-<backend>`).

The pages are filled first (a workspace, a member with permissions, a token with an
IP allow-list and limits, its renewal, a revoked token, two-factor sign-in) so that the
tables and forms are laid out as a customer sees them."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pyotp

from .conftest import ARTIFACTS, Site
from .test_console import ADMIN_EMAIL, ADMIN_PASSWORD, MEMBER_EMAIL, MEMBER_PASSWORD, sign_in

WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
TOKEN_URL = re.compile(r"/console/tokens/([0-9a-f-]{36})")

#: Problems of one page at one width, as sentences; the JavaScript reads the laid-out page.
LAYOUT_PROBLEMS = """() => {
  const problems = [];
  const root = document.documentElement;
  if (root.scrollWidth > window.innerWidth)
    problems.push(`the page is ${root.scrollWidth} px wide in a ${window.innerWidth} px window`);
  const shown = e => { const r = e.getBoundingClientRect();
    return r.width > 1 && r.height > 1 && getComputedStyle(e).visibility !== 'hidden'; };
  const controls = [...document.querySelectorAll('input, select, textarea')].filter(
    e => !['hidden', 'submit', 'button'].includes(e.type) && shown(e));
  const nameOf = e => e.id || e.name;
  for (const c of controls) {
    if (!(c.labels.length || c.getAttribute('aria-label') || c.getAttribute('aria-labelledby')))
      problems.push(`field ${nameOf(c)} has no label`);
    const r = c.getBoundingClientRect();
    if (r.right > window.innerWidth + 1) problems.push(`field ${nameOf(c)} is cut off`);
  }
  for (const label of document.querySelectorAll('label')) {
    const own = label.htmlFor ? document.getElementById(label.htmlFor) : label.control;
    if (label.htmlFor && !own) {
      problems.push(`label for #${label.htmlFor}: no such field`);
      continue;
    }
    if (!own || label.contains(own) || !shown(label) || !shown(own)) continue;
    const l = label.getBoundingClientRect(), f = own.getBoundingClientRect();
    const above = f.top >= l.bottom - 2 && f.left < l.right && f.right > l.left;
    const beside = f.left >= l.right - 2 && f.top < l.bottom && f.bottom > l.top;
    if (!above && !beside)
      problems.push(`label "${label.innerText.trim()}" is neither above nor beside its field`);
    for (const other of controls) {
      if (other === own || label.contains(other)) continue;
      const o = other.getBoundingClientRect();
      const middle = (l.top + l.bottom) / 2;
      if (o.top < middle && o.bottom > middle)
        problems.push(`label "${label.innerText.trim()}" shares its line with field `
                      + nameOf(other));
    }
  }
  return problems;
}"""


def check(site: Site, page: Any, name: str) -> None:
    """The page as it is now, at both widths: laid out within the window, labelled."""
    page.wait_for_load_state("load")
    problems: dict[str, list[str]] = {}
    for size, viewport in WIDTHS.items():
        page.set_viewport_size(viewport)
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => r(null)))")
        found = page.evaluate(LAYOUT_PROBLEMS)
        if found:
            problems[size] = found
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"page-{name}-{viewport['width']}-"
                                              f"{site.backend}.png"), full_page=True)
    page.set_viewport_size(WIDTHS["desktop"])
    assert not problems, f"{name} ({page.url}): {problems}"


def signed_in(new_context: Any, email: str = ADMIN_EMAIL,
              password: str = ADMIN_PASSWORD) -> Any:
    page = new_context(viewport=WIDTHS["desktop"]).new_page()
    sign_in(page, email, password)
    return page


def created(page: Any, name: str, ip_allowlist: str = "") -> str:
    """Create a token through the form; the page is left on its one-time view."""
    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill(name)
    if ip_allowlist:
        page.get_by_label("IP allow-list").fill(ip_allowlist)
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("it will not be shown again").wait_for()
    found = TOKEN_URL.search(page.url)
    assert found
    return found.group(1)


def test_pages_before_sign_in(site: Site, new_context: Any) -> None:
    page = new_context(viewport=WIDTHS["desktop"]).new_page()
    page.goto(site.setup_link)
    check(site, page, "setup")
    page.get_by_label("Company (account) name").fill("Initech")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")

    page = new_context(viewport=WIDTHS["desktop"]).new_page()
    page.goto(site.setup_link)
    check(site, page, "setup-used")
    page.goto("/console/login")
    check(site, page, "login")
    page.get_by_label("E-mail").fill(ADMIN_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("alert").wait_for()
    check(site, page, "login-error")
    page.goto("/console/forgot")
    check(site, page, "forgot")
    page.goto("/console/reset/not-a-real-link")
    check(site, page, "reset-refused")


def test_every_page_of_a_filled_account(site: Site, new_context: Any) -> None:
    page = signed_in(new_context)
    page.goto("/console/workspaces")
    page.get_by_label("Name", exact=True).fill("Sales and business development")
    page.get_by_label("Slug").fill("sales")
    page.get_by_role("button", name=re.compile("^Create ")).click()
    page.locator("tr[data-slug='sales']").wait_for()
    check(site, page, "workspaces")

    page.goto("/console/users")
    page.get_by_label("E-mail").fill(MEMBER_EMAIL)
    page.get_by_label("Console password").fill(MEMBER_PASSWORD)
    page.locator("input[type=checkbox][value='employees:read']").first.check()
    page.get_by_role("button", name="Add user").click()
    page.get_by_text("User added.").wait_for()
    check(site, page, "users")
    page.get_by_role("link", name=MEMBER_EMAIL).click()
    page.get_by_role("heading", name=MEMBER_EMAIL).wait_for()
    check(site, page, "user")

    page.goto("/console/tokens/new")
    check(site, page, "token-new")
    page.get_by_label("IP allow-list").fill("not-an-ip")
    page.get_by_label("Rate limits").fill("default=nonsense")
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("alert").wait_for()
    check(site, page, "token-new-errors")

    token_id = created(page, "Walk-through payroll export", "203.0.113.0/24\n2001:db8::/32")
    check(site, page, "token-once")
    secret, curl = page.locator("#secret"), page.locator("#curl-example")
    for viewport in WIDTHS.values():
        page.set_viewport_size(viewport)
        widths = (secret.bounding_box()["width"], curl.bounding_box()["width"])
        assert abs(widths[0] - widths[1]) <= 2, f"token box and curl box differ: {widths}"
    page.set_viewport_size(WIDTHS["desktop"])
    page.reload()
    check(site, page, "token-once-reloaded")

    page.goto(f"/console/tokens/{token_id}")
    assert "203.0.113.0/24" in page.locator("#ip-allowlist").inner_text()
    check(site, page, "token")
    page.goto(f"/console/tokens/{token_id}/renew")
    check(site, page, "token-renew")
    page.get_by_role("button", name=re.compile("^Renew")).click()
    page.get_by_text("it will not be shown again").wait_for()
    check(site, page, "token-once-renewed")
    successor = TOKEN_URL.search(page.url)
    assert successor
    page.goto(f"/console/tokens/{successor.group(1)}")
    assert "Walk-through payroll export" in page.locator("#renewed-from").inner_text()
    check(site, page, "token-successor")

    page.get_by_role("button", name="Rotate secret").click()
    page.get_by_text("it will not be shown again").wait_for()
    check(site, page, "token-once-rotated")

    page.goto("/console/tokens/new")
    page.get_by_label("Name (required)").fill("Walk-through integration")
    page.locator("input[name=kind][value='application']").check()
    page.locator("input[name=scopes][value='employees:read']").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("it will not be shown again").wait_for()
    check(site, page, "token-once-application")
    boxes = [page.locator(f"#{name}") for name in ("secret", "basic-username",
                                                    "basic-password", "curl-example",
                                                    "curl-basic-example")]
    for viewport in WIDTHS.values():
        page.set_viewport_size(viewport)
        sizes = {round(box.bounding_box()["width"]) for box in boxes}
        assert max(sizes) - min(sizes) <= 2, f"boxes differ in width: {sizes}"
    page.set_viewport_size(WIDTHS["desktop"])

    page.goto("/console/tokens/new")  # a decoy, tripped once, on the Decoys page
    page.get_by_label("Name (required)").fill("Walk-through decoy")
    page.locator("input[name=kind][value='decoy']").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_text("it will not be shown again").wait_for()
    decoy = page.locator("#secret").input_value()
    tripped = httpx.post(f"{site.base_url}/api/v1/verify", json={
        "token": decoy, "user_agent": "walk-through/1.0"}, timeout=10)
    assert tripped.json()["reason"] == "unknown"
    for _ in range(50):  # the server writes the trip with its next usage flush
        page.goto("/console/decoys")
        if page.locator(".trip").count():
            break
        time.sleep(0.2)
    assert "walk-through/1.0" in page.locator("#decoys").inner_text()
    check(site, page, "decoys")

    doomed = created(page, "Walk-through leaked key")
    page.goto(f"/console/tokens/{doomed}/revoke")
    check(site, page, "token-revoke")
    page.get_by_label(re.compile("Reason")).fill("Pasted into a public chat")
    page.get_by_role("button", name="Revoke token").click()
    page.wait_for_url("**/console/tokens/inactive*")
    check(site, page, "tokens-inactive")
    page.goto("/console/tokens")
    check(site, page, "tokens")
    page.goto("/console/audit")
    check(site, page, "audit")
    page.goto("/console/account")
    check(site, page, "account")
    page.goto("/console/outbox")
    check(site, page, "outbox")
    page.locator("table a[href*='/console/outbox/message']").first.click()
    check(site, page, "outbox-message")
    page.goto("/console/webhooks")
    page.get_by_label("URL").fill("https://hooks.example.com/tallykey")
    page.get_by_label("Description").fill("Security information and event management")
    page.get_by_role("checkbox", name="token.revoked").check()
    page.get_by_role("button", name="Add endpoint").click()
    check(site, page, "webhook-secret")
    page.get_by_role("link", name="Done").click()
    check(site, page, "webhook-detail")
    page.goto("/console/webhooks")
    check(site, page, "webhooks")
    page.goto("/console/identities")
    page.get_by_label("External id").fill("cust_42")
    page.get_by_label("Credits").fill("1000")
    page.get_by_label("Rate limits").fill("default=100/60")
    page.get_by_role("button", name="Create identity").click()
    page.wait_for_url("**/console/identities/*")
    check(site, page, "identity")
    page.goto("/console/identities")
    check(site, page, "identities")
    page.goto("/console/plans")
    page.get_by_label("Name (unique in the account").fill("pro")
    page.get_by_label("Rate limits").fill("default=100/60")
    page.get_by_label("Credits per period").fill("1000")
    page.get_by_role("button", name="Create plan").click()
    page.wait_for_url("**/console/plans/*")
    check(site, page, "plan")
    page.goto("/console/plans")
    check(site, page, "plans")
    page.goto("/console/workspaces")
    page.locator("tr[data-slug='sales']").get_by_role("link", name="Archive…").click()
    check(site, page, "workspace-archive")
    page.goto("/console/me")
    check(site, page, "me")
    page.goto("/console/tokens/00000000-0000-0000-0000-000000000000")
    check(site, page, "not-found")


def test_two_factor_pages(site: Site, new_context: Any) -> None:
    page = signed_in(new_context, MEMBER_EMAIL, MEMBER_PASSWORD)
    page.goto("/console/tokens")
    check(site, page, "member-tokens")
    page.goto("/console/me/two-factor")
    check(site, page, "two-factor-enrol")
    totp = pyotp.TOTP(page.locator("#totp-secret").inner_text())
    page.get_by_label("Code from the app").fill("000000" if totp.now() != "000000" else "111111")
    page.get_by_label("Your password").fill(MEMBER_PASSWORD)
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    alert = page.get_by_role("alert").inner_text()
    assert "The code is wrong" in alert and "recovery" not in alert, alert
    check(site, page, "two-factor-enrol-wrong-code")
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_label("Your password").fill(MEMBER_PASSWORD)
    page.get_by_role("button", name="Turn on two-factor sign-in").click()
    page.get_by_text("Save these recovery codes now").wait_for()
    check(site, page, "recovery-codes")
    page.get_by_role("link", name="I saved them, continue").click()
    page.wait_for_url("**/console/me")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.get_by_label("E-mail").fill(MEMBER_EMAIL)
    page.get_by_label("Password").fill(MEMBER_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/login/code*")
    check(site, page, "login-code")
    page.get_by_label("Code").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Verify").click()
    page.wait_for_url("**/console/tokens")
