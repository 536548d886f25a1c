"""The usage chart on a token's page: requests per day (last 30 days) or per hour (last
48 hours), allowed and denied, drawn as inline SVG on the server (no script, no external
image)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallykey.monitor import analytics
from tallykey.monitor.models import TokenUsage
from tallykey.monitor.usage import ALLOWED

DAYS = 30
HOURS = 48
WIDTH = 600
HEIGHT = 160
TOP = 10
BOTTOM = 20
LEFT = 36
RIGHT = 4
ALLOWED_COLOUR = "#2e7d32"
DENIED_COLOUR = "#c62828"
DAILY, HOURLY = "daily", "hourly"


@dataclass(frozen=True)
class Bucket:
    """One bar: a day or an hour (UTC), with what it is called on the axis and on hover."""

    start: datetime
    axis: str
    title: str
    allowed: int
    denied: int


def _counts(session: Session, token_id: str | Sequence[str], start: datetime
            ) -> list[tuple[datetime, str, int]]:
    """Usage of one token, or summed over several (an identity's tokens)."""
    ids = [token_id] if isinstance(token_id, str) else list(token_id)
    rows = session.execute(
        select(TokenUsage.hour, TokenUsage.outcome, func.sum(TokenUsage.count))
        .where(TokenUsage.token_id.in_(ids), TokenUsage.hour >= start)
        .group_by(TokenUsage.hour, TokenUsage.outcome))
    return [(hour, outcome, int(count or 0)) for hour, outcome, count in rows]


def daily_usage(session: Session, token_id: str | Sequence[str], now: datetime,
                days: int = DAYS) -> list[Bucket]:
    """The last `days` days (oldest first), every day present, zero when unused."""
    start = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(),
                             tzinfo=now.tzinfo)
    allowed: dict[object, int] = defaultdict(int)
    denied: dict[object, int] = defaultdict(int)
    for hour, outcome, count in _counts(session, token_id, start):
        (allowed if outcome == ALLOWED else denied)[hour.date()] += count
    days_shown = [start + timedelta(days=i) for i in range(days)]
    return [Bucket(d, d.strftime("%m-%d"), d.date().isoformat(), allowed[d.date()],
                   denied[d.date()]) for d in days_shown]


def hourly_usage(session: Session, token_id: str | Sequence[str], now: datetime,
                 hours: int = HOURS) -> list[Bucket]:
    """The last `hours` hours (oldest first, the current one included), zero when unused."""
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    allowed: dict[datetime, int] = defaultdict(int)
    denied: dict[datetime, int] = defaultdict(int)
    for hour, outcome, count in _counts(session, token_id, start):
        (allowed if outcome == ALLOWED else denied)[hour] += count
    shown = [start + timedelta(hours=i) for i in range(hours)]
    return [Bucket(h, h.strftime("%H:00"), h.strftime("%Y-%m-%d %H:00 UTC"), allowed[h],
                   denied[h]) for h in shown]


def from_analytics(found: Sequence[analytics.Series], starts: Sequence[datetime],
                   unit: str = DAILY) -> list[Bucket]:
    """Bars from a usage analytics answer (`monitor.analytics.verifications`): its series
    summed per hour or day, every one of `starts` present (zero when unused)."""
    allowed: dict[datetime, int] = defaultdict(int)
    denied: dict[datetime, int] = defaultdict(int)
    for series in found:
        for bucket in series.buckets:
            allowed[bucket.start] += bucket.allowed
            denied[bucket.start] += bucket.refused
    if unit == HOURLY:
        return [Bucket(h, h.strftime("%H:00"), h.strftime("%Y-%m-%d %H:00 UTC"), allowed[h],
                       denied[h]) for h in starts]
    return [Bucket(d, d.strftime("%m-%d"), d.date().isoformat(), allowed[d], denied[d])
            for d in starts]


def usage_svg(usage: list[Bucket], unit: str = DAILY) -> Markup:
    """Stacked bars; an accessible title and description say what it shows. Without any
    request it says so instead of drawing an empty axis."""
    per = "hour" if unit == HOURLY else "day"
    span = f"{len(usage)} {'hours' if unit == HOURLY else 'days'}"
    peak = max((u.allowed + u.denied for u in usage), default=0)
    total_allowed = sum(u.allowed for u in usage)
    total_denied = sum(u.denied for u in usage)
    summary = f"{total_allowed} allowed and {total_denied} denied requests over the last {span}"
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(usage))
    bar = max(1.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">Requests per {per}</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - RIGHT}" y2="{TOP + plot_h}" '
        'stroke="#888" stroke-width="1"/>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10" '
        'fill="#555">0</text>',
    ]
    if peak > 0:
        parts.append(f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10" '
                     f'fill="#555">{peak}</text>')
    else:
        parts.append(f'<text x="{(LEFT + WIDTH) / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
                     f'text-anchor="middle" font-size="13" fill="#555" class="chart-empty">'
                     f'No requests in the last {span}</text>')
    every = 7 if unit == DAILY else 6
    for index, bucket in enumerate(usage):
        x = LEFT + index * slot + (slot - bar) / 2
        base = float(TOP + plot_h)
        for value, colour, label in ((bucket.allowed, ALLOWED_COLOUR, "allowed"),
                                     (bucket.denied, DENIED_COLOUR, "denied")):
            if value <= 0 or peak <= 0:
                continue
            height = max(1.0, plot_h * value / peak)
            base -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{escape(bucket.title)}: {value} {label}</title>'
                '</rect>')
        last = index == len(usage) - 1
        if (index % every == 0 and len(usage) - index > every // 2) or last:
            # the last label ends at the right edge, so it is never cut off
            anchor, at = ("end", WIDTH - RIGHT) if last else ("middle", x + bar / 2)
            parts.append(f'<text x="{at:.1f}" y="{HEIGHT - 5}" text-anchor="{anchor}" '
                         f'font-size="10" fill="#555">{escape(bucket.axis)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
