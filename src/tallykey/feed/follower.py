"""One node following the change feed: the background loop, and the cache lease.

A node may answer from its cache only while its last successful feed read began less
than the lease (`TALLYKEY_PROPAGATION_TIMEOUT`) ago. Past that it reads the feed again
before answering, so a node that was paused or slow never serves a verdict older than
an acknowledged change once it can reach the store. When the store cannot be reached
it may go on answering from its cache for `TALLYKEY_STALE_IF_ERROR` seconds after its
last successful read, and then refuses with 503 (SPEC §10).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from tallykey.db.engine import Database
from tallykey.errors import StoreUnavailable
from tallykey.feed import changes
from tallykey.feed.changes import Change, FeedReader
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.listener import ChangeListener
from tallykey.feed.nodes import HEARTBEAT_SECONDS, NodePresence

log = logging.getLogger(__name__)

SQLITE_POLL_SECONDS = 0.05
POSTGRES_POLL_SECONDS = 0.5
#: After a failed read, requests skip the store for this long (no pile-up of
#: connection attempts during an outage); the background loop keeps trying.
RETRY_AFTER_FAILURE_SECONDS = 0.5
PRUNE_EVERY_SECONDS = 3600.0


class FeedFollower:
    """Reads the feed for one node, hands each change to `apply`, keeps the node's row
    (heartbeat and acknowledgement) and runs `periodic` tasks once a heartbeat."""

    def __init__(self, database: Database, apply: Callable[[list[Change]], None], *,
                 clock: DatabaseClock, lease: float, stale_if_error: float,
                 node_name: str | None = None, poll_interval: float | None = None) -> None:
        self.database = database
        self.apply = apply
        self.clock = clock
        self.lease = lease
        self.stale_if_error = stale_if_error
        pushed = database.dialect == "postgresql"
        #: With LISTEN/NOTIFY the poll is only a backstop; without it, it is the feed.
        self.poll_interval = poll_interval or (POSTGRES_POLL_SECONDS if pushed
                                               else SQLITE_POLL_SECONDS)
        self.reader = FeedReader(database)
        self.presence = NodePresence(database, clock, node_name)
        self.listener = ChangeListener(database, self._sync_quietly) if pushed else None
        #: Tasks run once a heartbeat (usage flush, shared throttle); each may fail alone.
        self.periodic: list[Callable[[], None]] = []
        #: `time.monotonic()` when the last successful feed read began.
        self.read_at = float("-inf")
        #: The same moment on the database's clock (reported with the heartbeat).
        self.synced_at: datetime | None = None
        self._retry_at = 0.0
        self._store_down = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = time.monotonic()

    # --- the lease ---------------------------------------------------------------------

    def fresh(self) -> bool:
        """Is the cache still covered by the lease? (One clock read: the hot path.)"""
        return time.monotonic() - self.read_at < self.lease

    def refresh(self) -> bool:
        """Make the cache fresh before answering from it: read the feed now unless the
        store failed moments ago. True when fresh; False when the store is unreachable
        (then the caller may use its cache only while `within_stale_window()`)."""
        if self.fresh():
            return True
        if time.monotonic() < self._retry_at:
            return False
        try:
            self.sync()
        except StoreUnavailable:
            return False
        return True

    def within_stale_window(self) -> bool:
        return time.monotonic() - self.read_at <= self.stale_if_error

    @property
    def store_down(self) -> bool:
        return self._store_down

    def recently_failed(self) -> bool:
        """Did the store fail moments ago? Then requests do not try it again yet."""
        return time.monotonic() < self._retry_at

    def note_failure(self) -> None:
        """A request found the store unreachable (a cache miss that could not load)."""
        self._read_failed()

    # --- reading -----------------------------------------------------------------------

    def start_reading(self) -> None:
        """Take the present as the starting point and join the node list."""
        began = time.monotonic()
        self.reader.start()
        self._read_succeeded(began)
        self.clock.calibrate(quiet=True)
        self.presence.report(self.reader.position, self.reader.snapshot, self.synced_at,
                                 self._offset())

    def sync(self) -> int:
        """Apply what is new in the feed now; returns how many changes were applied.
        Raises `StoreUnavailable` when the store cannot be read."""
        with self._lock:
            began = time.monotonic()
            synced_at = self._now()
            try:
                batch = self.reader.read()
            except StoreUnavailable:
                self._read_failed()
                raise
            if batch:
                self.apply(batch)
            self._read_succeeded(began, synced_at)
            if batch:
                with contextlib.suppress(StoreUnavailable):  # the heartbeat says it later
                    self.presence.acknowledge(self.reader.position, self.reader.snapshot,
                                              self.synced_at)
            return len(batch)

    def _read_succeeded(self, began: float, synced_at: datetime | None = None) -> None:
        self.read_at = began
        self.synced_at = synced_at or self._now()
        if self._store_down:
            self._store_down = False
            log.warning("the token store is reachable again; the feed is followed anew")

    def _read_failed(self) -> None:
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        if not self._store_down:
            self._store_down = True
            log.warning("the token store cannot be reached; verifying from cache for at "
                        "most %g s after the last successful read", self.stale_if_error)

    # --- the background loop -----------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tallykey-feed",
                                            daemon=True)
            self._thread.start()
            if self.listener is not None:
                self.listener.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loop and leave the node list (bounded in time, store up or down)."""
        self._stop.set()
        if self.listener is not None and self._thread is not None:
            self.listener.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        if not self._store_down:
            with contextlib.suppress(Exception):
                self.presence.leave()
        self.reader.close()

    def _run(self) -> None:
        next_beat = 0.0
        while not self._stop.wait(min(self.poll_interval, HEARTBEAT_SECONDS)):
            self._sync_quietly()
            if time.monotonic() >= next_beat and not self._stop.is_set():
                next_beat = time.monotonic() + HEARTBEAT_SECONDS
                self._beat()

    def _beat(self) -> None:
        for task in self.periodic:
            try:
                task()
            except StoreUnavailable:
                pass  # said once by the feed read; retried next beat
            except Exception:
                log.exception("periodic verifier task failed; retrying next heartbeat")
        if self._store_down:
            return
        try:
            self.clock.calibrate()
            self.presence.report(self.reader.position, self.reader.snapshot, self.synced_at,
                                 self._offset())
            if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
                self._last_prune = time.monotonic()
                changes.prune(self.database, self._now() - changes.RETENTION)
        except StoreUnavailable:
            self._read_failed()
        except Exception:
            log.exception("heartbeat failed; retrying")

    def _sync_quietly(self) -> None:
        try:
            self.sync()
        except StoreUnavailable:
            pass  # logged once by `_read_failed`
        except Exception:
            log.exception("could not read the change feed; retrying")

    def _now(self) -> datetime:
        """The database's time by the last calibration (never a query of its own)."""
        return datetime.fromtimestamp(self.clock.timestamp(), UTC)

    def _offset(self) -> float:
        return self.clock.offset
