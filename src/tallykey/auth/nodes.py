"""Nodes and their acknowledgements: each verifier says it is alive and how far into the
change feed it is; a change's author can wait until every live node has applied it.

It also shares failed-authentication counts, so the throttle holds across nodes.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.auth.limiter import FailureLimiter
from tallykey.auth.models import AuthFailure, Node
from tallykey.db.engine import Database

#: A node that has not said anything for this long is taken for dead.
LIVE_WINDOW = timedelta(seconds=5)
HEARTBEAT_SECONDS = 1.0


def _now() -> datetime:
    """Liveness is infrastructure timing, on the wall clock (not the product clock)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Propagation:
    """How a change reached the nodes: who confirmed it and who had not in time."""

    change_id: int
    confirmed: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    waited_ms: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.unconfirmed


class NodePresence:
    def __init__(self, database: Database, label: str | None = None) -> None:
        self.database = database
        self.id = str(uuid.uuid4())
        self.label = label or f"{socket.gethostname()}:{os.getpid()}"
        self._insert = pg_insert if database.dialect == "postgresql" else sqlite_insert

    def join(self, applied: int) -> None:
        now = _now()
        with self.database.transaction() as session:
            session.add(Node(id=self.id, label=self.label, started_at=now, heartbeat_at=now,
                             applied_change=applied))

    def report(self, applied: int) -> None:
        """Heartbeat, and say which change this node's cache has applied."""
        with self.database.transaction() as session:
            session.execute(update(Node).where(Node.id == self.id)
                            .values(heartbeat_at=_now(), applied_change=applied))

    def leave(self) -> None:
        with self.database.transaction() as session:
            session.execute(delete(Node).where(Node.id == self.id))
            session.execute(delete(AuthFailure).where(AuthFailure.node_id == self.id))
            session.execute(delete(Node).where(Node.heartbeat_at < _now() - 20 * LIVE_WINDOW))

    def share_failures(self, limiter: FailureLimiter) -> None:
        """Publish this node's failure counts for the current minute; learn the totals."""
        window = limiter.window()
        mine = limiter.own_counts(window)
        with self.database.transaction() as session:
            if mine:
                statement = self._insert(AuthFailure).values([
                    {"ip": ip, "window": window, "node_id": self.id, "count": count}
                    for ip, count in sorted(mine.items())])
                session.execute(statement.on_conflict_do_update(
                    index_elements=["ip", "window", "node_id"],
                    set_={"count": statement.excluded.count}))
            session.execute(delete(AuthFailure).where(AuthFailure.window < window - 1))
            totals = session.execute(
                select(AuthFailure.ip, func.sum(AuthFailure.count))
                .where(AuthFailure.window == window).group_by(AuthFailure.ip)
                .having(func.sum(AuthFailure.count) >= limiter.limit)).all()
        limiter.learn(window, {ip: int(total) for ip, total in totals})


def wait_for(database: Database, change_id: int, timeout: float) -> Propagation:
    """Block until every live node has applied `change_id`, or `timeout` seconds pass."""
    started = time.monotonic()
    while True:
        with database.reading() as session:
            rows = session.execute(select(Node.label, Node.applied_change)
                                   .where(Node.heartbeat_at >= _now() - LIVE_WINDOW)).all()
        confirmed = sorted(label for label, applied in rows if applied >= change_id)
        unconfirmed = sorted(label for label, applied in rows if applied < change_id)
        waited = time.monotonic() - started
        if not unconfirmed or waited >= timeout:
            return Propagation(change_id, confirmed, unconfirmed, round(waited * 1000, 1))
        time.sleep(0.002)
