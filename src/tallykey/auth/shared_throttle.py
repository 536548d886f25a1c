"""The failed-authentication throttle across nodes: each node publishes its own counts
for the current window about once a second and learns the totals, so the limit holds
however many nodes a guesser spreads its attempts over."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tallykey.auth.models import AuthFailure
from tallykey.db.engine import Database
from tallykey.network.throttle import FailureThrottle


def share_failures(database: Database, node_id: str, limiter: FailureThrottle) -> None:
    """Publish this node's failure counts for the current window; learn the totals."""
    window = limiter.window()
    mine = limiter.own_counts(window)
    insert = pg_insert if database.dialect == "postgresql" else sqlite_insert
    with database.transaction() as session:
        if mine:
            statement = insert(AuthFailure).values([
                {"ip": ip, "window": window, "node_id": node_id, "count": count}
                for ip, count in sorted(mine.items())])
            session.execute(statement.on_conflict_do_update(
                index_elements=["ip", "window", "node_id"],
                set_={"count": statement.excluded.count}))
        session.execute(delete(AuthFailure).where(AuthFailure.window < window - 1))
        totals = session.execute(
            select(AuthFailure.ip, func.sum(AuthFailure.count))
            .where(AuthFailure.window == window).group_by(AuthFailure.ip)
            .having(func.sum(AuthFailure.count) >= limiter.limit)).all()
    limiter.learn(window, {ip: int(total) for ip, total in totals})


def forget_node(database: Database, node_id: str) -> None:
    """Drop a stopping node's published counts."""
    with database.transaction() as session:
        session.execute(delete(AuthFailure).where(AuthFailure.node_id == node_id))
