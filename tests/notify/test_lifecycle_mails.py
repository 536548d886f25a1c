"""Mails of the key lifecycle over real SMTP: suspend, resume and renew tell the token's
creator; the expiry reminder links to the console's renew page (a page with a form, never
an action taken by opening the link)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.format import TOKEN_PATTERN
from tallykey.tokens.models import Token
from tallykey.tokens.requests import Renewal, TokenDraft

from ..conftest import World
from .conftest import SmtpServer, make_worker

CONSOLE = "https://keys.acme.test/console/tokens"


@pytest.fixture
def rt(settings: Settings, clock: Any) -> Iterator[Runtime]:
    """The runtime with a public URL, so mails carry console links."""
    settings = settings.model_copy(update={"public_url": "https://keys.acme.test/"})
    runtime = Runtime.build(settings, clock)
    yield runtime
    runtime.close()


def plain_text(smtp: SmtpServer, address: str, subject: str) -> str:
    found = [m.message for m in smtp.to(address) if m.message["Subject"] == subject]
    assert len(found) == 1, [m.message["Subject"] for m in smtp.to(address)]
    return str(found[0].get_body(("plain",)).get_content())  # type: ignore[union-attr]


def member_token(world: World, days: int = 30) -> Token:
    return world.rt.tokens.issue(world.as_member, TokenDraft(
        name="Sheet", expires_in_days=days)).token


def test_suspend_resume_and_renew_mail_the_creator_without_secrets(
        world: World, smtp_server: SmtpServer) -> None:
    token = member_token(world)
    world.rt.tokens.suspend(world.as_admin, token.id)
    world.rt.tokens.resume(world.as_admin, token.id)
    renewed = world.rt.tokens.renew(world.as_member, token.id, Renewal(expires_in_days=60))
    assert make_worker(world.rt, smtp_server).run_once().sent == 4  # and "created" to admins
    suspended = plain_text(smtp_server, "member@acme.test", 'API token "Sheet" was suspended')
    assert "admin@acme.test suspended the API token" in suspended
    assert "until an administrator resumes it" in suspended
    assert "works again" in plain_text(smtp_server, "member@acme.test",
                                       'API token "Sheet" was resumed')
    text = plain_text(smtp_server, "member@acme.test", 'API token "Sheet" was renewed')
    assert f"its successor {renewed.token.prefix} expires at" in text
    for message in smtp_server.received:
        assert not TOKEN_PATTERN.search(message.raw.decode())
    assert [r for m in smtp_server.received for r in m.rcpt_tos
            if "created" not in m.message["Subject"]] == ["member@acme.test"] * 3


def test_the_expiry_reminder_links_to_the_renew_page(world: World, clock: FrozenClock,
                                                     smtp_server: SmtpServer) -> None:
    token = member_token(world, days=7)
    clock.set(token.expires_at - timedelta(hours=47))
    make_worker(world.rt, smtp_server).run_once()
    text = plain_text(smtp_server, "member@acme.test",
                      'Your API token "Sheet" expires in 2 days')
    assert f"Renew it in the console: {CONSOLE}/{token.id}/renew" in text
    assert "renew the token (a successor with a new expiry" in text
    html = smtp_server.to("member@acme.test")[0].message.get_body(
        ("html",)).get_content()  # type: ignore[union-attr]
    assert f'<a href="{CONSOLE}/{token.id}/renew">Renew it in the console</a>' in html
