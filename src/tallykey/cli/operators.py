"""`tallykey operator-tokens create|list|revoke`. `register(app)` adds them."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from tallykey.cli.context import runtime
from tallykey.cli.output import JsonOption, emit_json, out, print_table
from tallykey.operators.service import OPERATOR_REGION
from tallykey.tokens import format as token_format

operator_tokens_app = typer.Typer(
    help="Operator tokens: the platform's credential for the operator API "
    "(/api/v1/operator), which provisions accounts, users and workspaces.",
    no_args_is_help=True)



def register(app: typer.Typer) -> None:
    app.add_typer(operator_tokens_app, name="operator-tokens")


@operator_tokens_app.command("create")
def operator_tokens_create(
    name: Annotated[str, typer.Option(help="What uses it, e.g. 'billing back office'.")],
    days: Annotated[int, typer.Option(help="Valid for D days (1-365).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only the token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Create an operator token. It is printed once and stored only as a hash."""
    with runtime() as rt:
        issued = rt.operators.issue(name, days)
    record = issued.record
    if quiet:
        sys.stdout.write(issued.value + "\n")
    elif as_json:
        emit_json({"id": record.id, "name": record.name, "prefix": issued.secret.prefix,
                   "expires_at": record.expires_at.isoformat(), "token": issued.value})
    else:
        out.print(f"created operator token [bold]{record.name}[/] ({record.id}), expires "
                  f"{record.expires_at:%Y-%m-%d}")
        out.print("Copy it now; it will not be shown again:")
        out.print(issued.value, highlight=False, soft_wrap=True)


@operator_tokens_app.command("list")
def operator_tokens_list(as_json: JsonOption = False) -> None:
    """List operator tokens (never their secrets)."""
    with runtime() as rt:
        records = rt.operators.list_tokens()
    rows = [{"id": r.id, "name": r.name,
             "prefix": token_format.prefix(OPERATOR_REGION, r.public_id),
             "created_at": r.created_at.isoformat(), "expires_at": r.expires_at.isoformat(),
             "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
             "last_used_at": r.last_used_at.isoformat() if r.last_used_at else None}
            for r in records]
    if as_json:
        emit_json(rows)
        return
    print_table(["prefix", "name", "expires", "revoked", "last used"],
                [[str(row["prefix"]), str(row["name"]), str(row["expires_at"])[:10],
                  str(row["revoked_at"] or "")[:10], str(row["last_used_at"] or "never")]
                 for row in rows])


@operator_tokens_app.command("revoke")
def operator_tokens_revoke(ref: Annotated[str, typer.Argument(help="Id or prefix.")]
                           ) -> None:
    """Revoke an operator token: it stops at once."""
    with runtime() as rt:
        record = rt.operators.revoke(ref)
    out.print(f"revoked operator token {record.name}", highlight=False)
