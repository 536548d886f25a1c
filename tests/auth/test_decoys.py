"""Decoy tokens (SPEC §17) answer exactly as an unknown token does — status, body byte
for byte, headers (but `Date`) — on `POST /api/v1/verify`, `/auth/request` and the
embedded middleware, from the store and from the cache alike; they never grant, are in no
usage count nor verification metric, and each use is counted as a trip."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tallykey import TallykeyMiddleware, Verifier
from tallykey.errors import PermissionDenied, ValidationFailed
from tallykey.monitor import metrics
from tallykey.monitor.models import DecoyTrip, TokenUsage
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens import format as token_format
from tallykey.tokens.models import DECOY, Token
from tallykey.tokens.requests import TokenChanges, TokenDraft

from ..conftest import World

AGENT = "curl/8.4.0"


@pytest.fixture
def verifier(settings: Settings, rt: Runtime) -> Iterator[Verifier]:
    made = Verifier(settings=settings, database=rt.database, clock=rt.clock,
                    background=False)
    yield made
    made.close()


def plant(world: World, **fields: Any) -> tuple[str, Token]:
    issued = world.rt.tokens.issue(world.as_admin, TokenDraft(
        name="Backup key (decoy)", kind=DECOY, expires_in_days=90,
        scopes=["employees:read"], **fields))
    return issued.value, issued.token


def unknown_token() -> str:
    """Well formed, right region and checksum, never issued."""
    return str(token_format.generate("eu1"))


def shown(response: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    headers = sorted((k.lower(), v) for k, v in response.headers.items()
                     if k.lower() != "date")
    return response.status_code, response.content, headers


def verification_counts() -> dict[str, float]:
    counts = {}
    for family in metrics.REGISTRY.collect():
        if family.name in ("tallykey_verifications", "tallykey_decoy_trips",
                           "tallykey_verification_cache_misses"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[f"{sample.name}{sorted(sample.labels.items())}"] = sample.value
    return counts


def test_a_decoy_is_issued_like_any_token_by_admins_only(world: World) -> None:
    value, token = plant(world)
    assert token.kind == DECOY and token.prefix.startswith("tlk_eu1_")
    assert token_format.parse(value).public_id == token.public_id  # same format
    with pytest.raises(PermissionDenied):
        world.rt.tokens.issue(world.as_member, TokenDraft(name="d", kind=DECOY,
                                                          expires_in_days=7))
    with pytest.raises(ValidationFailed) as refused:
        plant(world, credits={"remaining": 10})
    assert refused.value.details["field"] == "credits"


def test_verify_and_auth_request_answer_a_decoy_as_an_unknown_token(
        world: World, rt: Runtime) -> None:
    decoy, token = plant(world)
    unknown = unknown_token()
    with TestClient(create_app(rt), client=("203.0.113.9", 50000)) as client:
        before = verification_counts()
        for _ in range(3):  # the first from the store, then from the cache
            answers = []
            for secret in (decoy, unknown):
                answers.append((
                    shown(client.post("/api/v1/verify", json={"token": secret},
                                      headers={"User-Agent": AGENT})),
                    shown(client.get("/auth/request?scope=employees:read", headers={
                        "Authorization": f"Bearer {secret}", "User-Agent": AGENT,
                        "X-Original-URI": "/payroll/export"})),
                    shown(client.get("/auth/request", headers={
                        "Authorization": f"Basic {secret}"})),
                    shown(client.get("/api/v1/tokens", headers={
                        "Authorization": f"Bearer {secret}"}))))
            assert answers[0] == answers[1]
            verify_answer = answers[0][0]
            assert verify_answer[0] == 200 and b'"reason":"unknown"' in verify_answer[1]
            assert answers[0][1][0] == 401
        client.get("/metrics")  # publishes this node's counts
        after = verification_counts()
    changed = {key: (before.get(key, 0), value) for key, value in after.items()
               if value != before.get(key, 0)}
    # Only the unknown token's refusals, the cache's loads and the decoy's trips moved.
    unknown_key = "tallykey_verifications_total[('outcome', 'unknown')]"
    assert changed[unknown_key][1] - changed[unknown_key][0] == 12  # the unknown's alone
    assert changed["tallykey_decoy_trips_total[]"][1] - \
        changed["tallykey_decoy_trips_total[]"][0] == 12
    assert set(changed) <= {unknown_key, "tallykey_decoy_trips_total[]",
                            "tallykey_verification_cache_misses_total[]"}
    with rt.database.reading() as session:
        assert session.scalar(select(func.count()).select_from(TokenUsage).where(
            TokenUsage.token_id == token.id)) == 0
        stored = session.get_one(Token, token.id)
        assert stored.last_used_at is None
        trips = list(session.scalars(select(DecoyTrip).where(DecoyTrip.token_id == token.id)))
    assert sum(trip.count for trip in trips) == 12
    assert {trip.path for trip in trips} <= {"/api/v1/verify", "/payroll/export",
                                             "/auth/request", "/api/v1/tokens"}


def test_the_middleware_answers_a_decoy_as_an_unknown_token(world: World,
                                                            verifier: Verifier) -> None:
    decoy, token = plant(world)
    unknown = unknown_token()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"granted"})

    client = TestClient(TallykeyMiddleware(app, verifier=verifier,
                                           required_scopes=["employees:read"]))
    for _ in range(3):
        for scheme in ("Bearer", "Basic", "bearer"):
            by_decoy = client.get("/orders/17", headers={
                "Authorization": f"{scheme} {decoy}", "User-Agent": AGENT})
            by_unknown = client.get("/orders/17", headers={
                "Authorization": f"{scheme} {unknown}", "User-Agent": AGENT})
            assert shown(by_decoy) == shown(by_unknown)
            assert by_decoy.status_code == 401 and b"granted" not in by_decoy.content
    assert verifier.decoy_trips == 9
    verifier.flush_usage()
    with world.rt.database.reading() as session:
        trip = session.scalars(select(DecoyTrip).where(DecoyTrip.token_id == token.id)).one()
    assert (trip.count, trip.ip, trip.user_agent, trip.path) == (9, "testclient", AGENT,
                                                                 "/orders/17")


def test_a_revoked_decoy_still_answers_as_unknown_and_trips_nothing(
        world: World, verifier: Verifier) -> None:
    decoy, token = plant(world)
    world.rt.tokens.revoke(world.as_admin, token.id)
    verdict = verifier.verify(f"Bearer {decoy}", "203.0.113.9")
    unknown = verifier.verify(f"Bearer {unknown_token()}", "203.0.113.9")
    assert verdict == unknown and verdict.reason == "unknown"
    assert verifier.decoy_trips == 0


def test_a_decoy_takes_no_rate_limits_or_credits_later_either(world: World) -> None:
    _, token = plant(world)
    with pytest.raises(ValidationFailed):
        world.rt.tokens.update(world.as_admin, token.id, TokenChanges(
            rate_limits=[{"name": "default", "limit": 10, "per_seconds": 60}]))
    with pytest.raises(ValidationFailed):
        world.rt.tokens.update(world.as_admin, token.id, TokenChanges(
            credits={"remaining": 5}))
    renamed = world.rt.tokens.update(world.as_admin, token.id,
                                     TokenChanges(name="CI deploy key"))
    assert renamed.name == "CI deploy key"


def test_a_decoy_costs_what_an_unknown_token_costs_and_writes_only_at_flush(
        world: World, verifier: Verifier) -> None:
    decoy, token = plant(world)
    costs = {}
    for name, secret in (("decoy", decoy), ("unknown", unknown_token())):
        loads, slow = verifier.loads, verifier.slow_calls
        for _ in range(10):  # one store load, then the cache, never the cache-hit path
            assert verifier.verify(f"Bearer {secret}", "203.0.113.9").reason == "unknown"
        costs[name] = (verifier.loads - loads, verifier.slow_calls - slow)
    assert costs["decoy"] == costs["unknown"] == (1, 10)
    with world.rt.database.reading() as session:  # nothing written on the request path
        assert session.scalar(select(func.count()).select_from(DecoyTrip)) == 0
    verifier.flush_usage()
    with world.rt.database.reading() as session:
        trip = session.scalars(select(DecoyTrip).where(DecoyTrip.token_id == token.id)).one()
    assert trip.count == 10
