"""The real `tallykey` command with its standard output a pipe (as in `tallykey … | cat`):
no line is broken at 80 columns, `audit heads` keeps each hash on its chain's line,
`operator-tokens list` shows whole prefixes, and the sentences that say how far a change
reached fit the verb (a resume "works again", an update "applied")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))
LONG_NAME = "A rather long token name that would have wrapped at eighty columns in a pipe"


@pytest.fixture
def piped(tmp_path: Path, database_url: str):  # type: ignore[no-untyped-def]
    """Run `tallykey ARGS` in a subprocess whose stdout and stderr are pipes, with no
    COLUMNS and no terminal: what a script or `| cat` sees."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TALLYKEY_") and k not in ("COLUMNS", "LINES")}
    env.update(TALLYKEY_DATA_DIR=str(tmp_path / "data"), TALLYKEY_DATABASE_URL=database_url,
               TERM="dumb")

    def run(*args: str) -> str:
        done = subprocess.run([TALLYKEY, *args], env=env, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return done.stdout

    seeded = json.loads(run("demo", "--seed-only", "--json"))
    run.account = seeded["account"]  # type: ignore[attr-defined]
    return run


def test_human_output_in_a_pipe_is_never_wrapped(piped) -> None:  # type: ignore[no-untyped-def]
    created = piped("tokens", "create", "-a", piped.account, "--user", "admin@demo.example",
                    "--name", LONG_NAME, "--days", "30")
    first = created.splitlines()[0]
    assert len(first) > 80 and LONG_NAME in first
    assert re.search(r"\), expires \d{4}-\d\d-\d\d$", first), created
    secret = created.splitlines()[-1]
    assert re.fullmatch(r"tlk_eu1_\w+", secret), created

    listed = piped("tokens", "list", "-a", piped.account).splitlines()
    row = next(line for line in listed if LONG_NAME in line)
    assert row.split("\t")[1] == LONG_NAME and secret.startswith(row.split("\t")[0])

    ref = row.split("\t")[-1]
    suspended = piped("tokens", "suspend", ref)
    assert suspended.count("\n") == 1 and "suspended" in suspended
    assert "stopped on 1 of 1 nodes" in suspended or "no verification node" in suspended
    resumed = piped("tokens", "resume", ref)
    assert resumed.count("\n") == 1 and "stopped" not in resumed, resumed
    assert "works again on" in resumed or "no verification node" in resumed


def test_audit_heads_keep_each_hash_on_its_line(piped) -> None:  # type: ignore[no-untyped-def]
    lines = piped("audit", "heads").splitlines()
    assert lines
    for line in lines:
        account, seq, digest = line.split("\t")
        assert account and seq.isdigit() and re.fullmatch(r"[0-9a-f]{64}", digest), line
    assert any(line.startswith(piped.account + "\t") for line in lines)


def test_operator_tokens_list_shows_whole_prefixes(piped) -> None:  # type: ignore[no-untyped-def]
    name = "billing back office of the operator with a long name"
    secret = piped("operator-tokens", "create", "--name", name, "--days", "30",
                   "--quiet").strip()
    listed = piped("operator-tokens", "list").splitlines()
    assert listed[0].split("\t") == ["prefix", "name", "expires", "revoked", "last used"]
    row = next(line.split("\t") for line in listed[1:] if name in line)
    assert "…" not in row[0] and secret.startswith(row[0]) and len(row[0]) > 20
    assert row[1] == name


def test_scopes_and_workspaces_in_a_pipe(piped) -> None:  # type: ignore[no-untyped-def]
    scopes = piped("scopes").splitlines()
    assert scopes[0].split("\t") == ["scope", "description", "who"]
    assert all(len(line.split("\t")) == 3 for line in scopes)
    workspaces = piped("workspaces", "list", "-a", piped.account).splitlines()
    assert workspaces[0].split("\t")[:2] == ["id", "slug"]
    assert all(len(line.split("\t")) == 5 for line in workspaces)
