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
    else:  # nearest whole day: a new 30-day token reads "in 30 days", not 29
        amount, unit = round(span / 86400), "day"
    text = f"{amount} {unit}{'' if amount == 1 else 's'}"
    return f"in {text}" if ahead else f"{text} ago"


def lines(values: Iterable[str] | None) -> str:
    """One entry per line (IP allow-lists in a textarea)."""
    return "\n".join(values or [])


def split_lines(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


#: Audit actions whose details map a field to `[before, after]`.
CHANGE_ACTIONS = frozenset({"token.updated", "user.updated"})
HIDDEN_DETAILS = frozenset({"prefix"})


def shown(value: Any) -> str:
    """A detail value for a person: no Python `None`, `True` or `['a', 'b']`."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(shown(item) for item in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{label(k)}: {shown(v)}" for k, v in value.items()) or "none"
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] == "T":
        try:
            return when(datetime.fromisoformat(value))
        except ValueError:
            return value
    return str(value)


def duration(seconds: int) -> str:
    """`86400` -> "1 day", `7200` -> "2 hours", `0` -> "none"."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            amount = seconds // size
            return f"{amount} {unit}{'' if amount == 1 else 's'}"
    return "none" if seconds == 0 else f"{seconds} seconds"


def label(key: str) -> str:
    return key.replace("_", " ")


def change(pair: Any) -> str:
    before, after = pair
    return f"{shown(before)} → {shown(after)}"


def describe(action: str, details: dict[str, Any] | None) -> list[tuple[str, str]]:
    """An audit entry's details as (label, text) pairs: changes as "old → new", lists as
    words, times as dates, nothing in Python's own notation."""
    details = details or {}
    if action == "account.policy_changed" and isinstance(details.get("before"), dict):
        before, after = details["before"], details.get("after") or {}
        return [(label(k), change((before.get(k), after.get(k))))
                for k in after if before.get(k) != after.get(k)]
    items = []
    for key, value in details.items():
        if key in HIDDEN_DETAILS:
            continue
        if action in CHANGE_ACTIONS and isinstance(value, list | tuple) and len(value) == 2:
            items.append((label(key), change(value)))
        elif key.endswith("_seconds") and isinstance(value, int) and not isinstance(value, bool):
            items.append((label(key[:-len("_seconds")]), duration(value)))
        else:
            items.append((label(key), shown(value)))
    return items


FILTERS: dict[str, Callable[..., Any]] = {
    "when": when,
    "iso": iso,
    "relative": relative,
    "lines": lines,
}
