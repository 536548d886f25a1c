"""Nodes on the database's clock: heartbeats are upserts (a deleted row comes back),
`leave()` removes only the node's own row, and a node whose clock is far off is neither
taken for dead nor able to delete live nodes (SPEC §10 "Time comes from the database")."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, select

from tallykey.clock import FrozenClock
from tallykey.db.engine import Database
from tallykey.feed import changes
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.models import Node
from tallykey.feed.nodes import FORGET_AFTER, NodePresence, settle, wait_for


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


def test_an_unconfirmed_node_is_named_with_when_it_stops(database: Database) -> None:
    clock = DatabaseClock(database)
    NodePresence(database, clock, "lagging").report(0, None, None)
    with database.transaction() as session:
        changes.announce(session, changes.TOKEN, "token-x", clock.now())
    before = clock.now()
    done = settle(database, clock, "token-x", timeout=0.05, stale_if_error=60)
    assert not done.complete
    [late] = done.unconfirmed
    assert late.label == "lagging"
    assert before + timedelta(seconds=59) <= late.stops_by <= clock.now() + timedelta(
        seconds=60)
    assert "lagging unconfirmed, stops by" in done.summary()


def test_a_frozen_product_clock_does_not_move_the_database_clock(database: Database) -> None:
    """Tests inject a frozen clock for verdicts; heartbeats stay on the database's."""
    clock = DatabaseClock(database, local=FrozenClock(datetime(2030, 1, 1, tzinfo=UTC)))
    clock.calibrate()
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(seconds=2)
