"""The worker as the embedded server runs it: a background thread that starts and stops."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from tallykey.jobs import Worker, start_background_worker
from tallykey.notify import outbox
from tallykey.notify.models import EMAIL
from tallykey.notify.smtp import SmtpConfig, SmtpMailer
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from .conftest import Recorder, SmtpServer, make_worker, outbox_rows


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


class RunningClock:
    """Real time, started at another moment (the world's frozen clock)."""

    def __init__(self, start: datetime) -> None:
        self.start, self.began = start, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began)

    def timestamp(self) -> float:
        return self.now().timestamp()


class SlowRecorder(Recorder):
    """An SMTP server that takes `delay` seconds to accept each message."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self.delay)
        return await super().handle_DATA(server, session, envelope)


def test_a_crashed_workers_claims_come_back_within_one_lease(
        world: World, smtp_server: SmtpServer) -> None:
    """SPEC §10: a worker crash delays a mail by less than a minute."""
    world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30))
    now = world.rt.clock.now()
    claimed = outbox.claim(world.rt.database, worker="crashed", now=now, channels=[EMAIL])
    assert claimed  # ... and the worker that claimed them died
    healthy = make_worker(world.rt, smtp_server)
    assert healthy.run_once(now=now).sent == 0, "a live claim is respected"
    assert outbox.LEASE + timedelta(seconds=5) < timedelta(minutes=1)
    assert healthy.run_once(now=now + outbox.LEASE + timedelta(seconds=1)).sent == len(
        claimed)
    healthy.close()


def test_a_slow_delivery_keeps_its_claims(world: World, smtp_port: int) -> None:
    """The claim is short, but its worker extends it while the delivery runs, so a second
    worker does not send the same mail again."""
    slow = SmtpServer("127.0.0.1", smtp_port, SlowRecorder(delay=1.5))
    slow.start()
    try:
        world.rt.tokens.issue(world.as_admin, TokenDraft(name="CRM", expires_in_days=30))
        clock = RunningClock(world.rt.clock.now())
        lease = timedelta(seconds=0.6)
        mailer = SmtpMailer(SmtpConfig.parse(slow.url), "tallykey@acme.test")
        first = Worker(world.rt.database, clock, notifier=world.rt.notifier, mailer=mailer,
                       lease=lease, name="first")
        second = Worker(world.rt.database, clock, notifier=world.rt.notifier,
                        mailer=mailer, lease=lease, name="second")
        reports: list[Any] = []
        thread = threading.Thread(target=lambda: reports.append(first.run_once()))
        thread.start()
        deadline = time.monotonic() + 5
        while not outbox_claimed_by(world, "first") and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        while thread.is_alive() and time.monotonic() - started < 1.2:
            assert second.run_once().sent == 0  # past the first lease, still held
            time.sleep(0.1)
        thread.join(10)
        assert reports and reports[0].sent == 1
        assert len(slow.received) == 1
        first.close()
        second.close()
    finally:
        slow.stop()


def outbox_claimed_by(world: World, worker: str) -> bool:
    return any(row.claimed_by == worker and row.status == "sending"
               for row in outbox_rows(world.rt))
