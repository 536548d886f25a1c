"""The `tallykey` command line, run in-process against a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallykey.cli import app

runner = CliRunner()


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))

    def run(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), input=stdin)

    assert run("accounts", "create", "acme").exit_code == 0
    assert run("users", "create", "-a", "acme", "--email", "boss@acme.test", "--role",
               "admin", "--password-stdin", stdin="a long enough password\n").exit_code == 0
    return run


def test_create_prints_the_secret_once_and_list_show_never(cli) -> None:  # type: ignore[no-untyped-def]
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


def test_quiet_prints_only_the_token(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "q",
                 "--expires", "2099-01-01", "--quiet")
    assert result.exit_code != 0  # beyond one year
    result = cli("tokens", "create", "-a", "acme", "--user", "boss@acme.test", "--name", "q",
                 "--days", "7", "--quiet")
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("tlk_eu1_")


def test_errors_are_one_line_on_stderr_without_traceback(cli) -> None:  # type: ignore[no-untyped-def]
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


def test_rotate_update_revoke_round_trip(cli) -> None:  # type: ignore[no-untyped-def]
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


def test_users_commands(cli) -> None:  # type: ignore[no-untyped-def]
    assert cli("users", "create", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    assert cli("users", "set-role", "-a", "acme", "--email", "m@acme.test", "--role",
               "admin").exit_code == 0
    assert cli("users", "deactivate", "-a", "acme", "--email", "m@acme.test").exit_code == 0
    users = json.loads(cli("users", "list", "-a", "acme", "--json").stdout)
    assert {(u["email"], u["role"], u["active"]) for u in users} == {
        ("boss@acme.test", "admin", True), ("m@acme.test", "admin", False)}
    last = cli("users", "deactivate", "-a", "acme", "--email", "boss@acme.test")
    assert last.exit_code != 0 and "last active administrator" in last.stderr


def test_migrate_is_idempotent(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("migrate")
    assert result.exit_code == 0 and "already up to date" in result.stdout
