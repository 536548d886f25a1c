"""Last-used and per-hour request counts, aggregated in memory on the hot path and
flushed in batches: no database write per request, and no increment lost or doubled."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.auth.models import TokenUsage
from tallykey.db.engine import Database
from tallykey.tokens.models import Token

ALLOWED = "allowed"
MAX_AGENT_LENGTH = 300


class UsageRecorder:
    def __init__(self, database: Database) -> None:
        self.database = database
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last_use: dict[str, tuple[float, str, str | None]] = {}
        self._counts: dict[tuple[str, int, str], int] = {}

    def record(self, token_id: str, at: float, ip: str, agent: str | None,
               outcome: str) -> None:
        """Count one request at POSIX time `at` (hot path: a lock and two dict writes)."""
        key = (token_id, int(at) // 3600, outcome)
        counts = self._counts
        with self._lock:
            counts[key] = counts.get(key, 0) + 1
            if outcome == ALLOWED:
                self._last_use[token_id] = (at, ip, agent)

    def pending(self) -> int:
        return sum(self._counts.values())

    def flush(self) -> int:
        """Write what has been gathered; returns how many requests it covered. On a
        database error the batch is put back, so a later flush writes it."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, {}
                last_use, self._last_use = self._last_use, {}
            if not counts and not last_use:
                return 0
            try:
                self._write(counts, last_use)
            except Exception:
                self._put_back(counts, last_use)
                raise
            return sum(counts.values())

    def _write(self, counts: dict[tuple[str, int, str], int],
               last_use: dict[str, tuple[float, str, str | None]]) -> None:
        insert = pg_insert if self.database.dialect == "postgresql" else sqlite_insert
        with self.database.transaction() as session:
            for token_id, (stamp, ip, agent) in sorted(last_use.items()):
                at = datetime.fromtimestamp(stamp, UTC)
                session.execute(
                    update(Token)
                    .where(Token.id == token_id,
                           or_(Token.last_used_at.is_(None), Token.last_used_at < at))
                    .values(last_used_at=at, last_used_ip=ip[:45],
                            last_used_agent=agent[:MAX_AGENT_LENGTH] if agent else None))
            if counts:
                rows = [{"token_id": t, "hour": datetime.fromtimestamp(h * 3600, UTC),
                         "outcome": o, "count": n}
                        for (t, h, o), n in sorted(counts.items())]
                statement = insert(TokenUsage).values(rows)
                statement = statement.on_conflict_do_update(
                    index_elements=["token_id", "hour", "outcome"],
                    set_={"count": TokenUsage.count + statement.excluded.count})
                session.execute(statement)

    def _put_back(self, counts: dict[tuple[str, int, str], int],
                  last_use: dict[str, tuple[float, str, str | None]]) -> None:
        with self._lock:
            for key, count in counts.items():
                self._counts[key] = self._counts.get(key, 0) + count
            for token_id, use in last_use.items():
                newer = self._last_use.get(token_id)
                if newer is None or newer[0] < use[0]:
                    self._last_use[token_id] = use
