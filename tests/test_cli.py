"""The `tallykey` command line, run in-process against a real store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import pytest
from typer.testing import CliRunner, Result

from tallykey.auth.verifier import Verifier
from tallykey.cli import app

runner = CliRunner()


class Cli(Protocol):
    """The `cli` fixture: runs `tallykey ARGS...` in-process, `stdin` as its input."""

    def __call__(self, *args: str, stdin: str | None = None) -> Result: ...


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=stdin)

    assert run("accounts", "create", "acme").exit_code == 0
    assert run("users", "create", "-a", "acme", "--email", "boss@acme.test", "--role",
               "admin", "--password-stdin", stdin="a long enough password\n").exit_code == 0
    return run


def test_create_prints_the_secret_once_and_list_show_never(cli: Cli) -> None:
    created = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name",
                  "CRM", "--days", "30", "--scope", "employees:read", "--json")
    assert created.exit_code == 0, created.output
    token = json.loads(created.stdout)
    secret = token["token"]
    listed = cli("tokens", "list", "-a", "acme", "--json")
    shown = cli("tokens", "show", token["prefix"], "--json")
    human = cli("tokens", "list", "-a", "acme")
    for result in (listed, shown, human):
        assert result.exit_code == 0 and secret not in result.output
    assert json.loads(shown.stdout)["id"] == token["id"]
    assert [t["id"] for t in json.loads(listed.stdout)["items"]] == [token["id"]]


def test_quiet_prints_only_the_token(cli: Cli) -> None:
    result = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "q",
                 "--expires", "2099-01-01", "--quiet")
    assert result.exit_code != 0  # beyond one year
    result = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "q",
                 "--days", "7", "--quiet")
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("tlk_eu1_")


def test_errors_are_one_line_on_stderr_without_traceback(cli: Cli) -> None:
    cases = [
        ("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "x"),
        ("tokens", "create", "-a", "acme", "--user", "nobody@acme.test", "--name", "x",
         "--days", "7"),
        ("tokens", "create", "-a", "nope", "--user", "boss@acme.test", "--name", "x",
         "--days", "7"),
        ("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "x",
         "--days", "7", "--ip", "10.0.0.1/40"),
        ("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "x",
         "--expires", "next tuesday"),
        ("tokens", "revoke", "tlk_eu1_doesnotexist"),
        ("users", "set-role", "-a", "acme", "--email", "boss@acme.test", "--role", "king"),
    ]
    for args in cases:
        result = cli(*args)
        assert result.exit_code != 0, args
        assert "Traceback" not in result.output
        assert result.stderr.strip().startswith("error:"), result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2, result.stderr


def test_rotate_update_revoke_round_trip(cli: Cli) -> None:
    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--name", "r", "--days", "30", "--json").stdout)
    rotated = cli("tokens", "rotate", made["id"], "--grace", "3600", "--json")
    assert rotated.exit_code == 0 and json.loads(rotated.stdout)["token"] != made["token"]
    updated = cli("tokens", "update", made["id"], "--name", "renamed", "--ip", "10.0.0.0/8",
                  "--json")
    assert json.loads(updated.stdout)["ip_allowlist"] == ["10.0.0.0/8"]
    revoked = cli("tokens", "revoke", made["prefix"], "--reason", "done", "--json")
    assert json.loads(revoked.stdout)["status"] == "revoked"
    again = cli("tokens", "revoke", made["id"])
    assert again.exit_code != 0 and "already revoked" in again.stderr
    assert json.loads(cli("tokens", "list", "-a", "acme", "--status", "revoked", "--json"
                          ).stdout)["items"][0]["revoke_reason"] == "done"


def test_users_commands(cli: Cli) -> None:
    assert cli("users", "create", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    assert cli("users", "set-role", "-a", "acme", "--email", "m@acme.test", "--role",
               "admin").exit_code == 0
    assert cli("users", "deactivate", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    users = json.loads(cli("users", "list", "-a", "acme", "--json").stdout)
    assert {(u["email"], u["role"], u["active"]) for u in users} == {
        ("boss@acme.test", "admin", True), ("m@acme.test", "admin", False)}
    last = cli("users", "deactivate", "-a", "acme", "--email", "boss@acme.test")
    assert last.exit_code != 0 and "last active administrator" in last.stderr


def test_migrate_is_idempotent(cli: Cli) -> None:
    result = cli("migrate")
    assert result.exit_code == 0 and "already up to date" in result.stdout


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found: list[tuple[tuple[str, ...], Any]] = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, (*path, name))
    return found


def test_every_option_has_help_and_no_flag_shows_a_type() -> None:
    import typer
    from typer.core import TyperOption

    root = typer.main.get_command(app)
    missing = []
    for path, command in _commands(root):
        for param in command.params:
            if isinstance(param, TyperOption) and not (param.help or "").strip():
                missing.append(f"tallykey {' '.join(path)} {param.opts[0]}")
        if path:
            shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}).output
            flag_lines = [line for line in shown.splitlines()
                          if "<bool>" in line and "--help" not in line]
            assert not flag_lines, (path, flag_lines)
    assert not missing, f"options without help text: {missing}"


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"tallykey {version('tallykey')}"


def test_tables_in_a_pipe_print_full_values(cli: Cli) -> None:
    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--name", "A rather long token name for a narrow table", "--days",
                          "30", "--json").stdout)
    listed = cli("tokens", "list", "-a", "acme")
    header, row = listed.stdout.splitlines()[:2]
    assert header.split("\t")[0] == "prefix"
    cells = row.split("\t")
    assert cells[0] == made["prefix"] and cells[-1] == made["id"]
    assert "…" not in listed.stdout
    users = cli("users", "list", "-a", "acme").stdout.splitlines()
    assert users[1].split("\t")[0] == "boss@acme.test" and len(users[1].split("\t")[-1]) == 36


def test_users_are_named_like_tokens_by_argument(cli: Cli) -> None:
    assert cli("users", "create", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    off = cli("users", "deactivate", "m@acme.test", "-a", "acme", "--json")
    assert off.exit_code == 0 and json.loads(off.stdout)["active"] is False
    on = cli("users", "activate", "-a", "acme", "--email", "m@acme.test", "--json")
    assert json.loads(on.stdout)["active"] is True  # --email still works for scripts
    role = cli("users", "set-role", "m@acme.test", "-a", "acme", "--role", "admin", "--json")
    assert json.loads(role.stdout)["role"] == "admin"
    both = cli("users", "deactivate", "m@acme.test", "-a", "acme", "--email", "m@acme.test")
    assert both.exit_code == 2 and "name the user once" in both.stderr


def test_rotate_keeps_the_old_secret_for_a_day_by_default_as_the_console_does(
        cli: Cli) -> None:
    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--name", "g", "--days", "30", "--json").stdout)
    rotated = json.loads(cli("tokens", "rotate", made["id"], "--json").stdout)
    created = made["created_at"]
    from datetime import datetime, timedelta

    ends = datetime.fromisoformat(rotated["previous_secret_expires_at"])
    assert timedelta(hours=23) < ends - datetime.fromisoformat(created) < timedelta(hours=25)
    help_text = cli("tokens", "rotate", "--help").output
    assert "86400" in help_text


def test_a_terminal_table_never_cuts_the_prefix_at_80_columns(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    import tallykey.cli.output as cli_module

    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--name", "A name long enough to squeeze an eighty column table",
                          "--days", "30", "--json").stdout)
    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "out", Console(file=screen, force_terminal=True,
                                                   width=80, color_system=None))
    assert cli("tokens", "list", "-a", "acme").exit_code == 0
    assert made["prefix"] in screen.getvalue()


def test_suspend_resume_and_renew(cli, database_url: str) -> None:  # type: ignore[no-untyped-def]
    made = json.loads(cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test",
                          "--name", "lifecycle", "--days", "7", "--json").stdout)
    verifier = Verifier(database_url, background=False)  # a node that reads the feed
    # when told to (`sync`), as a running node does within its lease
    try:
        suspended = cli("tokens", "suspend", made["prefix"], "-a", "acme", "--json")
        assert suspended.exit_code == 0, suspended.output
        answer = json.loads(suspended.stdout)
        assert answer["status"] == "suspended" and answer["suspended_by"] == "operator"
        assert "propagation" in answer
        verifier.sync()
        refused = verifier.verify(f"Bearer {made['token']}", "127.0.0.1")
        assert refused.status == 401 and refused.body()["error"] == "token_suspended"
        again = cli("tokens", "suspend", made["id"])
        assert again.exit_code != 0 and "already suspended" in again.stderr
        resumed = cli("tokens", "resume", made["id"])
        assert resumed.exit_code == 0 and resumed.stdout.startswith(
            f"resumed {made['prefix']} (lifecycle): ")
        verifier.sync()
        assert verifier.verify(f"Bearer {made['token']}", "127.0.0.1").allowed
        assert cli("tokens", "resume", made["id"]).exit_code != 0

        assert cli("tokens", "renew", made["id"]).exit_code != 0  # no expiry given
        too_long = cli("tokens", "renew", made["id"], "--days", "400")
        assert too_long.exit_code != 0 and "maximum validity" in too_long.stderr
        renewed = cli("tokens", "renew", made["id"], "--days", "60", "--grace", "0",
                      "--json")
        assert renewed.exit_code == 0, renewed.output
        successor = json.loads(renewed.stdout)
        assert successor["renewed_from_id"] == made["id"] and successor["name"] == "lifecycle"
        verifier.sync()
        assert verifier.verify(f"Bearer {successor['token']}", "127.0.0.1").allowed
        assert verifier.verify(f"Bearer {made['token']}", "127.0.0.1").status == 401
        shown = json.loads(cli("tokens", "show", made["id"], "--json").stdout)
        assert shown["successor_id"] == successor["id"]
        assert shown["expires_at"] == made["expires_at"]
        human = cli("tokens", "renew", successor["id"], "--days", "30")
        assert human.exit_code == 0 and "renewed: successor token" in human.stdout
        assert "the renewed token's secret stops at" in human.stderr
    finally:
        verifier.close()


def test_users_get_the_auditor_role_and_an_auditor_gets_no_token(cli: Cli) -> None:
    """`--role auditor` on create and set-role (SPEC §17); a token for an auditor is
    refused (exit 4, naming the role) and nothing is stored."""
    made = cli("users", "create", "-a", "acme", "--email", "audit@acme.test", "--role",
               "auditor", "--json")
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["role"] == "auditor"
    assert cli("users", "create", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    changed = cli("users", "set-role", "-a", "acme", "--email", "m@acme.test", "--role",
                  "auditor", "--json")
    assert changed.exit_code == 0 and json.loads(changed.stdout)["role"] == "auditor"
    help_text = cli("users", "set-role", "--help").output
    assert "auditor" in help_text
    refused = cli("tokens", "create", "-a", "acme", "--user", "audit@acme.test", "--name",
                  "auditor's token", "--days", "7")
    assert refused.exit_code == 4, refused.output
    assert "Auditors can read but not change anything." in refused.stderr
    assert json.loads(cli("tokens", "list", "-a", "acme", "--json").stdout)["items"] == []
    unknown = cli("users", "set-role", "-a", "acme", "--email", "m@acme.test", "--role",
                  "viewer")
    assert unknown.exit_code != 0 and "'admin', 'member' or 'auditor'" in unknown.stderr
