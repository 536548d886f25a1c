"""Builds what a verifier runs on: the one place that makes its cache, throttle, store
look-ups, key controls, usage recorder (with the usage alerts) and feed follower.

They stand on what the process shares (`Surroundings`): in a server, its runtime's one
database, database clock and notifier (`Runtime.build_verifier`, through `Verifier.on`);
embedded (`Verifier()`), what the settings say (`embedded`). The verification decision
itself is `auth.decide`, which needs none of this.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tallykey.auth.cache import VerificationCache, allowed_verdict
from tallykey.auth.controls import KeyControls
from tallykey.auth.lookup import RecordLookup
from tallykey.auth.record import TokenRecord
from tallykey.auth.verdict import Verdict
from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.feed.changes import Change
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.follower import FeedFollower
from tallykey.monitor.alerts import UsageMonitor
from tallykey.monitor.usage import UsageRecorder
from tallykey.network.throttle import FailureThrottle
from tallykey.notify.notices import Notifier
from tallykey.settings import Settings, load_settings


@dataclass(frozen=True)
class Surroundings:
    """What a verifier shares with the rest of its process."""

    settings: Settings
    database: Database
    #: Heartbeats and liveness follow the database's clock.
    database_clock: DatabaseClock
    #: What verdicts are judged by: the database's clock unless another was injected
    #: (tests, simulations).
    clock: Clock
    #: Writes the usage alerts' notices (one per process: the runtime's in a server).
    notifier: Notifier
    #: The verifier opened `database` itself, so closing it disposes of it.
    owns_database: bool = False


def embedded(database_url: str | None = None, settings: Settings | None = None,
             database: Database | None = None, clock: Clock | None = None) -> Surroundings:
    """What `Verifier()` runs on: the same settings as the server (`TALLYKEY_*`, or
    `settings`), and its own store connection (to `database_url`, or as the settings say)
    unless `database` is given. A `DatabaseClock` given as `clock` is also the one
    heartbeats follow."""
    settings = settings or load_settings()
    owns_database = database is None
    database = database or Database(
        database_url or settings.resolved_database_url, settings.db_connect_timeout,
        settings.db_statement_timeout, settings.db_pooler)
    database_clock = clock if isinstance(clock, DatabaseClock) else DatabaseClock(database)
    return Surroundings(settings=settings, database=database, database_clock=database_clock,
                        clock=clock or database_clock,
                        notifier=Notifier(public_url=settings.public_url),
                        owns_database=owns_database)


@dataclass(frozen=True)
class VerifierParts:
    """A verifier's own working parts (see `Verifier` for what each does)."""

    cache: VerificationCache
    limiter: FailureThrottle
    lookup: RecordLookup
    controls: KeyControls
    usage: UsageRecorder
    follower: FeedFollower


def build_parts(around: Surroundings, apply: Callable[[list[Change]], None], *,
                cache_size: int | None = None, cache_ttl: float | None = None,
                sync_interval: float | None = None) -> VerifierParts:
    """The parts of a verifier on `around`; `apply` is what the feed's changes are handed
    to (in feed order). Sizes and intervals default to the settings'."""
    settings, database, clock = around.settings, around.database, around.clock
    lookup = RecordLookup(database)
    controls = KeyControls(settings, lookup, clock.timestamp)

    def allow(record: TokenRecord) -> Verdict:  # a cached record's allowed verdict
        return allowed_verdict(record, controls.rate_view(record))

    return VerifierParts(
        cache=VerificationCache(size=cache_size or settings.cache_max_tokens,
                                ttl=cache_ttl or settings.cache_ttl, allow=allow),
        limiter=FailureThrottle(settings.auth_fail_limit),
        lookup=lookup,
        controls=controls,
        usage=UsageRecorder(database, UsageMonitor(database, settings, around.notifier,
                                                   clock, around.database_clock)),
        follower=FeedFollower(
            database, apply, clock=around.database_clock,
            lease=settings.propagation_timeout, stale_if_error=settings.stale_if_error,
            node_lease=settings.node_lease, node_name=settings.node_name,
            poll_interval=sync_interval, mode=settings.feed_mode))
