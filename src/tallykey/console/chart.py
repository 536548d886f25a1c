"""The usage chart on a token's page: requests per day, allowed and denied, drawn as
inline SVG on the server (no script, no external image)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tallykey.auth.models import TokenUsage
from tallykey.auth.usage import ALLOWED

DAYS = 30
WIDTH = 600
HEIGHT = 160
TOP = 10
BOTTOM = 20
LEFT = 36
ALLOWED_COLOUR = "#2e7d32"
DENIED_COLOUR = "#c62828"


@dataclass(frozen=True)
class DayUsage:
    day: date
    allowed: int
    denied: int


def daily_usage(session: Session, token_id: str, now: datetime,
                days: int = DAYS) -> list[DayUsage]:
    """The last `days` days (oldest first), every day present, zero when unused."""
    start = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(),
                             tzinfo=now.tzinfo)
    rows = session.execute(
        select(TokenUsage.hour, TokenUsage.outcome, func.sum(TokenUsage.count))
        .where(TokenUsage.token_id == token_id, TokenUsage.hour >= start)
        .group_by(TokenUsage.hour, TokenUsage.outcome))
    allowed: dict[date, int] = defaultdict(int)
    denied: dict[date, int] = defaultdict(int)
    for hour, outcome, count in rows:
        (allowed if outcome == ALLOWED else denied)[hour.date()] += int(count or 0)
    first = start.date()
    return [DayUsage(d, allowed[d], denied[d])
            for d in (first + timedelta(days=i) for i in range(days))]


def usage_svg(usage: list[DayUsage]) -> Markup:
    """Stacked bars per day; an accessible title and description say what it shows."""
    peak = max((u.allowed + u.denied for u in usage), default=0)
    total_allowed = sum(u.allowed for u in usage)
    total_denied = sum(u.denied for u in usage)
    summary = (f"{total_allowed} allowed and {total_denied} denied requests over the last "
               f"{len(usage)} days")
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / max(1, len(usage))
    bar = max(1.0, slot * 0.7)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Requests per day</title>',
        f'<desc id="chart-desc">{escape(summary)}</desc>',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}" '
        'stroke="#888" stroke-width="1"/>',
        f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end" font-size="10" '
        f'fill="#555">{peak}</text>',
        f'<text x="{LEFT - 4}" y="{TOP + plot_h}" text-anchor="end" font-size="10" '
        'fill="#555">0</text>',
    ]
    for index, day in enumerate(usage):
        x = LEFT + index * slot + (slot - bar) / 2
        base = float(TOP + plot_h)
        for value, colour, label in ((day.allowed, ALLOWED_COLOUR, "allowed"),
                                     (day.denied, DENIED_COLOUR, "denied")):
            if value <= 0 or peak <= 0:
                continue
            height = max(1.0, plot_h * value / peak)
            base -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{height:.1f}" '
                f'fill="{colour}"><title>{day.day.isoformat()}: {value} {label}</title></rect>')
        last = index == len(usage) - 1
        if (index % 7 == 0 and len(usage) - index > 3) or last:
            parts.append(f'<text x="{x + bar / 2:.1f}" y="{HEIGHT - 5}" text-anchor="middle" '
                         f'font-size="10" fill="#555">{day.day.strftime("%m-%d")}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - built from numbers and escaped text only
