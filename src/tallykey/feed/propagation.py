"""Waiting for a change to reach the nodes, and saying how far it got (SPEC §10).

A verdict-affecting change (a revocation, a suspension, a plan or identity edit, an
archived workspace, ...) is answered once every node holding a lease has applied it, or
after `TALLYKEY_PROPAGATION_TIMEOUT`, naming each node that had not with the moment it
stops by itself. `Propagator.settle` is that wait, the only one: the services that make
such changes call it and hand back a `Changed` (what changed, and its `Propagation`);
the API, the console and the CLI only show the result. `PropagationView` is how the
API's answers and the CLI's `--json` show it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, PlainSerializer

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.feed import changes
from tallykey.feed.nodes import Propagation, Unconfirmed, node_lease, wait_for

T = TypeVar("T")

#: A moment in an answer: ISO 8601 (the same serialisation as `tokens.schemas.Timestamp`).
Moment = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


@dataclass(frozen=True)
class Propagator:
    """Waits for committed changes to reach the nodes: built once per process from the
    settings (`Runtime.build`, the containment monitor), with the database's clock."""

    database: Database
    #: The database's clock (`feed.clock.DatabaseClock`): leases are judged by it.
    clock: Clock
    #: Seconds to wait at most (`TALLYKEY_PROPAGATION_TIMEOUT`).
    timeout: float
    #: `TALLYKEY_STALE_IF_ERROR`: how long a node may answer from its cache without the
    #: store, which bounds every lease.
    stale_if_error: float
    #: Called once per answer that came before every node confirmed (the server counts
    #: them: `tallykey_propagation_incomplete_total`).
    incomplete: Callable[[], object] = lambda: None

    def settle(self, subject_id: str) -> Propagation:
        """After a change about `subject_id` committed: wait (bounded by `timeout`) until
        every node holding a lease has applied it, so a request started after this
        returns is judged by the new state. An answer that came before every node
        confirmed is reported to `incomplete`."""
        try:
            position = changes.position_of(self.database, subject_id)
            propagation = wait_for(self.database, self.clock, position, self.timeout,
                                   self.stale_if_error)
        except StoreUnavailable:
            # Committed, but the store went away before anyone could confirm it: every
            # lease, renewed at the latest now, ends within one lease from now.
            stops_by = self.clock.now() + timedelta(seconds=node_lease(self.stale_if_error))
            propagation = Propagation(0, [], [Unconfirmed("every node", stops_by)], 0.0)
        if not propagation.complete:
            self.incomplete()
        return propagation


@dataclass(frozen=True)
class Changed(Generic[T]):
    """What a verdict-affecting service call changed, and how far the change had reached
    the nodes when it returned."""

    value: T
    propagation: Propagation


class PropagationView(BaseModel):
    """Which live nodes had applied the change when the answer was sent; for each one
    that had not, the latest moment it can still accept the old verdict."""

    change_id: int
    complete: bool
    confirmed: list[str]
    unconfirmed: list[str]
    stops_by: dict[str, Moment]
    summary: str
    waited_ms: float

    @classmethod
    def of(cls, done: Propagation, effect: str = "stopped") -> PropagationView:
        """`effect` words the summary (see `Propagation.summary`)."""
        return cls(change_id=done.change_id, complete=done.complete,
                   confirmed=done.confirmed,
                   unconfirmed=[node.label for node in done.unconfirmed],
                   stops_by={node.label: node.stops_by for node in done.unconfirmed},
                   summary=done.summary(effect), waited_ms=done.waited_ms)
