"""Usage credits through the verifier on a real store: spent exactly under concurrency
(SQLite, PostgreSQL, and PostgreSQL with Redis sharing rate limits), refilled per period,
refused with 429 usage_exhausted at zero."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from sqlalchemy import select

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock, SystemClock
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.models import Token
from tallykey.tokens.requests import TokenChanges, TokenDraft
from tallykey.tokens.schemas import TokenView

from ..conftest import World
from ..pgcluster import postgres_cluster, wait_until
from ..redisserver import RedisServer

IP = "198.51.100.7"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime(2026, 11, 29, 22, 0, tzinfo=UTC))


def make_verifier(rt: Runtime, clock: FrozenClock, **settings: object) -> Verifier:
    return Verifier(settings=rt.settings.model_copy(update=settings), database=rt.database,
                    clock=clock, background=False)


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = make_verifier(rt, clock)
    yield made
    made.close()


def costed(world: World, credits: dict[str, object], **fields: object) -> tuple[str, str]:
    issued = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="costed", expires_in_days=30, credits=credits, **fields))  # type: ignore[arg-type]
    return issued.value, issued.token.id


def remaining(rt: Runtime, token_id: str) -> int | None:
    with rt.database.reading() as session:
        return session.scalar(select(Token.credits_remaining).where(Token.id == token_id))


def test_each_request_spends_its_cost_and_zero_answers_usage_exhausted(
        world: World, verifier: Verifier) -> None:
    token, token_id = costed(world, {"remaining": 5})
    first = verifier.verify(f"Bearer {token}", IP)
    assert first.allowed and first.credits_remaining == 4
    assert verifier.verify(f"Bearer {token}", IP, cost=3).credits_remaining == 1
    refused = verifier.verify(f"Bearer {token}", IP, cost=2)  # 1 left: not enough
    assert refused.status == 429 and refused.error == "usage_exhausted"
    assert refused.reason == "usage_exhausted" and refused.retry_after is None
    assert "Ask an administrator to add credits" in refused.hint
    assert verifier.verify(f"Bearer {token}", IP, cost=0).credits_remaining == 1
    assert verifier.verify(f"Bearer {token}", IP).credits_remaining == 0
    assert verifier.verify(f"Bearer {token}", IP).error == "usage_exhausted"
    assert remaining(world.rt, token_id) == 0


def test_a_refill_sets_the_credits_back_each_period_and_retry_after_names_it(
        world: World, verifier: Verifier, clock: FrozenClock) -> None:
    token, token_id = costed(world, {"remaining": 2,
                                     "refill": {"amount": 3, "interval": "daily"}})
    assert verifier.verify(f"Bearer {token}", IP, cost=2).credits_remaining == 0
    refused = verifier.verify(f"Bearer {token}", IP)
    assert refused.status == 429 and refused.retry_after == 2 * 3600  # 00:00 UTC
    assert refused.details["refill_at"] == "2026-11-30T00:00:00+00:00"
    view = TokenView.of(world.rt.tokens.get(world.as_admin, token_id), clock.now())
    assert view.credits is not None and view.credits.remaining == 0
    assert view.credits.next_refill_at == datetime(2026, 11, 30, tzinfo=UTC)
    clock.advance(timedelta(hours=2, seconds=1))
    view = TokenView.of(world.rt.tokens.get(world.as_admin, token_id), clock.now())
    assert view.credits is not None and view.credits.remaining == 3  # shown refilled
    assert verifier.verify(f"Bearer {token}", IP).credits_remaining == 2
    monthly, _ = costed(world, {"remaining": 0,
                                         "refill": {"amount": 10, "interval": "monthly"}})
    refused = verifier.verify(f"Bearer {monthly}", IP)
    assert refused.details["refill_at"] == "2026-12-01T00:00:00+00:00"
    clock.set(datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC))
    assert verifier.verify(f"Bearer {monthly}", IP).credits_remaining == 9


def test_credits_set_by_patch_reach_every_verdict_and_can_be_removed(
        world: World, verifier: Verifier) -> None:
    token, token_id = costed(world, {"remaining": 0})
    assert verifier.verify(f"Bearer {token}", IP).error == "usage_exhausted"
    world.rt.tokens.update(world.as_admin, token_id, TokenChanges(credits={"remaining": 1}))
    assert verifier.verify(f"Bearer {token}", IP).credits_remaining == 0
    world.rt.tokens.update(world.as_admin, token_id, TokenChanges(remove_credits=True))
    free = verifier.verify(f"Bearer {token}", IP)
    assert free.allowed and free.credits_remaining is None


def hammer(verifiers: list[Verifier], token: str, clients: int, each: int) -> int:
    allowed = [0] * clients

    def client(index: int) -> None:
        node = verifiers[index % len(verifiers)]
        for _ in range(each):
            verdict = node.verify(f"Bearer {token}", IP)
            if verdict.allowed:
                assert verdict.credits_remaining is not None and verdict.credits_remaining >= 0
                allowed[index] += 1
            else:
                assert verdict.error == "usage_exhausted", verdict.message
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sum(allowed)


def test_credits_never_go_below_zero_under_concurrency(
        world: World, rt: Runtime, clock: FrozenClock) -> None:
    """Two nodes, 8 threads, 400 requests for 150 credits: exactly 150 pass."""
    nodes = [make_verifier(rt, clock) for _ in range(2)]
    try:
        token, token_id = costed(world, {"remaining": 150})
        assert hammer(nodes, token, clients=8, each=50) == 150
        assert remaining(rt, token_id) == 0
    finally:
        for node in nodes:
            node.close()


def test_credits_stay_exact_with_redis_sharing_the_rate_limits(
        world: World, rt: Runtime, clock: FrozenClock, redis_server: RedisServer) -> None:
    nodes = [make_verifier(rt, clock, redis_url=redis_server.url) for _ in range(3)]
    try:
        token, token_id = costed(world, {"remaining": 120}, rate_limits=[
            {"name": "default", "limit": 100_000, "per_seconds": 3600}])
        assert hammer(nodes, token, clients=9, each=25) == 120
        assert remaining(rt, token_id) == 0
    finally:
        for node in nodes:
            node.close()


def test_an_async_credit_spend_runs_off_the_event_loop(world: World,
                                                        verifier: Verifier) -> None:
    token, _ = costed(world, {"remaining": 2})

    async def main() -> list[int | None]:
        assert verifier.verify_cached(f"Bearer {token}", IP) is None  # needs the store
        return [(await verifier.averify(f"Bearer {token}", IP, cost=1)).credits_remaining
                for _ in range(2)]
    assert anyio.run(main) == [1, 0]


@pytest.mark.postgres
def test_a_costed_token_answers_503_while_the_store_is_down_then_recovers(
        tmp_path: Path) -> None:
    """A cached plain token keeps verifying during an outage; a costed one cannot be
    spent, so it answers 503 store_unavailable (never a hang), and spends again after."""
    with postgres_cluster() as cluster:
        settings = Settings(database_url=cluster.url, data_dir=tmp_path, region="eu1",
                            propagation_timeout=0.2)
        rt = Runtime.build(settings, SystemClock())
        world = World(rt)
        plain = rt.tokens.issue(world.as_admin, TokenDraft(
            name="plain", expires_in_days=3)).value
        token, _ = costed(world, {"remaining": 10})
        verifier = Verifier(settings=settings, database=rt.database, background=True)
        try:
            assert verifier.verify(f"Bearer {token}", IP).credits_remaining == 9
            assert verifier.verify(f"Bearer {plain}", IP).allowed
            cluster.stop()
            started = time.monotonic()
            refused = verifier.verify(f"Bearer {token}", IP)
            assert time.monotonic() - started < 3
            assert (refused.status, refused.error) == (503, "store_unavailable")
            assert refused.headers()["Retry-After"].isdigit()
            assert verifier.verify(f"Bearer {plain}", IP).allowed
            cluster.start()
            wait_until(lambda: verifier.verify(f"Bearer {token}", IP).allowed, timeout=10)
        finally:
            verifier.close()
            rt.close()
