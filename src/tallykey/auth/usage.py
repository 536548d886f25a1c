"""Last-used and per-hour request counts, aggregated in memory on the hot path and
flushed in batches: no database write per request, and no increment lost or doubled."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime

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
        self._last_use: dict[str, tuple[datetime, str, str | None]] = {}
        self._counts: Counter[tuple[str, datetime, str]] = Counter()

    def record(self, token_id: str, at: datetime, ip: str, agent: str | None,
               outcome: str) -> None:
        hour = at.replace(minute=0, second=0, microsecond=0)
        with self._lock:
            self._counts[(token_id, hour, outcome)] += 1
            if outcome == ALLOWED:
                self._last_use[token_id] = (at, ip, agent[:MAX_AGENT_LENGTH] if agent else None)

    def pending(self) -> int:
        return sum(self._counts.values())

    def flush(self) -> int:
        """Write what has been gathered; returns how many requests it covered. On a
        database error the batch is put back, so a later flush writes it."""
        with self._flush_lock:
            with self._lock:
                counts, self._counts = self._counts, Counter()
                last_use, self._last_use = self._last_use, {}
            if not counts and not last_use:
                return 0
            try:
                self._write(counts, last_use)
            except Exception:
                self._put_back(counts, last_use)
                raise
            return sum(counts.values())

    def _write(self, counts: Counter[tuple[str, datetime, str]],
               last_use: dict[str, tuple[datetime, str, str | None]]) -> None:
        insert = pg_insert if self.database.dialect == "postgresql" else sqlite_insert
        with self.database.transaction() as session:
            for token_id, (at, ip, agent) in sorted(last_use.items()):
                session.execute(
                    update(Token)
                    .where(Token.id == token_id,
                           or_(Token.last_used_at.is_(None), Token.last_used_at < at))
                    .values(last_used_at=at, last_used_ip=ip, last_used_agent=agent))
            if counts:
                rows = [{"token_id": t, "hour": h, "outcome": o, "count": n}
                        for (t, h, o), n in sorted(counts.items())]
                statement = insert(TokenUsage).values(rows)
                statement = statement.on_conflict_do_update(
                    index_elements=["token_id", "hour", "outcome"],
                    set_={"count": TokenUsage.count + statement.excluded.count})
                session.execute(statement)

    def _put_back(self, counts: Counter[tuple[str, datetime, str]],
                  last_use: dict[str, tuple[datetime, str, str | None]]) -> None:
        with self._lock:
            self._counts.update(counts)
            for token_id, use in last_use.items():
                newer = self._last_use.get(token_id)
                if newer is None or newer[0] < use[0]:
                    self._last_use[token_id] = use
