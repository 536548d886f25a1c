"""A token's usage as series: requests per hour and per day (allowed, and denied by
reason) plus its last use and recent client addresses. Served by
`GET /api/v1/tokens/{id}/usage`."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.monitor import recent_ips
from tallykey.monitor.models import TokenUsage
from tallykey.monitor.usage import ALLOWED
from tallykey.tokens.models import Token
from tallykey.tokens.schemas import Timestamp

MAX_HOURS = 24 * 14
MAX_DAYS = 400


class UsagePoint(BaseModel):
    start: Timestamp
    allowed: int
    denied: int
    denied_by_reason: dict[str, int]


class ClientIpView(BaseModel):
    ip: str
    last_seen_at: Timestamp


class UsageReport(BaseModel):
    token_id: str
    last_used_at: Timestamp | None
    last_used_ip: str | None
    last_used_agent: str | None
    recent_ips: list[ClientIpView]
    hourly: list[UsagePoint]
    daily: list[UsagePoint]
    retention_days: int


def _series(buckets: list[datetime], counts: dict[datetime, dict[str, int]]
            ) -> list[UsagePoint]:
    points = []
    for start in buckets:
        outcomes = counts.get(start, {})
        denied = {k: v for k, v in sorted(outcomes.items()) if k != ALLOWED}
        points.append(UsagePoint(start=start, allowed=outcomes.get(ALLOWED, 0),
                                 denied=sum(denied.values()), denied_by_reason=denied))
    return points


def usage_report(session: Session, token: Token, now: datetime, *, hours: int, days: int,
                 retention_days: int) -> UsageReport:
    """The last `hours` hours and the last `days` days (UTC), oldest first, every bucket
    present (zero when unused); the current hour and day are included."""
    this_hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hour_buckets = [this_hour - timedelta(hours=n) for n in range(hours - 1, -1, -1)]
    today: date = this_hour.date()
    day_buckets = [datetime.combine(today - timedelta(days=n), time(0), UTC)
                   for n in range(days - 1, -1, -1)]
    since = min(hour_buckets[0], day_buckets[0])
    hourly: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    daily: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for hour, outcome, count in session.execute(
            select(TokenUsage.hour, TokenUsage.outcome, TokenUsage.count)
            .where(TokenUsage.token_id == token.id, TokenUsage.hour >= since)):
        hourly[hour][outcome] += int(count)
        daily[datetime.combine(hour.date(), time(0), UTC)][outcome] += int(count)
    return UsageReport(
        token_id=token.id, last_used_at=token.last_used_at, last_used_ip=token.last_used_ip,
        last_used_agent=token.last_used_agent,
        recent_ips=[ClientIpView(ip=r.ip, last_seen_at=r.last_seen_at)
                    for r in recent_ips.recent(session, token.id)],
        hourly=_series(hour_buckets, hourly), daily=_series(day_buckets, daily),
        retention_days=retention_days)
