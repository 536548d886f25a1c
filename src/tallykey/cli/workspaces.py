"""`tallykey workspaces list|create|rename|archive`. `register(app)` adds them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tallykey.accounts.models import Workspace
from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, fail, out, print_table

workspaces_app = typer.Typer(help="Workspaces of an account (the platform's projects or "
                             "teams).", no_args_is_help=True)

WorkspaceRef = Annotated[str, typer.Argument(help="Workspace id or slug.")]


def register(app: typer.Typer) -> None:
    app.add_typer(workspaces_app, name="workspaces")


def workspace_dict(workspace: Workspace) -> dict[str, Any]:
    return {"id": workspace.id, "slug": workspace.slug, "name": workspace.name,
            "timezone": workspace.timezone,
            "archived_at": workspace.archived_at.isoformat() if workspace.archived_at
            else None}


@workspaces_app.command("list")
def workspaces_list(account: AccountOption,
                    archived: Annotated[bool, typer.Option(
                        "--archived", metavar="", help="Include archived workspaces.")] = False,
                    as_json: JsonOption = False) -> None:
    """List the account's workspaces."""
    with runtime() as rt:
        found = rt.accounts.workspaces(rt.accounts.find_account(account).id,
                                       archived=archived)
    if as_json:
        emit_json([workspace_dict(w) for w in found])
        return
    print_table(["id", "slug", "name", "time zone", "archived"],
                [[w.id, w.slug, w.name, w.timezone,
                  f"{w.archived_at:%Y-%m-%d}" if w.archived_at else ""] for w in found],
                keep=("id", "slug"))


@workspaces_app.command("create")
def workspaces_create(account: AccountOption,
                      slug: Annotated[str, typer.Option(help="e.g. north-shop")],
                      name: Annotated[str, typer.Option(help="Display name.")],
                      timezone: Annotated[str, typer.Option(help="IANA time zone.")] = "UTC",
                      as_json: JsonOption = False) -> None:
    """Create a workspace (audited as the operator)."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        workspace = rt.accounts.add_workspace(actor, slug, name, timezone)
    if as_json:
        emit_json(workspace_dict(workspace))
    else:
        out.print(f"created workspace {workspace.slug} ({workspace.id})", highlight=False)


@workspaces_app.command("rename")
def workspaces_rename(account: AccountOption, ref: WorkspaceRef,
                      name: Annotated[str | None, typer.Option(help="New name.")] = None,
                      slug: Annotated[str | None, typer.Option(help="New slug.")] = None,
                      as_json: JsonOption = False) -> None:
    """Rename a workspace (name and/or slug)."""
    if name is None and slug is None:
        fail("nothing to change: pass --name and/or --slug.")
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        workspace = rt.accounts.update_workspace(actor, ref, name=name, slug=slug)
    if as_json:
        emit_json(workspace_dict(workspace))
    else:
        out.print(f"renamed workspace {workspace.slug}: {workspace.name}", highlight=False)


@workspaces_app.command("archive")
def workspaces_archive(account: AccountOption, ref: WorkspaceRef,
                       as_json: JsonOption = False) -> None:
    """Archive a workspace: its tokens stop at once on every node. Irreversible."""
    from tallykey.feed.propagation import PropagationView
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        archived = rt.accounts.archive_workspace(actor, ref)
        (workspace, stopped), done = archived.value, archived.propagation
    if as_json:
        emit_json({"workspace": workspace_dict(workspace), "tokens_stopped": stopped,
                   "propagation": PropagationView.of(done).model_dump(mode="json")})
        return
    out.print(f"archived workspace {workspace.slug}: {stopped} token(s); {done.summary()}",
              highlight=False)
