"""The worker as the embedded server runs it: a background thread that starts and stops."""

from __future__ import annotations

import time

import pytest

from tallykey.notify.worker import Worker, start_background_worker
from tallykey.settings import Settings
from tallykey.tokens.service import TokenDraft

from ..conftest import World
from .conftest import SmtpServer


def test_background_worker_delivers_and_stops(world: World, settings: Settings,
                                              smtp_server: SmtpServer) -> None:
    configured = settings.model_copy(update={"smtp_url": smtp_server.url,
                                             "worker_interval": 0.05})
    handle = start_background_worker(world.rt.database, world.rt.clock, configured,
                                     world.rt.notifier)
    try:
        assert handle.running and handle.worker.sends_mail
        world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30,
                                                         scopes=["employees:read"]))
        deadline = time.monotonic() + 10  # waits for the thread, not for a schedule
        while not smtp_server.received and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        handle.stop(timeout=10)
    assert not handle.running
    assert [m.rcpt_tos for m in smtp_server.received] == [["admin@acme.test"]]


def test_worker_settings_are_checked(world: World, settings: Settings) -> None:
    bad = settings.model_copy(update={"smtp_url": "smtp//mail.acme.test"})
    with pytest.raises(ValueError, match="smtp://"):
        Worker.from_settings(world.rt.database, world.rt.clock, bad)
    with pytest.raises(ValueError, match="max_attempts"):
        Worker(world.rt.database, world.rt.clock, notifier=world.rt.notifier, max_attempts=0)
    unset = Worker.from_settings(world.rt.database, world.rt.clock, settings)
    assert not unset.sends_mail
    unset.close()
