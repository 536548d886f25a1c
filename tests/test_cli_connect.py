"""`tallykey connect`, the real command against a real server: answers and exit codes."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tallykey.tokens import format as token_format

from .e2e.conftest import TALLYKEY, Server, free_port, running_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("connect"), "sqlite") as live:
        yield live


def run(server: Server, *args: str, stdin: str | None = None,
        **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**server.env, "TALLYKEY_REGIONS":
                   f"eu1={server.base_url},us1=https://api-us1.example.com", **env}
    return subprocess.run([TALLYKEY, "connect", *args], env=environment, capture_output=True,
                          text=True, input=stdin, timeout=60)


def test_token_from_the_environment(server: Server) -> None:
    token = server.seeded["admin"]["token"]
    result = run(server, "--token-env", "HUB_TOKEN", "--region", "eu1", HUB_TOKEN=token)
    assert result.returncode == 0, result.stderr
    assert f"({server.seeded['account']}) in region eu1" in result.stdout
    assert server.seeded["admin"]["email"] in result.stdout
    assert token not in result.stdout + result.stderr


def test_token_from_stdin_with_json(server: Server) -> None:
    token = server.seeded["member"]["token"]
    result = run(server, "--token-stdin", "--region", "eu1", "--json", stdin=token + "\n")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["ok"] is True and answer["scopes"] == ["employees:read"]
    assert answer["account"]["slug"] == server.seeded["account"]
    assert answer["user"]["email"] == server.seeded["member"]["email"]


def test_token_option_and_base_url(server: Server) -> None:
    result = run(server, "--token", server.seeded["admin"]["token"], "--base-url",
                 server.base_url, TALLYKEY_REGIONS="")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args", [(), ("--token", "x", "--token-stdin"),
                                  ("--token-env", "NOT_SET_ANYWHERE")])
def test_token_source_mistakes_are_usage_errors(server: Server, args: tuple[str, ...]) -> None:
    result = run(server, *args, "--region", "eu1")
    assert result.returncode == 2 and "error:" in result.stderr
    assert "Traceback" not in result.stderr


def revoked_token(server: Server) -> str:
    headers = {"Authorization": f"Bearer {server.seeded['admin']['token']}"}
    made = httpx.post(f"{server.base_url}/api/v1/tokens", headers=headers, timeout=10,
                      json={"name": "to revoke", "expires_in_days": 7}).json()
    httpx.delete(f"{server.base_url}/api/v1/tokens/{made['id']}", headers=headers, timeout=10)
    return str(made["token"])


def test_each_failure_class_has_its_exit_code_and_fix(server: Server) -> None:
    admin = server.seeded["admin"]["token"]
    cases: list[tuple[str, tuple[str, ...], dict[str, str], int, str]] = [
        (admin[:30], ("--region", "eu1"), {}, 21, "copied incompletely"),
        (admin, ("--region", "us1"), {}, 22, "region 'eu1', not 'us1'"),
        (str(token_format.generate("eu1")), ("--region", "eu1"), {}, 23, "deleted"),
        (revoked_token(server), ("--region", "eu1"), {}, 24, "revoked at"),
        (admin, ("--scope", "nothing:here"), {}, 32, "nothing:here"),
        (admin, ("--region", "eu1"), {"TALLYKEY_REGIONS": f"eu1=http://127.0.0.1:{free_port()}"},
         50, "could not reach http://127.0.0.1:"),
        (admin, ("--region", "eu1"), {"TALLYKEY_REGIONS": "us1=https://x"}, 10,
         "no known api base url"),
    ]
    for token, args, env, code, fragment in cases:
        result = run(server, "--token-env", "T", *args, T=token, **env)
        assert result.returncode == code, (fragment, result.stdout, result.stderr)
        assert fragment.lower() in result.stderr.lower(), result.stderr
        assert token not in result.stdout + result.stderr
        as_json = run(server, "--token-env", "T", "--json", *args, T=token, **env)
        assert as_json.returncode == code
        answer = json.loads(as_json.stdout)
        assert answer["ok"] is False and answer["message"] and answer["error"]
