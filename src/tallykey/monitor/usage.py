"""Last-used, recent client IPs and per-hour request counts, aggregated in memory and
flushed in batches: no database write per request, and no increment lost or doubled. An
allowed request costs the hot path one append to a deque (no lock); the flush counts
what was appended, or the recording call does past `MAX_RECENT` of them.

A flush is two transactions. The first writes usage (counts, last used, recent IPs); the
second hands the batch to the `FlushObserver` (`monitor.alerts`), which raises alerts and
writes denied authentications to the audit trail. Should the second fail, only its part
of the batch is kept for the next flush: counts are never written twice.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.db.engine import Database
from tallykey.monitor import recent_ips
from tallykey.monitor.models import TokenUsage
from tallykey.tokens.models import Token

ALLOWED = "allowed"
UPSERT_ROWS = 1000
#: Requests recorded but not yet counted in past which the recording thread counts them
#: itself (normally the flush does, once a heartbeat): a bound on their memory.
MAX_RECENT = 65_536
MAX_AGENT_LENGTH = 300

#: (token id, client ip) -> (POSIX time of the latest allowed use, user agent).
Uses = dict[tuple[str, str], tuple[float, str | None]]


@dataclass
class Denial:
    """Refused requests of one token from one IP for one reason, within one flush."""

    account_id: str
    count: int
    first_at: float
    last_at: float


@dataclass
class OldSecretUse:
    """A rotated-out secret that still works (grace period) was used."""

    account_id: str
    at: float
    ip: str
    retires_at: float


@dataclass
class DecoyUse:
    """Uses of one decoy token within one flush: how many, when, and the latest caller."""

    account_id: str
    count: int
    first_at: float
    last_at: float
    ip: str
    agent: str | None
    path: str | None


@dataclass
class Batch:
    """What one flush covers."""

    counts: dict[tuple[str, int, str], int] = field(default_factory=dict)
    uses: Uses = field(default_factory=dict)
    denials: dict[tuple[str, str, str], Denial] = field(default_factory=dict)
    old_secrets: dict[str, OldSecretUse] = field(default_factory=dict)
    decoys: dict[str, DecoyUse] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counts or self.uses or self.denials or self.old_secrets
                    or self.decoys)

    def last_use(self) -> dict[str, tuple[float, str, str | None]]:
        """Per token: the newest allowed use (time, ip, agent)."""
        latest: dict[str, tuple[float, str, str | None]] = {}
        for (token_id, ip), (at, agent) in self.uses.items():
            seen = latest.get(token_id)
            if seen is None or seen[0] < at:
                latest[token_id] = (at, ip, agent)
        return latest


class FlushObserver(Protocol):
    def after_flush(self, batch: Batch) -> None:
        """Act on a batch whose usage has been written (its own transaction)."""


class UsageRecorder:
    def __init__(self, database: Database, observer: FlushObserver | None = None) -> None:
        self.database = database
        self.observer = observer
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._uses: Uses = {}
        self._counts: dict[tuple[str, int, str], int] = {}
        self._denials: dict[tuple[str, str, str], Denial] = {}
        self._old_secrets: dict[str, OldSecretUse] = {}
        self._decoys: dict[str, DecoyUse] = {}
        #: Requests recorded and not counted yet: (token id, time, ip, agent, outcome).
        #: Appending to a deque needs no lock (it is atomic), so the hot path takes none;
        #: the flush counts them (`_count_recent`), oldest first.
        self._recent: deque[tuple[str, float, str, str | None, str]] = deque()
        #: Requests per outcome since start, counted at flush (for metrics).
        self.totals: Counter[str] = Counter()

    def record(self, token_id: str, at: float, ip: str, agent: str | None,
               outcome: str) -> None:
        """Count one request at POSIX time `at` (hot path: one append, no lock; counted
        into the batch at the next flush). The verifier records refusals of known tokens
        with `deny`, which also audits them."""
        recent = self._recent
        recent.append((token_id, at, ip, agent, outcome))
        if len(recent) > MAX_RECENT:  # no flush for a while (no background work)
            with self._lock:
                self._count_recent()

    def _count_recent(self) -> None:
        """Move the recorded requests into the counts (with `_lock` held). Only as many as
        were there at the start: one appended meanwhile waits for the next call."""
        recent, counts, uses = self._recent, self._counts, self._uses
        take = recent.popleft
        for _ in range(len(recent)):
            token_id, at, ip, agent, outcome = take()
            key = (token_id, int(at) // 3600, outcome)
            counts[key] = counts.get(key, 0) + 1
            if outcome == ALLOWED:
                uses[(token_id, ip)] = (at, agent)

    def deny(self, token_id: str, account_id: str, at: float, ip: str, outcome: str) -> None:
        """Count one refused request of a known token (the audit trail gets one entry per
        token, IP and reason per flush)."""
        key = (token_id, int(at) // 3600, outcome)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
            denial = self._denials.get((token_id, ip, outcome))
            if denial is None:
                self._denials[(token_id, ip, outcome)] = Denial(account_id, 1, at, at)
            else:
                denial.count += 1
                denial.last_at = max(denial.last_at, at)

    def old_secret_used(self, token_id: str, account_id: str, retires_ts: float | None,
                        at: float, ip: str) -> None:
        """Note that a secret in its rotation grace period was used (off the hot path:
        such records are never `plain`)."""
        assert retires_ts is not None
        with self._lock:
            self._old_secrets[token_id] = OldSecretUse(account_id, at, ip, retires_ts)

    def decoy_used(self, token_id: str, account_id: str, at: float, ip: str,
                   agent: str | None, path: str | None) -> None:
        """Note a use of a decoy token: no usage count (a decoy is no real token), only
        what its alert needs (`monitor.decoys`)."""
        with self._lock:
            use = self._decoys.get(token_id)
            if use is None:
                self._decoys[token_id] = DecoyUse(account_id, 1, at, at, ip, agent, path)
                return
            use.count += 1
            if at >= use.last_at:
                use.last_at, use.ip, use.agent, use.path = at, ip, agent, path
            use.first_at = min(use.first_at, at)

    def pending(self) -> int:
        return sum(self._counts.values()) + len(self._recent)

    def flush(self) -> int:
        """Write what has been gathered; returns how many requests it covered. On a
        database error the batch is put back, so a later flush writes it."""
        with self._flush_lock:
            with self._lock:
                self._count_recent()
                batch = Batch(self._counts, self._uses, self._denials, self._old_secrets,
                              self._decoys)
                self._counts, self._uses, self._denials, self._old_secrets = {}, {}, {}, {}
                self._decoys = {}
            if not batch:
                return 0
            try:
                self._write(batch)
            except Exception:
                self._put_back(batch)
                raise
            for (_, _, outcome), count in batch.counts.items():
                self.totals[outcome] += count
            if self.observer is not None:
                try:
                    self.observer.after_flush(batch)
                except Exception:
                    # Usage is written; keep what the observer needs (and only that).
                    self._put_back(Batch(uses=batch.uses, denials=batch.denials,
                                         old_secrets=batch.old_secrets,
                                         decoys=batch.decoys))
                    raise
            return sum(batch.counts.values())

    def _write(self, batch: Batch) -> None:
        insert = pg_insert if self.database.dialect == "postgresql" else sqlite_insert
        with self.database.transaction() as session:
            for token_id, (stamp, ip, agent) in sorted(batch.last_use().items()):
                at = datetime.fromtimestamp(stamp, UTC)
                session.execute(
                    update(Token)
                    .where(Token.id == token_id,
                           or_(Token.last_used_at.is_(None), Token.last_used_at < at))
                    .values(last_used_at=at, last_used_ip=ip[:45],
                            last_used_agent=agent[:MAX_AGENT_LENGTH] if agent else None))
            if batch.counts:
                rows = [{"token_id": t, "hour": datetime.fromtimestamp(h * 3600, UTC),
                         "outcome": o, "count": n}
                        for (t, h, o), n in sorted(batch.counts.items())]
                # in slices: SQLite caps bound parameters per statement (32,766)
                for start in range(0, len(rows), UPSERT_ROWS):
                    statement = insert(TokenUsage).values(rows[start:start + UPSERT_ROWS])
                    statement = statement.on_conflict_do_update(
                        index_elements=["token_id", "hour", "outcome"],
                        set_={"count": TokenUsage.count + statement.excluded.count})
                    session.execute(statement)
            if batch.uses:
                recent_ips.remember(session, {key: at for key, (at, _) in batch.uses.items()})

    def _put_back(self, batch: Batch) -> None:
        with self._lock:
            for key, count in batch.counts.items():
                self._counts[key] = self._counts.get(key, 0) + count
            for pair, use in batch.uses.items():
                newer = self._uses.get(pair)
                if newer is None or newer[0] < use[0]:
                    self._uses[pair] = use
            for denied, denial in batch.denials.items():
                current = self._denials.get(denied)
                if current is None:
                    self._denials[denied] = denial
                else:
                    current.count += denial.count
                    current.first_at = min(current.first_at, denial.first_at)
                    current.last_at = max(current.last_at, denial.last_at)
            for token_id, old in batch.old_secrets.items():
                self._old_secrets.setdefault(token_id, old)
            for token_id, trip in batch.decoys.items():
                current_trip = self._decoys.get(token_id)
                if current_trip is None:
                    self._decoys[token_id] = trip
                    continue
                current_trip.count += trip.count
                current_trip.first_at = min(current_trip.first_at, trip.first_at)
                if trip.last_at > current_trip.last_at:
                    (current_trip.last_at, current_trip.ip, current_trip.agent,
                     current_trip.path) = trip.last_at, trip.ip, trip.agent, trip.path
