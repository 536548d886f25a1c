"""A renewal moves a token's credits to its successor (issue #25, finding 11): the old
secret, in its grace period, and the successor's spend one balance. On PostgreSQL a spend
can be waiting on the token's row while the renewal commits: it must then spend from the
successor, never from the renewed token's left-over copy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from tallykey.auth.verdict import Verdict
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.runtime import Runtime
from tallykey.tokens.models import Token
from tallykey.tokens.requests import Renewal, TokenDraft

from ..conftest import World, _truncate_all
from ..pgcluster import wait_until

IP = "198.51.100.7"


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """PostgreSQL only: SQLite runs a spend under one write lock, so nothing can commit
    between its read of the chain and its write (the renewal tests in tests/e2e cover it)."""
    url: str = request.getfixturevalue("postgres_url")
    _truncate_all(url)
    yield url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 29, 22, 0, tzinfo=UTC))


def waiting_on_locks(rt: Runtime) -> int:
    """Backends of this database waiting on a lock (asked on a connection of its own: the
    activity view is a snapshot per transaction)."""
    connection = rt.database.raw_connection(autocommit=True)
    try:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()").fetchone()
        return int(row[0])
    finally:
        connection.close()


def credits_of(rt: Runtime, token_id: str) -> int | None:
    with rt.database.reading() as session:
        return session.scalar(select(Token.credits_remaining).where(Token.id == token_id))


def test_a_spend_waiting_while_the_renewal_commits_spends_from_the_successor(
        world: World, rt: Runtime, clock: FrozenClock) -> None:
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="metered", kind="application", scopes=["employees:read"], expires_in_days=30,
        credits={"remaining": 5}))
    verifier = Verifier(settings=rt.settings, database=rt.database, clock=clock,
                        background=False)
    try:
        assert verifier.verify(f"Bearer {issued.value}", IP).credits_remaining == 4
        answers: list[Verdict] = []
        renewed: list[str] = []
        with rt.database.transaction() as blocker:  # holds the token's row
            blocker.execute(select(Token.id).where(Token.id == issued.token.id)
                            .with_for_update())
            renewal = threading.Thread(target=lambda: renewed.append(rt.tokens.renew(
                world.as_admin, issued.token.id,
                Renewal(expires_in_days=30, grace_seconds=3600)).token.id))
            renewal.start()  # first in the row's queue
            wait_until(lambda: waiting_on_locks(rt) >= 1, 10)
            spend = threading.Thread(target=lambda: answers.append(
                verifier.verify(f"Bearer {issued.value}", IP)))
            spend.start()  # second: it read the chain before the renewal commits
            wait_until(lambda: waiting_on_locks(rt) >= 2, 10)
        renewal.join(10)
        spend.join(10)
        assert renewed and answers
        assert answers[0].allowed and answers[0].credits_remaining == 3
        assert credits_of(rt, renewed[0]) == 3  # the successor's balance paid for it
        successor = rt.tokens.get(world.as_admin, renewed[0])
        assert successor.renewed_from_id == issued.token.id
        with rt.database.reading() as session:
            assert session.scalar(select(func.count()).select_from(Token).where(
                Token.renewed_from_id == issued.token.id)) == 1
    finally:
        verifier.close()
