"""The last few distinct client IPs of each token, merged in at usage flush time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tallykey.monitor.models import TokenClientIp

#: How many distinct addresses are kept per token (SPEC §6: the last 5).
RECENT_IPS = 5
_CHUNK = 400


def remember(session: Session, seen: dict[tuple[str, str], float]) -> None:
    """Merge `(token id, ip) -> POSIX time` into the stored addresses, keeping each
    token's `RECENT_IPS` newest. Upserts never move a time backwards, so flushes of several
    nodes may interleave."""
    newest: dict[str, list[tuple[float, str]]] = {}
    for (token_id, ip), at in seen.items():
        newest.setdefault(token_id, []).append((at, ip))
    rows = []
    for token_id, uses in newest.items():
        for at, ip in sorted(uses, reverse=True)[:RECENT_IPS]:
            rows.append({"token_id": token_id, "ip": ip[:45],
                         "last_seen_at": datetime.fromtimestamp(at, UTC)})
    rows.sort(key=lambda row: (row["token_id"], row["ip"]))
    postgres = session.get_bind().dialect.name == "postgresql"
    later = func.greatest if postgres else func.max
    for start in range(0, len(rows), _CHUNK):
        insert: Any = (postgresql.insert if postgres else sqlite.insert)(TokenClientIp)
        statement = insert.values(rows[start:start + _CHUNK])
        session.execute(statement.on_conflict_do_update(
            index_elements=["token_id", "ip"],
            set_={"last_seen_at": later(TokenClientIp.last_seen_at,
                                        statement.excluded.last_seen_at)}))
    tokens = sorted(newest)
    for start in range(0, len(tokens), _CHUNK):
        ranked = (select(TokenClientIp.token_id, TokenClientIp.ip, func.row_number().over(
            partition_by=TokenClientIp.token_id,
            order_by=(TokenClientIp.last_seen_at.desc(), TokenClientIp.ip)).label("rank"))
            .where(TokenClientIp.token_id.in_(tokens[start:start + _CHUNK])).subquery())
        stale = select(ranked.c.token_id, ranked.c.ip).where(ranked.c.rank > RECENT_IPS)
        session.execute(delete(TokenClientIp).where(
            tuple_(TokenClientIp.token_id, TokenClientIp.ip).in_(stale))
            .execution_options(synchronize_session=False))


def recent(session: Session, token_id: str) -> list[TokenClientIp]:
    """A token's remembered addresses, newest first."""
    return list(session.scalars(select(TokenClientIp).where(
        TokenClientIp.token_id == token_id)
        .order_by(TokenClientIp.last_seen_at.desc(), TokenClientIp.ip).limit(RECENT_IPS)))
