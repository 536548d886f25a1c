"""`tallykey demo` as a newcomer runs it: the printed revoke command works from any
directory, a second demo fails on the busy port before touching anything, re-seeding
never rotates the running demo's tokens, the demo has its own (demo-only) key so
application tokens are retrievable, and `tallykey connect --region eu1` finds it."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import TALLYKEY, free_port

REVOKE = re.compile(r"^\s*(.*tallykey tokens revoke tlk_\S+)\s*$", re.MULTILINE)


@dataclass
class Demo:
    cwd: Path
    env: dict[str, str]
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, *args: str, cwd: Path | None = None, **extra: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TALLYKEY, *args], cwd=cwd or self.cwd,
                              env={**self.env, **extra}, capture_output=True, text=True,
                              timeout=60)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    cwd = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env["TALLYKEY_AUTH_FAIL_LIMIT"] = "0"
    env["XDG_STATE_HOME"] = str(cwd / "state")  # where the demo registers for the user
    port = free_port()
    log = cwd / "demo.log"
    with log.open("w") as out:
        process = subprocess.Popen([TALLYKEY, "demo", "--port", str(port)], cwd=cwd, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, text=True)
    running = Demo(cwd, env, port, process, log)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(running.base_url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        process.wait(timeout=20)


def printed_token(demo: Demo) -> str:
    found = re.search(r"Bearer (tlk_\S+)\"", demo.log.read_text())
    assert found, demo.log.read_text()
    return found.group(1)


def info(demo: Demo, token: str) -> httpx.Response:
    return httpx.get(demo.base_url + "/core/v3/info",
                     headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_a_second_demo_fails_on_the_busy_port_and_changes_nothing(demo: Demo) -> None:
    token = printed_token(demo)
    state_before = (demo.cwd / "var" / "demo.json").read_text()
    second = demo.run("demo", "--port", str(demo.port))
    assert second.returncode != 0
    assert "already in use" in second.stderr and "--port" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and "Traceback" not in second.stderr
    assert (demo.cwd / "var" / "demo.json").read_text() == state_before
    again = json.loads(demo.run("demo", "--seed-only", "--json").stdout)
    assert again["admin"]["token"] == token  # re-seeding never rotates a live demo token
    assert info(demo, token).status_code == 200
    kept = json.loads(state_before)
    assert kept["note"].startswith("DEMO ONLY") and kept["base_url"] == demo.base_url


def test_connect_finds_the_local_demo_by_region(demo: Demo) -> None:
    connected = demo.run("connect", "--token-env", "HUB", "--region", "eu1",
                         HUB=printed_token(demo))
    assert connected.returncode == 0, connected.stderr
    assert f"at {demo.base_url}" in connected.stdout


def test_connect_finds_the_local_demo_from_any_directory(demo: Demo,
                                                          tmp_path: Path) -> None:
    registry = json.loads((demo.cwd / "state" / "tallykey" / "demo.json").read_text())
    assert registry["base_url"] == demo.base_url and "tokens" not in registry
    connected = demo.run("connect", "--token-env", "HUB", "--region", "eu1", cwd=tmp_path,
                         HUB=printed_token(demo))
    assert connected.returncode == 0, connected.stderr
    assert f"at {demo.base_url}" in connected.stdout
    elsewhere = demo.run("connect", "--token-env", "HUB", "--region", "eu1", cwd=tmp_path,
                         HUB=printed_token(demo), TALLYKEY_DATA_DIR=str(tmp_path / "none"))
    assert elsewhere.returncode == 10, elsewhere.stderr  # a data dir named on purpose wins


def test_without_a_key_an_application_token_names_the_demo_key(demo: Demo,
                                                                tmp_path: Path) -> None:
    key = (demo.cwd / "var" / "demo-kek").resolve()
    refused = demo.run("tokens", "create", "-a", "demo", "--user", "admin@demo.example",
                       "--kind", "application", "--name", "Needs a key", "--days", "7",
                       "--scope", "employees:read",
                       cwd=tmp_path, TALLYKEY_DATA_DIR=str(demo.cwd / "var"))
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "no key-encryption key is configured" in refused.stderr
    assert f"TALLYKEY_KEK_FILE={key}" in refused.stderr, refused.stderr
    made = demo.run("tokens", "create", "-a", "demo", "--user", "admin@demo.example",
                    "--kind", "application", "--name", "Has the key", "--days", "7",
                    "--scope", "employees:read",
                    "--json", cwd=tmp_path, TALLYKEY_DATA_DIR=str(demo.cwd / "var"),
                    TALLYKEY_KEK_FILE=str(key))
    assert made.returncode == 0, made.stderr


def test_the_demo_keeps_application_tokens_retrievable_with_its_own_key(demo: Demo) -> None:
    key = demo.cwd / "var" / "demo-kek"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.read_text().startswith(
        "demo-only:")
    assert "Demo-only key-encryption key" in demo.log.read_text()
    admin = {"Authorization": f"Bearer {printed_token(demo)}"}
    made = httpx.post(demo.base_url + "/api/v1/tokens", headers=admin, timeout=10, json={
        "name": "Retrievable", "kind": "application", "scopes": ["employees:read"],
        "expires_in_days": 7}).json()
    secret = httpx.post(f"{demo.base_url}/api/v1/tokens/{made['id']}/secret", headers=admin,
                        timeout=10)
    assert secret.status_code == 200, secret.text
    assert secret.json()["token"] == made["token"]


def test_the_printed_revoke_command_works_from_any_directory(demo: Demo,
                                                             tmp_path: Path) -> None:
    token = printed_token(demo)
    command = REVOKE.search(demo.log.read_text())
    assert command, demo.log.read_text()
    line = command.group(1)
    assert ".venv/bin/tallykey" not in line or line.split()[1].startswith("/")
    assert "TALLYKEY_DATA_DIR=/" in line
    argv = shlex.split(line)
    assignments = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("tlk_"))
    program = [a for a in argv if "=" not in a]
    if program[0] == "tallykey":
        program[0] = TALLYKEY
    revoked = subprocess.run(program, cwd=tmp_path, env={**demo.env, **assignments},
                             capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 5
    while info(demo, token).status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert info(demo, token).status_code == 401


def test_a_bad_key_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    result = subprocess.run([TALLYKEY, "demo", "--port", str(free_port())], cwd=tmp_path,
                            env={**env, "TALLYKEY_KEK": "k1:not-base64!"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1
