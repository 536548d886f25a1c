"""One node following the change feed: the background loop, and the two leases that
let it answer from its cache (SPEC §10).

- **The feed lease** (`TALLYKEY_PROPAGATION_TIMEOUT`): a node answers from its cache
  only while its last successful feed read began less than this long ago; past that it
  reads the feed again before answering, so a node that was paused or slow never serves
  a verdict older than an acknowledged change once it can reach the store.
- **The node lease** (`Settings.node_lease`, derived from `TALLYKEY_STALE_IF_ERROR`):
  every heartbeat writes, on the database's clock, until when this node may answer from
  its cache; a change's author awaits every node whose lease has not ended, or names it
  with that moment (`feed.nodes.wait_for`). The node counts its own lease from *before*
  the heartbeat was sent, so it always ends here first. A node that cannot renew it
  (cut off, frozen store, read-only store) stops answering from its cache when it ends.

When the store cannot be reached, cached verdicts keep verifying for at most
`TALLYKEY_STALE_IF_ERROR` seconds after the last successful read, and never past the
node lease; then 503. No request waits on a feed read for longer than
`REFRESH_WAIT_SECONDS`: reads are bounded by a client-side deadline (`FEED_DEADLINE`)
and a request never queues behind another read's lock.
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
from tallykey.feed import changes, nodes
from tallykey.feed.changes import Change, FeedReader
from tallykey.feed.clock import DatabaseClock
from tallykey.feed.listener import ChangeListener
from tallykey.feed.nodes import HEARTBEAT_SECONDS, NodePresence

log = logging.getLogger(__name__)

SQLITE_POLL_SECONDS = 0.05
POSTGRES_POLL_SECONDS = 0.5
#: The feed read interval of a PostgreSQL node without LISTEN (`TALLYKEY_FEED_MODE=poll`,
#: or behind a pooler in transaction mode): one index probe per node per interval.
FEED_POLL_SECONDS = 0.1
#: `TALLYKEY_FEED_MODE=auto` gives up on LISTEN after this many background polls in a
#: row found changes while the listener, connected, had heard nothing for
#: `UNHEARD_SECONDS` (a pooler that passes LISTEN on but never delivers NOTIFY).
UNHEARD_POLLS = 3
UNHEARD_SECONDS = 1.0
#: After a failed read, requests skip the store for this long (no pile-up of
#: connection attempts during an outage); the background loop keeps trying.
RETRY_AFTER_FAILURE_SECONDS = 0.5
PRUNE_EVERY_SECONDS = 3600.0
#: Client-side deadline of one feed read (and of a cache-miss lookup): both are index
#: probes that take milliseconds, so a store that needs longer is not answering.
FEED_DEADLINE = 1.0
#: The longest a request waits for a feed read that another thread has in flight.
REFRESH_WAIT_SECONDS = 1.0
#: While the feed cannot be read, new units of work fail at once for this long (it is
#: renewed by each failed read and ended by the first successful one).
BREAKER_HOLD_SECONDS = 3.0
#: This node ends its own lease this much before the end it wrote (clock rate drift).
LEASE_MARGIN_SECONDS = 0.1
#: The longest an acknowledgement waits for a heartbeat's write in flight (then the
#: next heartbeat carries it).
ACKNOWLEDGE_WAIT_SECONDS = 1.0
#: `/healthz` calls the store unavailable when no feed read succeeded for this long.
HEALTHY_READ_AGE = 2.5


class FeedFollower:
    """Reads the feed for one node, hands each change to `apply`, keeps the node's row
    (heartbeat, lease and acknowledgement) and runs `periodic` tasks once a heartbeat."""

    def __init__(self, database: Database, apply: Callable[[list[Change]], None], *,
                 clock: DatabaseClock, lease: float, stale_if_error: float,
                 node_lease: float | None = None, node_name: str | None = None,
                 poll_interval: float | None = None, mode: str = "auto") -> None:
        self.database = database
        self.apply = apply
        self.clock = clock
        self.lease = lease
        self.stale_if_error = stale_if_error
        #: Seconds of each node lease: never shorter than the stale window.
        self.node_lease = max(node_lease or 0.0, nodes.node_lease(stale_if_error))
        postgres = database.dialect == "postgresql"
        #: LISTEN/NOTIFY works on a direct connection only (a pooler in transaction
        #: mode hands the listening server connection to other clients).
        pushed = postgres and (mode == "listen" or (mode == "auto" and not database.pooled))
        #: With LISTEN/NOTIFY the poll is only a backstop; without it, it is the feed.
        self.poll_interval = poll_interval or (
            POSTGRES_POLL_SECONDS if pushed else FEED_POLL_SECONDS if postgres
            else SQLITE_POLL_SECONDS)
        self.reader = FeedReader(database, deadline=FEED_DEADLINE)
        self.presence = NodePresence(database, clock, node_name, lease=self.node_lease)
        self.listener = ChangeListener(database, self._sync_quietly) if pushed else None
        #: Fall back to polling when LISTEN turns out not to deliver (`_check_listener`).
        self._may_fall_back = mode == "auto"
        self._unheard = 0
        #: Tasks run once a heartbeat (usage flush, shared throttle); each may fail alone.
        self.periodic: list[Callable[[], None]] = []
        #: `time.monotonic()` when the last successful feed read began.
        self.read_at = float("-inf")
        #: `time.monotonic()` when this node's lease ends (counted from before the
        #: heartbeat that wrote it was sent, so never later than the end others see).
        self.lease_ends = float("-inf")
        #: min(read_at + lease, lease_ends): the hot path compares one number.
        self.serve_until = float("-inf")
        #: The same moment on the database's clock (reported with the heartbeat).
        self.synced_at: datetime | None = None
        self._retry_at = 0.0
        #: Reads that began before this moment do not make the feed fresh (`_renew`).
        self._fence = float("-inf")
        self._store_down = False
        self._lock = threading.Lock()  # one feed read at a time (held across I/O)
        self._state = threading.Lock()  # the lease fields (never held across I/O)
        #: One write of this node's position at a time, so a heartbeat that took the
        #: position before a read cannot overwrite that read's acknowledgement.
        self._reporting = threading.Lock()
        self._read_done = threading.Condition()  # never held across I/O
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beats: threading.Thread | None = None
        self._last_prune = time.monotonic()

    # --- the leases --------------------------------------------------------------------

    def fresh(self) -> bool:
        """Was the feed read within the feed lease? (One clock read.)"""
        return time.monotonic() - self.read_at < self.lease

    def leased(self) -> bool:
        """Does this node hold the lease that acknowledgements count?"""
        return time.monotonic() < self.lease_ends

    def serving(self) -> bool:
        """May the cache answer now, without reading the feed first? (The hot path.)"""
        return time.monotonic() < self.serve_until

    def refresh(self) -> bool:
        """Make the feed fresh before answering from the cache: read it now unless the
        store failed moments ago, or wait (at most `REFRESH_WAIT_SECONDS`) for a read
        already in flight. True when fresh; False when the store is not answering (then
        the caller may use its cache only while `within_stale_window()`)."""
        if self.fresh():
            return True
        if self.recently_failed():
            return False
        if self._lock.acquire(blocking=False):
            try:
                self._read_locked()
            except StoreUnavailable:
                return False
            finally:
                self._lock.release()
            return self.fresh()  # not if the lease was taken up again meanwhile (fence)
        with self._read_done:  # another thread is reading: wait for it, bounded
            self._read_done.wait_for(lambda: self.fresh() or self.recently_failed(),
                                     timeout=REFRESH_WAIT_SECONDS)
        return self.fresh()

    def ensure_lease(self) -> bool:
        """Without a background loop (an embedded verifier with `background=False`),
        renew the node lease inline when it has ended. True when it is held."""
        if self.leased():
            return True
        if self._thread is None and not self.recently_failed():
            with contextlib.suppress(StoreUnavailable):
                self._renew()
        return self.leased()

    def within_stale_window(self) -> bool:
        """May a cached verdict answer while the store cannot be reached? Only within
        TALLYKEY_STALE_IF_ERROR of the last successful read, and only under the lease."""
        now = time.monotonic()
        return now - self.read_at <= self.stale_if_error and now < self.lease_ends

    def health(self) -> dict[str, object]:
        """What `/healthz` says, from what this node knows (no I/O): `ok` with the store
        answering and the lease held; `degraded` while it still verifies something
        (cached verdicts in the stale window, or loads from a reachable store without
        the lease); `down` when it can verify nothing."""
        now = time.monotonic()
        store_ok = (not self._store_down and not self.database.breaker.is_open()
                    and now - self.read_at < max(HEALTHY_READ_AGE, self.lease))
        leased = now < self.lease_ends
        if store_ok and leased:
            status = "ok"
        elif store_ok or self.within_stale_window():
            status = "degraded"
        else:
            status = "down"
        return {"status": status, "store": "ok" if store_ok else "unavailable",
                "lease": leased,
                "lease_seconds_left": round(max(0.0, self.lease_ends - now), 3),
                "feed_age_seconds": (round(now - self.read_at, 3)
                                     if self.read_at > float("-inf") else None)}

    @property
    def store_down(self) -> bool:
        return self._store_down

    def recently_failed(self) -> bool:
        """Did the store fail moments ago? Then requests do not try it again yet."""
        return time.monotonic() < self._retry_at or self.database.breaker.is_open()

    def note_failure(self) -> None:
        """A request found the store unreachable (a cache miss that could not load):
        other requests skip the store for a moment; the feed reads decide whether it
        is down (one dead connection is not an outage)."""
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS

    # --- reading -----------------------------------------------------------------------

    def start_reading(self) -> None:
        """Join the node list with a lease, then take the present as the starting point
        (that first read comes after the lease was written: see `_renew`)."""
        self.clock.calibrate(quiet=True)
        self._renew()
        began = time.monotonic()
        self.reader.start()
        self._read_succeeded(began)
        self.presence.acknowledge(self.reader.position, self.reader.snapshot,
                                  self.synced_at)

    def sync(self, timeout: float = FEED_DEADLINE + REFRESH_WAIT_SECONDS) -> int:
        """Apply what is new in the feed now; returns how many changes were applied.
        Raises `StoreUnavailable` when the store cannot be read, or when another read
        holds the feed for longer than `timeout` seconds."""
        if not self._lock.acquire(timeout=timeout):
            raise StoreUnavailable("The token store is not answering: a feed read is "
                                   "still waiting for it.")
        try:
            return self._read_locked()
        finally:
            self._lock.release()

    def _read_locked(self) -> int:
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
        if batch and self._reporting.acquire(timeout=ACKNOWLEDGE_WAIT_SECONDS):
            try:
                with contextlib.suppress(StoreUnavailable):  # the heartbeat says it later
                    self.presence.acknowledge(self.reader.position, self.reader.snapshot,
                                              self.synced_at)
            finally:
                self._reporting.release()
        return len(batch)

    def _renew(self) -> None:
        """Heartbeat: write this node's position and a new lease end; the lease counts
        here from before the write was sent.

        A lease that had ended is taken up again only behind a fence: while it was
        ended, a change's author may have answered without this node, so the cache
        answers again only after a feed read that began once the new lease was
        visible (a read in flight across the renewal does not count)."""
        began = time.monotonic()
        lapsed = began >= self.lease_ends
        with self._reporting:  # positions taken inside: never older than one written
            self.presence.report(self.reader.position, self.reader.snapshot,
                                 self.synced_at, self._offset())
        with self._state:
            if lapsed:
                self._fence = time.monotonic()
                self.read_at = float("-inf")
            self._set_lease(began + self.node_lease - LEASE_MARGIN_SECONDS)
        if lapsed and self._thread is not None:
            self._sync_quietly()  # the read behind the fence, at once

    def _set_lease(self, ends: float) -> None:
        self.lease_ends = ends
        self.serve_until = min(self.read_at + self.lease, ends)

    def _read_succeeded(self, began: float, synced_at: datetime | None = None) -> None:
        with self._state:
            if began >= self._fence:  # see `_renew`
                self.read_at = max(self.read_at, began)
            self.serve_until = min(self.read_at + self.lease, self.lease_ends)
        self.synced_at = synced_at or self._now()
        self.database.breaker.close()
        if self._store_down:
            self._store_down = False
            log.warning("the token store is reachable again; the feed is followed anew")
        with self._read_done:
            self._read_done.notify_all()

    def _read_failed(self) -> None:
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS
        self.database.breaker.trip(BREAKER_HOLD_SECONDS)
        if not self._store_down:
            self._store_down = True
            log.warning("the token store cannot be reached; verifying from cache for at "
                        "most %g s after the last successful read (and within this "
                        "node's lease)", self.stale_if_error)
        with self._read_done:
            self._read_done.notify_all()

    # --- the background loop -----------------------------------------------------------

    def start(self) -> None:
        """Two threads: the feed reads (`_run`) and the heartbeat with the periodic
        tasks (`_run_beats`). Apart, so that a slow heartbeat or usage flush never holds
        up a read: without LISTEN the poll is the only way a change arrives, and a
        change's author waits for it."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="tallykey-feed",
                                            daemon=True)
            self._beats = threading.Thread(target=self._run_beats, name="tallykey-beat",
                                           daemon=True)
            self._thread.start()
            self._beats.start()
            if self.listener is not None:
                self.listener.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the loops and leave the node list (bounded in time, store up or down)."""
        self._stop.set()
        if self.listener is not None and self._thread is not None:
            self.listener.stop(timeout)
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            self._thread = None
        if self._beats is not None:
            self._beats.join(timeout=timeout)
            self._beats = None
        with self._state:
            self._set_lease(float("-inf"))  # no cached answer once the row is gone
        if not self._store_down:
            with contextlib.suppress(Exception):
                self.presence.leave()
        self.reader.close()

    def _run(self) -> None:
        while not self._stop.wait(min(self.poll_interval, HEARTBEAT_SECONDS)):
            self._check_listener(self._sync_quietly())

    def _run_beats(self) -> None:
        """A heartbeat every `HEARTBEAT_SECONDS` (counted from the start of the last)."""
        wait = 0.0
        while not self._stop.wait(wait):
            began = time.monotonic()
            self._beat()
            wait = max(0.0, began + HEARTBEAT_SECONDS - time.monotonic())

    def _beat(self) -> None:
        """Renew the lease first (nothing else may delay it), then the periodic tasks."""
        if not self._store_down:
            try:
                self.clock.calibrate()
                self._renew()
                if time.monotonic() - self._last_prune > PRUNE_EVERY_SECONDS:
                    self._last_prune = time.monotonic()
                    changes.prune(self.database, self._now() - changes.RETENTION)
            except StoreUnavailable:
                pass  # not renewed: the lease runs out unless a later beat renews it
            except Exception:
                log.exception("heartbeat failed; retrying")
        for task in self.periodic:
            try:
                task()
            except StoreUnavailable:
                pass  # said once by the feed read; retried next beat
            except Exception:
                log.exception("periodic verifier task failed; retrying next heartbeat")

    def _sync_quietly(self) -> int:
        try:
            return self.sync()
        except StoreUnavailable:
            pass  # logged once by `_read_failed`
        except Exception:
            log.exception("could not read the change feed; retrying")
        return 0

    def _check_listener(self, applied: int) -> None:
        """A background poll applied `applied` changes: with a working listener it finds
        (almost) nothing, since the notification came first. When polls keep finding
        changes the listener never heard of, LISTEN does not deliver (a pooler in
        transaction mode that the start-up check missed): poll instead."""
        listener = self.listener
        if not applied or listener is None or not self._may_fall_back:
            return
        if not listener.connected.is_set() or (
                time.monotonic() - listener.heard_at < UNHEARD_SECONDS):
            self._unheard = 0
            return
        self._unheard += 1
        if self._unheard >= UNHEARD_POLLS:
            log.warning("LISTEN delivers no notifications (a connection pooler in "
                        "transaction mode?); reading the change feed every %g s instead "
                        "(set TALLYKEY_FEED_MODE=poll or TALLYKEY_DB_POOLER=transaction "
                        "to start that way)", FEED_POLL_SECONDS)
            self.listener = None
            self.poll_interval = FEED_POLL_SECONDS
            listener.stop(timeout=1.0)

    def _now(self) -> datetime:
        """The database's time by the last calibration (never a query of its own)."""
        return datetime.fromtimestamp(self.clock.timestamp(), UTC)

    def _offset(self) -> float:
        return self.clock.offset
