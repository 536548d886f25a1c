"""`tallykey audit export` and `tallykey audit verify`. `register(app)` adds them."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time
from typing import Annotated

import typer

from tallykey.audit import chain, export

audit_app = typer.Typer(help="The audit trail: export it, check its hash chain.",
                        no_args_is_help=True)

EXIT_BROKEN = 1


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _moment(value: str | None, name: str) -> datetime | None:
    from tallykey.cli import fail

    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"--{name} {value!r} is not an ISO 8601 date or time.",
             "Write e.g. 2027-03-31 or 2027-03-31T18:00:00+01:00.")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "jsonl",
    account: Annotated[str | None, typer.Option("--account", "-a",
                                                help="Only this account (slug or id).")]
    = None,
    since: Annotated[str | None, typer.Option(help="From this date or time (inclusive).")]
    = None,
    until: Annotated[str | None, typer.Option(help="Before this date or time.")] = None,
) -> None:
    """Write audit entries to standard output, oldest first."""
    from tallykey.cli import fail, runtime

    if format not in export.FORMATS:
        fail(f"--format {format!r} is not supported.", "Use csv or jsonl.")
    start, end = _moment(since, "since"), _moment(until, "until")
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id if account else None
        rows = export.entries(rt.database, account_id=account_id, since=start, until=end)
        lines = export.csv_lines(rows) if format == "csv" else export.json_lines(rows)
        for chunk in lines:
            sys.stdout.write(chunk)
    sys.stdout.flush()


@audit_app.command("verify")
def audit_verify(
    account: Annotated[str | None, typer.Option("--account", "-a",
                                                help="Only this account's chain.")] = None,
) -> None:
    """Check the hash chains. Exit 0 and the number of entries when intact; exit 1 and the
    first broken entry's id otherwise."""
    from tallykey.cli import err, out, runtime

    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id if account else None
        report = chain.verify(rt.database, account_id)
    first = report.first
    if first is None:
        out.print(f"audit trail intact: {report.entries} entries in {report.chains} "
                  f"chain{'s' if report.chains != 1 else ''}", highlight=False)
        return
    assert report.breaks is not None
    for broken in sorted(report.breaks, key=lambda b: b.entry_id or 0):
        where = f"entry {broken.entry_id}" if broken.entry_id is not None else "chain"
        err.print(f"audit trail broken: {where} (chain {broken.chain}) {broken.problem}",
                  highlight=False, soft_wrap=True)
    err.print(f"first broken entry: {first.entry_id if first.entry_id is not None else '-'}",
              highlight=False)
    raise typer.Exit(EXIT_BROKEN)
