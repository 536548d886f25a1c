"""What the console says after each verb, read from the page the form leads to: a
resume says the token works again (not that it "stopped"), a change of permissions or
policy says where it applies, a revocation and a suspension where the token stopped,
an archive with no tokens says none stopped; a wrong code while setting up two-factor
sign-in does not mention recovery codes (none exist yet); a renewal names the token on
both sides; the token summary and `token.created` carry the IP allow-list; and single
sign-on whose provider cannot be reached answers with a page that says so."""

from __future__ import annotations

import html
import re
import socket
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tallykey.audit import query as audit
from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.settings import Settings

from ..conftest import World
from .conftest import Browser, csrf_of
from .test_key_lifecycle import ISSUE_KEY, made_token
from .test_pages import create

NOTICE = re.compile(r'<p class="notice" role="status">(.*?)</p>', re.S)


def notice_after(client: TestClient, answer: object) -> str:
    """Follow a form's redirect and read the notice on the page it leads to."""
    location = answer.headers["location"]  # type: ignore[attr-defined]
    page = client.get(location)
    assert page.status_code == 200, page.text
    found = NOTICE.search(page.text)
    assert found, f"no notice on {location}"
    return html.unescape(found.group(1))


def test_token_verbs_say_what_happened(admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    token_id = made_token(client, csrf, name="Noticed")
    said = {}
    said["edit"] = notice_after(client, client.post(f"/console/tokens/{token_id}", data={
        "csrf_token": csrf, "name": "Noticed", "description": "edited",
        "ip_allowlist": "", "target": ""}))
    said["suspend"] = notice_after(client, client.post(
        f"/console/tokens/{token_id}/suspend", data={"csrf_token": csrf}))
    said["resume"] = notice_after(client, client.post(
        f"/console/tokens/{token_id}/resume", data={"csrf_token": csrf}))
    rotated = client.post(f"/console/tokens/{token_id}/rotate", data={
        "csrf_token": csrf, "grace_days": "1",
        "issue_key": ISSUE_KEY.search(client.get(  # type: ignore[union-attr]
            f"/console/tokens/{token_id}").text).group(1)})
    assert "New secret for “Noticed”" in client.get(rotated.headers["location"]).text
    said["end grace"] = notice_after(client, client.post(
        f"/console/tokens/{token_id}/end-grace", data={"csrf_token": csrf}))
    said["revoke"] = notice_after(client, client.post(
        f"/console/tokens/{token_id}/revoke", data={"csrf_token": csrf, "reason": "done"}))
    assert said == {
        "edit": "Changes saved.",
        "suspend": "The token was suspended: it is refused until resumed. "
                   "It stopped on 1 of 1 nodes.",
        "resume": "The token was resumed. It works again on 1 of 1 nodes.",
        "end grace": "The previous secret stopped working. Only the current secret works.",
        "revoke": "The token was revoked. It stopped on 1 of 1 nodes.",
    }


def test_a_resume_not_yet_confirmed_says_when_it_works_everywhere(
        admin: tuple[TestClient, str], world: World) -> None:
    client, _ = admin
    token_id = made_token(client, admin[1], name="Late node")
    page = client.get(f"/console/tokens/{token_id}", params=[
        ("done", "resumed"), ("nodes", "1/2"), ("late", "node-b"),
        ("by", "2026-01-01T10:00:00+00:00")])
    said = html.unescape(NOTICE.search(page.text).group(1))  # type: ignore[union-attr]
    assert said == ("The token was resumed. It works again on 1 of 2 nodes; not yet "
                    "confirmed by node-b, which will accept it again by "
                    "2026-01-01T10:00:00+00:00 at the latest.")


def test_people_policy_and_workspace_verbs_say_what_happened(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    member = world.member.id
    granted = client.post(f"/console/users/{member}", data={
        "csrf_token": csrf, "role": "member", "active": "yes",
        f"grant:{world.sales.id}": ["employees:read", "employees:write"]})
    said = notice_after(client, granted)
    assert said == ("The user's role, status and permissions were saved. "
                    "They apply on 1 of 1 nodes.")
    policy = client.post("/console/account", data={
        "csrf_token": csrf, "max_validity_days": "90", "reminder_days": "7, 1",
        "ip_allowlist": ""})
    assert notice_after(client, policy) == "Changes saved. They apply on 1 of 1 nodes."
    added = client.post("/console/workspaces", data={
        "csrf_token": csrf, "name": "Empty", "slug": "empty", "timezone": "UTC"})
    assert notice_after(client, added) == "Workspace created."
    empty = next(w for w in world.rt.accounts.workspaces(world.acme_id) if w.slug == "empty")
    renamed = client.post(f"/console/workspaces/{empty.id}", data={
        "csrf_token": csrf, "name": "Still empty"})
    assert notice_after(client, renamed) == "Changes saved."
    archived = client.post(f"/console/workspaces/{empty.id}/archive",
                           data={"csrf_token": csrf})
    said = html.unescape(NOTICE.search(archived.text).group(1))  # type: ignore[union-attr]
    assert said == "Still empty was archived. It held no live tokens, so none stopped."
    made = create(client, csrf, name="In sales", workspace="sales")
    assert made.status_code == 200, re.findall(r"<li>(.*?)</li>", made.text)
    archived = client.post(f"/console/workspaces/{world.sales.id}/archive",
                           data={"csrf_token": csrf})
    said = html.unescape(NOTICE.search(archived.text).group(1))  # type: ignore[union-attr]
    assert said == "Sales was archived: 1 token stopped on 1 of 1 nodes."


def test_a_wrong_code_while_setting_up_two_factor_names_no_recovery_code(
        world: World, new_client: Browser) -> None:
    client = new_client()
    page = client.get("/console/login")
    client.post("/console/login", data={"csrf_token": csrf_of(page.text),
                                        "email": "admin@acme.test",
                                        "password": "correct horse battery"})
    enrol = client.get("/console/me/two-factor")
    assert enrol.status_code == 200
    wrong = client.post("/console/me/two-factor", data={"csrf_token": csrf_of(enrol.text),
                                                        "code": "000000",
                                                        "password": "correct horse battery"})
    assert wrong.status_code == 422
    alert = html.unescape(re.search(r'role="alert"[^>]*>(.*?)<', wrong.text,  # type: ignore[union-attr]
                                    re.S).group(1))
    assert alert.startswith("The code is wrong.") and "recovery" not in alert, alert
    assert "authenticator app" in alert


def test_the_summary_and_token_created_carry_the_ip_allowlist(
        admin: tuple[TestClient, str], world: World) -> None:
    client, csrf = admin
    token_id = made_token(client, csrf, name="Fenced",
                          ip_allowlist="203.0.113.0/24\n2001:db8::/32")
    page = client.get(f"/console/tokens/{token_id}").text
    summary = re.search(r'id="ip-allowlist">(.*?)</dd>', page)
    assert summary and "<code>203.0.113.0/24</code>, <code>2001:db8::/32</code>" in \
        summary.group(1)
    events, _ = audit.page(world.rt.database, audit.AuditQuery(world.acme_id,
                                                                target_id=token_id), None, 5)
    created = [e for e in events if e.action == "token.created"]
    assert created and created[0].details["ip_allowlist"] == ["203.0.113.0/24",
                                                              "2001:db8::/32"]
    open_token = made_token(client, csrf, name="Open")
    assert re.search(r'id="ip-allowlist">any address</dd>',
                     client.get(f"/console/tokens/{open_token}").text)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket is


@pytest.fixture
def unreachable_sso(database_url: str, tmp_path: object) -> Iterator[Runtime]:
    settings = Settings(database_url=database_url, data_dir=f"{tmp_path}/data",
                        region="eu1", oidc_issuer=f"http://127.0.0.1:{closed_port()}",
                        oidc_client_id="tallykey", oidc_client_secret="s" * 32,
                        oidc_name="Acme ID")
    runtime = Runtime.build(settings, FrozenClock())
    yield runtime
    runtime.close()


def test_single_sign_on_with_an_unreachable_provider_says_so(
        unreachable_sso: Runtime) -> None:
    from tallykey.server.app import create_app

    with TestClient(create_app(unreachable_sso), follow_redirects=False) as client:
        answer = client.get("/console/oidc/start?next=/console/tokens")
        assert answer.status_code == 502, answer.text
        assert answer.headers["content-type"].startswith("text/html")
        text = html.unescape(answer.text)
        assert "<h1>The sign-in provider cannot be reached</h1>" in text
        assert "could not reach the identity provider at 127.0.0.1:" in text
        assert "signing in with Acme ID does not work right now" in text
        assert "internal_error" not in text and '{"error"' not in text
        assert "sign in with your e-mail and password" in text
        assert "tallykey_oidc_state" not in answer.headers.get("set-cookie", "")
