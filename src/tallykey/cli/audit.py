"""`tallykey audit export|verify|heads`. `register(app)` adds them."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated

import typer

from tallykey.audit import anchor, chain, export, query
from tallykey.cli.context import runtime
from tallykey.cli.output import emit_json, err, fail, out
from tallykey.errors import AnchorError

audit_app = typer.Typer(help="The audit trail: export it, check its hash chain.",
                        no_args_is_help=True)

EXIT_BROKEN = 1


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _moment(value: str | None, name: str) -> date | datetime | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        fail(f"--{name} {value!r} is not an ISO 8601 date or time.",
             "Write e.g. 2027-03-31 or 2027-03-31T18:00:00+01:00.")


@audit_app.command("export")
def audit_export(
    format: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "jsonl",
    account: Annotated[str | None, typer.Option("--account", "-a",
                                                help="Only this account (slug or id).")]
    = None,
    since: Annotated[str | None, typer.Option(help="From this date or time (inclusive).")]
    = None,
    until: Annotated[str | None, typer.Option(
        help="Up to this date (inclusive: the whole day) or before this time.")] = None,
) -> None:
    """Write audit entries to standard output, oldest first."""
    if format not in export.FORMATS:
        fail(f"--format {format!r} is not supported.", "Use csv or jsonl.")
    start, end = _moment(since, "since"), _moment(until, "until")
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id if account else None
        rows = query.entries(rt.database, query.AuditQuery(
            account_id, since=query.start_of(start) if start else None,
            until=query.end_of(end) if end else None))
        lines = export.csv_lines(rows) if format == "csv" else export.json_lines(rows)
        for chunk in lines:
            sys.stdout.write(chunk)
    sys.stdout.flush()


@audit_app.command("heads")
def audit_heads(
    account: Annotated[str | None, typer.Option("--account", "-a",
                                                help="Only this account's chain.")] = None,
    sign: Annotated[bool, typer.Option(
        "--sign", metavar="",
        help="Sign with the Ed25519 key in TALLYKEY_AUDIT_SIGNING_KEY.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", metavar="",
        help="Print the heads document to save (for audit verify --heads).")]
    = False,
) -> None:
    """Print each chain's head (position and hash). Save them somewhere the database's
    administrators cannot write; `tallykey audit verify --heads FILE` later proves that
    nothing was cut off or rewritten since."""
    with runtime() as rt:
        key = None
        if sign:
            if not rt.settings.audit_signing_key:
                fail("--sign needs TALLYKEY_AUDIT_SIGNING_KEY (an Ed25519 private key).",
                     "Make one with: openssl genpkey -algorithm ed25519")
            try:
                key = anchor.load_private_key(rt.settings.audit_signing_key)
            except AnchorError as error:
                fail(str(error))
        account_id = rt.accounts.find_account(account).id if account else None
        slugs = {a.id: a.slug for a in rt.accounts.list_accounts()}
        document = anchor.heads_document(rt.database, rt.clock.now(), key, slugs, account_id)
    if as_json or sign:
        emit_json(document)
        return
    for head in document["heads"]:  # one line each, tab-separated, never wrapped
        sys.stdout.write(f"{head['account']}\t{head['seq']}\t{head['hash']}\n")


@audit_app.command("verify")
def audit_verify(
    account: Annotated[str | None, typer.Option("--account", "-a",
                                                help="Only this account's chain.")] = None,
    saved_heads: Annotated[Path | None, typer.Option(
        "--heads", help="A document from 'audit heads --json': every head in it must "
        "still be in the store, unchanged.")] = None,
    public_key: Annotated[str | None, typer.Option(
        "--public-key", help="PEM Ed25519 public key (or file) the saved heads must be "
        "signed with; default: the key in TALLYKEY_AUDIT_SIGNING_KEY, if set.")] = None,
) -> None:
    """Check the hash chains. Exit 0 and the number of entries when intact; exit 1 and the
    first broken entry's id otherwise."""
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id if account else None
        report = chain.verify(rt.database, account_id)
        anchored: list[str] = []
        if saved_heads is not None:
            try:
                document = json.loads(saved_heads.read_text())
                key_text = public_key or rt.settings.audit_signing_key
                key = anchor.load_public_key(key_text) if key_text else None
                anchored = anchor.check_against(rt.database, document, key)
            except (OSError, ValueError) as error:
                fail(f"--heads {str(saved_heads)!r} cannot be used: {error}")
    for problem in anchored:
        err.print(f"audit trail differs from the saved heads: {problem}", highlight=False,
                  soft_wrap=True)
    first = report.first
    if first is None and anchored:
        raise typer.Exit(EXIT_BROKEN)
    if first is None:
        out.print(f"audit trail intact: {report.entries} entries in {report.chains} "
                  f"chain{'s' if report.chains != 1 else ''}"
                  + (", every saved head present and unchanged" if saved_heads else ""),
                  highlight=False)
        return
    assert report.breaks is not None
    for broken in sorted(report.breaks, key=lambda b: b.entry_id or 0):
        where = f"entry {broken.entry_id}" if broken.entry_id is not None else "chain"
        err.print(f"audit trail broken: {where} (chain {broken.chain}) {broken.problem}",
                  highlight=False, soft_wrap=True)
    err.print(f"first broken entry: {first.entry_id if first.entry_id is not None else '-'}",
              highlight=False)
    raise typer.Exit(EXIT_BROKEN)
