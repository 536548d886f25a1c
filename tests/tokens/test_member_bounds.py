"""What an administrator or the operator (the CLI) set on a member's token binds the member
(issue #25, finding 10), in the token service every surface calls: SQLite and PostgreSQL.
The API and console replay is tests/e2e/test_token_attacks.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.errors import Conflict, PermissionDenied
from tallykey.tokens.requests import Renewal, TokenChanges, TokenDraft

from ..conftest import World


def member_token(world: World) -> str:
    issued = world.rt.tokens.issue(world.as_member, TokenDraft(
        name="member's", expires_in_days=30, workspace="sales"))
    return issued.token.id


def refused(world: World, token_id: str, changes: TokenChanges) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as caught:
        world.rt.tokens.update(world.as_member, token_id, changes)
    assert caught.value.details["reason"] == "admin_limit"
    return caught.value


def test_an_operator_suspension_binds_the_member_but_their_own_does_not(
        world: World) -> None:
    tokens, token_id = world.rt.tokens, member_token(world)
    tokens.suspend(Actor.operator(world.acme_id), token_id)  # `tallykey tokens suspend`
    with pytest.raises(PermissionDenied) as caught:
        tokens.resume(world.as_member, token_id)
    assert caught.value.details["reason"] == "admin_suspension"
    assert tokens.get(world.as_member, token_id).suspended_at is not None
    tokens.resume(world.as_admin, token_id)
    tokens.suspend(world.as_member, token_id)
    assert tokens.resume(world.as_member, token_id).suspended_at is None


def test_operator_set_limits_bind_the_member_who_may_only_tighten_them(
        world: World) -> None:
    tokens, token_id = world.rt.tokens, member_token(world)
    tokens.update(Actor.operator(world.acme_id), token_id, TokenChanges(
        rate_limits=[{"name": "default", "limit": 10, "per_seconds": 60,
                      "shared": "owner"}],
        credits={"remaining": 50, "refill": {"amount": 50, "interval": "daily"}}))
    for changes in (
            TokenChanges(rate_limits=[{"name": "default", "limit": 10, "per_seconds": 60}]),
            TokenChanges(rate_limits=[{"name": "default", "limit": 11, "per_seconds": 60,
                                       "shared": "owner"}]),
            TokenChanges(remove_credits=True),
            TokenChanges(credits={"remaining": 51, "refill": {"amount": 50,
                                                              "interval": "daily"}}),
            TokenChanges(credits={"remaining": 5, "refill": {"amount": 51,
                                                             "interval": "daily"}}),
            TokenChanges(credits={"remaining": 5, "refill": {"amount": 50,
                                                             "interval": "monthly"}})):
        refused(world, token_id, changes)
    token = tokens.get(world.as_member, token_id)
    assert token.credits_remaining == 50 and token.credits_refill_interval == "daily"
    # lower, drop the refill, add a limit of one's own: all tightening
    tokens.update(world.as_member, token_id, TokenChanges(
        rate_limits=[{"name": "default", "limit": 3, "per_seconds": 60, "shared": "owner"},
                     {"name": "mine", "limit": 100, "per_seconds": 3600}],
        credits={"remaining": 20, "refill": {"amount": 30, "interval": "daily"}}))
    tokens.update(world.as_member, token_id, TokenChanges(
        credits={"remaining": 20, "refill": None}))
    token = tokens.get(world.as_member, token_id)
    assert token.credits_remaining == 20 and token.credits_refill_amount is None
    assert [r["limit"] for r in token.rate_limits or []] == [3, 100]


def test_a_refill_due_counts_in_the_balance_a_member_may_set(
        world: World, clock: FrozenClock) -> None:
    tokens, token_id = world.rt.tokens, member_token(world)
    tokens.update(world.as_admin, token_id, TokenChanges(
        credits={"remaining": 0, "refill": {"amount": 40, "interval": "daily"}}))
    refused(world, token_id, TokenChanges(credits={"remaining": 1, "refill": {
        "amount": 40, "interval": "daily"}}))
    clock.advance(timedelta(days=1))  # the refill is due: 40 are there to lower
    tokens.update(world.as_member, token_id, TokenChanges(
        credits={"remaining": 40, "refill": {"amount": 40, "interval": "daily"}}))


def test_the_limits_an_admin_set_follow_the_token_to_its_successor(world: World) -> None:
    tokens, token_id = world.rt.tokens, member_token(world)
    tokens.update(world.as_admin, token_id, TokenChanges(
        rate_limits=[{"name": "default", "limit": 5, "per_seconds": 60}],
        credits={"remaining": 7}))
    successor = tokens.renew(world.as_member, token_id,
                             Renewal(expires_in_days=30, grace_seconds=60)).token
    assert successor.credits_remaining == 7
    refused(world, successor.id, TokenChanges(rate_limits=[]))
    refused(world, successor.id, TokenChanges(credits={"remaining": 8}))
    # the renewed token's credits moved: they are changed on the successor
    with pytest.raises(Conflict) as moved:
        tokens.update(world.as_admin, token_id, TokenChanges(credits={"remaining": 100}))
    assert moved.value.details["successor_id"] == successor.id


def test_an_admin_may_lift_what_they_set_and_then_the_member_is_free(world: World) -> None:
    tokens, token_id = world.rt.tokens, member_token(world)
    tokens.update(world.as_admin, token_id, TokenChanges(
        rate_limits=[{"name": "default", "limit": 5, "per_seconds": 60}],
        credits={"remaining": 7}))
    tokens.update(world.as_admin, token_id, TokenChanges(rate_limits=[],
                                                         remove_credits=True))
    tokens.update(world.as_member, token_id, TokenChanges(
        rate_limits=[{"name": "default", "limit": 500, "per_seconds": 60}],
        credits={"remaining": 1000}))
    assert tokens.get(world.as_member, token_id).credits_remaining == 1000
