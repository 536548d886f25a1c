"""The one wait for a change to reach the nodes (`Propagator.settle`) and how an answer
shows it (`PropagationView`), without a database: a store that cannot be reached, and
propagations built by hand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from tallykey.clock import FrozenClock
from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.feed.nodes import MIN_LEASE_SECONDS, Propagation, Unconfirmed
from tallykey.feed.propagation import PropagationView, Propagator
from tallykey.monitor.metrics import PROPAGATION_INCOMPLETE, REGISTRY
from tallykey.runtime import Runtime

MOMENT = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


class GoneStore:
    """A database that cannot be reached."""

    dialect = "postgresql"

    @contextmanager
    def reading(self) -> Iterator[Any]:
        raise StoreUnavailable("The token store cannot be reached.")
        yield  # pragma: no cover - never reached


def incomplete_count() -> float:
    return REGISTRY.get_sample_value("tallykey_propagation_incomplete_total") or 0.0


def test_an_unreachable_store_names_every_node_until_a_lease_ends_and_is_counted() -> None:
    clock = FrozenClock(MOMENT)
    propagator = Propagator(cast(Database, GoneStore()), clock, timeout=0.05,
                            stale_if_error=120, incomplete=PROPAGATION_INCOMPLETE.inc)
    counted = incomplete_count()
    done = propagator.settle("token-x")
    assert done == Propagation(0, [], [Unconfirmed("every node",
                                                   MOMENT + timedelta(seconds=120))], 0.0)
    assert incomplete_count() == counted + 1
    short = Propagator(cast(Database, GoneStore()), clock, timeout=0.05, stale_if_error=0)
    [late] = short.settle("token-x").unconfirmed
    assert late.stops_by == MOMENT + timedelta(seconds=MIN_LEASE_SECONDS)


def test_the_view_names_each_unconfirmed_node_with_the_moment_it_stops() -> None:
    done = Propagation(7, ["node-a"], [Unconfirmed("node-b", MOMENT)], 12.5)
    view = PropagationView.of(done, "works again").model_dump(mode="json")
    assert view == {"change_id": 7, "complete": False, "confirmed": ["node-a"],
                    "unconfirmed": ["node-b"],
                    "stops_by": {"node-b": "2030-01-01T12:00:00+00:00"},
                    "summary": "works again on 1 of 2 nodes (node-b unconfirmed, follows "
                               "by 2030-01-01T12:00:00+00:00 at the latest)",
                    "waited_ms": 12.5}


def test_a_complete_view_says_the_effect_on_every_node() -> None:
    view = PropagationView.of(Propagation(3, ["node-a", "node-b"], [], 1.0))
    assert view.complete and view.unconfirmed == [] and view.stops_by == {}
    assert view.summary == "stopped on 2 of 2 nodes"
    nobody = PropagationView.of(Propagation(3, [], [], 0.0), "applied")
    assert nobody.summary == "no verification node holds a lease"


def test_the_servers_propagator_counts_what_came_back_incomplete(rt: Runtime) -> None:
    """Every surface settles through the Runtime's one Propagator, which counts an
    incomplete answer in `tallykey_propagation_incomplete_total`."""
    gone = replace(rt.propagation, database=cast(Database, GoneStore()))
    counted = incomplete_count()
    assert not gone.settle("token-x").complete
    assert incomplete_count() == counted + 1
