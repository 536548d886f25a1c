"""The verifier under faults (SPEC §10): its cache is a lease, a store outage is an
outage of writes and never of cached verification, misses answer 503 fast and recover
without a restart, and time comes from the database, not from this machine's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock, SystemClock
from tallykey.feed.clock import DatabaseClock
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World, _truncate_all
from ..pgcluster import postgres_cluster, wait_until

IP = "198.51.100.7"


class ShiftedClock:
    """This machine's clock, `seconds` off."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.seconds)

    def timestamp(self) -> float:
        return time.time() + self.seconds


def _issue(rt: Runtime, world: World, days: int = 30) -> str:
    return rt.tokens.issue(world.as_admin, TokenDraft(name="t", expires_in_days=days)).value


def test_the_cache_is_a_lease(settings: Settings, tmp_path: Path) -> None:
    """A node that did not read the feed for longer than the lease (paused, slow) reads
    it before answering from its cache; within the lease the cache answers alone."""
    settings = settings.model_copy(update={"propagation_timeout": 0.3})
    node = Runtime.build(settings, SystemClock())  # this node's store handle
    other = Runtime.build(settings, SystemClock())  # another node's: no local hook
    world = World(other)
    verifier = Verifier(settings=settings, database=node.database, background=False)
    try:
        token = _issue(other, world)
        assert verifier.verify(f"Bearer {token}", IP).allowed
        token_id = verifier.verify(f"Bearer {token}", IP).token_id
        assert token_id is not None
        other.tokens.revoke(world.as_admin, token_id)
        if verifier.follower.fresh():  # the feed was read moments ago: the lease holds
            assert verifier.verify_cached(f"Bearer {token}", IP) is not None
        wait_until(lambda: not verifier.follower.fresh(), timeout=2)
        assert verifier.verify_cached(f"Bearer {token}", IP) is None, \
            "past the lease the hot path must not answer"
        refused = verifier.verify(f"Bearer {token}", IP)
        assert refused.status == 401 and refused.error == "invalid_token"
        assert "revoked" in refused.message
    finally:
        verifier.close()
        node.close()
        other.close()


@pytest.mark.postgres
def test_store_outage_cached_tokens_verify_misses_503_then_recover(tmp_path: Path) -> None:
    with postgres_cluster() as cluster:
        settings = Settings(database_url=cluster.url, data_dir=tmp_path, region="eu1",
                            propagation_timeout=0.2, stale_if_error=1.5)
        rt = Runtime.build(settings, SystemClock())
        world = World(rt)
        cached, uncached = _issue(rt, world), _issue(rt, world)
        verifier = Verifier(settings=settings, database=rt.database, background=True)
        try:
            assert verifier.verify(f"Bearer {cached}", IP).allowed
            cluster.stop()
            # well past the cache TTL would not matter: the lease, then stale-if-error rule
            assert verifier.verify(f"Bearer {cached}", IP).allowed
            slowest = 0.0
            for _ in range(20):  # more misses than the lookup pool has connections
                started = time.monotonic()
                refused = verifier.verify(f"Bearer {uncached}", IP)
                slowest = max(slowest, time.monotonic() - started)
                assert (refused.status, refused.error) == (503, "store_unavailable")
                assert refused.headers()["Retry-After"].isdigit()
                assert "WWW-Authenticate" not in refused.headers()
            assert slowest < 2.0, f"a miss during the outage took {slowest:.2f} s"
            wait_until(lambda: verifier.verify(f"Bearer {cached}", IP).status == 503,
                       timeout=5)  # TALLYKEY_STALE_IF_ERROR ran out
            cluster.start()
            recovered = wait_until(
                lambda: verifier.verify(f"Bearer {uncached}", IP).allowed, timeout=10)
            assert recovered < 3.0, f"recovery took {recovered:.2f} s"
            assert verifier.verify(f"Bearer {cached}", IP).allowed
        finally:
            verifier.close()
            rt.close()


@pytest.mark.postgres
def test_stale_if_error_zero_refuses_at_once(tmp_path: Path) -> None:
    with postgres_cluster() as cluster:
        settings = Settings(database_url=cluster.url, data_dir=tmp_path, region="eu1",
                            propagation_timeout=0.2, stale_if_error=0)
        rt = Runtime.build(settings, SystemClock())
        world = World(rt)
        token = _issue(rt, world)
        verifier = Verifier(settings=settings, database=rt.database, background=False)
        try:
            assert verifier.verify(f"Bearer {token}", IP).allowed
            cluster.stop()
            wait_until(lambda: not verifier.follower.fresh(), timeout=2)
            assert verifier.verify(f"Bearer {token}", IP).status == 503
        finally:
            verifier.close()
            rt.close()


@pytest.mark.postgres
def test_a_node_whose_clock_is_behind_refuses_what_the_database_calls_expired(
        postgres_url: str, tmp_path: Path) -> None:
    _truncate_all(postgres_url)
    settings = Settings(database_url=postgres_url, data_dir=tmp_path, region="eu1")
    # issued a day and ten seconds ago, for one day: expired ten seconds ago
    issued_at = datetime.now(UTC) - timedelta(days=1, seconds=10)
    rt = Runtime.build(settings, FrozenClock(issued_at))
    world = World(rt)
    token = _issue(rt, world, days=1)
    naive = Verifier(settings=settings, database=rt.database, clock=ShiftedClock(-30),
                     background=False)
    skewed = Verifier(settings=settings, database=rt.database,
                      clock=DatabaseClock(rt.database, local=ShiftedClock(-30)),
                      background=False)
    try:
        assert naive.verify(f"Bearer {token}", IP).allowed, \
            "the fault is real: by its own clock the token is still valid"
        assert skewed.database_clock.offset == pytest.approx(30, abs=1)
        refused = skewed.verify(f"Bearer {token}", IP)
        assert refused.status == 401 and "expired" in refused.message.lower()
    finally:
        naive.close()
        skewed.close()
        rt.close()
