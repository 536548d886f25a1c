"""The `tallykey` command: the server commands (migrate, serve, demo), `connect`, `scopes`,
and every command group of this package. A thin adapter over the services the API uses."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import OperationalError

from tallykey.cli import (
    accounts,
    analytics,
    audit,
    doctor,
    identities,
    keys,
    notify,
    operators,
    plans,
    settings_help,
    tokens,
    workspaces,
)
from tallykey.cli.context import build_runtime, check_settings, runtime
from tallykey.cli.output import EXIT_UNAVAILABLE, JsonOption, emit_json, err, fail, out, print_table
from tallykey.db import migrate as migrations
from tallykey.db.engine import store_outage
from tallykey.errors import StoreUnavailable, UnknownRevision
from tallykey.logs import uvicorn_log_config
from tallykey.runtime import Runtime

app = typer.Typer(help="tallykey: named, expiring API tokens.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
accounts.register(app)  # accounts, users
tokens.register(app)  # tokens …
keys.register(app)  # keys check|rotate
notify.register(app)  # outbox, webhooks, worker
audit.register(app)  # audit export, audit verify
workspaces.register(app)  # workspaces list|create|rename|archive
identities.register(app)  # identities list|create|show|update|delete
plans.register(app)  # plans list|create|show|update|delete
analytics.register(app)  # analytics verifications
operators.register(app)  # operator-tokens create|list|revoke
doctor.register(app)  # doctor


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"tallykey {version('tallykey')}\n")
        raise typer.Exit()


@app.callback()
def _main(ctx: typer.Context, version: Annotated[bool, typer.Option(
        "--version", metavar="", help="Print the version and exit.", is_eager=True,
        callback=_show_version)] = False) -> None:
    """tallykey: named, expiring API tokens."""
    if ctx.resilient_parsing or any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        return
    if ctx.invoked_subcommand == "doctor":
        return  # doctor reports bad settings as its first check (exit 78 too)
    check_settings()  # every command: an unknown or bad TALLYKEY_* stops here, exit 78


@app.command()
def migrate(check: Annotated[bool, typer.Option(
        "--check", metavar="", help="Change nothing: exit 0 when the schema is at head, "
        "1 with the pending revisions listed.")] = False) -> None:
    """Create or upgrade the database schema (idempotent)."""
    rt = build_runtime()
    try:
        head = migrations.head_revision(rt.database.url)
        try:
            pending = migrations.pending_revisions(rt.database)
        except UnknownRevision as unknown:
            fail(f"the database schema is at revision {unknown.revision}, which this "
                 f"tallykey (schema {unknown.head}) does not know: a newer release migrated "
                 "it.", "Run that release's tallykey (or newer); never migrate backwards.")
        if check:
            if not pending:
                out.print(f"schema at head (revision {head})", highlight=False)
                return
            out.print(f"{len(pending)} pending revision(s); run 'tallykey migrate':",
                      highlight=False)
            for step in pending:
                out.print(f"  {step}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)
        before, after = migrations.upgrade(rt.database)
    except OperationalError as error:
        outage = store_outage(error)
        fail("cannot reach the database: " + (outage.message if outage else
             str(error.orig).strip().splitlines()[0]), code=EXIT_UNAVAILABLE)
    except StoreUnavailable as error:
        fail(error.message, error.hint, EXIT_UNAVAILABLE)
    finally:
        rt.close()
    if before == after:
        out.print(f"schema already up to date (revision {after})")
    else:
        out.print(f"schema upgraded from {before or 'empty'} to {after}")


@app.command()
def backup(path: Annotated[Path, typer.Argument(
        help="The new file to write (never overwritten).")]) -> None:
    """An online, consistent copy of the embedded SQLite store (writes go on meanwhile).
    PostgreSQL: use pg_dump (docs/operations.md). Back up the key-encryption key and the
    signed audit heads separately."""
    from tallykey.db.backup import backup_sqlite

    with runtime() as rt:
        done = backup_sqlite(rt.database, path.expanduser().absolute())
    out.print(f"backed up the store to {done.path} ({done.size} bytes, schema "
              f"{done.revision})", highlight=False, soft_wrap=True)


def _uvicorn_config(host: str, port: int, workers: int, access_log: bool,
                    log_format: str = "text") -> dict[str, Any]:
    """uvicorn's settings; every log record passes the secret-redacting filter. The HTTP
    protocol is uvicorn's httptools one with a bound on a request's header section
    (`BoundedHttpToolsProtocol`), so a node exposed directly cannot be made to buffer
    megabytes of headers; `RequestBounds` also refuses more than 100 header lines."""
    from tallykey.server.uvicorn_protocol import BoundedHttpToolsProtocol

    json_logs = log_format == "json"
    return {"host": host, "port": port, "workers": workers,
            "access_log": access_log and not json_logs,  # JSON mode logs requests itself
            "log_level": "info", "proxy_headers": False, "server_header": False,
            # SIGTERM: in-flight requests get 5 s (each is bounded by the store timeouts)
            "timeout_graceful_shutdown": 5,
            "http": BoundedHttpToolsProtocol,
            "log_config": uvicorn_log_config(log_format)}


ServeHost = Annotated[str, typer.Option(help="Address to listen on.")]
ServePort = Annotated[int, typer.Option(help="Port to listen on.")]
ServeWorkers = Annotated[int, typer.Option(help="Worker processes.")]
ServeAccessLog = Annotated[bool, typer.Option(metavar="", help="Log every request line.")]
ServeLogFormat = Annotated[str | None, typer.Option(
    "--log-format", help="text (default) or json: one JSON line per request and per "
    "log record (also TALLYKEY_LOG_FORMAT).")]
ServeServer = Annotated[str, typer.Option(
    "--server", help="uvicorn (default) or granian: the Rust HTTP server, from the "
    "optional extra tallykey\\[granian].")]
APP_FACTORY = "tallykey.server.app:create_app"
DEMO_APP_FACTORY = "tallykey.server.app:create_demo_app"


def _check_server_options(server: str, log_format: str | None) -> None:
    from tallykey.server import granian as granian_server

    if server not in ("uvicorn", "granian"):
        fail(f"--server {server!r} is not supported.", "Use uvicorn or granian.")
    if server == "granian" and not granian_server.available():
        fail("granian is not installed.", "pip install 'tallykey[server,granian]', or "
             "serve with uvicorn (the default).")
    if log_format is not None:
        if log_format not in ("text", "json"):
            fail(f"--log-format {log_format!r} is not supported.", "Use text or json.")
        os.environ["TALLYKEY_LOG_FORMAT"] = log_format  # read by every worker's settings


def _run_server(factory: str, host: str, port: int, workers: int, access_log: bool,
                log_format: str, server: str) -> None:
    """Serve the app `factory` names under uvicorn or granian until SIGTERM/SIGINT."""
    import uvicorn

    from tallykey.monitor.metrics import prepare_multiprocess, remove_multiprocess_dir
    from tallykey.server import granian as granian_server

    metrics_dir = prepare_multiprocess(workers)
    try:
        if server == "granian":
            granian_server.serve(host, port, workers, access_log, log_format, factory)
        else:
            uvicorn.run(factory, factory=True,
                        **_uvicorn_config(host, port, workers, access_log, log_format))
    finally:
        remove_multiprocess_dir(metrics_dir)


@app.command()
def serve(host: ServeHost = "127.0.0.1", port: ServePort = 8000, workers: ServeWorkers = 1,
          access_log: ServeAccessLog = False, log_format: ServeLogFormat = None,
          server: ServeServer = "uvicorn",
          new_setup_link: Annotated[bool, typer.Option(
              "--new-setup-link", metavar="", help="While no administrator exists: print a "
              "new one-time set-up link even if another node printed one (that one stops "
              "working).")] = False) -> None:
    """Serve the console, the management API and the verification endpoints (the demo
    platform API only under `tallykey demo`)."""
    _check_server_options(server, log_format)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    with runtime() as rt:  # settings, schema and keys are checked before any worker starts
        rt.check_keys()
        rt.check_writable()
        region = rt.settings.region
        chosen_format = rt.settings.log_format
        print_setup_link(rt, rt.settings.public_url or f"http://{shown_host}:{port}",
                         new_setup_link)
        for warning in doctor.startup_warnings(rt.settings):
            err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    out.print(f"tallykey ({region}) listening on http://{host}:{port}", highlight=False)
    _run_server(APP_FACTORY, host, port, workers, access_log, chosen_format, server)


@app.command()
def demo(
    host: ServeHost = "127.0.0.1",
    port: ServePort = 8000,
    seed_only: Annotated[bool, typer.Option("--seed-only", metavar="", help="Seed, print, exit.")]
    = False,
    serve_only: Annotated[bool, typer.Option(
        "--serve-only", metavar="", help="Serve a demo seeded before (--seed-only) without "
        "seeding or printing again.")] = False,
    workers: ServeWorkers = 1,
    access_log: ServeAccessLog = False,
    log_format: ServeLogFormat = None,
    server: ServeServer = "uvicorn",
    as_json: JsonOption = False,
) -> None:
    """Seed the demo account (idempotent) and serve it, with the demo platform API
    (`/core/v3`) that only the demo has.

    The demo keeps demo-only files in the data dir: the tokens it printed (a second run
    prints the same ones, never rotating them), its URL (for `tallykey connect`) and a
    key-encryption key of its own, so retrievable application tokens can be shown."""
    from tallykey import demo_files as local
    from tallykey.demo.seed import seed

    if seed_only and serve_only:
        fail("--seed-only and --serve-only exclude each other.", code=2)
    _check_server_options(server, log_format)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    base_url = f"http://{shown_host}:{port}"
    if not seed_only and _port_in_use(host, port):  # before seeding touches anything
        fail(f"port {port} on {host} is already in use (is a demo already running?).",
             "Stop the other process, or pass --port with a free port.")
    settings = check_settings()
    demo_kek = None
    if not settings.kek and not settings.kek_file:
        existing = local.kek_path(settings.data_dir)
        if (not seed_only and not serve_only) or existing.exists():
            demo_kek = local.ensure_kek(settings.data_dir).resolve()
            os.environ["TALLYKEY_KEK_FILE"] = str(demo_kek)  # this process and its server
    with runtime() as rt:
        rt.check_keys()
        if not seed_only:
            rt.check_writable()
        chosen_format = rt.settings.log_format
        if not serve_only:
            seeded = seed(rt, base_url, data_dir=rt.settings.data_dir,
                          retrievable=demo_kek is not None and not seed_only,
                          register=not seed_only)
            env_prefix = ("" if rt.settings.database_url else
                          f"TALLYKEY_DATA_DIR={rt.settings.data_dir.resolve()} ")
    if not serve_only:
        if as_json:
            emit_json(seeded)
        else:
            print_demo_welcome(seeded, env_prefix + _command_name(), demo_kek)
    if seed_only:
        return
    _run_server(DEMO_APP_FACTORY, host, port, workers, access_log, chosen_format, server)


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

    me = Path(sys.argv[0]).resolve()
    on_path = shutil.which("tallykey")
    if (on_path and Path(on_path).resolve() == me) or me.name != "tallykey":
        return "tallykey"
    return str(me)


def print_setup_link(rt: Runtime, base_url: str, replace: bool = False) -> None:
    """No administrator yet: print the one-time link that creates the first one. Only
    the node that issued it prints it; another node starting meanwhile says where it is."""
    from tallykey.accounts.bootstrap import FirstRun, claim_link, issue_link

    if replace:
        link = issue_link(rt.accounts, base_url)
        now = rt.clock.now()
        first = FirstRun(link, now, now) if link else None
    else:
        first = claim_link(rt.accounts, base_url)
    if first is None:
        return
    if first.link:
        out.print(f"No administrator exists yet. Create the first one (this link works once):"
                  f"\n  {first.link}", highlight=False, soft_wrap=True)
    else:
        out.print(f"No administrator exists yet; set-up is pending. Another node printed "
                  f"the one-time set-up link at {first.issued_at:%Y-%m-%d %H:%M} UTC (see "
                  f"its output; it works until {first.expires_at:%Y-%m-%d %H:%M} UTC). "
                  "Lost it? Start a node with 'tallykey serve --new-setup-link'.",
                  highlight=False, soft_wrap=True)
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
    27 account suspended or workspace archived, 28 token suspended, 31 IP not allowed,
    32 scope missing, 33 token awaiting approval, 40 rate limited, 41 usage credits
    spent, 50 unreachable, 51 not tallykey, 52 temporarily unavailable.
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


@app.command("scopes")
def scopes_list(as_json: JsonOption = False) -> None:
    """The scope catalog (TALLYKEY_SCOPES_FILE, or the demo's): what each scope allows."""
    with runtime() as rt:
        catalog = rt.catalog
    if as_json:
        emit_json([{"name": s.name, "description": s.description, "admin_only": s.admin_only}
                   for s in catalog.scopes()])
        return
    if out.is_terminal:
        out.print(f"Scopes ({catalog.source})", highlight=False)
    print_table(["scope", "description", "who"],
                [[scope.name, scope.description,
                  "admins only" if scope.admin_only else "grantable per workspace"]
                 for scope in catalog.scopes()], keep=("scope",))


# Keep last: every command above (and those the register() calls added) names the
# settings it reads at the end of its --help.
settings_help.name_settings(app)
