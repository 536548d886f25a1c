"""The webhooks page in a real browser against a real `tallykey serve` (whose own worker
delivers): an administrator adds an endpoint with an event filter and copies its secret,
sees a delivery arrive at a real HTTP receiver and in the delivery log, rotates the secret
(deliveries then carry both signatures), edits the filter, retries a failed delivery and
deletes the endpoint."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from tallykey.notify.webhooks import verify_signature

from ..conftest import fresh_postgres_database
from ..e2e.conftest import Server, free_port, server_env
from ..notify.conftest import HttpReceiver, HttpRequest
from .conftest import Site, _read_setup_link

ADMIN_EMAIL = "owner@initech.example"
ADMIN_PASSWORD = "initech owner password"


@dataclass
class HookSite(Site):
    receiver: HttpReceiver | None = None

    def wait_for(self, count: int, what: str) -> list[HttpRequest]:
        assert self.receiver is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.receiver.lock:
                if len(self.receiver.requests) >= count:
                    return list(self.receiver.requests)
            time.sleep(0.05)
        raise AssertionError(f"the receiver got no {what}")


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[HookSite]:
    """An empty store served by the real CLI, its worker posting to a local receiver."""
    tmp = tmp_path_factory.mktemp(f"browser-webhooks-{request.param}")
    with ExitStack() as stack:
        receiver = HttpReceiver()
        receiver.thread.start()
        stack.callback(receiver.server.server_close)
        stack.callback(receiver.server.shutdown)
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        server = Server(env=server_env(tmp, url, TALLYKEY_WORKER_INTERVAL="0.2",
                                       TALLYKEY_WEBHOOK_PRIVATE_TARGETS="true"),
                        port=free_port(), log_path=tmp / "server.log", command=("serve",))
        if url:
            server.cli("migrate")
        server.start()
        stack.callback(server.stop)
        yield HookSite(server, request.param, _read_setup_link(server), receiver=receiver)


def checked(secrets: list[str], request: HttpRequest) -> None:
    for secret in secrets:
        verify_signature(secret, request.headers["Tallykey-Signature"], request.body,
                         datetime.now(UTC), delivery=request.headers["Tallykey-Delivery"])


def test_an_admin_runs_webhooks_from_the_console(site: HookSite,
                                                 new_context: Callable[..., Any]) -> None:
    assert site.receiver is not None
    page = new_context().new_page()
    page.goto(site.setup_link)
    page.get_by_label("Company (account) name").fill("Initech")
    page.get_by_label("Your e-mail (your login)").fill(ADMIN_EMAIL)
    page.get_by_label("Password (at least 12 characters)").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Create account and administrator").click()
    page.wait_for_url("**/console/tokens")
    [account] = json.loads(site.server.cli("accounts", "list", "--json").stdout)

    def token(name: str) -> dict[str, Any]:
        made = site.server.cli("tokens", "create", "-a", account["slug"], "--user",
                               ADMIN_EMAIL, "--name", name, "--days", "30", "--json")
        return dict(json.loads(made.stdout))

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    page.wait_for_url("**/console/webhooks")
    assert "No webhook endpoints yet" in page.locator("#webhooks").inner_text()
    page.get_by_label("URL").fill(site.receiver.url)
    page.get_by_label("Description").fill("Audit pipeline")
    page.get_by_role("checkbox", name="token.created").check()
    page.get_by_role("checkbox", name="token.revoked").check()
    page.get_by_role("button", name="Add endpoint").click()
    assert page.get_by_role("heading", name="Webhook endpoint added").is_visible()
    first_secret = page.locator("#secret").input_value()
    assert first_secret.startswith("whsec_")
    site.screenshot(page, "webhook-secret")
    page.get_by_role("link", name="Done").click()
    page.wait_for_url("**/console/webhooks/*")
    assert first_secret not in page.content()  # shown once

    token("CRM sync")
    [created] = site.wait_for(1, "token.created delivery")
    assert created.headers["Tallykey-Event"] == "token.created"
    checked([first_secret], created)
    page.reload()
    log = page.locator("#delivery-log")
    assert "token.created" in log.inner_text() and "sent" in log.inner_text()

    page.get_by_role("button", name="Rotate secret").click()
    assert page.get_by_role("heading", name="New signing secret").is_visible()
    assert "keeps signing beside this one" in page.locator("#overlap").inner_text()
    new_secret = page.locator("#secret").input_value()
    assert new_secret.startswith("whsec_") and new_secret != first_secret
    page.get_by_role("link", name="Done").click()
    page.wait_for_url("**/console/webhooks/*")
    assert page.locator("#overlap").is_visible()
    token("Billing")
    during = site.wait_for(2, "delivery after the rotation")[1]
    assert during.headers["Tallykey-Signature"].count("v1=") == 2
    checked([new_secret, first_secret], during)  # either secret verifies it

    page.get_by_role("checkbox", name="token.created").uncheck()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/console/webhooks/*?done=saved")
    assert "Changes saved." in page.get_by_role("status").inner_text()
    site.receiver.status = 500
    revoked = token("Leaving")
    site.server.cli("tokens", "revoke", revoked["id"])
    site.wait_for(3, "revocation delivery")
    deadline = time.monotonic() + 10
    while "HTTP 500" not in log.inner_text() and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    row = log.locator("tr", has_text="token.revoked")
    assert "HTTP 500" in row.inner_text() and "pending" in row.inner_text()
    site.receiver.status = 200
    row.get_by_role("button", name="Retry now").click()
    page.wait_for_url("**/console/webhooks/*?done=retried*")
    retried = site.wait_for(4, "retried delivery")[3]
    assert retried.headers["Tallykey-Event"] == "token.revoked"
    assert retried.headers["Tallykey-Delivery"] == site.receiver.requests[2].headers[
        "Tallykey-Delivery"]
    checked([new_secret], retried)
    deadline = time.monotonic() + 10
    while "sent" not in log.locator("tr", has_text="token.revoked").inner_text():
        assert time.monotonic() < deadline, log.inner_text()
        time.sleep(0.2)
        page.reload()

    # the filter no longer lets token.created through: "Leaving" was announced by nothing
    events = [r.headers["Tallykey-Event"] for r in site.receiver.requests]
    assert events == ["token.created", "token.created", "token.revoked", "token.revoked"]

    page.get_by_label("Yes, delete this endpoint").check()
    page.get_by_role("button", name="Delete endpoint").click()
    page.wait_for_url("**/console/webhooks?done=deleted")
    assert "No webhook endpoints yet" in page.locator("#webhooks").inner_text()
    site.screenshot(page, "webhooks-deleted")
