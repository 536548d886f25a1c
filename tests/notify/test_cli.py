"""`tallykey outbox`, `tallykey webhooks` and `tallykey worker --once` end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallykey.cli import app

from .conftest import HttpReceiver, SmtpServer


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("TALLYKEY_DATABASE_URL", database_url)
    monkeypatch.setenv("TALLYKEY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TALLYKEY_PUBLIC_URL", "https://keys.acme.test")
    monkeypatch.delenv("TALLYKEY_SMTP_URL", raising=False)
    monkeypatch.setenv("TALLYKEY_WEBHOOK_PRIVATE_TARGETS", "true")  # the receiver is local
    runner = CliRunner()
    for args in (["accounts", "create", "acme", "--name", "Acme"],
                 ["users", "create", "-a", "acme", "--email", "admin@acme.test",
                  "--role", "admin"],
                 ["tokens", "create", "-a", "acme", "--user", "admin@acme.test",
                  "--name", "CRM", "--days", "30", "-q"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return runner


def test_outbox_list_show_retry_and_worker(cli: CliRunner, smtp_server: SmtpServer,
                                           http_receiver: HttpReceiver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    listed = cli.invoke(app, ["outbox", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["channel"], row["event"], row["recipient"], row["status"]) == (
        "email", "token.created", "admin@acme.test", "pending")
    assert row["subject"] == 'New API token "CRM" created in Acme'

    human = cli.invoke(app, ["outbox", "list"])
    assert "TALLYKEY_SMTP_URL is not set" in human.stderr

    shown = cli.invoke(app, ["outbox", "show", row["id"]])
    assert shown.exit_code == 0
    assert "If you do not recognise this, revoke it immediately" in shown.stdout
    assert "https://keys.acme.test/console/tokens/" in shown.stdout

    added = cli.invoke(app, ["webhooks", "add", "-a", "acme", "--url", http_receiver.url,
                             "--json"])
    assert added.exit_code == 0, added.output
    assert json.loads(added.stdout)["secret"].startswith("whsec_")
    endpoints = cli.invoke(app, ["webhooks", "list", "-a", "acme", "--json"])
    assert "secret" not in endpoints.stdout and http_receiver.url in endpoints.stdout

    assert cli.invoke(app, ["outbox", "retry", row["id"]]).exit_code == 0
    both = cli.invoke(app, ["outbox", "retry", row["id"], "--dead"])
    assert both.exit_code == 1 and "pass --dead" in both.stderr
    missing = cli.invoke(app, ["outbox", "retry", "no-such-id"])
    assert missing.exit_code == 3 and "No outbox message" in missing.stderr

    monkeypatch.setenv("TALLYKEY_SMTP_URL", smtp_server.url)
    ran = cli.invoke(app, ["worker", "--once"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["sent"] == 1
    assert [m.rcpt_tos for m in smtp_server.received] == [["admin@acme.test"]]
    sent = json.loads(cli.invoke(app, ["outbox", "list", "--json", "--status", "sent"]).stdout)
    assert [r["id"] for r in sent] == [row["id"]]


def test_worker_refuses_a_malformed_smtp_url(cli: CliRunner,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TALLYKEY_SMTP_URL", "smtp://user:hunter2@mail.acme.test:x")
    result = cli.invoke(app, ["worker", "--once"])
    assert result.exit_code == 78  # EX_CONFIG: a bad setting stops every command
    assert "invalid setting TALLYKEY_SMTP_URL" in result.stderr
    assert "hunter2" not in result.output


def test_outbox_list_checks_the_status(cli: CliRunner) -> None:
    result = cli.invoke(app, ["outbox", "list", "--status", "lost"])
    assert result.exit_code == 1 and "Unknown outbox status" in result.stderr


def test_outbox_show_takes_the_id_as_listed_even_shortened(cli: CliRunner) -> None:
    listed = cli.invoke(app, ["outbox", "list"])  # a pipe: full values, tab-separated
    header, row = listed.stdout.splitlines()[:2]
    assert header.split("\t")[-1] == "id"
    message_id = row.split("\t")[-1]
    assert len(message_id) == 36
    for ref in (message_id, message_id[:8], message_id[:8] + "…"):
        shown = cli.invoke(app, ["outbox", "show", ref])
        assert shown.exit_code == 0, shown.output
        assert "token.created" in shown.stdout
    too_short = cli.invoke(app, ["outbox", "show", message_id[:3]])
    assert too_short.exit_code == 3 and "No outbox message" in too_short.stderr


def test_webhooks_commands_manage_filter_rotate_and_retry(
        cli: CliRunner, http_receiver: HttpReceiver) -> None:
    def run(*args: str, code: int = 0) -> str:
        result = cli.invoke(app, list(args))
        assert result.exit_code == code, (args, result.output)
        return result.stdout if code == 0 else result.stderr

    added = json.loads(run("webhooks", "add", "-a", "acme", "--url", http_receiver.url,
                           "--event", "token.revoked", "--description", "SIEM", "--json"))
    hook, old = added["id"], added["secret"]
    assert (added["events"], added["description"], added["enabled"]) == (
        ["token.revoked"], "SIEM", True)
    assert "token.nope" in run("webhooks", "add", "-a", "acme", "--url", http_receiver.url,
                               "--event", "token.nope", code=1)
    [line] = [x for x in run("webhooks", "list", "-a", "acme").splitlines() if hook in x]
    assert "token.revoked" in line and "\tall\t" not in line
    shown = json.loads(run("webhooks", "show", "-a", "acme", hook, "--json"))
    assert "secret" not in shown and shown["events"] == ["token.revoked"]

    rotated = json.loads(run("webhooks", "rotate-secret", "-a", "acme", hook, "--json"))
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old and rotated["rotated_at"]
    human = cli.invoke(app, ["webhooks", "rotate-secret", "-a", "acme", hook])
    assert "two v1= signatures" in human.stderr and "whsec_" in human.stdout

    updated = json.loads(run("webhooks", "update", "-a", "acme", hook, "--all-events",
                             "--json"))
    assert updated["events"] == []
    run("webhooks", "disable", "-a", "acme", hook)
    assert json.loads(run("webhooks", "list", "-a", "acme", "--json"))[0]["enabled"] is False
    run("webhooks", "enable", "-a", "acme", hook)

    run("tokens", "create", "-a", "acme", "--user", "admin@acme.test", "--name", "Two",
        "--days", "30", "-q")
    http_receiver.status = 500
    run("worker", "--once")
    [delivery] = json.loads(run("webhooks", "deliveries", "-a", "acme", hook, "--json"))
    assert (delivery["event"], delivery["status"], delivery["last_error"]) == (
        "token.created", "pending", "HTTP 500")
    http_receiver.status = 200
    assert "queued again" in run("webhooks", "retry", "-a", "acme", hook, delivery["id"])
    run("worker", "--once")
    [delivery] = json.loads(run("webhooks", "deliveries", "-a", "acme", hook, "--json"))
    assert delivery["status"] == "sent" and len(http_receiver.requests) == 2
    assert "No such delivery" in run("webhooks", "retry", "-a", "acme", hook, "nope", code=3)

    run("webhooks", "delete", "-a", "acme", hook)
    assert json.loads(run("webhooks", "list", "-a", "acme", "--json")) == []
    assert "No such webhook" in run("webhooks", "show", "-a", "acme", hook, code=3)
