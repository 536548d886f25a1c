"""How values read on a console page: dates, "in N days", lists. Pure functions, used as
Jinja filters."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any


def when(moment: datetime | None) -> str:
    """`2030-01-31 14:05 UTC`, or an em dash for "never"."""
    if moment is None:
        return "—"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def relative(moment: datetime | None, now: datetime) -> str:
    """"in 5 days", "in 3 hours", "2 days ago", "today"."""
    if moment is None:
        return "—"
    seconds = (moment - now).total_seconds()
    ahead = seconds >= 0
    span = abs(seconds)
    if span < 3600:
        amount, unit = max(1, round(span / 60)), "minute"
    elif span < 2 * 86400:
        amount, unit = round(span / 3600), "hour"
    else:
        amount, unit = int(span // 86400), "day"
    text = f"{amount} {unit}{'' if amount == 1 else 's'}"
    return f"in {text}" if ahead else f"{text} ago"


def lines(values: Iterable[str] | None) -> str:
    """One entry per line (IP allow-lists in a textarea)."""
    return "\n".join(values or [])


def split_lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when,
    "iso": iso,
    "relative": relative,
    "lines": lines,
}
