"""The `tallykey` command line: a thin adapter over the same services the API uses.

Errors are one clear line on stderr and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tallykey.accounts.actor import Actor
from tallykey.accounts.cli import register as register_workspace_commands
from tallykey.accounts.models import Account, User
from tallykey.api.schemas import PropagationView
from tallykey.audit.cli import register as register_audit_commands
from tallykey.db import migrate as migrations
from tallykey.db.engine import store_outage
from tallykey.errors import StoreUnavailable, TallykeyError
from tallykey.logs import uvicorn_log_config
from tallykey.notify.cli import register as register_notify_commands
from tallykey.operators.cli import register as register_operator_commands
from tallykey.runtime import Runtime
from tallykey.settings import load_settings
from tallykey.tokens.policy import DEFAULT_GRACE_SECONDS
from tallykey.tokens.schemas import IssuedTokenView, TokenView
from tallykey.tokens.service import TokenChanges, TokenDraft, TokenQuery

app = typer.Typer(help="tallykey: named, expiring API tokens.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
accounts_app = typer.Typer(help="Accounts (tenants).", no_args_is_help=True)
users_app = typer.Typer(help="Users of an account.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
keys_app = typer.Typer(help="Key-encryption keys for retrievable secrets.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"tallykey {version('tallykey')}\n")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option(
        "--version", metavar="", help="Print the version and exit.", is_eager=True,
        callback=_show_version)] = False) -> None:
    """tallykey: named, expiring API tokens."""


register_notify_commands(app)  # outbox, webhooks, worker
register_audit_commands(app)  # audit export, audit verify
register_workspace_commands(app)  # workspaces list|create|rename|archive
register_operator_commands(app)  # operator-tokens create|list|revoke

out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", metavar="", help="Print JSON.")]
AccountOption = Annotated[str, typer.Option("--account", "-a", help="Account slug or id.")]

EXIT_ERROR = 1
#: The store could not be reached: try again later (sysexits' EX_TEMPFAIL).
EXIT_UNAVAILABLE = 75
EXIT_NOT_FOUND = 3
EXIT_FORBIDDEN = 4


def fail(message: str, hint: str = "", code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}" + (f" {hint}" if hint else ""),
              highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def runtime() -> Iterator[Runtime]:
    """A runtime with an up-to-date schema; product errors become one line on stderr."""
    try:
        rt = Runtime.build()
    except ValueError as error:  # settings validation
        fail(f"invalid settings: {error}")
    except OSError as error:  # e.g. a data directory that cannot be created
        fail(f"cannot open the store: {error.strerror or error} "
             f"({error.filename or 'TALLYKEY_DATA_DIR'}).",
             "Check TALLYKEY_DATA_DIR (it must be writable) or TALLYKEY_DATABASE_URL.")
    except TallykeyError as error:  # e.g. an unreadable key-encryption key
        fail(error.message, error.hint)
    try:
        rt.ensure_schema()
        yield rt
    except StoreUnavailable as error:
        fail(error.message, error.hint, EXIT_UNAVAILABLE)
    except TallykeyError as error:
        code = {404: EXIT_NOT_FOUND, 403: EXIT_FORBIDDEN}.get(error.status, EXIT_ERROR)
        fail(error.message, error.hint, code)
    except OperationalError as error:
        outage = store_outage(error)
        fail(outage.message if outage else "the database refused the command.",
             "Check TALLYKEY_DATABASE_URL or TALLYKEY_DATA_DIR.", EXIT_UNAVAILABLE)
    finally:
        rt.close()


def print_table(headers: list[str], rows: list[list[str]], *,
                keep: tuple[str, ...] = ("prefix", "id")) -> None:
    """Rows for a person at a terminal (aligned; the `keep` columns, ids and prefixes,
    are never cut), or, in a pipe or file, tab-separated with every value in full."""
    if not out.is_terminal:
        for row in [headers, *rows]:
            sys.stdout.write("\t".join(cell.replace("\t", " ") for cell in row) + "\n")
        return
    table = Table()
    for number, header in enumerate(headers):
        widest = max([len(header), *(len(row[number]) for row in rows)])
        table.add_column(header, no_wrap=header in keep,
                         min_width=widest if header in keep else None)
    for row in rows:
        table.add_row(*row)
    out.print(table)


def emit_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def user_actor(rt: Runtime, account: str, email: str) -> Actor:
    account_id = rt.accounts.find_account(account).id
    user = rt.accounts.find_user(account_id, email)
    if not user.active:
        fail(f"user {user.email} is deactivated.")
    return Actor(account_id, user.id, user.role, user.email, None, "cli")


def operator_for_token(rt: Runtime, ref: str, account: str | None) -> tuple[Actor, str]:
    account_id, token_id = rt.tokens.locate(ref)
    if account is not None and rt.accounts.find_account(account).id != account_id:
        fail(f"No token {ref!r} in account {account!r}.", code=EXIT_NOT_FOUND)
    return Actor.operator(account_id), token_id


# --- top level --------------------------------------------------------------------------


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (idempotent)."""
    try:
        rt = Runtime.build()
    except ValueError as error:
        fail(f"invalid settings: {error}")
    try:
        before, after = migrations.upgrade(rt.database)
    except OperationalError as error:
        fail(f"cannot reach the database: {str(error.orig).strip().splitlines()[0]}")
    finally:
        rt.close()
    if before == after:
        out.print(f"schema already up to date (revision {after})")
    else:
        out.print(f"schema upgraded from {before or 'empty'} to {after}")


def _uvicorn_config(host: str, port: int, workers: int, access_log: bool,
                    log_format: str = "text") -> dict[str, Any]:
    """uvicorn's settings; every log record passes the secret-redacting filter. The HTTP
    protocol is uvicorn's httptools one with a bound on a request's header section
    (`BoundedHttpToolsProtocol`), so a node exposed directly cannot be made to buffer
    megabytes of headers; `RequestLimits` also refuses more than 100 header lines."""
    from tallykey.api.http_limits import BoundedHttpToolsProtocol

    json_logs = log_format == "json"
    return {"host": host, "port": port, "workers": workers,
            "access_log": access_log and not json_logs,  # JSON mode logs requests itself
            "log_level": "info", "proxy_headers": False, "server_header": False,
            # SIGTERM: in-flight requests get 5 s (each is bounded by the store timeouts)
            "timeout_graceful_shutdown": 5,
            "http": BoundedHttpToolsProtocol,
            "log_config": uvicorn_log_config(log_format)}


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    access_log: Annotated[bool, typer.Option(metavar="", help="Log every request line.")] = False,
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text (default) or json: one JSON line per request and per "
        "log record (also TALLYKEY_LOG_FORMAT).")] = None,
) -> None:
    """Serve the management API, verification endpoints and the demo platform API."""
    import os

    import uvicorn

    from tallykey.monitor.metrics import prepare_multiprocess, remove_multiprocess_dir

    if log_format is not None:
        if log_format not in ("text", "json"):
            fail(f"--log-format {log_format!r} is not supported.", "Use text or json.")
        os.environ["TALLYKEY_LOG_FORMAT"] = log_format  # read by every worker's settings

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    with runtime() as rt:  # settings, schema and keys are checked before any worker starts
        rt.check_keys()
        rt.check_writable()
        region = rt.settings.region
        chosen_format = rt.settings.log_format
        print_setup_link(rt, rt.settings.public_url or f"http://{shown_host}:{port}")
    out.print(f"tallykey ({region}) listening on http://{host}:{port}", highlight=False)
    metrics_dir = prepare_multiprocess(workers)
    try:
        uvicorn.run("tallykey.api.app:create_app", factory=True,
                    **_uvicorn_config(host, port, workers, access_log, chosen_format))
    finally:
        remove_multiprocess_dir(metrics_dir)


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    seed_only: Annotated[bool, typer.Option("--seed-only", metavar="", help="Seed, print, exit.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Seed the demo account (idempotent) and serve it.

    The demo keeps demo-only files in the data dir: the tokens it printed (a second run
    prints the same ones, never rotating them), its URL (for `tallykey connect`) and a
    key-encryption key of its own, so retrievable application tokens can be shown."""
    import uvicorn

    from tallykey.api.app import create_app
    from tallykey.demo import local
    from tallykey.demo.seed import seed

    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    base_url = f"http://{shown_host}:{port}"
    if not seed_only and _port_in_use(host, port):  # before seeding touches anything
        fail(f"port {port} on {host} is already in use (is a demo already running?).",
             "Stop the other process, or pass --port with a free port.")
    try:
        settings = load_settings()
    except ValueError as error:
        fail(f"invalid settings: {error}")
    demo_kek = None
    if not settings.kek and not settings.kek_file:
        existing = local.kek_path(settings.data_dir)
        if not seed_only or existing.exists():
            demo_kek = local.ensure_kek(settings.data_dir).resolve()
            os.environ["TALLYKEY_KEK_FILE"] = str(demo_kek)  # this process and its server
    with runtime() as rt:
        rt.check_keys()
        seeded = seed(rt, base_url, data_dir=rt.settings.data_dir,
                      retrievable=demo_kek is not None and not seed_only,
                      register=not seed_only)
        env_prefix = ("" if rt.settings.database_url else
                      f"TALLYKEY_DATA_DIR={rt.settings.data_dir.resolve()} ")
    if as_json:
        emit_json(seeded)
    else:
        print_demo_welcome(seeded, env_prefix + _command_name(), demo_kek)
    if seed_only:
        return
    server = uvicorn.Server(uvicorn.Config(create_app(), **_uvicorn_config(
        host, port, 1, False)))
    server.run()


def _port_in_use(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def _command_name() -> str:
    """How to run this same `tallykey` from another terminal: `tallykey` when that is on
    the PATH, else this executable's absolute path (e.g. a virtualenv's)."""
    import shutil
    from pathlib import Path

    me = Path(sys.argv[0]).resolve()
    on_path = shutil.which("tallykey")
    if (on_path and Path(on_path).resolve() == me) or me.name != "tallykey":
        return "tallykey"
    return str(me)


def print_setup_link(rt: Runtime, base_url: str) -> None:
    """No administrator yet: print the one-time link that creates the first one."""
    from tallykey.console.setup import issue_link

    link = issue_link(rt, base_url)
    if link:
        out.print(f"No administrator exists yet. Create the first one (this link works once):"
                  f"\n  {link}", highlight=False, soft_wrap=True)
        sys.stdout.flush()


def print_demo_welcome(seeded: dict[str, Any], command: str, demo_kek: Any = None) -> None:
    base, admin, member = seeded["base_url"], seeded["admin"], seeded["member"]
    kek_line = (f"\n  Demo-only key-encryption key (retrievable application tokens): "
                f"{demo_kek}\n  Never use it outside this demo.\n" if demo_kek else "")
    out.print(f"""
[bold]tallykey demo[/] — region {seeded['region']}, account {seeded['account']!r}

  Console:        {base}/console
  API docs:       {base}/docs
  Admin login:    {admin['email']} / {admin['password']}
  Member login:   {member['email']} / {member['password']}

  Demo token (the admin's, every scope; valid {30} days):
    {admin['token']}

  Try it:
    curl -H "Authorization: Bearer {admin['token']}" {base}/core/v3/info

  Revoke it from another terminal (any directory), then run the curl again (401):
    {command} tokens revoke {admin['token'][:20]}
{kek_line}""", highlight=False, soft_wrap=True)


# --- connect (the integration-hub flow, over the network) ------------------------------


@app.command()
def connect(
    region: Annotated[str | None, typer.Option(
        help="The account's region, e.g. eu1 (default: the token's own).")] = None,
    token: Annotated[str | None, typer.Option(
        help="The token (lands in shell history: prefer --token-env or --token-stdin).")]
    = None,
    token_env: Annotated[str | None, typer.Option(
        "--token-env", metavar="NAME", help="Read the token from this environment variable.")]
    = None,
    token_stdin: Annotated[bool, typer.Option(
        "--token-stdin", metavar="", help="Read the token from standard input.")] = False,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="API base URL (default: the region's, from TALLYKEY_REGIONS).")]
    = None,
    scope: Annotated[list[str] | None, typer.Option(
        help="A scope the token must grant; repeat for more.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a token against its region's /core/v3/info: whose it is, or the exact fix.

    Exit codes: 0 connected, 2 usage, 10 misconfigured region/URL, 21 copied incompletely,
    22 wrong region, 23 not recognised, 24 revoked, 25 expired, 26 owner inactive,
    31 IP not allowed, 32 scope missing, 40 rate limited, 50 unreachable, 51 not tallykey.
    """
    from tallykey.client import Client, ConnectFailed

    sources = [token is not None, token_env is not None, token_stdin]
    if sources.count(True) != 1:
        fail("pass the token exactly one way: --token-env NAME, --token-stdin or --token.",
             code=2)
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            fail(f"the environment variable {token_env} is not set or empty.", code=2)
    elif token_stdin:
        import getpass

        token = (getpass.getpass("token (not echoed): ") if sys.stdin.isatty()
                 else sys.stdin.readline())
    try:
        with Client(str(token).strip(), region=region, base_url=base_url) as client:
            info = client.connect(scope or ())
    except ConnectFailed as error:
        if as_json:
            emit_json(error.as_dict())
            raise typer.Exit(error.exit_code) from None
        fail(error.message, error.hint, error.exit_code)
    if as_json:
        emit_json(info.as_dict())
        return
    days = (info.expires_at - datetime.now(UTC)).days
    out.print(f"connected to {info.account.name} ({info.account.slug}) in region "
              f"{info.account.region} at {info.base_url}\n"
              f"  token:   {info.token_id} ({info.kind})\n"
              f"  scopes:  {' '.join(info.scopes) or '(none)'}\n"
              f"  expires: {info.expires_at.isoformat()} (in {days} days)"
              + (f"\n  user:    {info.user.email}" if info.user else ""),
              highlight=False, soft_wrap=True)
    if days < 7:
        err.print(f"[yellow]warning:[/] the token expires in {days} days; create a new one "
                  "and update the integration before then.", soft_wrap=True)


# --- accounts ---------------------------------------------------------------------------


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
    with runtime() as rt, rt.database.reading() as session:
        rows = [{"id": a.id, "slug": a.slug, "name": a.name, "region": a.region}
                for a in session.scalars(select(Account).order_by(Account.slug))]
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


@users_app.command("create")
def users_create(
    account: AccountOption,
    email: Annotated[str, typer.Option(help="The user's e-mail (their login).")],
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
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
        done = rt.settle(user.id)
    if as_json:
        emit_json({**user_dict(user),
                   "propagation": PropagationView.of(done).model_dump(mode="json")})
    else:
        out.print(f"{verb} {user.email}: {done.summary()}", highlight=False)


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
                   role: Annotated[str, typer.Option(help="admin or member.")],
                   email: UserRef = None, email_option: EmailOption = None,
                   as_json: JsonOption = False) -> None:
    """Make a user an admin or a member."""
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


# --- tokens -----------------------------------------------------------------------------


def parse_expiry(value: str) -> datetime | date:
    try:
        return date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
    except ValueError:
        fail(f"--expires {value!r} is not an ISO 8601 date or time.",
             "Write e.g. 2027-03-31 or 2027-03-31T18:00:00+01:00.")


@tokens_app.command("create")
def tokens_create(
    account: AccountOption,
    user: Annotated[str, typer.Option(help="E-mail of the user creating the token.")],
    name: Annotated[str, typer.Option(help="A descriptive name.")],
    days: Annotated[int | None, typer.Option(help="Valid for D days (7, 30, 60, 90, 365).")]
    = None,
    expires: Annotated[str | None, typer.Option(help="Expiry date (ISO 8601).")] = None,
    kind: Annotated[str, typer.Option(help="personal or application.")] = "personal",
    scope: Annotated[list[str] | None, typer.Option(help="A scope; repeat for more.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Allowed CIDR; repeat for more.")]
    = None,
    workspace: Annotated[str | None, typer.Option(help="Workspace slug or id.")] = None,
    description: Annotated[str, typer.Option(help="What the token is for.")] = "",
    target: Annotated[str | None, typer.Option(help="Target software.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="", help="Print only the token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Create a token. The secret is printed once and never again."""
    if days is None and expires is None:
        fail("an expiry is required: pass --days D or --expires DATE.")
    draft = TokenDraft(name=name, expires_in_days=days,
                       expires_at=parse_expiry(expires) if expires else None, kind=kind,
                       description=description, workspace=workspace, scopes=scope or [],
                       ip_allowlist=ip or [], target=target)
    with runtime() as rt:
        issued = rt.tokens.issue(user_actor(rt, account, user), draft)
        view = IssuedTokenView.of_issued(issued, rt.clock.now())
    if quiet:
        sys.stdout.write(view.token + "\n")
    elif as_json:
        emit_json(view)
    else:
        print_issued(view, "created")


def print_issued(view: IssuedTokenView, verb: str) -> None:
    out.print(f"{verb} token [bold]{view.name}[/] ({view.id}), expires {view.expires_at:%Y-%m-%d}")
    for warning in view.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    out.print("Copy it now; it will not be shown again:")
    out.print(view.token, highlight=False, soft_wrap=True)
    if view.username:
        out.print(f"username: {view.username}\npassword: {view.password}", highlight=False)


@tokens_app.command("list")
def tokens_list(
    account: AccountOption,
    status: Annotated[str | None, typer.Option(help="active, expired or revoked.")] = None,
    search: Annotated[str | None, typer.Option(help="Name, description or prefix.")] = None,
    kind: Annotated[str | None, typer.Option(help="personal or application.")] = None,
    target: Annotated[str | None, typer.Option(help="Target software.")] = None,
    limit: Annotated[int, typer.Option(help="Page size.")] = 50,
    after: Annotated[str | None, typer.Option(help="Cursor of the next page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List tokens (never their secrets)."""
    with runtime() as rt:
        actor = Actor.operator(rt.accounts.find_account(account).id)
        page = rt.tokens.list_tokens(actor, TokenQuery(status=status, search=search, kind=kind,
                                                       target=target, limit=limit, after=after))
        now = rt.clock.now()
    views = [TokenView.of(t, now) for t in page.items]
    if as_json:
        emit_json({"items": [v.model_dump(mode="json") for v in views],
                   "next_cursor": page.next_cursor})
        return
    print_table(["prefix", "name", "kind", "status", "created", "expires", "last used",
                 "creator", "id"],
                [[v.prefix, v.name, v.kind, v.status, f"{v.created_at:%Y-%m-%d}",
                  f"{v.expires_at:%Y-%m-%d}",
                  f"{v.last_used_at:%Y-%m-%d %H:%M} {v.last_used_ip or ''}".strip()
                  if v.last_used_at else "never", v.created_by or "", v.id] for v in views])
    if page.next_cursor:
        out.print(f"more: --after {page.next_cursor}")


TokenRef = Annotated[str, typer.Argument(help="Token id or prefix (tlk_…).")]
OptionalAccount = Annotated[str | None, typer.Option(
    "--account", "-a", help="Refuse unless the token belongs to this account (slug or id).")]


@tokens_app.command("show")
def tokens_show(ref: TokenRef, account: OptionalAccount = None,
                as_json: JsonOption = False) -> None:
    """Show one token."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        view = TokenView.of(rt.tokens.get(actor, token_id), rt.clock.now())
    if as_json:
        emit_json(view)
        return
    for key, value in view.model_dump(mode="json").items():
        out.print(f"[bold]{key}[/]: {value}", highlight=False)


@tokens_app.command("update")
def tokens_update(
    ref: TokenRef,
    account: OptionalAccount = None,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    ip: Annotated[list[str] | None, typer.Option(help="Replace the allow-list.")] = None,
    clear_ips: Annotated[bool, typer.Option("--clear-ips", metavar="",
            help="Allow every IP.")] = False,
    target: Annotated[str | None, typer.Option(help="A new target software.")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        help="Replace the scopes; repeat for more (see `tallykey scopes`).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Edit a token's name, description, allow-list, target or scopes (expiry cannot be
    extended)."""
    changes = TokenChanges(name=name, description=description,
                           ip_allowlist=[] if clear_ips else ip, target=target, scopes=scope)
    _token_action(ref, account, as_json, "updated",
                  lambda rt, actor, tid: rt.tokens.update(actor, tid, changes))


@tokens_app.command("revoke")
def tokens_revoke(ref: TokenRef, account: OptionalAccount = None,
                  reason: Annotated[str, typer.Option(
                      help="Why (shown in Expired & Revoked and the audit log).")] = "",
                  as_json: JsonOption = False) -> None:
    """Revoke a token: it stops working immediately. Irreversible. Answers once every
    running node refuses it (or says which node has not confirmed, and by when it stops)."""
    _token_action(ref, account, as_json, "revoked",
                  lambda rt, actor, tid: rt.tokens.revoke(actor, tid, reason))


@tokens_app.command("rotate")
def tokens_rotate(
    ref: TokenRef,
    account: OptionalAccount = None,
    grace: Annotated[int, typer.Option(
        help="Seconds the old secret keeps working (0-604800); the console's default too.")]
    = DEFAULT_GRACE_SECONDS,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="",
            help="Print only the new token.")]
    = False,
    as_json: JsonOption = False,
) -> None:
    """Give a token a new secret; the old one works for the grace period."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        issued = rt.tokens.rotate(actor, token_id, grace)
        view = IssuedTokenView.of_issued(issued, rt.clock.now())
        done = rt.settle(token_id)
    if grace == 0 and not quiet and not as_json:
        err.print(f"the old secret {done.summary()}", highlight=False)
    if quiet:
        sys.stdout.write(view.token + "\n")
    elif as_json:
        emit_json(view)
    else:
        print_issued(view, "rotated")


def _token_action(ref: str, account: str | None, as_json: bool, verb: str,
                  action: Callable[[Runtime, Actor, str], Any]) -> None:
    """Change a token, wait until every node applied it, and say so."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        view = TokenView.of(action(rt, actor, token_id), rt.clock.now())
        done = rt.settle(token_id)
    if as_json:
        emit_json({**view.model_dump(mode="json"),
                   "propagation": PropagationView.of(done).model_dump(mode="json")})
    else:
        out.print(f"{verb} {view.prefix} ({view.name}): {done.summary()}", highlight=False)


@tokens_app.command("secret")
def tokens_secret(ref: TokenRef, account: OptionalAccount = None,
                  as_json: JsonOption = False) -> None:
    """Retrieve a retrievable application token's username and password (audited)."""
    with runtime() as rt:
        actor, token_id = operator_for_token(rt, ref, account)
        issued = rt.tokens.retrieve_secret(actor, token_id)
    result = {"id": issued.token.id, "username": issued.secret.prefix,
              "password": issued.secret.password, "token": issued.value}
    if as_json:
        emit_json(result)
    else:
        out.print(f"username: {result['username']}\npassword: {result['password']}",
                  highlight=False)


@app.command("scopes")
def scopes_list(as_json: JsonOption = False) -> None:
    """The scope catalog (TALLYKEY_SCOPES_FILE, or the demo's): what each scope allows."""
    with runtime() as rt:
        catalog = rt.catalog
    if as_json:
        emit_json([{"name": s.name, "description": s.description, "admin_only": s.admin_only}
                   for s in catalog.scopes()])
        return
    table = Table("scope", "description", "who", title=f"Scopes ({catalog.source})")
    for scope in catalog.scopes():
        table.add_row(scope.name, scope.description,
                      "admins only" if scope.admin_only else "grantable per workspace")
    out.print(table)


@keys_app.command("check")
def keys_check() -> None:
    """Open every stored data key with the configured key-encryption keys."""
    with runtime() as rt:
        rt.check_keys()
        count = rt.vault.check() if rt.vault else 0
        current = rt.vault.keyring.current_id if rt.vault else None
    out.print(f"ok: {count} data key(s) open; current key-encryption key: {current or 'none'}")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every data key under the current (first) key of TALLYKEY_KEK. Keep the old
    key listed after it until this finishes; an interrupted run resumes where it stopped."""
    with runtime() as rt:
        if rt.vault is None:
            fail("no key-encryption key is configured.",
                 "Set TALLYKEY_KEK=\"new-id:<base64>,old-id:<base64>\" and run again.")
        rewrapped = rt.vault.rotate(lambda done, total: err.print(
            f"re-wrapped {done}/{total}", highlight=False))
        current = rt.vault.keyring.current_id
    out.print(f"done: {rewrapped} data key(s) re-wrapped under {current!r}; "
              "the old key can now be removed from TALLYKEY_KEK.")


def main() -> None:  # pragma: no cover - console entry point
    app()
