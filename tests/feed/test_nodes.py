"""Nodes on the database's clock: heartbeats are upserts (a deleted row comes back),
`leave()` removes only the node's own row, and a node whose clock is far off is neither
taken for dead nor able to delete live nodes (SPEC §10 "Time comes from the database")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select, update

from tallykey.clock import FrozenClock
from tallykey.db.engine import Database
from tallykey.feed import changes
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.models import Node
from tallykey.feed.nodes import FORGET_AFTER, NodePresence, wait_for
from tallykey.feed.propagation import Propagator


class ShiftedClock:
    """This machine's clock, `seconds` off."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.seconds)

    def timestamp(self) -> float:
        return self.now().timestamp()


@pytest.fixture
def database(postgres_url: str) -> Iterator[Database]:
    database = Database(postgres_url)
    with database.transaction() as session:
        session.execute(delete(Node))
    yield database
    database.dispose()


pytestmark = pytest.mark.postgres


def test_a_deleted_row_comes_back_with_the_next_heartbeat(database: Database) -> None:
    clock = DatabaseClock(database)
    node = NodePresence(database, clock, "node-a")
    node.report(5, None, clock.now())
    with database.transaction() as session:
        session.execute(delete(Node).where(Node.id == node.id))
    node.report(6, None, clock.now())
    with database.reading() as session:
        row = session.get_one(Node, node.id)
    assert (row.label, row.applied_change) == ("node-a", 6)


def test_a_skewed_node_is_live_and_deletes_nobody(database: Database) -> None:
    honest_clock = DatabaseClock(database)
    ahead_clock = DatabaseClock(database, local=ShiftedClock(+150))
    behind_clock = DatabaseClock(database, local=ShiftedClock(-30))
    for clock in (ahead_clock, behind_clock):
        offset = clock.calibrate()
        assert abs(offset + clock.local.seconds) < 1.0  # type: ignore[attr-defined]
    honest = NodePresence(database, honest_clock, "honest")
    ahead = NodePresence(database, ahead_clock, "ahead")
    behind = NodePresence(database, behind_clock, "behind")
    for node in (honest, ahead, behind):
        node.report(1, None, None)
    ahead.report(1, None, None)  # its clock is 150 s ahead: > FORGET_AFTER
    assert timedelta(seconds=150) > FORGET_AFTER
    ahead.leave()
    with database.reading() as session:
        labels = set(session.scalars(select(Node.label)))
    assert labels == {"honest", "behind"}, "leave() removes only its own row"
    done = wait_for(database, honest_clock, 2, timeout=0.05, stale_if_error=60)
    assert sorted(u.label for u in done.unconfirmed) == ["behind", "honest"], \
        "a node 30 s behind is still live, so it must confirm"
    behind.report(3, None, None)  # PostgreSQL: a read whose xmin is past the change
    honest.report(3, None, None)
    assert wait_for(database, honest_clock, 2, timeout=1, stale_if_error=60).complete


def test_an_unconfirmed_node_is_named_with_the_end_of_its_lease(database: Database) -> None:
    clock = DatabaseClock(database)
    before = clock.now()
    NodePresence(database, clock, "lagging", lease=60).report(0, None, None)
    with database.transaction() as session:
        changes.announce(session, changes.TOKEN, "token-x", clock.now())
    done = Propagator(database, clock, timeout=0.05, stale_if_error=60).settle("token-x")
    assert not done.complete
    [late] = done.unconfirmed
    assert late.label == "lagging"
    with database.reading() as session:
        lease_until = session.scalar(select(Node.lease_until).where(Node.label == "lagging"))
    assert late.stops_by == lease_until
    assert before + timedelta(seconds=59) <= late.stops_by <= clock.now() + timedelta(
        seconds=60)
    assert "lagging unconfirmed, stops by" in done.summary()


def test_a_silent_node_is_counted_while_its_lease_lasts_and_dropped_after(
        database: Database) -> None:
    """The fault of issue 25: a node cut off from the store stops heart-beating but may
    still serve from cache; it must be awaited (or named) until its lease ends, however
    old its heartbeat, and only then be left out."""
    clock = DatabaseClock(database)
    NodePresence(database, clock, "live").report(10, None, None)
    cut = NodePresence(database, clock, "cut-off", lease=60)
    cut.report(0, None, None)
    with database.transaction() as session:  # its last heartbeat is long past
        session.execute(update(Node).where(Node.id == cut.id).values(
            heartbeat_at=datetime.now(UTC) - timedelta(seconds=50)))
    done = wait_for(database, clock, 5, timeout=0.05, stale_if_error=60)
    assert done.confirmed == ["live"] and [u.label for u in done.unconfirmed] == ["cut-off"]
    with database.transaction() as session:  # its lease has ended
        session.execute(update(Node).where(Node.id == cut.id).values(
            lease_until=datetime.now(UTC) - timedelta(seconds=0.5)))
    done = wait_for(database, clock, 5, timeout=0.05, stale_if_error=60)
    assert done.complete and done.confirmed == ["live"]


def test_one_node_one_entry_whatever_its_rows(database: Database) -> None:
    """A node restarted without leaving, or run with several workers, has several rows
    under one name: it is one entry, confirmed only when each of its leased rows is."""
    clock = DatabaseClock(database)
    old = NodePresence(database, clock, "node3", lease=30)
    new = NodePresence(database, clock, "node3", lease=30)
    other = NodePresence(database, clock, "node1")
    old.report(0, None, None)
    new.report(10, None, None)
    other.report(10, None, None)
    done = wait_for(database, clock, 5, timeout=0.05, stale_if_error=60)
    assert done.confirmed == ["node1"] and [u.label for u in done.unconfirmed] == ["node3"]
    assert done.summary().startswith("stopped on 1 of 2 nodes")
    old.report(10, None, None)
    done = wait_for(database, clock, 5, timeout=1, stale_if_error=60)
    assert done.complete and done.confirmed == ["node1", "node3"]
    assert done.summary() == "stopped on 2 of 2 nodes"


def test_a_row_without_a_lease_is_never_awaited(database: Database) -> None:
    """The start-up write check holds no lease: if its row stays (store gone before it
    could leave) it never holds up an acknowledgement."""
    clock = DatabaseClock(database)
    NodePresence(database, clock, "startup check", lease=0).report(0, None, None)
    done = wait_for(database, clock, 5, timeout=0.05, stale_if_error=60)
    assert done.complete and done.confirmed == []


def test_a_frozen_product_clock_does_not_move_the_database_clock(database: Database) -> None:
    """Tests inject a frozen clock for verdicts; heartbeats stay on the database's."""
    clock = DatabaseClock(database, local=FrozenClock(datetime(2030, 1, 1, tzinfo=UTC)))
    clock.calibrate()
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=2)
