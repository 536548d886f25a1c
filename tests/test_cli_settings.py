"""Settings that cannot be silently wrong (SPEC §14): an unknown `TALLYKEY_*` variable or a
bad value stops every command with one line and exit 78, never a traceback, before anything
listens.

Every command once through the real `tallykey` executable in a subprocess (the entry point,
its exit status and its streams); the many values, in-process through the same Typer app
(`CliRunner`, with the environment a subprocess would get), since starting Python and
importing the command line costs seconds a time.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tallykey.accounts import passwords
from tallykey.cli import app

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))

#: Every kind of command: the servers, the worker, migrations, management, the doctor.
COMMANDS = [
    ["serve", "--port", "{port}"], ["demo", "--port", "{port}"], ["worker", "--once"],
    ["migrate", "--check"], ["tokens", "list", "-a", "acme"], ["audit", "verify"],
    ["doctor"], ["doctor", "--json"],
]

BAD_VALUES = {
    "TALLYKEY_DATABASE_URL=mysql://tallykey@db.example/tallykey": "only PostgreSQL and SQLite",
    "TALLYKEY_DATABASE_URL=not a url": "TALLYKEY_DATABASE_URL",
    "TALLYKEY_DATABASE_URL=postgresql://u:hunter2secret@db:port/x": "port",
    "TALLYKEY_REDIS_URL=not-a-url": "redis://",
    "TALLYKEY_SMTP_URL=htp://x": "smtp://",
    "TALLYKEY_SMTP_URL=smtp://": "host",
    "TALLYKEY_PUBLIC_URL=keys.example.com": "https://",
    "TALLYKEY_OIDC_ISSUER=ftp://id.example.com": "https://",
    "TALLYKEY_CACHE_TTL=abc": "a number",
    "TALLYKEY_CACHE_TTL=600": "less than or equal to 60",
    "TALLYKEY_DB_CONNECT_TIMEOUT=1.5": "whole number",
    "TALLYKEY_REGION=EU-1": "lowercase letters or digits",
    "TALLYKEY_REGIONS=eu1": "region=url",
    "TALLYKEY_TRUSTED_PROXIES=10.0.0.0/33": "networks",
    "TALLYKEY_WEBHOOK_PRIVATE_TARGETS=maybe": "true or false",
    "TALLYKEY_LOG_FORMAT=xml": "'text' or 'json'",
    "TALLYKEY_ARGON2_PROFILE=FAST": "RFC_9106_LOW_MEMORY",
    "TALLYKEY_MAIL_FROM=nobody": "e-mail address",
    "TALLYKEY_WORKSPACE_LABEL=": "at least 1 character",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env["TALLYKEY_DATA_DIR"] = str(tmp / "data")
    return env


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def run(tmp: Path, command: list[str], **extra: str) -> tuple[Outcome, int]:
    """`tallykey COMMAND` in a subprocess, with only `extra` of the `TALLYKEY_*` variables."""
    port = free_port()
    args = [part.replace("{port}", str(port)) for part in command]
    env = {**base_env(tmp), **extra}
    result = subprocess.run([TALLYKEY, *args], env=env, capture_output=True, text=True,
                            timeout=60)
    return Outcome(result.returncode, result.stdout, result.stderr), port


def run_in_process(tmp: Path, command: list[str], **extra: str) -> tuple[Outcome, int]:
    """`run`, in this process: the same app and environment (this process's other
    `TALLYKEY_*` variables unset while it runs); an exception is a traceback. For the
    checks of many values: starting Python and importing the command costs seconds."""
    port = free_port()
    args = [part.replace("{port}", str(port)) for part in command]
    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("TALLYKEY_")}
    env.update(base_env(tmp), **extra)
    try:
        result = CliRunner().invoke(app, args, env=env, prog_name="tallykey")
    finally:  # a command that built the runtime chose the default argon2 profile
        passwords.use_profile(os.environ["TALLYKEY_ARGON2_PROFILE"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr), port


def assert_one_line_exit_78(result: Outcome, *needles: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 78, (result.returncode, output)
    assert "Traceback" not in output and "listening" not in output, output
    if result.stdout.startswith("{"):  # doctor --json: the failed check says it
        failed = [c for c in json.loads(result.stdout)["checks"] if c["status"] == "fail"]
        assert [c["name"] for c in failed] == ["settings"], output
        text = " ".join(c["detail"] for c in failed)
    else:
        text = "\n".join(line for line in output.splitlines() if line.strip())
        if result.stdout.startswith("fail settings"):  # doctor: its first line
            text = text.splitlines()[0]
        assert len(text.splitlines()) == 1, output
    for needle in needles:
        assert needle in text, (needle, output)
    return text


def test_an_unknown_variable_stops_every_command_naming_the_nearest_setting(
        tmp_path: Path) -> None:
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda command: (command, *run(
            tmp_path, command, TALLYKEY_DATABSE_URL="postgresql://db.example/tallykey")),
            COMMANDS))
    for command, result, port in results:
        text = assert_one_line_exit_78(
            result, "unknown setting TALLYKEY_DATABSE_URL — did you mean "
                    "TALLYKEY_DATABASE_URL?")
        assert text.count("TALLYKEY_DATABSE_URL") == 1, (command, text)
        with socket.socket() as probe:  # nothing listens (and nothing listened)
            assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert not (tmp_path / "data").exists(), "a command created a store before refusing"


@pytest.mark.parametrize(("assignment", "expected"), list(BAD_VALUES.items()),
                         ids=[a.split("=")[0][9:] + "=" + a.split("=", 1)[1][:12]
                              for a in BAD_VALUES])
def test_a_bad_value_stops_serve_with_one_line_naming_the_setting(
        tmp_path: Path, assignment: str, expected: str) -> None:
    name, _, value = assignment.partition("=")
    result, _ = run_in_process(tmp_path, ["serve", "--port", "{port}"], **{name: value})
    text = assert_one_line_exit_78(result, f"invalid setting {name}", expected)
    assert "hunter2secret" not in text  # a password in a URL is never repeated
    assert len(text.splitlines()) == 1


def test_a_bad_value_stops_every_command(tmp_path: Path) -> None:
    results = [run_in_process(tmp_path, command, TALLYKEY_REDIS_URL="redis//:pw@cache:6379")[0]
               for command in COMMANDS]
    for result in results:
        text = assert_one_line_exit_78(result, "invalid setting TALLYKEY_REDIS_URL")
        assert ":pw@" not in text  # a secret setting's value is never shown


def test_a_lowercase_variable_counts_too(tmp_path: Path) -> None:
    result, _ = run_in_process(tmp_path, ["migrate"], tallykey_region="EU")
    assert_one_line_exit_78(result, "TALLYKEY_REGION")


def test_variables_that_are_not_settings_are_left_alone(tmp_path: Path) -> None:
    result, _ = run_in_process(tmp_path, ["migrate"],
                               TALLYKEY_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1/postgres",
                               TALLYKEY_OUTAGE_SECONDS="5", TALLYKEY_FAULT_REVOKERS="3",
                               TALLYKEY_TOKEN="tlk_not_a_setting")
    assert result.returncode == 0, result.stderr
    assert "schema upgraded" in result.stdout


def test_a_scope_catalog_that_cannot_be_read_is_a_bad_value_too(tmp_path: Path) -> None:
    result, _ = run_in_process(tmp_path, ["serve", "--port", "{port}"],
                               TALLYKEY_SCOPES_FILE=str(tmp_path / "missing.toml"))
    assert_one_line_exit_78(result, "TALLYKEY_SCOPES_FILE")
