"""Nodes and their acknowledgements: each verifier says, on the database's clock, that it
is alive and how far into the change feed it is; a change's author waits until every
live node has applied it, and otherwise says which nodes are unconfirmed and by when
each stops by itself (SPEC §10)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.feed import changes
from tallykey.feed.models import Node

#: A node that has not said anything for this long is taken for dead.
LIVE_WINDOW = timedelta(seconds=5)
HEARTBEAT_SECONDS = 1.0
#: Rows of nodes silent for this long are removed by any live node.
FORGET_AFTER = 20 * LIVE_WINDOW
WAIT_STEP_SECONDS = 0.002


@dataclass(frozen=True, order=True)
class Unconfirmed:
    """A live node that had not confirmed a change when its author answered."""

    label: str
    #: The latest moment it can still accept the old verdict: a node that reaches the
    #: store re-reads the feed before answering once its lease has run out; one that
    #: cannot keeps its cache no longer than TALLYKEY_STALE_IF_ERROR.
    stops_by: datetime


@dataclass(frozen=True)
class Propagation:
    """How a change reached the nodes: who confirmed it and who had not in time."""

    change_id: int
    confirmed: list[str] = field(default_factory=list)
    unconfirmed: list[Unconfirmed] = field(default_factory=list)
    waited_ms: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.unconfirmed

    def summary(self, effect: str = "stopped") -> str:
        """One sentence for people: the console, the CLI and the API header say this.
        `effect` is what the change does on a node: "stopped" (revoke, suspend, archive),
        "works again" (resume) or "applied" (any other change)."""
        total = len(self.confirmed) + len(self.unconfirmed)
        if total == 0:
            return "no verification node is running"
        if self.complete:
            return f"{effect} on {total} of {total} nodes"
        then = "stops" if effect == "stopped" else "follows"
        late = "; ".join(f"{node.label} unconfirmed, {then} by "
                         f"{node.stops_by.isoformat(timespec='seconds')} at the latest"
                         for node in self.unconfirmed)
        return f"{effect} on {len(self.confirmed)} of {total} nodes ({late})"


class NodePresence:
    """This node's row in `nodes`: written with every heartbeat (an upsert, so a row
    deleted by mistake comes back) and removed when the node stops."""

    def __init__(self, database: Database, clock: Clock, label: str | None = None) -> None:
        self.database = database
        self.clock = clock
        self.id = str(uuid.uuid4())
        self.label = label or f"{socket.gethostname()}:{os.getpid()}"
        self._insert = pg_insert if database.dialect == "postgresql" else sqlite_insert
        self._started = clock.now()

    def report(self, position: int, snapshot: str | None, synced_at: datetime | None,
               clock_offset: float = 0.0) -> None:
        """Heartbeat: alive now, applied the feed up to `position` (and PostgreSQL
        `snapshot`, see `changes.applied`), last read the feed successfully at
        `synced_at`. Also forgets nodes silent for long."""
        now = self.clock.now()
        values = {"label": self.label, "heartbeat_at": now, "applied_change": position,
                  "feed_snapshot": snapshot, "synced_at": synced_at,
                  "clock_offset_ms": int(clock_offset * 1000)}
        statement = self._insert(Node).values(id=self.id, started_at=self._started, **values)
        with self.database.transaction() as session:
            session.execute(statement.on_conflict_do_update(index_elements=["id"],
                                                            set_=values))
            session.execute(delete(Node).where(Node.heartbeat_at < now - FORGET_AFTER,
                                               Node.id != self.id))

    def acknowledge(self, position: int, snapshot: str | None,
                    synced_at: datetime | None) -> None:
        """Say at once that this node applied the feed up to `position`/`snapshot`."""
        with self.database.transaction() as session:
            session.execute(update(Node).where(Node.id == self.id).values(
                applied_change=position, feed_snapshot=snapshot, synced_at=synced_at))

    def leave(self) -> None:
        """Remove this node's own row (and only it)."""
        with self.database.transaction() as session:
            session.execute(delete(Node).where(Node.id == self.id))


def wait_for(database: Database, clock: Clock, change: int, timeout: float,
             stale_if_error: float) -> Propagation:
    """Block until every live node has applied `change` (from `changes.position_of`),
    or `timeout` seconds pass. Liveness and "stops by" follow the database's clock."""
    started = time.monotonic()
    committed = clock.now()
    postgres = database.dialect == "postgresql"
    while True:
        now = clock.now()
        with database.reading() as session:
            rows = session.execute(
                select(Node.label, Node.applied_change, Node.feed_snapshot)
                .where(Node.heartbeat_at >= now - LIVE_WINDOW)).all()
        confirmed = sorted(label for label, position, snapshot in rows
                           if changes.applied(postgres, position, snapshot, change))
        waited = time.monotonic() - started
        if len(confirmed) == len(rows) or waited >= timeout:
            stops_by = committed + timedelta(seconds=stale_if_error)
            unconfirmed = sorted(Unconfirmed(label, stops_by) for label, _, _ in rows
                                 if label not in confirmed)
            return Propagation(change, confirmed, unconfirmed, round(waited * 1000, 1))
        time.sleep(WAIT_STEP_SECONDS)


def settle(database: Database, clock: Clock, subject_id: str, timeout: float,
           stale_if_error: float) -> Propagation:
    """After a change about `subject_id` committed: wait (bounded) until every live node
    has applied it, so a request started after this returns is judged by the new state.
    Every surface that changes a verdict (API, console, CLI, leak reports) calls this."""
    try:
        position = changes.position_of(database, subject_id)
        return wait_for(database, clock, position, timeout, stale_if_error)
    except StoreUnavailable:
        # Committed, but the store went away before anyone could confirm it.
        stops_by = clock.now() + timedelta(seconds=stale_if_error)
        return Propagation(0, [], [Unconfirmed("every node", stops_by)], 0.0)
