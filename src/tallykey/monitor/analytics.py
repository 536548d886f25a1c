"""Usage analytics (SPEC §16): verifications per hour or per day, allowed and refused by
reason, grouped by token, identity, workspace or outcome, over a window of time. Served by
`GET /api/v1/analytics/verifications`, `tallykey analytics verifications` and the
console's identity page.

Counts are read from `token_usage`, which the batched usage flush (`monitor.usage`)
writes about once a second per node: nothing is written for analytics, on the hot path or
anywhere else. A token's identity and workspace are read from the token as it is now, so
a token moved to another identity brings its earlier usage with it. Days are UTC days;
counts older than `TALLYKEY_USAGE_RETENTION_DAYS` are pruned by the worker
(`monitor.retention`). One SQLAlchemy Core query, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Label, SQLColumnExpression, func, literal_column, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.sql.sqltypes import NullType

from tallykey.accounts.models import Workspace
from tallykey.actor import Actor
from tallykey.audit.export import spreadsheet_safe
from tallykey.errors import NotFound, ValidationFailed
from tallykey.identities.models import Identity
from tallykey.monitor.models import TokenUsage
from tallykey.monitor.usage import ALLOWED
from tallykey.tokens.models import Token
from tallykey.tokens.service import visible_tokens

HOUR, DAY = "hour", "day"
INTERVALS = (HOUR, DAY)
TOKEN, IDENTITY, OUTCOME, WORKSPACE = "token", "identity", "outcome", "workspace"
GROUPS = (TOKEN, IDENTITY, OUTCOME, WORKSPACE)
DEFAULT_INTERVAL = DAY
DEFAULT_GROUP = TOKEN
STEP = {HOUR: timedelta(hours=1), DAY: timedelta(days=1)}
#: The window when `since` is left out: the last 48 hours or the last 30 days.
DEFAULT_SPAN = {HOUR: timedelta(hours=48), DAY: timedelta(days=30)}
#: The longest window one query may cover: 31 days of hours (744 buckets), 400 days.
MAX_SPAN = {HOUR: timedelta(days=31), DAY: timedelta(days=400)}
#: The CSV's fixed columns; one `refused_<reason>` column per reason follows.
CSV_COLUMNS = ("group_by", "key", "label", "start", "allowed", "refused")
#: Token ids per label look-up (bound parameters stay few on SQLite).
LABEL_BATCH = 500


@dataclass(frozen=True)
class Window:
    """What one analytics query covers: `[since, until)` in whole buckets (UTC)."""

    since: datetime
    until: datetime
    interval: str
    group_by: str
    token_id: str | None = None
    identity_id: str | None = None
    workspace_id: str | None = None

    def starts(self) -> list[datetime]:
        step, at, found = STEP[self.interval], self.since, []
        while at < self.until:
            found.append(at)
            at += step
        return found


@dataclass(slots=True)
class Bucket:
    """Requests of one key in one hour or day: allowed, refused, and refused by reason."""

    start: datetime
    allowed: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    @property
    def refused(self) -> int:
        return sum(self.by_reason.values())

    def add(self, outcome: str, count: int) -> None:
        if outcome == ALLOWED:
            self.allowed += count
        else:
            self.by_reason[outcome] = self.by_reason.get(outcome, 0) + count


@dataclass
class Series:
    """One key (a token, identity or workspace id, or an outcome; None: tokens in no
    identity or workspace) with its non-empty buckets, oldest first."""

    key: str | None
    label: str | None
    buckets: list[Bucket]

    @property
    def allowed(self) -> int:
        return sum(b.allowed for b in self.buckets)

    @property
    def refused(self) -> int:
        return sum(b.refused for b in self.buckets)


def window(now: datetime, *, since: str | None = None, until: str | None = None,
           interval: str | None = None, group_by: str | None = None) -> Window:
    """Read the query's parameters, or raise `ValidationFailed` with `field` and a
    `reason`: `invalid_interval`, `invalid_group_by`, `invalid_time`, `invalid_range`
    (since not before until) or `range_too_long` (see `MAX_SPAN`).

    `since` and `until` are ISO 8601 dates or date-times (naive: UTC); a date as `until`
    includes its whole day. `since` is rounded down and `until` up to whole buckets.
    Defaults: `interval=day`, `group_by=token`, `until` now (the current hour or day
    included), `since` 48 hours or 30 days before `until`."""
    interval = (interval or DEFAULT_INTERVAL).strip().lower()
    if interval not in INTERVALS:
        raise ValidationFailed(f"interval must be hour or day, not {interval[:40]!r}.",
                               "Leave it out for day.", field="interval",
                               reason="invalid_interval")
    group_by = (group_by or DEFAULT_GROUP).strip().lower()
    if group_by not in GROUPS:
        raise ValidationFailed(
            f"group_by must be token, identity, outcome or workspace, not "
            f"{group_by[:40]!r}.", "Leave it out for token.", field="group_by",
            reason="invalid_group_by")
    end = _moment(until, "until", end=True) if until else now
    start = _moment(since, "since", end=False) if since else None
    if start is not None and start >= end:
        raise ValidationFailed("since must be before until.", field="since",
                               reason="invalid_range")
    try:
        # the current hour or day is included, even at its very first instant
        end = _ceil(end, interval) if until else _floor(now, interval) + STEP[interval]
        start = (_floor(start, interval) if start is not None
                 else end - DEFAULT_SPAN[interval])
    except OverflowError:  # e.g. until=9999-12-31T23:30:00Z
        raise ValidationFailed("since and until must lie between the years 2 and 9998.",
                               field="until", reason="invalid_time") from None
    if end - start > MAX_SPAN[interval]:
        days = MAX_SPAN[interval].days
        raise ValidationFailed(
            f"A query by {interval} covers at most {days} days.",
            "Ask for a shorter window, or by day." if interval == HOUR else
            "Ask for a shorter window.", field="since", reason="range_too_long")
    return Window(start, end, interval, group_by)


def verifications(session: Session, actor: Actor, query: Window) -> list[Series]:
    """Requests of the tokens `actor` sees (`tokens.service.visible_tokens`: never
    another account's, a member only their own tokens) in the window, one series per key
    with at least one request, the busiest first. Empty buckets are left out."""
    visible = visible_tokens(actor).with_only_columns(
        Token.id, Token.identity_id, Token.workspace_id).subquery()
    key: SQLColumnExpression[Any] = {TOKEN: visible.c.id, IDENTITY: visible.c.identity_id,
                               WORKSPACE: visible.c.workspace_id,
                               OUTCOME: TokenUsage.outcome}[query.group_by]
    start: Label[Any] = _bucket(session, query.interval).label("bucket")
    statement = (
        select(start, key.label("key"), TokenUsage.outcome,
               func.sum(TokenUsage.count).label("count"))
        .select_from(TokenUsage).join(visible, visible.c.id == TokenUsage.token_id)
        .where(TokenUsage.hour >= query.since, TokenUsage.hour < query.until)
        .group_by(start, key, TokenUsage.outcome))
    if query.token_id is not None:
        statement = statement.where(visible.c.id == query.token_id)
    if query.identity_id is not None:
        statement = statement.where(visible.c.identity_id == query.identity_id)
    if query.workspace_id is not None:
        statement = statement.where(visible.c.workspace_id == query.workspace_id)
    found: dict[str | None, dict[datetime, Bucket]] = {}
    starts: dict[object, datetime] = {}
    # Core rows (no ORM loading), one object per bucket: this loop is most of the cost
    # of a large answer (`bench/analytics.py`)
    for raw, group, outcome, count in session.connection().execute(statement).all():
        at = starts.get(raw)
        if at is None:
            at = starts[raw] = _as_start(raw)
        buckets = found.get(group)
        if buckets is None:
            buckets = found[group] = {}
        bucket = buckets.get(at)
        if bucket is None:
            bucket = buckets[at] = Bucket(at)
        bucket.add(outcome, int(count or 0))
    labels = _labels(session, actor, query.group_by, [k for k in found if k is not None])
    series = [Series(group, labels.get(group) if group is not None else None,
                     [buckets[at] for at in sorted(buckets)])
              for group, buckets in found.items()]
    totals = {id(s): s.allowed + s.refused for s in series}
    series.sort(key=lambda s: (-totals[id(s)], s.key or ""))
    return series


def resolve_workspace(session: Session, actor: Actor, ref: str) -> str:
    """The id of the actor's account's workspace named by id or slug; `NotFound`
    otherwise (also for another account's)."""
    found = session.scalar(select(Workspace.id).where(
        Workspace.account_id == actor.account_id,
        (Workspace.id == ref) | (Workspace.slug == ref)))
    if found is None:
        raise NotFound("No such workspace in this account.", field="workspace")
    return str(found)


def reasons(series: Sequence[Series]) -> list[str]:
    """Every refusal reason in the answer, alphabetically (the CSV's extra columns)."""
    return sorted({r for s in series for b in s.buckets for r in b.by_reason})


def csv_lines(query: Window, series: Sequence[Series]) -> Iterator[str]:
    """The answer as CSV: one row per key and non-empty bucket, with the columns
    `CSV_COLUMNS` and then `refused_<reason>` for each reason in the answer (0 where a
    bucket has none of it). Text cells that a spreadsheet would run as a formula are
    quoted with a leading `'`."""
    refusals = reasons(series)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *(f"refused_{r}" for r in refusals)])
    for one in series:
        for bucket in one.buckets:
            writer.writerow([query.group_by, spreadsheet_safe(one.key or ""),
                             spreadsheet_safe(one.label or ""), bucket.start.isoformat(),
                             bucket.allowed, bucket.refused,
                             *(bucket.by_reason.get(r, 0) for r in refusals)])
            if buffer.tell() > 64 * 1024:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _bucket(session: Session, interval: str) -> SQLColumnExpression[Any]:
    """The bucket of a usage row: its hour, or its UTC day (PostgreSQL: the day as a
    timestamp; SQLite, which stores UTC text: the `YYYY-MM-DD` prefix)."""
    if interval == HOUR:  # as the driver reads it: converted once per hour (`_as_start`)
        return type_coerce(TokenUsage.hour, NullType())
    if session.get_bind().dialect.name == "postgresql":
        return func.date_trunc(literal_column("'day'"),
                               func.timezone(literal_column("'UTC'"), TokenUsage.hour))
    return func.substr(TokenUsage.hour, 1, 10)


def _as_start(value: object) -> datetime:
    """A bucket's start as the driver gave it, as an aware UTC datetime. SQLite gives
    text: a day ("YYYY-MM-DD") or an hour as stored (UTC, no offset)."""
    if isinstance(value, str):
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), UTC)
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _labels(session: Session, actor: Actor, group_by: str, keys: list[str]
            ) -> dict[str | None, str]:
    """What each key is called: a token's name, an identity's external id, a
    workspace's slug, an outcome itself. Only within the actor's account."""
    if group_by == OUTCOME:
        return {k: k for k in keys}
    table: Any = {TOKEN: Token, IDENTITY: Identity, WORKSPACE: Workspace}[group_by]
    name = {TOKEN: Token.name, IDENTITY: Identity.external_id,
            WORKSPACE: Workspace.slug}[group_by]
    labels: dict[str | None, str] = {}
    for first in range(0, len(keys), LABEL_BATCH):
        chunk = keys[first:first + LABEL_BATCH]
        labels.update((str(i), str(n)) for i, n in session.execute(
            select(table.id, name).where(table.account_id == actor.account_id,
                                         table.id.in_(chunk))))
    return labels


def _moment(value: str, name: str, *, end: bool) -> datetime:
    """An ISO 8601 date or date-time as an aware UTC instant; a date is its first moment,
    or, as `until` (`end`), the first moment of the next day."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime.combine(day + timedelta(days=1) if end else day, time(0), UTC)
        moment = datetime.fromisoformat(text)
        return (moment.replace(tzinfo=UTC) if moment.tzinfo is None
                else moment.astimezone(UTC))
    except (ValueError, OverflowError):
        raise ValidationFailed(f"{name} {value[:40]!r} is not an ISO 8601 date or "
                               "date-time.", "Write e.g. 2027-03-31 or "
                               "2027-03-31T18:00:00Z.", field=name,
                               reason="invalid_time") from None


def _floor(moment: datetime, interval: str) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if interval == DAY else moment


def _ceil(moment: datetime, interval: str) -> datetime:
    floor = _floor(moment, interval)
    return floor if floor == moment else floor + STEP[interval]
