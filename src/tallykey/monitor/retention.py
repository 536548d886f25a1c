"""Usage retention: per-hour counts and remembered networks older than
`TALLYKEY_USAGE_RETENTION_DAYS` (default 90) are deleted by the worker. Idempotent, so
any number of workers may run it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete

from tallykey.db.engine import Database
from tallykey.monitor.models import TokenNetwork, TokenUsage

log = logging.getLogger(__name__)


def prune_usage(database: Database, now: datetime, retention_days: int) -> int:
    """Delete what is older than `retention_days` before `now`; returns how many rows."""
    cutoff = now - timedelta(days=retention_days)
    with database.transaction() as session:
        usage = session.execute(delete(TokenUsage).where(TokenUsage.hour < cutoff)
                                .execution_options(synchronize_session=False))
        networks = session.execute(delete(TokenNetwork).where(
            TokenNetwork.last_seen_at < cutoff).execution_options(synchronize_session=False))
        removed = int(getattr(usage, "rowcount", 0) or 0) + int(
            getattr(networks, "rowcount", 0) or 0)
    if removed:
        log.info("pruned %d usage rows older than %d days", removed, retention_days)
    return removed
