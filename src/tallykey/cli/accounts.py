"""`tallykey accounts …` and `tallykey users …`."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from tallykey.accounts.models import User
from tallykey.actor import Actor
from tallykey.cli.context import runtime
from tallykey.cli.output import AccountOption, JsonOption, emit_json, err, fail, out, print_table
from tallykey.feed.propagation import PropagationView
from tallykey.runtime import Runtime

accounts_app = typer.Typer(help="Accounts (tenants).", no_args_is_help=True)
users_app = typer.Typer(help="Users of an account.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
    app.add_typer(users_app, name="users")


@accounts_app.command("create")
def accounts_create(
    slug: Annotated[str, typer.Argument(help="Short unique name, e.g. acme.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Create an account in this deployment's region."""
    with runtime() as rt:
        account = rt.accounts.create_account(slug, name or slug, rt.settings.region)
    result = {"id": account.id, "slug": account.slug, "name": account.name,
              "region": account.region}
    emit_json(result) if as_json else out.print(f"created account {slug} ({account.id})")


@accounts_app.command("list")
def accounts_list(as_json: JsonOption = False) -> None:
    """List accounts."""
    with runtime() as rt:
        rows = [{"id": a.id, "slug": a.slug, "name": a.name, "region": a.region}
                for a in rt.accounts.list_accounts()]
    if as_json:
        emit_json(rows)
        return
    print_table(["slug", "name", "region", "id"],
                [[row["slug"], row["name"], row["region"], row["id"]] for row in rows])


# --- users ------------------------------------------------------------------------------


def user_dict(user: User) -> dict[str, Any]:
    return {"id": user.id, "email": user.email, "name": user.name, "role": user.role,
            "active": user.active,
            "workspaces": {g.workspace_id: list(g.scopes) for g in user.grants}}


#: The roles a user can have (SPEC §17), for `--role`.
ROLE_HELP = ("admin, member or auditor (an auditor reads every token, the usage and the "
             "audit log, and changes nothing).")


@users_app.command("create")
def users_create(
    account: AccountOption,
    email: Annotated[str, typer.Option(help="The user's e-mail (their login).")],
    role: Annotated[str, typer.Option(help=ROLE_HELP)] = "member",
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", metavar="",
                help="Read the console password from standard input.")] = False,
    grant: Annotated[list[str] | None, typer.Option(
        help="WORKSPACE=SCOPE[,SCOPE…]: a workspace the user sees and what they may do.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Add a user to an account."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        grants = parse_grants(rt, actor.account_id, grant or [])
        user = rt.accounts.create_user(actor, email, role=role, name=name, password=password,
                                       grants=grants)
    emit_json(user_dict(user)) if as_json else out.print(f"created {user.role} {user.email}")


def parse_grants(rt: Runtime, account_id: str, specs: list[str]) -> dict[str, list[str]]:
    by_slug = {w.slug: w.id for w in rt.accounts.workspaces(account_id)}
    grants: dict[str, list[str]] = {}
    for spec in specs:
        workspace, sep, scopes = spec.partition("=")
        if not sep or workspace not in by_slug:
            fail(f"--grant {spec!r}: expected WORKSPACE=SCOPE[,SCOPE…] with a workspace of "
                 f"this account ({', '.join(by_slug) or 'none'}).")
        grants[by_slug[workspace]] = [s.strip() for s in scopes.split(",") if s.strip()]
    return grants


@users_app.command("list")
def users_list(account: AccountOption, as_json: JsonOption = False) -> None:
    """List the users of an account."""
    with runtime() as rt:
        users = rt.accounts.list_users(Actor.operator(rt.accounts.find_account(account).id))
    if as_json:
        emit_json([user_dict(u) for u in users])
        return
    print_table(["email", "role", "active", "id"],
                [[u.email, u.role, "yes" if u.active else "no", u.id] for u in users])


#: One convention for references: the object a command acts on is its argument (a token
#: id or prefix, a user's e-mail); `--email` is still accepted for scripts.
UserRef = Annotated[str | None, typer.Argument(help="The user's e-mail.", show_default=False)]
EmailOption = Annotated[str | None, typer.Option(
    "--email", help="The user's e-mail (same as the argument).", show_default=False)]


def _one_email(argument: str | None, option: str | None) -> str:
    if (argument is None) == (option is None):
        fail("name the user once: tallykey users … EMAIL (or --email EMAIL).", code=2)
    return str(argument if argument is not None else option)


def _update_user(account: str, email: str, verb: str, as_json: bool,
                 **changes: Any) -> None:
    """Change a user, wait until every node applied it, and say so."""
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id
        user = rt.accounts.find_user(account_id, email)
        user = rt.accounts.update_user(Actor.operator(account_id), user.id, **changes)
        done = rt.propagation.settle(user.id)
    effect = "stopped" if verb == "deactivated" else "applied"
    if as_json:
        emit_json({**user_dict(user),
                   "propagation": PropagationView.of(done, effect).model_dump(mode="json")})
    else:
        out.print(f"{verb} {user.email}: {done.summary(effect)}", highlight=False)


@users_app.command("deactivate")
def users_deactivate(account: AccountOption, email: UserRef = None,
                     email_option: EmailOption = None, as_json: JsonOption = False) -> None:
    """Deactivate a user: their personal tokens stop working at once."""
    _update_user(account, _one_email(email, email_option), "deactivated", as_json,
                 active=False)


@users_app.command("activate")
def users_activate(account: AccountOption, email: UserRef = None,
                   email_option: EmailOption = None, as_json: JsonOption = False) -> None:
    """Reactivate a user."""
    _update_user(account, _one_email(email, email_option), "activated", as_json,
                 active=True)


@users_app.command("set-role")
def users_set_role(account: AccountOption,
                   role: Annotated[str, typer.Option(help=ROLE_HELP)],
                   email: UserRef = None, email_option: EmailOption = None,
                   as_json: JsonOption = False) -> None:
    """Make a user an admin, a member or an auditor (reads every token, the usage and
    the audit log; changes nothing)."""
    _update_user(account, _one_email(email, email_option), f"role {role} for", as_json,
                 role=role)


@users_app.command("set-password")
def users_set_password(account: AccountOption, email: Annotated[str, typer.Option(
        help="The user's e-mail (their login).")]) -> None:
    """Set a user's console password, read from standard input (one line); the user is
    signed out of every session."""
    if sys.stdin.isatty():
        err.print("Type the new password, then Enter:", highlight=False)
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail("no password on standard input.",
             "Pipe it in, e.g. `printf '%s\\n' \"$PASSWORD\" | tallykey users set-password ...`.")
    with runtime() as rt:
        account_id = rt.accounts.find_account(account).id
        user = rt.accounts.find_user(account_id, email)
        rt.accounts.set_password(Actor.operator(account_id), user.id, password)
    out.print(f"password set for {user.email}; their sessions were signed out")
