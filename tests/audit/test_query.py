"""The one audit query: `since` inclusive, `until` exclusive, a bare date meaning its
whole day, the same for the API, the console and the CLI (they all build `AuditQuery`)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from typer.testing import CliRunner

from tallykey.audit import query as audit
from tallykey.audit import trail
from tallykey.cli import app as cli_app
from tallykey.runtime import Runtime

from ..conftest import World

MOMENTS = [datetime(2030, 1, 1, 0, 0, tzinfo=UTC), datetime(2030, 1, 1, 23, 59, tzinfo=UTC),
           datetime(2030, 1, 2, 0, 0, tzinfo=UTC)]


def recorded(rt: Runtime, world: World) -> list[int]:
    with rt.database.transaction() as session:
        events = [trail.record(session, actor=world.as_admin, action="test.moment", at=at,
                               target_type="token", target_id=f"t{n}")
                  for n, at in enumerate(MOMENTS)]
        session.flush()
        return [e.id for e in events]


def test_a_date_bound_means_its_whole_day(rt: Runtime, world: World) -> None:
    ids = recorded(rt, world)
    first_day = audit.AuditQuery(world.acme_id, action="test.moment",
                                 since=audit.start_of(date(2030, 1, 1)),
                                 until=audit.end_of(date(2030, 1, 1)))
    assert sorted(e.id for e in audit.entries(rt.database, first_day)) == ids[:2]
    second = audit.AuditQuery(world.acme_id, action="test.moment",
                              since=audit.start_of(date(2030, 1, 2)))
    newest, cursor = audit.page(rt.database, second, None, 10)
    assert [e.id for e in newest] == ids[2:] and cursor is None
    exact = audit.AuditQuery(world.acme_id, action="test.moment",
                             until=audit.end_of(datetime(2030, 1, 1, 23, 59, tzinfo=UTC)))
    assert [e.id for e in audit.entries(rt.database, exact)] == ids[:1]  # a time: exclusive


def test_pages_walk_newest_first_and_stay_in_the_account(rt: Runtime, world: World) -> None:
    ids = recorded(rt, world)
    mine = audit.AuditQuery(world.acme_id, action="test.moment")
    first, cursor = audit.page(rt.database, mine, None, 2)
    rest, end = audit.page(rt.database, mine, cursor, 2)
    assert [e.id for e in first + rest] == sorted(ids, reverse=True) and end is None
    assert audit.page(rt.database, audit.AuditQuery(world.globex_id,
                                                    action="test.moment"), None, 10)[0] == []


def test_the_cli_export_reads_the_same_days(rt: Runtime, world: World) -> None:
    ids = recorded(rt, world)
    result = CliRunner().invoke(cli_app, ["audit", "export", "-a", "acme",
                                          "--since", "2030-01-01", "--until", "2030-01-01"],
                                env={"TALLYKEY_DATABASE_URL": rt.settings.resolved_database_url})
    assert result.exit_code == 0, result.output
    exported = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["id"] for e in exported if e["action"] == "test.moment"] == ids[:2]
