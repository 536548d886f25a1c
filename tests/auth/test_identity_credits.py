"""An identity's credit pool through the verifier on a real store (SPEC §16): the tokens
of one identity spend one pool exactly under concurrency on several nodes (SQLite,
PostgreSQL, and PostgreSQL with Redis sharing the identity's rate limit), refilled per
period; a token's own credits apply beside the pool, and a refusal by them spends
nothing of it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.identities.models import Identity
from tallykey.identities.service import IdentityChanges, IdentityDraft
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
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


def pool(world: World, **fields: object) -> str:
    return world.rt.identities.create(world.as_admin, IdentityDraft(
        external_id=f"cust_{len(world.rt.identities.list_identities(world.as_admin))}",
        **fields)).id  # type: ignore[arg-type]


def token_of(world: World, identity_id: str, **fields: object) -> str:
    return world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="of an identity", kind="application", scopes=["employees:read"],
        expires_in_days=30, identity_id=identity_id, **fields)).value  # type: ignore[arg-type]


def left(rt: Runtime, identity_id: str) -> int | None:
    with rt.database.reading() as session:
        return session.scalar(select(Identity.credits_remaining)
                              .where(Identity.id == identity_id))


def hammer(verifiers: list[Verifier], tokens: list[str], clients: int, each: int) -> int:
    allowed = [0] * clients

    def client(index: int) -> None:
        node, token = verifiers[index % len(verifiers)], tokens[index % len(tokens)]
        for _ in range(each):
            verdict = node.verify(f"Bearer {token}", IP)
            if verdict.allowed:
                assert verdict.identity_credits_remaining is not None
                assert verdict.identity_credits_remaining >= 0
                allowed[index] += 1
            else:
                assert verdict.reason == "usage_exhausted", verdict.message
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sum(allowed)


def test_tokens_of_one_identity_spend_one_pool_exactly_on_two_nodes(
        world: World, rt: Runtime, clock: FrozenClock) -> None:
    nodes = [make_verifier(rt, clock) for _ in range(2)]
    try:
        identity = pool(world, credits={"remaining": 150})
        tokens = [token_of(world, identity) for _ in range(3)]
        assert hammer(nodes, tokens, clients=9, each=40) == 150
        assert left(rt, identity) == 0
    finally:
        for node in nodes:
            node.close()


def test_the_pool_stays_exact_with_redis_sharing_the_identity_rate_limit(
        world: World, rt: Runtime, clock: FrozenClock, redis_server: RedisServer) -> None:
    nodes = [make_verifier(rt, clock, redis_url=redis_server.url) for _ in range(3)]
    try:
        identity = pool(world, credits={"remaining": 120}, rate_limits=[
            {"name": "default", "limit": 100_000, "per_seconds": 3600}])
        tokens = [token_of(world, identity) for _ in range(2)]
        assert hammer(nodes, tokens, clients=9, each=25) == 120
        assert left(rt, identity) == 0
    finally:
        for node in nodes:
            node.close()


def test_the_pool_refills_each_period(world: World, verifier: Verifier,
                                      clock: FrozenClock) -> None:
    identity = pool(world, credits={"remaining": 1,
                                    "refill": {"amount": 3, "interval": "daily"}})
    token = token_of(world, identity)
    assert verifier.verify(f"Bearer {token}", IP).identity_credits_remaining == 0
    refused = verifier.verify(f"Bearer {token}", IP)
    assert refused.status == 429 and refused.retry_after == 2 * 3600  # 00:00 UTC
    assert refused.details["identity_id"] == identity
    clock.advance(timedelta(hours=2, seconds=1))
    assert verifier.verify(f"Bearer {token}", IP).identity_credits_remaining == 2


def test_own_credits_apply_beside_the_pool_and_give_back_what_they_refuse(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    identity = pool(world, credits={"remaining": 10})
    small = token_of(world, identity, credits={"remaining": 1})
    other = token_of(world, identity)
    first = verifier.verify(f"Bearer {small}", IP)
    assert first.allowed and first.credits_remaining == 0
    assert first.identity_credits_remaining == 9
    assert verifier.verify(f"Bearer {small}", IP).reason == "usage_exhausted"
    assert left(rt, identity) == 9  # the token's refusal spent nothing of the pool
    assert verifier.verify(f"Bearer {other}", IP).identity_credits_remaining == 8


def test_a_pool_removed_by_patch_stops_costing_its_tokens(
        world: World, verifier: Verifier) -> None:
    identity = pool(world, credits={"remaining": 0})
    token = token_of(world, identity)
    assert verifier.verify(f"Bearer {token}", IP).reason == "usage_exhausted"
    world.rt.identities.update(world.as_admin, identity, IdentityChanges(remove_credits=True))
    free = verifier.verify(f"Bearer {token}", IP)
    assert free.allowed and free.identity_credits_remaining is None
    assert free.identity is not None and free.identity["id"] == identity
