"""How verifiers are built (`auth.wiring`): a server's on its runtime's parts (one
database, one database clock, one notifier per process), an embedded one on its own."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from starlette.types import ASGIApp

from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.feed.clock import DatabaseClock
from tallykey.monitor.alerts import UsageMonitor
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

IP = "198.51.100.7"


def notifiers(verifier: Verifier) -> tuple[Any, Any]:
    """The notifier of the usage alerts, and of the containment they start."""
    monitor = verifier.usage.observer
    assert isinstance(monitor, UsageMonitor) and monitor.containment is not None
    return monitor.notifier, monitor.containment.notifier


def test_a_servers_verifier_runs_on_its_runtimes_parts(world: World) -> None:
    rt = world.rt
    verifier = rt.build_verifier(background=False)
    try:
        assert verifier.settings is rt.settings and verifier.database is rt.database
        assert verifier.clock is rt.clock and verifier.database_clock is rt.database_clock
        assert notifiers(verifier) == (rt.notifier, rt.notifier)
        assert verifier.follower.clock is rt.database_clock
        assert verifier.follower._thread is None  # background=False
        token = rt.tokens.issue(world.as_admin, TokenDraft(name="wired",
                                                           expires_in_days=3)).value
        assert verifier.verify(f"Bearer {token}", IP).allowed
    finally:
        verifier.close()
    # the runtime's database is the runtime's to dispose of: it still answers
    with rt.database.reading() as session:
        assert session.execute(text("SELECT 1")).scalar_one() == 1


def test_the_app_builds_its_verifier_from_the_runtime(rt: Runtime) -> None:
    app = create_app(rt)
    verifier = app_verifier(app)
    assert verifier.database is rt.database and verifier.database_clock is rt.database_clock
    assert notifiers(verifier) == (rt.notifier, rt.notifier)
    verifier.close()


def test_an_embedded_verifier_builds_its_own(settings: Settings, rt: Runtime,
                                             clock: FrozenClock) -> None:
    """`Verifier(...)` keeps its meaning: its own notifier always; its own store connection
    and database clock unless given (a given `DatabaseClock` is both clocks)."""
    own = Verifier(settings=settings, background=False)
    try:
        assert own.database is not rt.database and own._owns_database
        assert isinstance(own.clock, DatabaseClock) and own.clock is own.database_clock
        assert notifiers(own)[0] is not rt.notifier
    finally:
        own.close()
    shared = Verifier(settings=settings, database=rt.database, clock=clock, background=False)
    try:
        assert shared.database is rt.database and not shared._owns_database
        assert shared.clock is clock and shared.database_clock is not rt.database_clock
        assert shared.database_clock.database is rt.database
    finally:
        shared.close()
    database_clock = DatabaseClock(rt.database)
    given = Verifier(settings=settings, database=rt.database, clock=database_clock,
                     background=False)
    try:
        assert given.clock is database_clock and given.database_clock is database_clock
    finally:
        given.close()


def app_verifier(app: ASGIApp) -> Verifier:
    """The verifier inside `create_app`'s stack (found through its wrappers)."""
    layer: Any = app
    while not hasattr(layer, "fast_path"):
        layer = layer.app
    found = layer.fast_path.verifier
    assert isinstance(found, Verifier)
    return found
