"""The change feed is read in commit order: a change whose transaction commits after a
later-numbered one is still read, and a node's position never confirms a change it has
not applied (SPEC §10 "No change is skipped")."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tallykey.db.engine import Database
from tallykey.feed import changes
from tallykey.feed.changes import FeedReader


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


def _now() -> datetime:
    return datetime.now(UTC)


def seen(reader: FeedReader, change: int) -> bool:
    """Would a node that reports this reader's position confirm `change`?"""
    return changes.applied(reader.database.dialect == "postgresql", reader.position,
                           reader.snapshot, change)


@pytest.mark.postgres
def test_a_change_committed_after_a_later_id_is_still_read(postgres_url: str) -> None:
    """PostgreSQL hands out ids before commit; SQLite has one writer at a time, so its
    ids follow commit order by construction."""
    database = Database(postgres_url)
    reader = FeedReader(database)
    reader.start()
    slow_announced, release = threading.Event(), threading.Event()

    def slow_writer() -> None:  # takes the lower id, commits last
        with database.transaction() as session:
            changes.announce(session, changes.TOKEN, "slow-token", _now())
            session.flush()
            slow_announced.set()
            assert release.wait(10)

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert slow_announced.wait(10)
    with database.transaction() as session:
        changes.announce(session, changes.TOKEN, "fast-token", _now())

    first = reader.read()
    assert [c[2] for c in first] == ["fast-token"]
    first_position, first_snapshot = reader.position, reader.snapshot
    fast_position = changes.position_of(database, "fast-token")
    assert seen(reader, fast_position), "it read the fast change: it may confirm it"
    assert reader.position <= int(str(reader.snapshot).split(":")[0])

    release.set()
    thread.join(10)
    slow_position = changes.position_of(database, "slow-token")
    assert not changes.applied(True, first_position, first_snapshot, slow_position), \
        "the first read did not see the slow change, so it must not confirm it"
    second = reader.read()
    assert [c[2] for c in second] == ["slow-token"]
    assert seen(reader, slow_position) and seen(reader, fast_position)
    assert reader.read() == [], "each change is handed out once"
    reader.close()
    database.dispose()


def test_readers_get_every_change_once_in_order(database: Database) -> None:
    reader = FeedReader(database)
    reader.start()
    for number in range(5):
        with database.transaction() as session:
            changes.announce(session, changes.USER, f"user-{number}", _now())
    read = reader.read()
    assert [c[2] for c in read] == [f"user-{n}" for n in range(5)]
    assert seen(reader, changes.position_of(database, "user-4"))
    assert reader.read() == []
    reader.close()


def test_a_reader_started_now_skips_history(database: Database) -> None:
    with database.transaction() as session:
        changes.announce(session, changes.TOKEN, "old", _now())
    reader = FeedReader(database)
    reader.start()
    assert reader.read() == []
    assert seen(reader, changes.position_of(database, "old"))
    reader.close()


def test_prune_drops_only_old_rows(database: Database) -> None:
    old = datetime(2020, 1, 1, tzinfo=UTC)
    with database.transaction() as session:
        changes.announce(session, changes.TOKEN, "ancient", old)
        changes.announce(session, changes.TOKEN, "recent", _now())
    assert changes.prune(database, _now() - changes.RETENTION) == 1
    assert changes.position_of(database, "ancient") == 0
    assert changes.position_of(database, "recent") > 0
