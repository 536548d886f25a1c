"""The sign-in attacks of the third red-team round (issue 25), replayed against a real
`tallykey serve`: its own worker mails through a real SMTP server (aiosmtpd), single
sign-on goes through a real OpenID provider (oidc-provider, run by Node), and requests
come from chosen loopback addresses (127.0.0.2 is a trusted TLS-terminating proxy).

- the outbox (console page, CLI, the store) shows no usable reset link; the mail has one;
- no session, second factor or single sign-on into a suspended account, and no user made
  there by an account claim;
- every session cookie, and the SSO state cookie, is `Secure` behind a trusted TLS proxy
  and with an https public URL;
- an address that only reads like a user's (the Kelvin sign) never signs in as them;
- second-factor attempts are limited per user across sign-ins, and concurrent wrong codes
  are counted exactly;
- codes in other digits are refused as input; a password change voids earlier reset
  links; the current password is throttled like signing in.
"""

from __future__ import annotations

import json
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pyotp
import pytest
from sqlalchemy import select, update

from tallykey.accounts.models import Account, User
from tallykey.db.engine import Database
from tallykey.people.sessions import MAX_CODE_FAILURES
from tallykey.people.twofactor import MAX_USER_CODE_FAILURES
from tallykey.schema.tables import metadata
from tallykey.settings import normalise_database_url

from ..notify.conftest import Recorder, SmtpServer, text_of
from ..notify.conftest import free_port as free_smtp_port
from ..people.openid import CLIENT_SECRET, Provider, new_signing_key, running_provider
from .conftest import Server, manage, running_server

PUBLIC_URL = "http://keys.example.test"
HTTPS_PUBLIC_URL = "https://keys.example.test"
CALLBACK = "/console/oidc/callback"
LINK = re.compile(re.escape(PUBLIC_URL) + r"(/console/reset/([A-Za-z0-9_-]+))")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'id="totp-secret">([A-Z2-7]+)<')
PROXY = "127.0.0.2"  # the server fixture's trusted proxy
PASSWORD = "a long enough password 1"
NEW_PASSWORD = "violet harbour engine 2"
ARABIC_DIGITS = "\u0661\u0662\u0663\u0664\u0665\u0666"
OIDC_ACCOUNTS = {
    "kim": {"email": "kim-admin@demo.example", "email_verified": True},
    # the Kelvin sign (U+212A) lower-cases to "k": the red team's lookalike of kim
    "kelvin": {"email": "\u212aim-admin@demo.example", "email_verified": True},
    "member": {"email": "member@demo.example", "email_verified": True},
    "other-admin": {"email": "admin@other.example", "email_verified": True},
    "newcomer": {"email": "newcomer@elsewhere.test", "email_verified": True,
                 "tallykey_account": "other"},
}


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_smtp_port(), Recorder())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    client = {"client_id": "tallykey", "client_secret": CLIENT_SECRET,
              "redirect_uris": [PUBLIC_URL + CALLBACK, HTTPS_PUBLIC_URL + CALLBACK],
              "grant_types": ["authorization_code"], "response_types": ["code"]}
    logs = tmp_path_factory.mktemp("openid")
    with running_provider([client], OIDC_ACCOUNTS, [new_signing_key("e2e-1")],
                          logs / "provider.log") as running:
        yield running


def oidc_env(provider: Provider) -> dict[str, str]:
    return {"TALLYKEY_OIDC_ISSUER": provider.issuer, "TALLYKEY_OIDC_CLIENT_ID": "tallykey",
            "TALLYKEY_OIDC_CLIENT_SECRET": CLIENT_SECRET, "TALLYKEY_OIDC_NAME": "Demo ID",
            "TALLYKEY_OIDC_ACCOUNT_CLAIM": "tallykey_account",
            "TALLYKEY_OIDC_SCOPES": "openid email profile tallykey"}


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
         smtp: SmtpServer, provider: Provider) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"people-attacks-{request.param}")
    with running_server(tmp, request.param, (), TALLYKEY_SMTP_URL=smtp.url,
                        TALLYKEY_PUBLIC_URL=PUBLIC_URL, TALLYKEY_WORKER_INTERVAL="0.2",
                        TALLYKEY_TRUSTED_PROXIES=f"{PROXY}/32", **oidc_env(provider)) as server:
        yield server


@pytest.fixture(scope="module")
def https_live(tmp_path_factory: pytest.TempPathFactory, provider: Provider
               ) -> Iterator[Server]:
    """A server whose public URL is https (no proxy trusted): its cookies are Secure."""
    tmp = tmp_path_factory.mktemp("people-attacks-https")
    with running_server(tmp, "sqlite", (), TALLYKEY_PUBLIC_URL=HTTPS_PUBLIC_URL,
                        **oidc_env(provider)) as server:
        yield server


class Browser:
    """A client that keeps its cookies itself — `Secure` ones too, over plain HTTP, so a
    flow behind a (simulated) TLS proxy can go on — and records every Set-Cookie. It
    connects from `source` and may send `X-Forwarded-Proto`."""

    def __init__(self, server: Server, source: str = "127.0.0.1",
                 forwarded_proto: str | None = None) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=30,
                                 transport=httpx.HTTPTransport(local_address=source))
        self.headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
        self.cookies: dict[str, str] = {}
        self.set_cookies: list[str] = []

    def request(self, method: str, url: str, **options: Any) -> httpx.Response:
        headers = {**self.headers, **options.pop("headers", {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = self.http.request(method, url, headers=headers, **options)
        self.http.cookies.clear()
        for raw in answer.headers.get_list("set-cookie"):
            self.set_cookies.append(raw)
            name, _, rest = raw.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in raw.lower() or value in ("", '""'):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return answer

    def get(self, url: str, **options: Any) -> httpx.Response:
        return self.request("GET", url, **options)

    def post(self, url: str, **options: Any) -> httpx.Response:
        return self.request("POST", url, **options)

    def cookie(self, name: str) -> str:
        """The newest Set-Cookie line that set `name`."""
        lines = [line for line in self.set_cookies if line.startswith(name + "=")
                 and "max-age=0" not in line.lower()]
        assert lines, f"no {name} cookie was set: {self.set_cookies}"
        return lines[-1]

    def close(self) -> None:
        self.http.close()


def is_secure(set_cookie: str) -> bool:
    return any(part.strip().lower() == "secure" for part in set_cookie.split(";"))


def csrf(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def code(secret: str, steps: int = 0) -> str:
    """The code of the step `steps` away from now (the server accepts one step either
    side); each step's code is accepted once."""
    return str(pyotp.TOTP(secret).at(time.time() + 30 * steps))


def wrong_code(secret: str) -> str:
    valid = {code(secret, steps) for steps in range(-2, 3)}
    return next(c for c in ("000000", "111111", "222222") if c not in valid)


def new_user(server: Server, email: str, role: str = "member",
             token: str | None = None) -> str:
    made = manage(server, "POST", "/api/v1/users", token=token,
                  json={"email": email, "role": role, "password": PASSWORD})
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


def api_sign_in(browser: Browser, email: str, password: str = PASSWORD) -> httpx.Response:
    return browser.post("/api/v1/session", json={"email": email, "password": password})


def console_sign_in(browser: Browser, email: str, password: str = PASSWORD) -> httpx.Response:
    page = browser.get("/console/login")
    return browser.post("/console/login", data={"csrf_token": csrf(page.text), "email": email,
                                                "password": password,
                                                "next": "/console/tokens"})


def enrol(server: Server, email: str) -> str:
    """Set up an authenticator for `email` on the console (with its code of the step
    before now, so the codes of now and the next step stay unused); its secret."""
    browser = Browser(server)
    assert console_sign_in(browser, email).status_code == 303
    page = browser.get("/console/me/two-factor")
    found = SECRET.search(page.text)
    assert found, page.text[:500]
    while time.time() % 30 > 25:  # the step before now must still be in the window
        time.sleep(0.2)
    done = browser.post("/console/me/two-factor", data={
        "csrf_token": csrf(page.text), "code": code(found.group(1), -1), "password": PASSWORD})
    assert done.status_code == 200 and done.text.count("<code>") == 10, done.text[:500]
    browser.close()
    return found.group(1)


def sso(browser: Browser, provider: Provider, login: str,
        public_url: str = PUBLIC_URL) -> httpx.Response:
    """Single sign-on of `login`: start at tallykey, sign in at the provider, and bring
    the provider's answer back to tallykey's callback."""
    started = browser.get("/console/oidc/start?next=" + quote("/console/tokens", safe=""))
    assert started.status_code == 303, started.text[:500]
    back = provider.authorize(started.headers["location"], login, public_url + CALLBACK)
    return browser.get(back[len(public_url):])


def audit(server: Server, action: str, target_id: str) -> list[dict[str, Any]]:
    found = manage(server, "GET", "/api/v1/audit",
                   params={"action": action, "target_id": target_id, "limit": 200})
    assert found.status_code == 200, found.text
    return list(found.json()["items"])


def store(server: Server) -> Database:
    url = server.env.get("TALLYKEY_DATABASE_URL") or \
        f"sqlite:///{server.env['TALLYKEY_DATA_DIR']}/tallykey.db"
    return Database(normalise_database_url(url))


def set_account_active(server: Server, slug: str, active: bool) -> None:
    """Flip an account in the store itself, as a suspension that lands between two
    requests of a session looks to that session (the operator API also ends the
    account's sessions; this checks that every use of one looks again)."""
    database = store(server)
    try:
        with database.transaction() as session:
            session.execute(update(Account).where(Account.slug == slug).values(active=active))
    finally:
        database.dispose()


def wait_for_link(smtp: SmtpServer, address: str, seen: int) -> tuple[str, str]:
    """(path, token) of the reset link in a mail to `address` after the `seen` first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for mail in smtp.to(address)[seen:]:
            found = LINK.search(text_of(mail.message))
            if found:
                return found.group(1), found.group(2)
        time.sleep(0.05)
    raise AssertionError(f"no mail for {address}")


# --- HIGH 4: reset links in the outbox ---------------------------------------------------


def test_an_admin_cannot_read_another_admins_reset_link_from_the_outbox(
        live: Server, smtp: SmtpServer) -> None:
    victim = "victim-admin@demo.example"
    victim_id = new_user(live, victim, role="admin")
    enrol(live, victim)
    # the attack: reset the victim's second factor, mail them a link, read it
    assert manage(live, "DELETE", f"/api/v1/users/{victim_id}/two-factor").status_code == 204
    seen = len(smtp.to(victim))
    sent = manage(live, "POST", f"/api/v1/users/{victim_id}/password-reset")
    assert sent.status_code == 202, sent.text
    path, token = wait_for_link(smtp, victim, seen)  # the victim's own mail has the link

    attacker = Browser(live)
    assert api_sign_in(attacker, live.seeded["admin"]["email"],
                       live.seeded["admin"]["password"]).status_code == 200
    listing = attacker.get("/console/outbox")
    assert listing.status_code == 200 and "Reset your tallykey password" in listing.text
    ids = re.findall(r"/console/outbox/message\?id=([0-9a-f-]+)", listing.text)
    assert ids
    shown = [attacker.get(f"/console/outbox/message?id={i}").text for i in ids]
    assert any("sent only to the recipient" in page for page in shown)
    cli_list = live.cli("outbox", "list", "--json").stdout
    cli_shown = [live.cli("outbox", "show", row["id"], "--json").stdout
                 for row in json.loads(cli_list)]
    for text in [listing.text, *shown, cli_list, *cli_shown]:
        assert token not in text
        assert not re.search(r"/console/reset/[A-Za-z0-9_-]{20,}", text)
    database = store(live)  # nor does any column of any table hold it
    try:
        with database.reading() as session:
            for table in metadata.sorted_tables:
                for row in session.execute(select(table)):
                    assert token not in " ".join(str(v) for v in row), table.name
    finally:
        database.dispose()

    # the link in the mail works, for its recipient
    owner = Browser(live)
    form = owner.get(path)
    assert form.status_code == 200 and victim in form.text
    done = owner.post(path, data={"csrf_token": csrf(form.text), "password": NEW_PASSWORD,
                                  "password_confirm": NEW_PASSWORD})
    assert done.status_code == 303, done.text[:500]
    assert api_sign_in(Browser(live), victim, NEW_PASSWORD).status_code == 200


def test_a_password_change_voids_earlier_reset_links(live: Server, smtp: SmtpServer) -> None:
    email = "forgetful@demo.example"
    new_user(live, email)
    seen = len(smtp.to(email))
    assert httpx.post(f"{live.base_url}/api/v1/password-reset", json={"email": email},
                      timeout=10).status_code == 202
    path, _ = wait_for_link(smtp, email, seen)
    assert httpx.get(live.base_url + path, timeout=10).status_code == 200
    browser = Browser(live)
    session = api_sign_in(browser, email)
    assert session.status_code == 200
    changed = browser.post("/api/v1/session/password", json={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers={"X-CSRF-Token": session.json()["csrf_token"]})
    assert changed.status_code == 200, changed.text
    old = httpx.get(live.base_url + path, timeout=10)
    assert old.status_code == 410 and "password was changed" in old.text


# --- HIGH 5: a suspended account ---------------------------------------------------------


def test_no_session_second_factor_or_sso_into_a_suspended_account(
        live: Server, provider: Provider) -> None:
    other = live.seeded["other_account"]["admin"]
    pending_user = "pending@other.example"
    new_user(live, pending_user, token=other["token"])
    secret = enrol(live, pending_user)

    signed_in, pending = Browser(live), Browser(live)
    assert api_sign_in(signed_in, other["email"], other["password"]).status_code == 200
    assert signed_in.get("/api/v1/users").status_code == 200
    waiting = api_sign_in(pending, pending_user)
    assert waiting.json()["awaiting"] == "code"
    set_account_active(live, "other", False)
    try:
        # every use of a session looks at the account: the management API, the console
        assert signed_in.get("/api/v1/users").status_code == 401
        page = signed_in.get("/console/tokens")
        assert page.status_code == 303 and page.headers["location"].startswith("/console/login")
        # a right code does not complete a sign-in into it
        cookies_before = len(pending.set_cookies)
        done = pending.post("/api/v1/session/second-factor", json={"code": code(secret)},
                            headers={"X-CSRF-Token": waiting.json()["csrf_token"]})
        assert done.status_code == 401 and len(pending.set_cookies) == cookies_before
    finally:
        set_account_active(live, "other", True)

    made = live.cli("operator-tokens", "create", "--name", "e2e people", "--days", "1",
                    "--json")
    operator = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
    suspended = httpx.patch(f"{live.base_url}/api/v1/operator/accounts/other",
                            json={"active": False}, headers=operator, timeout=30)
    assert suspended.status_code == 200, suspended.text
    try:
        assert api_sign_in(Browser(live), other["email"], other["password"]).status_code == 401
        existing = Browser(live)
        refused = sso(existing, provider, "other-admin")
        assert refused.status_code == 401 and "suspended" in refused.text
        assert "tallykey_session" not in existing.cookies
        newcomer = Browser(live)
        refused = sso(newcomer, provider, "newcomer")  # named by the account claim
        assert refused.status_code == 401 and "suspended" in refused.text
        assert "tallykey_session" not in newcomer.cookies
        database = store(live)
        try:
            with database.reading() as session:
                assert session.scalar(select(User.id).where(
                    User.email == "newcomer@elsewhere.test")) is None  # nobody was made
        finally:
            database.dispose()
    finally:
        resumed = httpx.patch(f"{live.base_url}/api/v1/operator/accounts/other",
                              json={"active": True}, headers=operator, timeout=30)
        assert resumed.status_code == 200, resumed.text
    back = Browser(live)  # resumed: the same sign-on works again (the refusals were real)
    assert sso(back, provider, "other-admin").status_code == 303
    assert back.get("/api/v1/users").status_code == 200


# --- MEDIUM 9: lookalike addresses -------------------------------------------------------


def test_a_lookalike_address_never_signs_in_as_the_user_it_reads_as(
        live: Server, provider: Provider) -> None:
    new_user(live, "kim-admin@demo.example", role="admin")
    attacker = Browser(live)
    refused = sso(attacker, provider, "kelvin")
    assert refused.status_code == 401 and "read as another address" in refused.text
    assert "tallykey_session" not in attacker.cookies
    emails = {u["email"] for u in manage(live, "GET", "/api/v1/users").json()}
    assert "kim-admin@demo.example" in emails
    assert [e for e in emails if unicodedata.normalize("NFKC", e).casefold()
            == "kim-admin@demo.example"] == ["kim-admin@demo.example"]  # no lookalike made
    kim = Browser(live)  # the address itself, verified by the provider, signs in
    assert sso(kim, provider, "kim").status_code == 303
    me = kim.get("/api/v1/session/sessions")
    assert me.status_code == 200 and len(me.json()) == 1


# --- MEDIUM 7: one cookie rule ------------------------------------------------------------


def test_every_sign_in_cookie_is_secure_behind_a_trusted_tls_proxy(
        live: Server, provider: Provider) -> None:
    email = "proxied@demo.example"
    new_user(live, email)
    secret = enrol(live, email)

    api = Browser(live, PROXY, "https")
    waiting = api_sign_in(api, email)
    assert waiting.status_code == 200 and waiting.json()["awaiting"] == "code"
    assert is_secure(api.cookie("tallykey_session"))
    done = api.post("/api/v1/session/second-factor", json={"code": code(secret)},
                    headers={"X-CSRF-Token": waiting.json()["csrf_token"]})
    assert done.status_code == 200, done.text
    assert is_secure(api.cookie("tallykey_session"))  # the post-2FA cookie

    console = Browser(live, PROXY, "https")
    step = console_sign_in(console, email)
    assert step.status_code == 303 and step.headers["location"].startswith("/console/login/code")
    page = console.get(step.headers["location"])
    done = console.post("/console/login/code", data={
        "csrf_token": csrf(page.text), "code": code(secret, 1), "next": "/console/tokens"})
    assert done.status_code == 303 and done.headers["location"] == "/console/tokens"
    assert is_secure(console.cookie("tallykey_session"))

    single = Browser(live, PROXY, "https")
    assert sso(single, provider, "member").status_code == 303
    assert is_secure(single.cookie("tallykey_oidc_state"))
    assert is_secure(single.cookie("tallykey_session"))

    # the same header from an address that is not a trusted proxy changes nothing
    direct = Browser(live, "127.0.0.3", "https")
    assert api_sign_in(direct, live.seeded["member"]["email"],
                       live.seeded["member"]["password"]).status_code == 200
    assert not is_secure(direct.cookie("tallykey_session"))
    assert sso(direct, provider, "member").status_code == 303
    assert not is_secure(direct.cookie("tallykey_oidc_state"))


def test_every_sign_in_cookie_is_secure_with_an_https_public_url(
        https_live: Server, provider: Provider) -> None:
    email = "https@demo.example"
    new_user(https_live, email)
    secret = enrol(https_live, email)
    api = Browser(https_live)
    waiting = api_sign_in(api, email)
    done = api.post("/api/v1/session/second-factor", json={"code": code(secret)},
                    headers={"X-CSRF-Token": waiting.json()["csrf_token"]})
    assert done.status_code == 200, done.text
    assert all(is_secure(line) for line in api.set_cookies)

    console = Browser(https_live)
    step = console_sign_in(console, email)
    page = console.get(step.headers["location"])
    done = console.post("/console/login/code", data={
        "csrf_token": csrf(page.text), "code": code(secret, 1), "next": "/console/tokens"})
    assert done.status_code == 303
    assert is_secure(console.cookie("tallykey_session"))
    assert all(is_secure(line) for line in console.set_cookies)

    single = Browser(https_live)
    assert sso(single, provider, "member", HTTPS_PUBLIC_URL).status_code == 303
    assert is_secure(single.cookie("tallykey_oidc_state"))
    assert is_secure(single.cookie("tallykey_session"))


# --- MEDIUM 12: guessing the second factor --------------------------------------------------


def test_wrong_codes_are_limited_per_user_across_sign_ins(live: Server) -> None:
    email = "guessed@demo.example"
    user_id = new_user(live, email)
    secret = enrol(live, email)
    statuses = []
    for _ in range(MAX_USER_CODE_FAILURES + 3):  # the right password, then a wrong code
        browser = Browser(live)
        waiting = api_sign_in(browser, email)
        assert waiting.status_code == 200 and waiting.json()["awaiting"] == "code"
        statuses.append(browser.post(
            "/api/v1/session/second-factor", json={"code": wrong_code(secret)},
            headers={"X-CSRF-Token": waiting.json()["csrf_token"]}).status_code)
    assert statuses == [401] * MAX_USER_CODE_FAILURES + [429] * 3, statuses
    browser = Browser(live)  # locked: even the right code is not checked now
    waiting = api_sign_in(browser, email)
    locked = browser.post("/api/v1/session/second-factor", json={"code": code(secret)},
                          headers={"X-CSRF-Token": waiting.json()["csrf_token"]})
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    assert len(audit(live, "user.second_factor_refused", user_id)) == MAX_USER_CODE_FAILURES


def test_concurrent_wrong_codes_are_counted_exactly(live: Server) -> None:
    """Forty wrong codes at once on one sign-in: exactly its five are checked. Then
    thirty-five at once over seven new sign-ins: exactly the user's remaining five."""
    email = "raced@demo.example"
    user_id = new_user(live, email)
    secret = enrol(live, email)

    def burst(sign_ins: int, guesses: int) -> list[int]:
        sessions = []
        for _ in range(sign_ins):
            browser = Browser(live)
            waiting = api_sign_in(browser, email)
            assert waiting.json()["awaiting"] == "code"
            sessions.append((browser.cookies["tallykey_session"], waiting.json()["csrf_token"]))
        start = threading.Barrier(guesses)
        statuses: list[int] = []

        def guess(number: int) -> None:
            cookie, token = sessions[number % len(sessions)]
            with httpx.Client(base_url=live.base_url, timeout=60) as client:
                start.wait()
                answer = client.post("/api/v1/session/second-factor",
                                     json={"code": wrong_code(secret)},
                                     headers={"X-CSRF-Token": token,
                                              "Cookie": f"tallykey_session={cookie}"})
            statuses.append(answer.status_code)

        threads = [threading.Thread(target=guess, args=(n,)) for n in range(guesses)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(statuses) == guesses and 500 not in statuses, statuses
        return statuses

    burst(1, 40)
    checked = audit(live, "user.second_factor_refused", user_id)
    assert len(checked) == MAX_CODE_FAILURES, len(checked)  # one sign-in: its five
    statuses = burst(7, 35)
    checked = audit(live, "user.second_factor_refused", user_id)
    assert len(checked) == MAX_USER_CODE_FAILURES, (len(checked), sorted(statuses))
    assert statuses.count(429) >= 35 - 5 - 7, sorted(statuses)


# --- LOW ------------------------------------------------------------------------------------


def test_codes_in_other_digits_are_refused_as_input(live: Server) -> None:
    email = "digits@demo.example"
    new_user(live, email)
    secret = enrol(live, email)
    api = Browser(live)
    waiting = api_sign_in(api, email)
    refused = api.post("/api/v1/session/second-factor", json={"code": ARABIC_DIGITS},
                       headers={"X-CSRF-Token": waiting.json()["csrf_token"]})
    assert refused.status_code == 422 and "0-9" in refused.text, refused.text
    console = Browser(live)
    step = console_sign_in(console, email)
    page = console.get(step.headers["location"])
    refused = console.post("/console/login/code", data={
        "csrf_token": csrf(page.text), "code": ARABIC_DIGITS, "next": "/console/tokens"})
    assert refused.status_code == 422 and "0-9" in refused.text
    done = console.post("/console/login/code", data={  # the sign-in goes on
        "csrf_token": csrf(page.text), "code": code(secret), "next": "/console/tokens"})
    assert done.status_code == 303 and done.headers["location"] == "/console/tokens"

    enrolling = "enrolling@demo.example"
    new_user(live, enrolling)
    browser = Browser(live)
    assert console_sign_in(browser, enrolling).status_code == 303
    page = browser.get("/console/me/two-factor")
    refused = browser.post("/console/me/two-factor", data={
        "csrf_token": csrf(page.text), "code": ARABIC_DIGITS, "password": PASSWORD})
    assert refused.status_code == 422 and "0-9" in refused.text


def test_setting_up_an_authenticator_from_a_session_needs_the_password(live: Server) -> None:
    email = "reauth@demo.example"
    new_user(live, email)
    browser = Browser(live)
    assert console_sign_in(browser, email).status_code == 303
    page = browser.get("/console/me/two-factor")
    assert 'name="password"' in page.text
    found = SECRET.search(page.text)
    assert found
    for password in ("", "not the password"):
        refused = browser.post("/console/me/two-factor", data={
            "csrf_token": csrf(page.text), "code": code(found.group(1)), "password": password})
        assert refused.status_code == 422 and "password" in refused.text
    done = browser.post("/console/me/two-factor", data={
        "csrf_token": csrf(page.text), "code": code(found.group(1)), "password": PASSWORD})
    assert done.status_code == 200 and done.text.count("<code>") == 10


@pytest.mark.serial  # the per-address back-off is counted in seconds
def test_the_current_password_is_throttled_like_signing_in(live: Server) -> None:
    email = "oracle@demo.example"
    user_id = new_user(live, email)
    browser = Browser(live, "127.0.0.6")
    session = api_sign_in(browser, email)
    token = session.json()["csrf_token"]
    statuses = [browser.post("/api/v1/session/password", headers={"X-CSRF-Token": token},
                             json={"current_password": f"guess number {n}",
                                   "new_password": NEW_PASSWORD}).status_code
                for n in range(8)]
    assert statuses[:5] == [422] * 5 and 429 in statuses[5:], statuses
    failed = audit(live, "user.login_failed", user_id)
    assert failed and {entry["details"]["via"] for entry in failed} == {"password_change"}
