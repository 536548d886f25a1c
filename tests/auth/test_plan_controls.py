"""A plan's controls through the verifier on a real store (SPEC §16): its credit refill
gives each token its own allowance per period, spent exactly under concurrency on several
nodes; a lowered amount applies at once, a raised one from the next period; a changed
rate limit is exact across nodes sharing Redis as soon as the change is applied (no node
spends allowances leased under the old limit); the scopes ceiling applies at
verification, also through an identity's plan."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.identities.service import IdentityDraft
from tallykey.plans.service import PlanChanges, PlanDraft
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


def plan(world: World, name: str = "pro", **fields: object) -> str:
    return world.rt.plans.create(world.as_admin, PlanDraft(name=name, **fields)).id  # type: ignore[arg-type]


def token_on(world: World, plan_id: str | None, **fields: object) -> str:
    return world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="on a plan", kind="application", scopes=["employees:read"],
        expires_in_days=30, plan_id=plan_id, **fields)).value  # type: ignore[arg-type]


def hammer(verifiers: list[Verifier], tokens: list[str], clients: int, each: int,
           refusal: str) -> int:
    allowed = [0] * clients

    def client(index: int) -> None:
        node, token = verifiers[index % len(verifiers)], tokens[index % len(tokens)]
        for _ in range(each):
            verdict = node.verify(f"Bearer {token}", IP)
            if verdict.allowed:
                allowed[index] += 1
            else:
                assert verdict.reason == refusal, verdict.message
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return sum(allowed)


def test_each_token_of_the_plan_spends_its_own_allowance_exactly_on_two_nodes(
        world: World, rt: Runtime, clock: FrozenClock) -> None:
    nodes = [make_verifier(rt, clock) for _ in range(2)]
    try:
        plan_id = plan(world, refill={"amount": 40, "interval": "daily"})
        tokens = [token_on(world, plan_id) for _ in range(3)]
        assert hammer(nodes, tokens, clients=9, each=30, refusal="usage_exhausted") == 120
    finally:
        for node in nodes:
            node.close()


def test_the_allowance_refills_each_period_and_follows_the_plans_amount(
        world: World, rt: Runtime, verifier: Verifier, clock: FrozenClock) -> None:
    plan_id = plan(world, refill={"amount": 3, "interval": "daily"})
    token = f"Bearer {token_on(world, plan_id)}"
    assert [verifier.verify(token, IP).credits_remaining for _ in range(3)] == [2, 1, 0]
    refused = verifier.verify(token, IP)
    assert refused.reason == "usage_exhausted" and refused.retry_after == 2 * 3600
    assert refused.details["plan_id"] == plan_id
    clock.advance(timedelta(hours=2, seconds=1))  # a new day: the full amount again
    assert verifier.verify(token, IP).credits_remaining == 2
    rt.plans.update(world.as_admin, plan_id, PlanChanges(
        refill={"amount": 10, "interval": "daily"}))
    verifier.sync()
    assert verifier.verify(token, IP).credits_remaining == 1  # raised: from the next day
    rt.plans.update(world.as_admin, plan_id, PlanChanges(
        refill={"amount": 1, "interval": "daily"}))
    verifier.sync()
    assert verifier.verify(token, IP).credits_remaining == 0  # lowered: at once
    clock.advance(timedelta(days=1))
    rt.plans.update(world.as_admin, plan_id, PlanChanges(
        refill={"amount": 10, "interval": "daily"}))
    verifier.sync()
    assert verifier.verify(token, IP).credits_remaining == 9
    rt.plans.update(world.as_admin, plan_id, PlanChanges(remove_refill=True))
    verifier.sync()
    free = verifier.verify(token, IP)
    assert free.allowed and free.credits_remaining is None


def test_a_changed_plan_limit_is_exact_across_nodes_sharing_redis(
        world: World, rt: Runtime, clock: FrozenClock, redis_server: RedisServer) -> None:
    nodes = [make_verifier(rt, clock, redis_url=redis_server.url) for _ in range(3)]
    try:
        plan_id = plan(world, rate_limits=[{"limit": 100, "per_seconds": 3600}])
        token = token_on(world, plan_id)
        for node in nodes:  # each node leases a block under the old limit
            for _ in range(2):
                assert node.verify(f"Bearer {token}", IP).allowed
        rt.plans.update(world.as_admin, plan_id, PlanChanges(
            rate_limits=[{"limit": 5, "per_seconds": 3600}]))
        for node in nodes:
            node.sync()
        assert hammer(nodes, [token], clients=6, each=5, refusal="rate_limited") == 5
    finally:
        for node in nodes:
            node.close()


def test_the_ceiling_applies_at_verification_through_the_identity(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    from tallykey.identities.service import IdentityChanges

    plan_id = plan(world, scopes=["employees:read"])
    identity = rt.identities.create(world.as_admin, IdentityDraft(external_id="c1"))
    bearer = "Bearer " + rt.tokens.issue(world.as_admin, TokenDraft(
        name="wide", kind="application", scopes=["employees:read", "employees:write"],
        expires_in_days=30, identity_id=identity.id)).value
    assert verifier.verify(bearer, IP, required_scopes=["employees:write"]).allowed
    rt.identities.update(world.as_admin, identity.id, IdentityChanges(plan_id=plan_id))
    verifier.sync()
    refused = verifier.verify(bearer, IP, required_scopes=["employees:write"])
    assert refused.reason == "insufficient_scope"
    allowed = verifier.verify(bearer, IP, required_scopes=["employees:read"])
    assert allowed.allowed and allowed.scopes == frozenset({"employees:read"})


def test_a_renewal_stays_on_the_plan_and_keeps_the_periods_balance(
        world: World, rt: Runtime, verifier: Verifier) -> None:
    from tallykey.tokens.requests import Renewal

    plan_id = plan(world, refill={"amount": 3, "interval": "daily"})
    issued = rt.tokens.issue(world.as_admin, TokenDraft(
        name="renewed", kind="application", scopes=["employees:read"], expires_in_days=30,
        plan_id=plan_id))
    assert verifier.verify(f"Bearer {issued.value}", IP).credits_remaining == 2
    renewed = rt.tokens.renew(world.as_admin, issued.token.id, Renewal(
        expires_in_days=30, grace_seconds=3600))
    assert renewed.token.plan_id == plan_id
    verifier.sync()
    assert verifier.verify(f"Bearer {renewed.value}", IP).credits_remaining == 1
    assert verifier.verify(f"Bearer {issued.value}", IP).credits_remaining == 0  # one balance
    assert verifier.verify(f"Bearer {renewed.value}", IP).reason == "usage_exhausted"
