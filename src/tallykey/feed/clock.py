"""The database's clock. Nodes judge expiry, rotation grace, heartbeats and liveness by
it, so a node whose own clock is off neither accepts an expired token nor drops out of
acknowledgements (SPEC §10). Each node measures its offset to the database at start and
with every heartbeat; services measure it lazily, at most once a minute."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from sqlalchemy import text

from tallykey.clock import Clock, SystemClock
from tallykey.db.engine import Database

log = logging.getLogger(__name__)

#: An offset larger than this is logged as a warning (the node's clock needs fixing).
SKEW_WARNING_SECONDS = 1.0
RECALIBRATE_SECONDS = 60.0


class DatabaseClock:
    """A `Clock` that reads the local clock and adds the measured offset to the
    database's clock. On SQLite the store lives on this machine: the offset is 0."""

    def __init__(self, database: Database, local: Clock | None = None) -> None:
        self.database = database
        self.local = local or SystemClock()
        self._local_timestamp = (time.time if isinstance(self.local, SystemClock)
                                 else self.local.timestamp)
        self.offset = 0.0
        self._calibrated_at: float | None = None
        self._warned = False
        self._lock = threading.Lock()

    def timestamp(self) -> float:
        return self._local_timestamp() + self.offset

    def now(self) -> datetime:
        if self._calibrated_at is None or (
                time.monotonic() - self._calibrated_at > RECALIBRATE_SECONDS):
            self.calibrate(quiet=True)
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def calibrate(self, quiet: bool = False) -> float:
        """Measure the offset to the database's clock (half a round trip of error at
        most). With `quiet`, an unreachable store keeps the last offset."""
        if self.database.dialect != "postgresql":
            self._calibrated_at = time.monotonic()
            return 0.0
        with self._lock:
            try:
                with self.database.reading() as session:
                    before = self._local_timestamp()
                    db_now = float(session.execute(text(
                        "SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
                    after = self._local_timestamp()
            except Exception:
                if not quiet:
                    raise
                return self.offset
            self.offset = db_now - (before + after) / 2
            self._calibrated_at = time.monotonic()
        if abs(self.offset) > SKEW_WARNING_SECONDS and not self._warned:
            self._warned = True
            log.warning("this machine's clock is %.1f s %s the database's; tallykey uses "
                        "the database's time, but fix the clock (NTP)", abs(self.offset),
                        "behind" if self.offset > 0 else "ahead of")
        elif abs(self.offset) <= SKEW_WARNING_SECONDS:
            self._warned = False
        return self.offset
