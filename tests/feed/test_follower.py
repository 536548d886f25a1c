"""The follower's leases (SPEC §10, issue 25): a node answers from its cache only under
its node lease and a fresh feed read; a lease taken up again after it ended needs a read
that began after it (the fence); and no request waits on a feed read that another thread
holds for longer than `REFRESH_WAIT_SECONDS`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.follower import REFRESH_WAIT_SECONDS, FeedFollower


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[FeedFollower]:
    database = Database(f"sqlite:///{tmp_path / 'tallykey.db'}")
    migrate.upgrade(database)
    made = FeedFollower(database, lambda batch: None, clock=DatabaseClock(database),
                        lease=2.0, stale_if_error=10.0, node_name="node-a")
    made.start_reading()
    yield made
    made.stop()
    database.dispose()


def test_the_stale_window_never_outlives_the_node_lease(follower: FeedFollower) -> None:
    assert follower.node_lease >= follower.stale_if_error
    assert follower.serving() and follower.leased()
    follower._set_lease(time.monotonic() - 0.01)  # the lease ran out (renewals failed)
    assert not follower.serving(), "no cached answer without the lease"
    assert not follower.within_stale_window(), "not even in the stale window"


def test_a_lease_taken_up_again_needs_a_read_that_began_after_it(
        follower: FeedFollower) -> None:
    follower._set_lease(time.monotonic() - 0.01)
    follower._renew()
    assert follower.leased()
    assert not follower.fresh() and not follower.serving(), \
        "a change acknowledged while the lease was ended may not be applied yet"
    follower.sync()
    assert follower.serving()


def test_health_says_what_the_node_can_do_without_io(follower: FeedFollower) -> None:
    assert follower.health()["status"] == "ok"
    follower._set_lease(time.monotonic() - 0.01)
    follower._renew()  # fenced: no read counts yet
    state = follower.health()
    json.dumps(state, allow_nan=False)  # never an infinite age
    assert state["feed_age_seconds"] is None
    follower._set_lease(time.monotonic() - 0.01)
    follower._store_down = True
    assert follower.health()["status"] == "down"


def test_a_request_never_waits_long_on_another_threads_feed_read(
        follower: FeedFollower) -> None:
    follower.read_at = time.monotonic() - 10  # the feed lease ran out
    held, release = threading.Event(), threading.Event()

    def blocked_read() -> None:  # as a read blocked on a frozen store would
        with follower._lock:
            held.set()
            release.wait(10)

    thread = threading.Thread(target=blocked_read)
    thread.start()
    try:
        held.wait(5)
        started = time.monotonic()
        assert follower.refresh() is False
        assert time.monotonic() - started < REFRESH_WAIT_SECONDS + 0.3
    finally:
        release.set()
        thread.join(5)


@pytest.mark.postgres
@pytest.mark.serial
def test_auto_mode_polls_when_listen_never_delivers(postgres_url: str) -> None:
    """Through a real PgBouncer in transaction mode that drops the `options` parameter,
    configured as no pooler: LISTEN succeeds but no notification ever arrives. The
    follower notices (polls keep finding changes it never heard of) and polls instead."""
    from datetime import UTC, datetime

    from tallykey.feed import changes
    from tallykey.feed.follower import FEED_POLL_SECONDS, UNHEARD_POLLS

    from ..pgbouncer import pgbouncer, require_pgbouncer
    from ..pgcluster import wait_until

    require_pgbouncer()
    with pgbouncer(postgres_url, ignore_options=True) as through:
        database = Database(through, pooler="none")
        applied: list[int] = []
        follower = FeedFollower(database, lambda batch: applied.append(len(batch)),
                                clock=DatabaseClock(database), lease=2.0,
                                stale_if_error=10.0, node_name="node-unheard", mode="auto")
        try:
            assert not database.pooled and follower.listener is not None
            follower.start_reading()
            follower.start()
            wait_until(lambda: follower.listener is None or follower.listener.connected
                       .is_set(), 10)
            writes = 0
            deadline = time.monotonic() + 30
            while follower.listener is not None and time.monotonic() < deadline:
                with database.transaction() as session:
                    changes.announce(session, changes.TOKEN, f"t{writes}",
                                     datetime.now(UTC))
                writes += 1
                time.sleep(0.6)  # beyond one backstop poll each
            assert follower.listener is None, "still waiting on LISTEN"
            assert follower.poll_interval == FEED_POLL_SECONDS
            assert writes >= UNHEARD_POLLS
            before = sum(applied)
            with database.transaction() as session:
                changes.announce(session, changes.TOKEN, "after", datetime.now(UTC))
            wait_until(lambda: sum(applied) > before, 2)
        finally:
            follower.stop()
            database.dispose()


def test_a_slow_heartbeat_task_never_holds_up_the_feed_reads(tmp_path: Path) -> None:
    """Without LISTEN the poll is the only way a change reaches a node, and a change's
    author waits for it: a periodic task stuck in the store (a usage flush on a loaded
    machine) must not stop the reads. Here one blocks until the change was applied."""
    from datetime import UTC, datetime

    from tallykey.feed import changes

    from ..pgcluster import wait_until

    database = Database(f"sqlite:///{tmp_path / 'tallykey.db'}")
    migrate.upgrade(database)
    applied: list[str] = []
    follower = FeedFollower(database, lambda batch: applied.extend(c[2] for c in batch),
                            clock=DatabaseClock(database), lease=2.0, stale_if_error=10.0,
                            node_name="node-busy")
    stuck, release = threading.Event(), threading.Event()

    def slow_task() -> None:
        stuck.set()
        release.wait(30)

    follower.periodic.append(slow_task)
    try:
        follower.start_reading()
        follower.start()
        assert stuck.wait(10), "the heartbeat never ran its tasks"
        with database.transaction() as session:
            changes.announce(session, changes.TOKEN, "revoked-meanwhile", datetime.now(UTC))
        wait_until(lambda: "revoked-meanwhile" in applied, 10)
        assert not release.is_set()  # read while the task was still stuck
    finally:
        release.set()
        follower.stop()
        database.dispose()
