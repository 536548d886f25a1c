"""Recent client IPs, the usage report and its retention."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.jobs import Worker
from tallykey.monitor import usage
from tallykey.monitor.models import TokenNetwork, TokenUsage
from tallykey.monitor.report import UsageReport, usage_report
from tallykey.notify.notices import Notifier
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenDraft

from ..conftest import World


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


def report(rt: Runtime, token_id: str, hours: int = 3, days: int = 2) -> UsageReport:
    with rt.database.reading() as session:
        token = session.get_one(Token, token_id)
        return usage_report(session, token, rt.clock.now(), hours=hours, days=days,
                            retention_days=90)


def test_the_last_five_distinct_ips_are_kept(world: World, rt: Runtime, verifier: Verifier,
                                             clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="ips", expires_in_days=30))
    header = f"Bearer {issued.value}"
    for number in range(4):
        clock.advance(timedelta(seconds=1))
        verifier.verify(header, f"198.51.100.{number}")
    verifier.flush_usage()
    for number in range(4, 8):  # one flush with more addresses than are kept
        clock.advance(timedelta(seconds=1))
        verifier.verify(header, f"198.51.100.{number}")
        verifier.verify(header, "198.51.100.1")  # an old address comes back
    verifier.flush_usage()
    seen = report(rt, issued.token.id)
    assert [c.ip for c in seen.recent_ips] == ["198.51.100.1", "198.51.100.7",
                                               "198.51.100.6", "198.51.100.5",
                                               "198.51.100.4"]
    assert seen.last_used_ip == "198.51.100.1"
    with rt.database.reading() as session:
        from tallykey.monitor.models import TokenClientIp

        assert session.scalar(select(func.count()).select_from(TokenClientIp)) == 5


def test_the_report_has_every_hour_and_day(world: World, rt: Runtime, verifier: Verifier,
                                           clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="series", expires_in_days=30, ip_allowlist=["198.51.100.0/24"]))
    header = f"Bearer {issued.value}"
    clock.advance(timedelta(minutes=10))
    for _ in range(4):
        verifier.verify(header, "198.51.100.1")
    verifier.verify(header, "203.0.113.1")
    clock.advance(timedelta(hours=1))
    verifier.verify(header, "198.51.100.1")
    verifier.flush_usage()
    seen = report(rt, issued.token.id)
    assert [(p.allowed, p.denied) for p in seen.hourly] == [(0, 0), (4, 1), (1, 0)]
    assert seen.hourly[1].denied_by_reason == {"ip_not_allowed": 1}
    assert [(p.allowed, p.denied) for p in seen.daily] == [(0, 0), (5, 1)]
    assert seen.hourly[-1].start == clock.now().replace(minute=0, second=0, microsecond=0)


def test_the_worker_prunes_usage_past_retention(world: World, rt: Runtime,
                                                verifier: Verifier,
                                                clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="old", expires_in_days=365))
    verifier.verify(f"Bearer {issued.value}", "198.51.100.1")
    verifier.flush_usage()
    clock.advance(timedelta(days=91))
    verifier.verify(f"Bearer {issued.value}", "198.51.100.1")
    verifier.flush_usage()
    worker = Worker(rt.database, clock, notifier=Notifier(), usage_retention_days=90)
    try:
        worker.run_once()
        with rt.database.reading() as session:
            hours = list(session.scalars(select(TokenUsage.hour)))
            networks = session.scalar(select(func.count()).select_from(TokenNetwork))
        assert hours == [clock.now().replace(minute=0, second=0, microsecond=0)]
        assert networks == 1
        worker._purged_at = None
        worker.run_once()  # idempotent
        with rt.database.reading() as session:
            assert session.scalar(select(func.count()).select_from(TokenUsage)) == 1
    finally:
        worker.close()


def test_requests_past_the_recent_bound_are_counted_once_each(
        world: World, rt: Runtime, verifier: Verifier, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path appends each request; past `MAX_RECENT` not yet counted (no flush
    ran), the recording call counts them itself: memory stays bounded, and the flush
    writes every request exactly once, with the newest use's agent."""
    monkeypatch.setattr(usage, "MAX_RECENT", 10)
    issued = rt.tokens.issue(world.as_admin, TokenDraft(name="bound", expires_in_days=30))
    header = f"Bearer {issued.value}"
    for number in range(25):
        verifier.verify(header, "198.51.100.9", user_agent=f"agent {number}")
        assert len(verifier.usage._recent) <= 11
    assert verifier.usage.pending() == 25
    assert verifier.flush_usage() == 25
    assert verifier.usage.pending() == 0
    with rt.database.reading() as session:
        counted = session.scalar(select(func.sum(TokenUsage.count)).where(
            TokenUsage.token_id == issued.token.id))
        token = session.get_one(Token, issued.token.id)
    assert counted == 25
    assert token.last_used_agent == "agent 24"
