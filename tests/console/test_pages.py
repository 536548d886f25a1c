"""Console pages without a browser: sign-in, CSRF refusal, member isolation, form errors
re-rendered with the user's input, the show-once page, audit exports, first-run setup."""

from __future__ import annotations

import json
import re
import time

import httpx
from starlette.testclient import TestClient

from tallykey.accounts import bootstrap as setup
from tallykey.actor import Actor
from tallykey.console.web import CONTENT_SECURITY_POLICY
from tallykey.network.throttle import WINDOW_SECONDS
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import Browser, csrf_of, sign_in

SECRET = re.compile(r'id="secret" class="secret" type="text" readonly value="([^"]+)"')


def group_of(pattern: str | re.Pattern[str], text: str) -> str:
    """The first group of `pattern`'s first match in `text` (which must have one)."""
    found = re.search(pattern, text)
    assert found, pattern
    return found.group(1)


def create(client: TestClient, csrf: str, **fields: object) -> httpx.Response:
    """Post the create form; a success is followed to the one-time view it redirects to."""
    data: dict[str, object] = {"csrf_token": csrf, "name": "console token", "expiry": "30",
                               "kind": "personal"}
    data.update(fields)
    answer: httpx.Response = client.post("/console/tokens/new", data=data)
    if answer.status_code == 303 and "/once?view=" in answer.headers["location"]:
        shown: httpx.Response = client.get(answer.headers["location"])
        return shown
    return answer


def test_pages_need_a_session_and_send_the_login_page_back_to_them(
        world: World, new_client: Browser) -> None:
    client = new_client()
    answer = client.get("/console/tokens?status=revoked")
    assert answer.status_code == 303
    assert answer.headers["location"] == (
        "/console/login?next=%2Fconsole%2Ftokens%3Fstatus%3Drevoked")
    login = client.get(answer.headers["location"])
    assert login.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    done = client.post("/console/login", data={
        "csrf_token": csrf_of(login.text), "email": "admin@acme.test",
        "password": "correct horse battery", "next": "/console/tokens?status=revoked"})
    assert done.headers["location"] == "/console/tokens?status=revoked"
    cookie = done.headers["set-cookie"].lower()
    assert "tallykey_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_login_refuses_open_redirects_and_wrong_passwords(world: World,
                                                          new_client: Browser) -> None:
    client = new_client()
    page = client.get("/console/login")
    wrong = client.post("/console/login", data={"csrf_token": csrf_of(page.text),
                                                 "email": "admin@acme.test", "password": "x"})
    assert wrong.status_code == 401
    assert "The e-mail or password is wrong" in wrong.text
    assert 'value="admin@acme.test"' in wrong.text
    done = client.post("/console/login", data={
        "csrf_token": csrf_of(wrong.text), "email": "admin@acme.test",
        "password": "correct horse battery", "next": "//evil.example/console/x"})
    assert done.headers["location"] == "/console/tokens"


def test_login_without_its_form_key_is_refused(world: World, new_client: Browser) -> None:
    client = new_client()
    answer = client.post("/console/login", data={"email": "admin@acme.test",
                                                  "password": "correct horse battery"})
    assert answer.status_code == 403
    assert "tallykey_session" not in answer.headers.get("set-cookie", "")


def test_repeated_failed_logins_are_throttled_per_address(world: World,
                                                          new_client: Browser) -> None:
    client = new_client()
    page = client.get("/console/login")
    into_minute = time.time() % WINDOW_SECONDS  # the limiter counts per clock minute
    if into_minute > WINDOW_SECONDS - 15:
        time.sleep(WINDOW_SECONDS - into_minute + 0.1)
    statuses = []
    for attempt in range(11):  # another address each time: the per-network limit
        answer = client.post("/console/login", data={"csrf_token": csrf_of(page.text),
                                                      "email": f"guess{attempt}@acme.test",
                                                      "password": "guess"})
        statuses.append(answer.status_code)
        page = answer
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    assert int(page.headers["retry-after"]) > 0
    assert "Too many sign-in attempts" in page.text


def test_every_state_change_without_the_csrf_token_is_refused(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    made = create(client, csrf, name="keep me")
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    posts = {
        "/console/tokens/new": {"name": "x", "expiry": "30"},
        f"/console/tokens/{token_id}": {"name": "renamed"},
        f"/console/tokens/{token_id}/rotate": {"grace_days": "0"},
        f"/console/tokens/{token_id}/revoke": {"reason": "csrf"},
        "/console/users": {"email": "new@acme.test"},
        "/console/account": {"max_validity_days": "7"},
        "/console/logout": {},
    }
    for path, data in posts.items():
        for token in (None, "wrong-" + csrf):
            body = dict(data, **({"csrf_token": token} if token else {}))
            answer = client.post(path, data=body)
            assert answer.status_code == 403, path
            assert "This form has expired" in answer.text
    stored = world.rt.tokens.get(world.as_admin, token_id)
    assert stored.name == "keep me" and stored.revoked_at is None
    assert client.get("/console/tokens").status_code == 200  # still signed in


def test_create_shows_the_secret_once_never_cached_and_never_in_a_url(
        admin: tuple[TestClient, str]) -> None:
    client, csrf = admin
    made = create(client, csrf, kind="application", scopes=["employees:read"], expiry="365",
                  target="Excel", ip_allowlist="203.0.113.0/24\n2001:db8::/32")
    assert made.status_code == 200
    assert "no-store" in made.headers["cache-control"]
    secret = group_of(SECRET, made.text)
    assert secret.startswith("tlk_eu1_")
    assert "will not be shown again" in made.text
    assert "Username" in made.text and "/api/v1/verify" in made.text  # not the demo
    assert "/core/v3" not in made.text
    assert "Tokens valid for more than 3 months are discouraged" in made.text
    listing = client.get("/console/tokens")
    assert secret not in listing.text and secret[:20] in listing.text
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    detail = client.get(f"/console/tokens/{token_id}")
    assert secret not in detail.text and "203.0.113.0/24" in detail.text


def test_a_refused_form_is_shown_again_with_the_input_and_nothing_is_created(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    policy = client.post("/console/account", data={
        "csrf_token": csrf, "max_validity_days": "30", "reminder_days": "7, 2",
        "ip_allowlist": ""})
    assert policy.status_code == 303
    too_long = create(client, csrf, name="Too long", description="kept", expiry="90")
    assert too_long.status_code == 422
    assert "maximum validity of 30 days" in too_long.text
    assert 'value="Too long"' in too_long.text and ">kept</textarea>" in too_long.text
    bad_ip = create(client, csrf, name="Bad IP", ip_allowlist="10.0.0.1/8")
    assert bad_ip.status_code == 422 and "Did you mean 10.0.0.0/8?" in bad_ip.text
    assert 'aria-invalid="true" aria-describedby="ip_allowlist-error"' in bad_ip.text
    nameless = create(client, csrf, name="  ")
    assert nameless.status_code == 422 and "The name is required" in nameless.text
    from tallykey.tokens.requests import TokenQuery

    page = world.rt.tokens.list_tokens(world.as_admin, TokenQuery())
    assert page.items == []


def test_members_see_only_their_own_tokens_and_no_admin_pages(
        admin: tuple[TestClient, str], member: tuple[TestClient, str]) -> None:
    admin_client, admin_csrf = admin
    member_client, member_csrf = member
    made = create(admin_client, admin_csrf, name="Admins only")
    admin_token = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    mine = create(member_client, member_csrf, name="Member token", scopes=["employees:read"])
    assert mine.status_code == 200
    listing = member_client.get("/console/tokens?status=all")
    assert "Member token" in listing.text and "Admins only" not in listing.text
    assert member_client.get(f"/console/tokens/{admin_token}").status_code == 404
    revoke = member_client.post(f"/console/tokens/{admin_token}/revoke",
                                data={"csrf_token": member_csrf})
    assert revoke.status_code == 404
    for page in ("/console/audit", "/console/users", "/console/outbox",
                 "/console/audit/export.csv"):
        assert member_client.get(page).status_code == 403, page
    assert member_client.post("/console/account", data={
        "csrf_token": member_csrf, "max_validity_days": "1"}).status_code == 403
    form = member_client.get("/console/tokens/new").text
    assert 'value="application"' not in form and "tokens:manage" not in form
    refused = create(member_client, member_csrf, kind="application", scopes=["employees:read"])
    assert refused.status_code == 422
    assert "Only account administrators can create application tokens" in refused.text
    beyond = create(member_client, member_csrf, scopes=["employees:write"])
    assert beyond.status_code == 422 and "scopes its owner lacks" in beyond.text


def test_edit_rotate_revoke_and_the_expired_and_revoked_section(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    made = create(client, csrf, name="Lifecycle")
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    saved = client.post(f"/console/tokens/{token_id}", data={
        "csrf_token": csrf, "name": "Lifecycle 2", "description": "edited",
        "ip_allowlist": "", "target": "Tableau"})
    assert saved.status_code == 303
    detail = client.get(saved.headers["location"])
    assert "Changes saved." in detail.text and "token.updated" in detail.text
    assert "cannot be extended" in detail.text
    rotated = client.post(f"/console/tokens/{token_id}/rotate",
                          data={"csrf_token": csrf, "grace_days": "2"})
    assert rotated.status_code == 303
    rotated = client.get(rotated.headers["location"])
    assert rotated.status_code == 200 and SECRET.search(rotated.text)
    too_long = client.post(f"/console/tokens/{token_id}/rotate",
                           data={"csrf_token": csrf, "grace_days": "8"})
    assert too_long.status_code == 422 and "0 to 7 days" in too_long.text
    revoked = client.post(f"/console/tokens/{token_id}/revoke",
                          data={"csrf_token": csrf, "reason": "leaked in a ticket"})
    assert revoked.status_code == 303
    section = client.get(revoked.headers["location"])
    assert "Lifecycle 2" in section.text and "leaked in a ticket" in section.text
    assert "admin@acme.test" in section.text
    again = client.post(f"/console/tokens/{token_id}/revoke",
                        data={"csrf_token": csrf, "reason": "twice"})
    assert again.status_code == 409 and "already revoked" in again.text


def test_audit_filters_and_exports(admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    create(client, csrf, name="=cmd|' /C calc'!A0")
    page = client.get("/console/audit", params={"action": "token.created"})
    assert page.status_code == 200 and "token.created" in page.text
    exported = client.get("/console/audit/export.csv", params={"action": "token.created"})
    assert exported.headers["content-disposition"].startswith("attachment")
    assert exported.text.splitlines()[0].startswith("id,occurred_at,account_id,action")
    assert len(exported.text.splitlines()) == 2
    assert "user.login" not in exported.text
    lines = client.get("/console/audit/export.jsonl").text.splitlines()
    actions = {json.loads(line)["action"] for line in lines}
    assert {"token.created", "user.login"} <= actions
    bad = client.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text


def test_users_page_adds_and_deactivates_a_user(admin: tuple[TestClient, str], world: World,
                                                new_client: Browser) -> None:
    client, csrf = admin
    added = client.post("/console/users", data={
        "csrf_token": csrf, "email": "new@acme.test", "role": "member",
        "password": "new member password", f"grant:{world.sales.id}": "employees:read"})
    assert added.status_code == 303
    duplicate = client.post("/console/users", data={
        "csrf_token": csrf, "email": "new@acme.test", "role": "member"})
    assert duplicate.status_code == 422 and "exists already" in duplicate.text
    newcomer = new_client()
    sign_in(newcomer, "new@acme.test", "new member password")
    user = world.rt.accounts.find_user(world.acme_id, "new@acme.test")
    done = client.post(f"/console/users/{user.id}", data={
        "csrf_token": csrf, "role": "member", "active": "no"})
    assert done.status_code == 303
    assert newcomer.get("/console/tokens").status_code == 303  # signed out at once


def test_the_setup_link_creates_the_first_admin_once(rt: Runtime,
                                                     new_client: Browser) -> None:
    link = setup.issue_link(rt.accounts, "http://testserver")
    assert link is not None
    path = link.removeprefix("http://testserver")
    client = new_client()
    page = client.get(path)
    assert page.status_code == 200
    weak = client.post(path, data={"csrf_token": csrf_of(page.text), "account_name": "Initech",
                                   "email": "boss@initech.test", "password": "short"})
    assert weak.status_code == 422 and "at least 12 characters" in weak.text
    done = client.post(path, data={"csrf_token": csrf_of(weak.text), "account_name": "Initech",
                                   "email": "boss@initech.test",
                                   "password": "a long enough password"})
    assert done.status_code == 303 and done.headers["location"] == "/console/tokens"
    assert "Initech" in client.get("/console/account").text
    assert new_client().get(path).status_code == 410
    assert setup.issue_link(rt.accounts, "http://testserver") is None
    account = rt.accounts.find_account("initech")
    user = rt.accounts.find_user(account.id, "boss@initech.test")
    assert user.role == "admin"


def test_a_setup_link_is_refused_when_guessed_or_replaced(rt: Runtime,
                                                          new_client: Browser) -> None:
    first = setup.issue_link(rt.accounts, "http://x")
    second = setup.issue_link(rt.accounts, "http://x")
    assert first and second and first != second
    client = new_client()
    assert client.get(first.removeprefix("http://x")).status_code == 410
    assert client.get("/console/setup/guess").status_code == 410
    assert client.get(second.removeprefix("http://x")).status_code == 200


def test_usage_chart_and_outbox_page(admin: tuple[TestClient, str], world: World) -> None:
    from tallykey.monitor.usage import UsageRecorder

    client, _ = admin
    actor = Actor(world.acme_id, world.admin.id, "admin", world.admin.email)
    issued = world.rt.tokens.issue(actor, TokenDraft(name="used", expires_in_days=7))
    recorder = UsageRecorder(world.rt.database)
    now = world.rt.clock.now()
    for _ in range(3):
        recorder.record(issued.token.id, now.timestamp(), "198.51.100.1", "curl", "allowed")
    recorder.record(issued.token.id, now.timestamp(), "198.51.100.9", "curl", "ip_not_allowed")
    recorder.flush()
    detail = client.get(f"/console/tokens/{issued.token.id}")
    assert "3 allowed and 1 denied requests" in detail.text
    assert "<svg" in detail.text and "198.51.100.1" in detail.text
    outbox = client.get("/console/outbox")
    assert outbox.status_code == 200 and "Outbox" in outbox.text


def _tokens_named(world: World, name: str) -> list[Token]:
    from tallykey.tokens.requests import TokenQuery

    page = world.rt.tokens.list_tokens(world.as_admin, TokenQuery())
    return [t for t in page.items if t.name == name]


def _outbox_count(world: World) -> int:
    from sqlalchemy import func, select

    from tallykey.notify.models import OutboxMessage

    with world.rt.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


def test_create_redirects_to_a_one_time_view_and_a_repost_creates_nothing(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    form = client.get("/console/tokens/new").text
    key = re.search(r'name="issue_key" value="([^"]+)"', form)
    assert key, "the create form carries an idempotency key"
    data = {"csrf_token": csrf, "issue_key": key.group(1), "name": "Twice clicked",
            "expiry": "30", "kind": "personal"}
    first = client.post("/console/tokens/new", data=data)
    assert first.status_code == 303 and "/once?view=" in first.headers["location"]
    assert "tlk_" not in first.headers["location"]
    mails = _outbox_count(world)
    again = client.post("/console/tokens/new", data=data)  # double click / re-post
    assert again.status_code == 303 and again.headers["location"] == first.headers["location"]
    assert len(_tokens_named(world, "Twice clicked")) == 1
    assert _outbox_count(world) == mails, "no second mail to the admins"

    shown = client.get(first.headers["location"])
    assert shown.status_code == 200 and "no-store" in shown.headers["cache-control"]
    secret = group_of(SECRET, shown.text)
    assert "Done — go to the token’s page" in shown.text
    assert f'"token": "{secret}"' in shown.text  # the Try it curl (verify API)
    assert 'data-copy="curl-example"' in shown.text
    reloaded = client.get(first.headers["location"])
    assert reloaded.status_code == 410 and secret not in reloaded.text
    assert "shown only once" in reloaded.text and "rotate the token" in reloaded.text
    third = client.post("/console/tokens/new", data=data)  # re-post after it was shown
    assert third.headers["location"] == first.headers["location"]
    assert len(_tokens_named(world, "Twice clicked")) == 1

    changed = client.post("/console/tokens/new", data={**data, "name": "Another one"})
    assert changed.status_code == 409
    assert "already used to create a token" in changed.text
    assert 'value="Another one"' in changed.text
    assert _tokens_named(world, "Another one") == []


def test_the_one_time_view_belongs_to_its_session(
        admin: tuple[TestClient, str], world: World, new_client: Browser) -> None:
    client, csrf = admin
    first = client.post("/console/tokens/new", data={
        "csrf_token": csrf, "issue_key": "k1", "name": "Mine", "expiry": "30"})
    other = new_client()
    sign_in(other, "admin@acme.test", "correct horse battery")  # same user, other session
    peek = other.get(first.headers["location"])
    assert peek.status_code == 410 and not SECRET.search(peek.text)
    shown = client.get(first.headers["location"])  # the peek did not use it up
    assert shown.status_code == 200 and SECRET.search(shown.text)
    assert client.get(first.headers["location"]).status_code == 410


def test_a_failed_create_keeps_the_key_usable_and_rotate_reposts_rotate_once(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    data = {"csrf_token": csrf, "issue_key": "form-1", "name": "  ", "expiry": "30"}
    refused = client.post("/console/tokens/new", data=data)
    assert refused.status_code == 422 and 'value="form-1"' in refused.text
    made = client.post("/console/tokens/new", data={**data, "name": "Fixed"})
    assert made.status_code == 303
    token_id = made.headers["location"].split("/")[3]
    detail = client.get(f"/console/tokens/{token_id}").text
    rotate_key = group_of(r'name="issue_key" value="([^"]+)"', detail)
    rotate = {"csrf_token": csrf, "issue_key": rotate_key, "grace_days": "1"}
    first = client.post(f"/console/tokens/{token_id}/rotate", data=rotate)
    second = client.post(f"/console/tokens/{token_id}/rotate", data=rotate)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    other_grace = client.post(f"/console/tokens/{token_id}/rotate",
                              data={**rotate, "grace_days": "3"})
    assert other_grace.status_code == 422
    assert "already used with another grace period" in other_grace.text
    with world.rt.database.reading() as session:
        from sqlalchemy import select

        from tallykey.tokens.models import TokenSecret

        generations = session.scalars(select(TokenSecret.generation).where(
            TokenSecret.token_id == token_id)).all()
    assert sorted(generations) == [1, 2]


def test_the_grace_end_is_shown_after_a_rotation_and_can_be_ended_now(
        admin: tuple[TestClient, str], world: World) -> None:
    from tallykey.auth.verifier import Verifier

    client, csrf = admin
    made = create(client, csrf, name="Graced")
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    old = group_of(SECRET, made.text)
    assert 'id="grace-end"' not in client.get(f"/console/tokens/{token_id}").text
    rotated = client.post(f"/console/tokens/{token_id}/rotate",
                          data={"csrf_token": csrf, "grace_days": "2"})
    shown = client.get(rotated.headers["location"])
    assert "The previous secret keeps working until 2030-01-03 12:00 UTC (in 2 days)" \
        in re.sub(r"<[^>]+>", "", shown.text)
    detail = client.get(f"/console/tokens/{token_id}").text
    assert "still works until" in detail and "2030-01-03 12:00 UTC" in detail
    assert "End grace now" in detail
    verifier = Verifier(settings=world.rt.settings, clock=world.rt.clock, background=False)
    try:
        assert verifier.verify(f"Bearer {old}", "127.0.0.1").allowed
        ended = client.post(f"/console/tokens/{token_id}/end-grace", data={"csrf_token": csrf})
        assert ended.status_code == 303
        page = client.get(ended.headers["location"]).text
        assert "The previous secret stopped working" in page and 'id="grace-end"' not in page
        refused = Verifier(settings=world.rt.settings, clock=world.rt.clock,
                           background=False)
        try:
            assert not refused.verify(f"Bearer {old}", "127.0.0.1").allowed
        finally:
            refused.close()
    finally:
        verifier.close()
    again = client.post(f"/console/tokens/{token_id}/end-grace", data={"csrf_token": csrf})
    assert again.status_code == 409 and "No previous secret" in again.text
    assert "previous secret expires at" in client.get(f"/console/tokens/{token_id}").text


def test_the_create_form_reports_every_field_in_a_persons_words(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    refused = create(client, csrf, name=" ", ip_allowlist="10.0.0.1/8\nnot-an-ip\n::1/128",
                     expiry="date", expires_on="2099-01-01", target="NoSuchTool",
                     scopes=["employees:read", "made:up"])
    assert refused.status_code == 422
    page = refused.text
    assert "5 things need fixing" in page
    assert "The name is required" in page
    assert "Line 1: &#39;10.0.0.1/8&#39; has host bits set" in page
    assert "Did you mean 10.0.0.0/8?" in page
    assert "Line 2: &#39;not-an-ip&#39; is not an IP address or an address block" in page
    assert "does not appear to be" not in page  # no Python internals
    assert "beyond this account&#39;s maximum validity" in page
    assert "Unknown target software" in page and "Unknown scope(s): made:up" in page
    for field in ("name", "ip_allowlist", "expires_at", "target", "scopes"):
        assert f'id="{field}-error"' in page, field
    assert _tokens_named(world, " ") == [] and _outbox_count(world) == 0


def test_an_outbox_message_opens_with_its_text(admin: tuple[TestClient, str],
                                               world: World, new_client: Browser) -> None:
    client, csrf = admin
    create(client, csrf, name="Mailed")
    listing = client.get("/console/outbox").text
    link = re.search(r'href="(/console/outbox/message\?id=[0-9a-f-]{36})"', listing)
    assert link, listing
    message = client.get(link.group(1).replace("&amp;", "&"))
    assert message.status_code == 200
    assert "If you do not recognise this, revoke it" in message.text
    assert "admin@acme.test" in message.text
    assert client.get("/console/outbox/message?id=nope").status_code == 404
    policies = client.get("/console/account").text
    assert '<fieldset class="stack">' in policies and 'rows="5"' in policies


def test_history_and_audit_details_read_for_people(admin: tuple[TestClient, str],
                                                   world: World) -> None:
    client, csrf = admin
    made = create(client, csrf, name="Readable", scopes=["employees:read"])
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    client.post(f"/console/tokens/{token_id}", data={
        "csrf_token": csrf, "name": "Readable 2", "description": "",
        "ip_allowlist": "10.0.0.0/8", "target": ""})
    history = client.get(f"/console/tokens/{token_id}").text.split("<h2>History</h2>")[1]
    assert "Readable → Readable 2" in history and "none → 10.0.0.0/8" in history
    assert "[&#39;" not in history and "None" not in history
    audit = client.get("/console/audit").text
    login = re.search(r"<td[^>]*>user\.login</td>\s*<td[^>]*>([^<]*)</td>\s*<td[^>]*>([^<]*)</td>",
                      audit)
    assert login and login.group(2) == "admin@acme.test", audit[-3000:]
    assert "user " + world.admin.id not in audit


def test_token_list_has_scopes_a_revoke_per_row_and_cards_markup(
        admin: tuple[TestClient, str]) -> None:
    client, csrf = admin
    made = create(client, csrf, name="Listed", scopes=["employees:read"])
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    listing = client.get("/console/tokens").text
    assert '<th scope="col">Scopes</th>' in listing
    assert '<td data-label="Scopes" class="scopes"><code>employees:read</code>' in listing
    assert f'href="/console/tokens/{token_id}/revoke" aria-describedby="name-{token_id}"' \
        in listing and f'id="name-{token_id}">Listed</a>' in listing
    assert 'class="cards"' in listing and 'data-label="Expires"' in listing
    assert ">in 30 days<" in listing  # a new 30-day token, not "in 29 days"


def test_usage_chart_per_hour_and_an_honest_empty_state(admin: tuple[TestClient, str],
                                                        world: World) -> None:
    from tallykey.monitor.usage import UsageRecorder

    client, csrf = admin
    made = create(client, csrf, name="Charted", kind="application", scopes=["employees:read"])
    token_id = group_of(r"/console/tokens/([0-9a-f-]{36})", made.text)
    empty = client.get(f"/console/tokens/{token_id}").text
    assert "No requests in the last 30 days" in empty
    assert empty.count('fill="#555">0</text>') == 1  # one zero, not two
    assert "Show username and password" not in empty  # nothing retrievable is kept
    recorder = UsageRecorder(world.rt.database)
    recorder.record(token_id, world.rt.clock.now().timestamp(), "198.51.100.1", "curl",
                    "allowed")
    recorder.flush()
    hourly = client.get(f"/console/tokens/{token_id}?usage=hourly").text
    assert "Requests per hour" in hourly and "over the last 48 hours" in hourly
    assert "1 allowed and 0 denied" in hourly and "12:00" in hourly
    assert 'text-anchor="end" font-size="10" fill="#555">12:00</text>' in hourly
    daily = client.get(f"/console/tokens/{token_id}").text
    assert "Requests per day" in daily and 'href="?usage=hourly"' in daily
