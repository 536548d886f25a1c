"""The TypeScript client's own suite (clients/typescript: `npm ci`, then `npm test`, which
runs `node --test` against real `tallykey serve` processes of this checkout), so that
`make test` covers it. Skips where node or npm is missing, except in CI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import IN_CI

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "typescript"
TALLYKEY = Path(sys.executable).with_name("tallykey")


def npm() -> str:
    node, found = shutil.which("node"), shutil.which("npm")
    if node is None or found is None:
        if IN_CI:
            pytest.fail("node and npm are required in CI (apt-get install nodejs npm)")
        pytest.skip("node or npm is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    found_major = re.match(r"v(\d+)", version)
    major = int(found_major.group(1)) if found_major else 0
    if major < 18:
        if IN_CI:
            pytest.fail(f"the TypeScript client needs Node 18 or later, not {version}")
        pytest.skip(f"Node {version} is older than 18")
    return found


def test_the_typescript_client_suite_passes() -> None:
    command = npm()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env["TALLYKEY_BIN"] = str(TALLYKEY)
    installed = subprocess.run([command, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                               cwd=PACKAGE, env=env, capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    ran = subprocess.run([command, "test"], cwd=PACKAGE, env=env, capture_output=True,
                         text=True, timeout=540)
    report = ran.stdout + ran.stderr
    assert ran.returncode == 0, report[-6000:]
    passed = re.search(r"^# pass (\d+)$", report, re.MULTILINE)
    failed = re.search(r"^# fail (\d+)$", report, re.MULTILINE)
    assert passed and failed, report[-3000:]
    assert int(failed.group(1)) == 0 and int(passed.group(1)) >= 20, report[-3000:]
