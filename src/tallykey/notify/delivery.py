"""Delivering what the outbox holds: claim the due messages in batches, hand each batch to
its channel (mail, webhook), and settle every message (sent, retried later, or dead),
while a lease keeper extends the claims of a slow delivery. The job runner
(`tallykey.jobs`) calls this once per pass.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from tallykey.clock import Clock
from tallykey.db.engine import Database
from tallykey.notify import outbox
from tallykey.notify.models import DEAD, PENDING, SENT, OutboxMessage

log = logging.getLogger(__name__)

DEFAULT_BATCH = 50
#: Bounds one pass, so a huge backlog never starves the scheduler or the stop signal.
MAX_BATCHES_PER_PASS = 20


@dataclass
class Delivered:
    """What one delivery pass did."""

    sent: int = 0
    retrying: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)


class Delivery:
    """Delivers due outbox messages through `channels` (by channel name) as the worker
    `name`. `prepare` sees each message of a channel that wants it just before it leaves
    (a mail's one-time links are put in only then)."""

    def __init__(self, database: Database, clock: Clock, channels: dict[str, outbox.Channel],
                 *, name: str, max_attempts: int = outbox.DEFAULT_MAX_ATTEMPTS,
                 batch_size: int = DEFAULT_BATCH, lease: timedelta = outbox.LEASE,
                 prepare: dict[str, Callable[[OutboxMessage], OutboxMessage]] | None = None
                 ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.database = database
        self.clock = clock
        self.channels = channels
        self.name = name
        self.max_attempts = max_attempts
        self.batch_size = batch_size
        #: How long a claim lasts without being extended (see `LeaseKeeper`).
        self.lease = lease
        self.prepare = prepare or {}

    def deliver_due(self, now: datetime, fixed: datetime | None = None) -> Delivered:
        """Deliver what is due at `now`, batch after batch (at most
        `MAX_BATCHES_PER_PASS`); a message is settled at `fixed`, or the clock's now."""
        done = Delivered()
        with LeaseKeeper(self.database, self.name, self.clock, self.lease):
            for _ in range(MAX_BATCHES_PER_PASS):
                if not self._deliver_batch(now, fixed, done):
                    break
        return done

    def _deliver_batch(self, now: datetime, fixed: datetime | None, done: Delivered) -> bool:
        """One claimed batch; False when there was none, or when all of it failed
        (the server is down?): the rest is left for the next pass."""
        batch = outbox.claim(self.database, worker=self.name, now=now,
                             channels=list(self.channels), limit=self.batch_size,
                             lease=self.lease)
        if not batch:
            return False
        by_channel: dict[str, list[OutboxMessage]] = defaultdict(list)
        for message in batch:
            prepare = self.prepare.get(message.channel)
            by_channel[message.channel].append(message if prepare is None
                                               else prepare(message))
        delivered = 0
        for channel, messages in by_channel.items():
            for message, error in self.channels[channel].deliver(messages):
                delivered += error is None
                status = outbox.settle(self.database, message, worker=self.name,
                                       now=fixed or self.clock.now(), error=error,
                                       max_attempts=self.max_attempts)
                if status == SENT:
                    done.sent += 1
                elif status == PENDING:
                    done.retrying += 1
                elif status == DEAD:
                    done.dead += 1
                if error is not None:
                    done.errors.append(f"{message.id}: {error}")
        return delivered > 0


class LeaseKeeper:
    """While a pass delivers, extend this worker's claims every third of the lease, so a
    slow delivery keeps its rows and a crashed worker's rows come back within one lease."""

    def __init__(self, database: Database, worker: str, clock: Clock,
                 lease: timedelta) -> None:
        self.database, self.worker, self.clock, self.lease = database, worker, clock, lease
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tallykey-lease",
                                        daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.lease.total_seconds() / 3):
            try:
                outbox.extend(self.database, worker=self.worker, now=self.clock.now(),
                              lease=self.lease)
            except Exception:  # the claim may lapse; at worst a mail goes twice
                log.warning("could not extend the outbox claims of %s", self.worker)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
