"""`tallykey analytics verifications` (SPEC §16): an account's verifications per hour or
per day, grouped by token, identity, outcome or workspace, as a table, JSON (the API's
answer) or CSV (the API's CSV). `register(app)` adds it. Read as the operator: the whole
account."""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Annotated

import typer

from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, out, print_table
from tallykey.monitor import analytics

analytics_app = typer.Typer(help="Usage analytics: verifications per hour or day, allowed "
                            "and refused by reason.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(analytics_app, name="analytics")


@analytics_app.command("verifications")
def verifications(
    account: AccountOption,
    since: Annotated[str | None, typer.Option(help="ISO 8601 date or date-time (UTC if "
                                              "bare); default: 48 hours or 30 days "
                                              "before --until.")] = None,
    until: Annotated[str | None, typer.Option(help="Exclusive; a date includes its whole "
                                              "day; default: now (the current hour or "
                                              "day included).")] = None,
    interval: Annotated[str, typer.Option(help="hour (at most 31 days) or day (at most "
                                          "400 days).")] = analytics.DEFAULT_INTERVAL,
    group_by: Annotated[str, typer.Option(help="token, identity, outcome or workspace."
                                          )] = analytics.DEFAULT_GROUP,
    token: Annotated[str | None, typer.Option(help="Only this token (id or prefix)."
                                              )] = None,
    identity: Annotated[str | None, typer.Option(help="Only this identity's tokens (id or "
                                                 "external id).")] = None,
    workspace: Annotated[str | None, typer.Option(help="Only this workspace's tokens (id "
                                                  "or slug).")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", metavar="", help="Print CSV: one row "
                                         "per key and bucket.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Requests verified per hour or day: allowed, refused, and refused by reason. Counts
    are written by every node about once a second and kept TALLYKEY_USAGE_RETENTION_DAYS
    days."""
    from tallykey.api.analytics import VerificationAnalytics

    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        query = analytics.window(rt.clock.now(), since=since, until=until,
                                 interval=interval, group_by=group_by)
        with rt.database.reading() as session:
            query = replace(
                query,
                token_id=rt.tokens.get(actor, rt.tokens.locate(token)[1]).id
                if token else None,
                identity_id=rt.identities.get(actor, identity).id if identity else None,
                workspace_id=analytics.resolve_workspace(session, actor, workspace)
                if workspace else None)
            found = analytics.verifications(session, actor, query)
        answer = VerificationAnalytics.of(query, found, rt.settings.usage_retention_days)
    if as_csv:
        for chunk in analytics.csv_lines(query, found):
            sys.stdout.write(chunk)
        return
    if as_json:
        emit_json(answer)
        return
    refusals = analytics.reasons(found)
    print_table(["key", "label", "start", "allowed", "refused", *refusals],
                [[s.key or "(none)", s.label or "", b.start.strftime(
                    "%Y-%m-%d %H:00" if query.interval == analytics.HOUR else "%Y-%m-%d"),
                  str(b.allowed), str(b.refused),
                  *(str(b.by_reason.get(r, 0)) for r in refusals)]
                 for s in found for b in s.buckets], keep=("key",))
    if out.is_terminal:  # a pipe or file gets the rows alone
        out.print(f"{sum(s.allowed for s in found)} allowed, {sum(s.refused for s in found)} "
                  f"refused from {query.since:%Y-%m-%d %H:%M} to "
                  f"{query.until:%Y-%m-%d %H:%M} UTC", highlight=False)
