"""Usage analytics (SPEC §16, `tallykey.monitor.analytics`) on SQLite and PostgreSQL:
requests verified by a real verifier and written by its usage flush, then counted per
hour or UTC day and grouped by token, identity, workspace and outcome. Every expected
number is computed from the ledger of requests the test sent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from tallykey.actor import Actor
from tallykey.auth.verifier import Verifier
from tallykey.clock import FrozenClock
from tallykey.errors import ValidationFailed
from tallykey.identities.service import IdentityDraft
from tallykey.monitor import analytics
from tallykey.monitor.analytics import Series, Window
from tallykey.runtime import Runtime
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    """One request the test verified: when, which token, and what came of it."""

    at: datetime
    token: str
    outcome: str


@pytest.fixture
def verifier(rt: Runtime, clock: FrozenClock) -> Iterator[Verifier]:
    made = Verifier(settings=rt.settings, database=rt.database, clock=clock, background=False)
    yield made
    made.close()


class Traffic:
    """Tokens of two accounts, in identities and workspaces, and what was sent to them."""

    def __init__(self, world: World, rt: Runtime, verifier: Verifier,
                 clock: FrozenClock) -> None:
        self.rt, self.verifier, self.clock = rt, verifier, clock
        clock.set(START)
        admin = world.as_admin
        self.cust = rt.identities.create(admin, IdentityDraft(external_id="cust_a")).id
        self.secrets: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.identity: dict[str, str | None] = {}
        self.workspace: dict[str, str | None] = {}
        self.account: dict[str, str] = {}
        for name, actor, identity, workspace in (
                ("crm", admin, self.cust, world.sales.id),
                ("erp", admin, self.cust, None),
                ("ops", admin, None, world.ops.id),
                ("mine", world.as_member, None, None),
                ("globex", world.as_other_admin, None, None)):
            issued = rt.tokens.issue(actor, TokenDraft(
                name=name, expires_in_days=30, kind="application" if name in (
                    "crm", "erp", "ops") else "personal", workspace=workspace,
                scopes=["employees:read"] if actor is not world.as_other_admin else [],
                identity_id=identity))
            self.secrets[name] = issued.value
            self.ids[name] = issued.token.id
            self.identity[issued.token.id] = identity
            self.workspace[issued.token.id] = workspace
            self.account[issued.token.id] = actor.account_id
        self.sent: list[Sent] = []

    def send(self, name: str, times: int, *, scope: str | None = None) -> None:
        """Verify `times` requests of token `name` now (with a scope it lacks: refused)."""
        for _ in range(times):
            verdict = self.verifier.verify(f"Bearer {self.secrets[name]}", "198.51.100.7",
                                           [scope] if scope else [])
            self.sent.append(Sent(self.clock.now(), self.ids[name],
                                  "allowed" if verdict.allowed else verdict.reason))
        self.clock.advance(timedelta(seconds=1))

    def expected(self, account_id: str, query: Window, key_of: str,
                 only: set[str] | None = None) -> dict[tuple[str | None, datetime],
                                                     Counter[str]]:
        """(key, bucket start) -> outcomes, from the ledger."""
        found: dict[tuple[str | None, datetime], Counter[str]] = {}
        for sent in self.sent:
            if self.account[sent.token] != account_id or not (
                    query.since <= sent.at < query.until):
                continue
            if only is not None and sent.token not in only:
                continue
            start = sent.at.replace(minute=0, second=0, microsecond=0)
            if query.interval == analytics.DAY:
                start = start.replace(hour=0)
            key = {"token": sent.token, "identity": self.identity[sent.token],
                   "workspace": self.workspace[sent.token], "outcome": sent.outcome}[key_of]
            found.setdefault((key, start), Counter())[sent.outcome] += 1
        return found


def counted(series: list[Series]) -> dict[tuple[str | None, datetime], Counter[str]]:
    found: dict[tuple[str | None, datetime], Counter[str]] = {}
    for one in series:
        for bucket in one.buckets:
            outcomes: Counter[str] = Counter(bucket.by_reason)
            if bucket.allowed:
                outcomes["allowed"] = bucket.allowed
            assert (one.key, bucket.start) not in found
            assert bucket.refused == sum(bucket.by_reason.values())
            found[(one.key, bucket.start)] = outcomes
    return found


@pytest.fixture
def traffic(world: World, rt: Runtime, verifier: Verifier, clock: FrozenClock) -> Traffic:
    made = Traffic(world, rt, verifier, clock)
    made.send("crm", 3)
    made.send("erp", 2)
    made.send("crm", 1, scope="admin:write")  # refused: a scope it lacks
    verifier.flush_usage()
    clock.advance(timedelta(hours=1))
    made.send("ops", 4)
    made.send("mine", 2)
    made.send("globex", 5)
    verifier.flush_usage()
    clock.set(START + timedelta(hours=12, minutes=30))  # 00:30 on the next UTC day
    made.send("crm", 2)
    made.send("erp", 1, scope="admin:write")
    made.send("ops", 1)
    verifier.flush_usage()  # the same hour, a second flush: counts add up
    made.send("ops", 2)
    verifier.flush_usage()
    return made


def query(rt: Runtime, actor: Actor, **params: str) -> tuple[Window, list[Series]]:
    window = analytics.window(rt.clock.now(), **params)
    with rt.database.reading() as session:
        return window, analytics.verifications(session, actor, window)


@pytest.mark.parametrize("group_by", analytics.GROUPS)
@pytest.mark.parametrize("interval", analytics.INTERVALS)
def test_counts_equal_the_requests_verified(traffic: Traffic, world: World, rt: Runtime,
                                            group_by: str, interval: str) -> None:
    window, series = query(rt, world.as_admin, since="2030-01-01", until="2030-01-02",
                           interval=interval, group_by=group_by)
    assert window.since == datetime(2030, 1, 1, tzinfo=UTC)
    assert window.until == datetime(2030, 1, 3, tzinfo=UTC)  # a date includes its day
    assert counted(series) == traffic.expected(world.acme_id, window, group_by)
    refused = {s.outcome for s in traffic.sent if s.outcome != "allowed"}
    assert refused and set(analytics.reasons(series)) == refused
    totals = [s.allowed + s.refused for s in series]
    assert totals == sorted(totals, reverse=True)  # the busiest first
    assert sum(totals) == sum(1 for s in traffic.sent if traffic.account[s.token]
                              == world.acme_id)


def test_labels_name_each_key(traffic: Traffic, world: World, rt: Runtime) -> None:
    _, by_token = query(rt, world.as_admin, since="2030-01-01", group_by="token")
    names = {traffic.ids[n]: n for n in traffic.ids}
    assert {s.key: s.label for s in by_token} == {
        k: names[k] for k in names if traffic.account[k] == world.acme_id}
    _, by_identity = query(rt, world.as_admin, since="2030-01-01", group_by="identity")
    assert {s.key: s.label for s in by_identity} == {traffic.cust: "cust_a", None: None}
    _, by_workspace = query(rt, world.as_admin, since="2030-01-01", group_by="workspace")
    assert {s.key: s.label for s in by_workspace} == {
        world.sales.id: "sales", world.ops.id: "ops", None: None}
    _, by_outcome = query(rt, world.as_admin, since="2030-01-01", group_by="outcome")
    assert all(s.key == s.label for s in by_outcome)


def test_another_account_and_a_members_view(traffic: Traffic, world: World,
                                            rt: Runtime) -> None:
    window, theirs = query(rt, world.as_other_admin, since="2030-01-01",
                           group_by="token")
    assert [s.key for s in theirs] == [traffic.ids["globex"]]
    assert counted(theirs) == traffic.expected(world.globex_id, window, "token")
    window, mine = query(rt, world.as_member, since="2030-01-01", group_by="identity")
    assert counted(mine) == traffic.expected(world.acme_id, window, "identity",
                                             only={traffic.ids["mine"]})
    assert sum(s.allowed for s in mine) == 2


def test_filters_by_token_identity_and_workspace(traffic: Traffic, world: World,
                                                 rt: Runtime) -> None:
    base = analytics.window(rt.clock.now(), since="2030-01-01", interval="hour",
                            group_by="outcome")
    of_identity = {t for t, i in traffic.identity.items() if i == traffic.cust}
    for narrowed, only in (
            (Window(base.since, base.until, "hour", "outcome",
                    identity_id=traffic.cust), of_identity),
            (Window(base.since, base.until, "hour", "outcome",
                    token_id=traffic.ids["ops"]), {traffic.ids["ops"]}),
            (Window(base.since, base.until, "hour", "outcome",
                    workspace_id=world.sales.id), {traffic.ids["crm"]}),
            # another account's token: nothing, whatever its id
            (Window(base.since, base.until, "hour", "outcome",
                    token_id=traffic.ids["globex"]), set())):
        with rt.database.reading() as session:
            found = analytics.verifications(session, world.as_admin, narrowed)
        assert counted(found) == traffic.expected(world.acme_id, narrowed, "outcome",
                                                  only=only)


def test_the_window_excludes_what_lies_outside_it(traffic: Traffic, world: World,
                                                  rt: Runtime) -> None:
    window, series = query(rt, world.as_admin, since="2030-01-01T13:00:00Z",
                           until="2030-01-01T14:00:00Z", interval="hour",
                           group_by="outcome")
    assert counted(series) == traffic.expected(world.acme_id, window, "outcome")
    assert [(s.key, s.allowed) for s in series] == [("allowed", 6)]  # ops 4 + mine 2
    _, later = query(rt, world.as_admin, since="2030-01-05", until="2030-01-09")
    assert later == []


def test_defaults_are_the_last_30_days_by_token(traffic: Traffic, world: World,
                                                rt: Runtime) -> None:
    window = analytics.window(rt.clock.now())
    assert (window.interval, window.group_by) == ("day", "token")
    assert window.until == datetime(2030, 1, 3, tzinfo=UTC)  # today included
    assert window.until - window.since == timedelta(days=30)
    hourly = analytics.window(rt.clock.now(), interval="hour")
    assert hourly.until == datetime(2030, 1, 2, 1, tzinfo=UTC)
    assert hourly.until - hourly.since == timedelta(hours=48)
    on_the_hour = analytics.window(START, interval="hour")  # its first instant
    assert on_the_hour.until == START + timedelta(hours=1)
    on_the_day = analytics.window(datetime(2030, 1, 2, tzinfo=UTC))
    assert on_the_day.until == datetime(2030, 1, 3, tzinfo=UTC)


@pytest.mark.parametrize(("params", "field", "reason"), [
    ({"interval": "week"}, "interval", "invalid_interval"),
    ({"group_by": "user"}, "group_by", "invalid_group_by"),
    ({"since": "yesterday"}, "since", "invalid_time"),
    ({"until": "2030-13-01"}, "until", "invalid_time"),
    ({"until": "9999-12-31"}, "until", "invalid_time"),
    ({"until": "0001-01-01T01:00:00"}, "until", "invalid_time"),
    ({"since": "2030-01-02", "until": "2030-01-01"}, "since", "invalid_range"),
    ({"since": "2030-01-01T10:00:00Z", "until": "2030-01-01T10:00:00Z"}, "since",
     "invalid_range"),
    ({"since": "2029-12-01", "until": "2030-01-02", "interval": "hour"}, "since",
     "range_too_long"),
    ({"since": "2028-01-01", "until": "2030-01-01"}, "since", "range_too_long"),
])
def test_bad_parameters_name_the_field_and_reason(params: dict[str, str], field: str,
                                                  reason: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        analytics.window(START, **params)
    body = refused.value.as_dict()
    assert body["field"] == field and body["reason"] == reason and body["message"]


def test_the_longest_windows_are_accepted() -> None:
    # START is on the hour: the default until is the end of that hour
    hours = analytics.window(START, since="2029-12-01T13:00:00Z", interval="hour")
    assert hours.until - hours.since == timedelta(days=31)
    first = (START - timedelta(days=399)).date().isoformat()  # 400 days with today
    days = analytics.window(START, since=first, until=START.date().isoformat())
    assert days.until - days.since == timedelta(days=400)
    with pytest.raises(ValidationFailed):
        analytics.window(START, since=(START - timedelta(days=400)).date().isoformat(),
                         until=START.date().isoformat())


def test_csv_carries_the_same_numbers(traffic: Traffic, world: World, rt: Runtime) -> None:
    import csv

    window, series = query(rt, world.as_admin, since="2030-01-01", interval="hour",
                           group_by="token")
    rows = list(csv.DictReader("".join(analytics.csv_lines(window, series)).splitlines()))
    reasons = analytics.reasons(series)
    assert reasons and list(rows[0]) == [*analytics.CSV_COLUMNS,
                                         *(f"refused_{r}" for r in reasons)]
    from_csv: dict[tuple[str | None, datetime], Counter[str]] = {}
    for row in rows:
        outcomes: Counter[str] = Counter({r: int(row[f"refused_{r}"]) for r in reasons
                                          if int(row[f"refused_{r}"])})
        if int(row["allowed"]):
            outcomes["allowed"] = int(row["allowed"])
        assert int(row["refused"]) == sum(v for k, v in outcomes.items() if k != "allowed")
        assert row["group_by"] == "token"
        from_csv[(row["key"], datetime.fromisoformat(row["start"]))] = outcomes
    assert from_csv == counted(series) == traffic.expected(world.acme_id, window, "token")
