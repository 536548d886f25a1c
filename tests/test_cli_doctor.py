"""`tallykey doctor [--json]` through the real command, against real components: the
store (SQLite and PostgreSQL), a Redis server, an SMTP server (aiosmtpd), an OpenID
provider, and ports where nothing listens. One line per check, secrets masked, each
check bounded in time, exit 0 only when no check fails. The checks of one component's
states run the same command in-process (`doctor_in_process`): starting Python and importing
the command costs seconds a time."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import text, update
from typer.testing import CliRunner

from tallykey.accounts import passwords
from tallykey.accounts.models import Account
from tallykey.cli import app
from tallykey.runtime import Runtime

from .conftest import revision_before_head
from .notify.conftest import Recorder
from .people.openid import client, new_signing_key, running_provider
from .redisserver import RedisServer

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))
KEK = "k1:" + "A" * 43 + "="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def doctor(database_url: str, tmp: Path, *args: str, **extra: str
           ) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env.update(TALLYKEY_DATABASE_URL=database_url, TALLYKEY_DATA_DIR=str(tmp / "data"),
               **extra)
    started = time.monotonic()
    result = subprocess.run([TALLYKEY, "doctor", *args], env=env, capture_output=True,
                            text=True, timeout=60)
    return result, time.monotonic() - started


def doctor_in_process(database_url: str, tmp: Path, *args: str, **extra: str
                      ) -> subprocess.CompletedProcess[str]:
    """`doctor`'s outcome, run in this process with the environment a subprocess would get
    (this process's other `TALLYKEY_*` variables unset while it runs)."""
    env: dict[str, str | None] = {k: None for k in os.environ
                                  if k.upper().startswith("TALLYKEY_")}
    env.update(TALLYKEY_DATABASE_URL=database_url, TALLYKEY_DATA_DIR=str(tmp / "data"),
               **extra)
    try:
        result = CliRunner().invoke(app, ["doctor", *args], env=env, prog_name="tallykey")
    finally:  # building the runtime chose the default argon2 profile
        passwords.use_profile(os.environ["TALLYKEY_ARGON2_PROFILE"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["tallykey", "doctor", *args], result.exit_code,
                                       result.stdout, result.stderr)


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    answer = json.loads(result.stdout)
    return {c["name"]: c for c in answer["checks"]}


@pytest.fixture
def smtp_url() -> Iterator[str]:
    port = free_port()
    controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://mailer:s3cret-smtp-pw@127.0.0.1:{port}"
    finally:
        controller.stop()


def test_every_check_passes_against_real_components(
        database_url: str, tmp_path: Path, redis_server: RedisServer, smtp_url: str) -> None:
    keys = [new_signing_key("doctor-1")]
    with running_provider([client("tallykey", "http://127.0.0.1/console/oidc/callback")],
                          {}, keys, tmp_path / "provider.log") as provider:
        result, _ = doctor(database_url, tmp_path, "--json",
                           TALLYKEY_REDIS_URL=redis_server.url, TALLYKEY_SMTP_URL=smtp_url,
                           TALLYKEY_OIDC_ISSUER=provider.issuer,
                           TALLYKEY_OIDC_CLIENT_ID="tallykey",
                           TALLYKEY_OIDC_CLIENT_SECRET="oidc-client-secret-value",
                           TALLYKEY_KEK=KEK)
    assert result.returncode == 0, result.stdout + result.stderr
    found = checks(result)
    assert list(found) == ["settings", "store", "schema", "clock", "redis", "smtp", "openid",
                           "kek", "public_url"]
    assert all(c["status"] == "ok" for name, c in found.items() if name != "public_url"), found
    assert found["public_url"]["status"] == "warn"  # unset: a warning, not a failure
    assert "EHLO" in found["smtp"]["detail"] and "PING" in found["redis"]["detail"]
    assert "at head" in found["schema"]["detail"]
    for secret in ("s3cret-smtp-pw", "oidc-client-secret-value", KEK):
        assert secret not in result.stdout


@pytest.mark.serial  # a time bound
def test_unreachable_components_fail_one_line_each_within_bounds(
        database_url: str, tmp_path: Path) -> None:
    dead = free_port()  # nothing listens here
    result, took = doctor(database_url, tmp_path,
                          TALLYKEY_REDIS_URL=f"redis://:r3dis-pw@127.0.0.1:{dead}/0",
                          TALLYKEY_SMTP_URL=f"smtp://127.0.0.1:{dead}",
                          TALLYKEY_OIDC_ISSUER=f"http://127.0.0.1:{dead}",
                          TALLYKEY_OIDC_CLIENT_ID="tallykey",
                          TALLYKEY_OIDC_CLIENT_SECRET="x" * 20,
                          TALLYKEY_PUBLIC_URL=f"http://127.0.0.1:{dead}")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 9 and "Traceback" not in result.stdout + result.stderr
    failed = {line.split()[1] for line in lines if line.startswith("fail")}
    assert failed == {"redis", "smtp", "openid"}, result.stdout
    # a public URL this node cannot reach is a warning: only browsers may reach it
    assert "public_url" not in failed and "cannot be reached from this node" in result.stdout
    assert "r3dis-pw" not in result.stdout
    assert took < 30  # every check is bounded (3 s); the rest is starting Python


@pytest.mark.serial  # a time bound
@pytest.mark.postgres
def test_a_store_that_does_not_answer_fails_and_its_checks_are_skipped(
        tmp_path: Path) -> None:
    listener = socket.socket()  # accepts connections, never answers: a hung server
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        url = f"postgresql://tallykey:pg-pa55word@127.0.0.1:{listener.getsockname()[1]}/x"
        result, took = doctor(url, tmp_path, "--json")
    finally:
        listener.close()
    assert result.returncode == 1
    found = checks(result)
    assert found["store"]["status"] == "fail"
    assert {found[name]["status"] for name in ("schema", "clock", "kek")} == {"skip"}
    assert "pg-pa55word" not in result.stdout
    assert took < 20


def test_a_schema_behind_head_and_a_missing_kek_fail(
        database_url: str, tmp_path: Path, rt: Runtime) -> None:
    rt.accounts.create_account("acme", "Acme", "eu1")
    with rt.database.engine.begin() as connection:
        connection.execute(update(Account).values(retrievable_application_tokens=True))
    result = doctor_in_process(database_url, tmp_path, "--json")
    assert result.returncode == 1
    kek = checks(result)["kek"]
    assert kek["status"] == "fail" and "1 account(s)" in kek["detail"], kek
    assert doctor_in_process(database_url, tmp_path, "--json",
                             TALLYKEY_KEK=KEK).returncode == 0
    with rt.database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = :r"),
                           {"r": revision_before_head()})
    result = doctor_in_process(database_url, tmp_path, "--json")
    schema = checks(result)["schema"]
    assert schema["status"] == "fail" and "1 revision(s) pending" in schema["detail"]
    assert "tallykey migrate" in schema["detail"]
    assert checks(result)["kek"]["status"] == "skip"


def test_serve_warns_in_one_line_about_an_unreachable_redis_and_issuer_then_starts(
        tmp_path: Path) -> None:
    dead, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env.update(TALLYKEY_DATA_DIR=str(tmp_path / "data"),
               TALLYKEY_REDIS_URL=f"redis://:r3dis-pw@127.0.0.1:{dead}/0",
               TALLYKEY_OIDC_ISSUER=f"http://127.0.0.1:{dead}", TALLYKEY_OIDC_CLIENT_ID="c",
               TALLYKEY_OIDC_CLIENT_SECRET="oidc-secret-value")
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen([TALLYKEY, "serve", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=20)
    text = log.read_text()
    warnings = [line for line in text.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, text
    assert "TALLYKEY_REDIS_URL" in warnings[0] and "TALLYKEY_OIDC_ISSUER" in warnings[1]
    assert text.index("warning:") < text.index("listening on")
    assert "r3dis-pw" not in text and "oidc-secret-value" not in text
