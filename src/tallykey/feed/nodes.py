"""Nodes, their leases and their acknowledgements (SPEC §10).

Each verifier says, with every heartbeat, how far into the change feed it is and until
when (on the database's clock) it may answer from its cache: its lease. A change's
author waits (`feed.propagation`) until every node whose lease has not ended has applied
the change, and otherwise names each unconfirmed node with the moment its lease ends,
after which that node answers nothing from its cache (`feed.follower`). A node that is
cut off, frozen or gone is therefore never dropped from an answer while it could still
serve, and a node's several rows (a restart, worker processes) make one entry under its name.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.feed import changes
from tallykey.feed.models import Node
from tallykey.settings import MIN_NODE_LEASE_SECONDS

HEARTBEAT_SECONDS = 1.0
#: The shortest node lease: a few heartbeats, so one slow write does not end it.
MIN_LEASE_SECONDS = MIN_NODE_LEASE_SECONDS
#: Rows whose lease ended this long ago are removed by any live node.
FORGET_AFTER = timedelta(seconds=100)
WAIT_STEP_SECONDS = 0.002


@dataclass(frozen=True, order=True)
class Unconfirmed:
    """A node holding a lease that had not confirmed a change when its author answered."""

    label: str
    #: The latest moment it can still accept the old verdict: the end of its lease (on
    #: the database's clock). It stops earlier if it reads the feed before then.
    stops_by: datetime


@dataclass(frozen=True)
class Propagation:
    """How a change reached the nodes: who confirmed it and who had not in time. Each
    node (by name) appears once."""

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
            return "no verification node holds a lease"
        if self.complete:
            return f"{effect} on {total} of {total} nodes"
        then = "stops" if effect == "stopped" else "follows"
        late = "; ".join(f"{node.label} unconfirmed, {then} by "
                         f"{node.stops_by.isoformat(timespec='seconds')} at the latest"
                         for node in self.unconfirmed)
        return f"{effect} on {len(self.confirmed)} of {total} nodes ({late})"


class NodePresence:
    """This node's row in `nodes`: written with every heartbeat (an upsert, so a row
    deleted by mistake comes back) with a new lease end, and removed when the node
    stops."""

    def __init__(self, database: Database, clock: Clock, label: str | None = None,
                 lease: float = MIN_LEASE_SECONDS) -> None:
        self.database = database
        self.clock = clock
        self.id = str(uuid.uuid4())
        self.label = label or f"{socket.gethostname()}:{os.getpid()}"
        #: Seconds each heartbeat's lease lasts (0: this row holds no lease).
        self.lease = lease
        self._postgres = database.dialect == "postgresql"
        self._insert = pg_insert if self._postgres else sqlite_insert
        self._started = clock.now()

    def report(self, position: int, snapshot: str | None, synced_at: datetime | None,
               clock_offset: float = 0.0) -> None:
        """Heartbeat: alive now, applied the feed up to `position` (and PostgreSQL
        `snapshot`, see `changes.applied`), last read the feed successfully at
        `synced_at`, and holds a lease for `lease` seconds from the moment the database
        runs this statement (its own clock). Also forgets nodes whose lease ended long
        ago."""
        now = self.clock.now()
        lease_until: Any = _database_now(self._postgres) + timedelta(seconds=self.lease)
        values = {"label": self.label, "heartbeat_at": now, "applied_change": position,
                  "feed_snapshot": snapshot, "synced_at": synced_at,
                  "lease_until": lease_until, "clock_offset_ms": int(clock_offset * 1000)}
        statement = self._insert(Node).values(id=self.id, started_at=self._started, **values)
        with self.database.transaction() as session:
            session.execute(statement.on_conflict_do_update(index_elements=["id"],
                                                            set_=values))
            session.execute(delete(Node).where(
                Node.id != self.id, Node.heartbeat_at < now - FORGET_AFTER,
                (Node.lease_until.is_(None)) | (Node.lease_until < now - FORGET_AFTER)))

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


def _database_now(postgres: bool) -> Any:
    """The database's present, in SQL (PostgreSQL: its own clock, no offset to trust),
    or this machine's for SQLite (the store lives here)."""
    return func.clock_timestamp() if postgres else datetime.now(UTC)


def wait_for(database: Database, clock: Clock, change: int, timeout: float,
             stale_if_error: float) -> Propagation:
    """Block until every node holding a lease has applied `change` (from
    `changes.position_of`), or `timeout` seconds pass. Leases are judged by the
    database's clock; an unconfirmed node is named with the end of its lease. A node
    with several rows (restarted, or several worker processes) is one entry: confirmed
    when all its leased rows are."""
    started = time.monotonic()
    postgres = database.dialect == "postgresql"
    while True:
        with database.reading() as session:
            rows = session.execute(
                select(Node.label, Node.applied_change, Node.feed_snapshot,
                       Node.lease_until)
                .where(Node.lease_until > _database_now(postgres))).all()
        pending: dict[str, datetime] = {}
        labels = set()
        for label, position, snapshot, lease_until in rows:
            labels.add(label)
            if lease_until is not None and not changes.applied(postgres, position,
                                                               snapshot, change):
                pending[label] = max(lease_until, pending.get(label, lease_until))
        waited = time.monotonic() - started
        if not pending or waited >= timeout:
            confirmed = sorted(labels - pending.keys())
            unconfirmed = sorted(Unconfirmed(label, ends) for label, ends in pending.items())
            return Propagation(change, confirmed, unconfirmed, round(waited * 1000, 1))
        time.sleep(WAIT_STEP_SECONDS)


def node_lease(stale_if_error: float) -> float:
    """The node lease a deployment uses: never shorter than the stale window (so no
    node answers from its cache past the moment others name), nor than
    `MIN_LEASE_SECONDS`."""
    return max(stale_if_error, MIN_LEASE_SECONDS)
