"""The verification cache's bound (TALLYKEY_CACHE_MAX_TOKENS) and the cost of a miss.

Filling the cache past its bound evicts (FIFO, O(1)) rather than grows; an evicted token
still verifies, through a miss, and eviction never lets a revoked token pass. A miss is
one statement on the store: on PostgreSQL one round trip of a statement prepared once
(no BEGIN, COMMIT or ROLLBACK, no re-parse), checked on the wire with libpq's trace, whose
generic plan is never planned again (`pg_prepared_statements`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import pq
from sqlalchemy import text

from tallykey.auth.cache import VerificationCache
from tallykey.auth.record import TokenRecord
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.identities.service import IdentityDraft
from tallykey.monitor import metrics
from tallykey.plans.service import PlanDraft
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.format import parse
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "198.51.100.7"


@pytest.fixture
def bounded(world: World, settings: Settings, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=settings.model_copy(update={"cache_max_tokens": 3}),
                    database=world.rt.database, clock=clock, background=False)
    yield made
    made.close()


def issue(world: World, count: int) -> list[tuple[str, str]]:
    """`count` tokens: (id, value) each."""
    issued = [world.rt.tokens.issue(world.as_admin, TokenDraft(name=f"t{n}",
                                                               expires_in_days=9))
              for n in range(count)]
    return [(made.token.id, made.value) for made in issued]


def test_the_setting_bounds_the_cache_and_evicted_tokens_verify_through_a_miss(
        world: World, bounded: Verifier) -> None:
    assert Settings().cache_max_tokens == 100_000
    assert bounded.cache.size == 3
    tokens = issue(world, 8)
    for _, value in tokens:
        assert bounded.verify(f"Bearer {value}", IP).allowed
        assert len(bounded.cache) <= 3
    assert len(bounded.cache) == 3 and bounded.cache.evictions == 5
    loads = bounded.loads
    first = tokens[0][1]
    assert bounded.verify(f"Bearer {first}", IP).allowed  # evicted: loaded again
    assert bounded.loads == loads + 1 and len(bounded.cache) == 3
    assert bounded.verify(f"Bearer {first}", IP).allowed  # now a hit
    assert bounded.loads == loads + 1
    published = _evictions_metric()
    bounded.publish_metrics()
    assert _evictions_metric() == published + bounded.cache.evictions


def test_eviction_never_lets_a_revoked_token_pass(world: World, bounded: Verifier,
                                                 settings: Settings,
                                                 clock: FrozenClock) -> None:
    tokens = issue(world, 6)
    for _, value in tokens:
        assert bounded.verify(f"Bearer {value}", IP).allowed
    (evicted_id, evicted), (cached_id, cached) = tokens[0], tokens[-1]
    other_node = Runtime.build(settings, clock)  # revoked elsewhere: only the feed says
    try:
        other_node.tokens.revoke(world.as_admin, evicted_id)
        other_node.tokens.revoke(world.as_admin, cached_id)
    finally:
        other_node.close()
    assert bounded.sync() >= 2
    for value in (evicted, cached):
        verdict = bounded.verify(f"Bearer {value}", IP)
        assert verdict.status == 401 and verdict.reason == "revoked"
    for _, value in tokens:  # churn the cache: the revoked ones stay refused
        bounded.verify(f"Bearer {value}", IP)
    for value in (evicted, cached):
        assert bounded.verify(f"Bearer {value}", IP).reason == "revoked"
    assert len(bounded.cache) <= 3


def _evictions_metric() -> float:
    value = metrics.REGISTRY.get_sample_value("tallykey_verification_cache_evictions_total")
    return value or 0.0


def _record(token_id: str) -> TokenRecord:
    return TokenRecord(token_id=token_id, account_id="a", account_slug="acme",
                       kind="personal", workspace_id=None,
                       expires_at=datetime.now(UTC) + timedelta(days=1), revoked_at=None,
                       secret_retires_at=None, token_networks=(), account_networks=(),
                       scopes=frozenset(), token_scopes=frozenset(), workspaces={},
                       owner_id=None, owner_email=None, owner_active=True)


def test_the_bound_holds_through_churn_and_evictions_by_token() -> None:
    """Loads, evictions by token (a revocation's) and a second secret of one token,
    thousands of times: the cache never holds more than its bound, its key queue stays
    within twice it, and every token's keys are exactly its cached entries."""
    cache = VerificationCache(size=50)
    for n in range(5_000):
        token = f"t{n % 120}"
        cache.put(f"{token}-{n % 240 >= 120}".encode(), _record(token), cache.generation)
        if n % 7 == 0:
            cache.evict_token(f"t{(n * 13) % 120}")
        assert len(cache) <= 50
        assert len(cache._order) <= 2 * 50 + 64
    cached = {key: entry[1].token_id for key, entry in cache._positive.items()}
    by_token = {key: token for token, keys in cache._by_token.items()
                for key in ((keys,) if isinstance(keys, bytes) else keys)}
    assert by_token == cached
    assert cache.evictions > 0
    cache.clear()
    assert len(cache) == 0 and not cache._order and not cache._by_token


def _miss(verifier: Verifier, value: str) -> None:
    verifier.cache.clear()
    assert verifier.verify(f"Bearer {value}", IP).allowed


def test_a_miss_is_one_statement_without_transaction_round_trips(
        world: World, verifier_for_trace: Verifier, tmp_path: Path) -> None:
    tokens = issue(world, 4)
    verifier = verifier_for_trace
    _miss(verifier, tokens[0][1])  # opens the lookup connection (and prepares)
    connections = [connection for connection, _ in verifier.lookup._idle.queue]
    assert len(connections) == 1
    connection = connections[0]
    misses = [value for _, value in tokens[1:]]
    if verifier.database.dialect == "sqlite":
        statements: list[str] = []
        assert isinstance(connection, sqlite3.Connection)
        connection.set_trace_callback(statements.append)
        try:
            for value in misses:
                _miss(verifier, value)
        finally:
            connection.set_trace_callback(None)
        assert len(statements) == len(misses)
        assert all(s.lstrip().upper().startswith("SELECT") for s in statements)
        return
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as sink:
        connection.pgconn.trace(sink.fileno())
        connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            for value in misses:
                _miss(verifier, value)
        finally:
            connection.pgconn.untrace()
    sent = [line.split("\t")[2].strip() for line in trace.read_text().splitlines()
            if line.startswith("F\t")]
    # Bind, Describe, Execute, Sync per miss: one round trip (one Sync), nothing else:
    # no Parse (prepared once), no simple Query (BEGIN/COMMIT/ROLLBACK, SET).
    assert sent.count("Sync") == len(misses), sent
    assert sent.count("Bind") == len(misses), sent
    assert "Parse" not in sent and "Query" not in sent, sent
    # ... and its plan is the generic one made once: never planned again per miss.
    generic, custom = connection.execute(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
        " WHERE statement LIKE '%FROM token_secrets s%'").fetchone()
    assert custom == 0 and generic >= len(misses) + 1


@pytest.fixture
def verifier_for_trace(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock,
                    background=False)
    yield made
    made.close()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_behind_a_transaction_pooler_a_miss_is_still_one_round_trip(
        world: World, settings: Settings, clock: FrozenClock, tmp_path: Path) -> None:
    """With TALLYKEY_DB_POOLER=transaction nothing is prepared (PgBouncer may hand the
    next statement to another server connection): Parse, Bind, Execute, Sync go out
    together, one round trip per miss."""
    tokens = issue(world, 3)
    verifier = Verifier(settings=settings.model_copy(update={"db_pooler": "transaction"}),
                        clock=clock, background=False)
    try:
        assert verifier.database.pooled
        _miss(verifier, tokens[0][1])
        connection = next(iter(verifier.lookup._idle.queue))[0]
        trace = tmp_path / "libpq.trace"
        with trace.open("w") as sink:
            connection.pgconn.trace(sink.fileno())
            connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                for _, value in tokens[1:]:
                    _miss(verifier, value)
            finally:
                connection.pgconn.untrace()
    finally:
        verifier.close()
    sent = [line.split("\t")[2].strip() for line in trace.read_text().splitlines()
            if line.startswith("F\t")]
    assert sent.count("Sync") == sent.count("Parse") == 2 and "Query" not in sent, sent


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_generic_plan_finds_the_identity_and_the_plan_by_their_primary_keys(
        world: World, verifier_for_trace: Verifier) -> None:
    """Made while the tables are empty (a new store's first miss), the plan must not
    reach identities or plans through their account index: after a bulk load of
    identities, each miss would read every identity of the account until autoanalyze
    had the statement planned again."""
    verifier = verifier_for_trace
    _miss(verifier, issue(world, 1)[0][1])  # prepared, with the generic plan
    connection = next(iter(verifier.lookup._idle.queue))[0]
    name = connection.execute("SELECT name FROM pg_prepared_statements"
                              " WHERE statement LIKE '%FROM token_secrets s%'").fetchone()[0]
    plan = "\n".join(row[0] for row in connection.execute(
        f"EXPLAIN EXECUTE {name}('nothing')"))
    assert "Index Scan using pk_identities on identities i" in plan, plan
    assert "Index Scan using pk_plans on plans p" in plan, plan
    assert "ix_identities_account_id" not in plan and "ix_plans_account_id" not in plan


def test_another_accounts_identity_and_plan_never_apply_to_a_token(
        world: World, verifier_for_trace: Verifier) -> None:
    """The services never attach them (404); should a row say so anyway, the miss
    leaves them out, as the join on the account once did."""
    rt = world.rt
    plan = rt.plans.create(world.as_other_admin, PlanDraft(
        name="other", rate_limits=[{"name": "burst", "limit": 1, "per_seconds": 60}]))
    identity = rt.identities.create(world.as_other_admin, IdentityDraft(
        external_id="other-customer", credits={"remaining": 0}, plan_id=plan.id))
    [(token_id, value)] = issue(world, 1)
    with rt.database.transaction() as session:
        session.execute(text("UPDATE tokens SET identity_id = :identity WHERE id = :id"),
                        {"identity": identity.id, "id": token_id})
    for _ in range(3):  # no credits of 0, no limit of 1 per minute: neither is its
        verdict = verifier_for_trace.verify(f"Bearer {value}", IP)
        assert verdict.allowed, verdict.reason
    record = verifier_for_trace.lookup.load(parse(value).secret_hash)
    assert record is not None
    assert record.identity is None and record.identity_id is None
    assert record.plan_id is None and record.rate_rules == ()
    with rt.database.transaction() as session:
        session.execute(text("UPDATE tokens SET identity_id = NULL, plan_id = :plan"
                             " WHERE id = :id"), {"plan": plan.id, "id": token_id})
    again = verifier_for_trace.lookup.load(parse(value).secret_hash)
    assert again is not None and again.plan_id is None and again.rate_rules == ()
