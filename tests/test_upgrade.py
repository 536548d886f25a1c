"""A rolling upgrade (docs/operations.md, "Upgrades"): a node of the previous release
(`v0.1.0`, its tagged source installed in a virtualenv of its own) keeps verifying on a
PostgreSQL store while the current `tallykey migrate` runs, and after it; a revocation
made with the current release reaches the old node.

Slow the first time (a virtualenv from pip's cache); the installed release is kept in
`~/.cache/tallykey-releases/` for later runs. The installation is a test of its own in the
parallel phase of `make test` (waiting on pip and the disk beside the other tests); the
rolling upgrade, which holds a bound on time, runs in the serial phase and finds it done.
Skipped outside CI when git, the tag or the installation is not available."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .conftest import IN_CI, fresh_postgres_database
from .e2e.conftest import free_port

ROOT = Path(__file__).parents[1]
PREVIOUS = "v0.1.0"
#: The commit tagged v0.1.0: a clone of main has the history but not always the tags.
PREVIOUS_COMMIT = "b69d070ec486aa35f52c6e67231268c2b80586e5"
CACHE = Path.home() / ".cache" / "tallykey-releases"
TALLYKEY = str(Path(sys.executable).with_name("tallykey"))



def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def previous_release() -> Path:
    """The `tallykey` command of the previous release, installed once."""
    git = shutil.which("git") or ""
    if not git:
        unavailable("git is not installed")
    found = subprocess.run([git, "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                            f"{PREVIOUS_COMMIT}^{{commit}}"], capture_output=True, text=True)
    if found.returncode != 0:
        unavailable(f"{PREVIOUS} ({PREVIOUS_COMMIT[:12]}) is not in this clone's history "
                    "(a shallow clone? git fetch --unshallow)")
    commit = found.stdout.strip()
    home = CACHE / f"{PREVIOUS}-{commit[:12]}"
    command = home / "venv" / "bin" / "tallykey"
    if (home / ".complete").exists():
        return command
    shutil.rmtree(home, ignore_errors=True)  # an earlier run stopped half-way
    (home / "src").mkdir(parents=True)
    archive = subprocess.run([git, "-C", str(ROOT), "archive", commit], capture_output=True,
                             check=True).stdout  # the tagged tree, as `git worktree` has it
    subprocess.run(["tar", "-x", "-C", str(home / "src")], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
    installed = subprocess.run(
        [str(home / "venv" / "bin" / "pip"), "install", "--quiet", f"{home / 'src'}[server]"],
        capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        unavailable(f"cannot install {PREVIOUS}: {installed.stderr[-500:]}")
    (home / ".complete").write_text(commit)
    return command


def env_for(url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env.update(TALLYKEY_DATABASE_URL=url, TALLYKEY_DATA_DIR=str(tmp / "data"),
               TALLYKEY_ARGON2_PROFILE="CHEAPEST", TALLYKEY_NODE_NAME="old-node")
    return env


def test_the_previous_release_installs_from_its_tag() -> None:
    old = previous_release()
    shown = subprocess.run([str(old), "--version"], capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"tallykey {PREVIOUS.removeprefix('v')}"


@pytest.mark.serial
@pytest.mark.postgres
def test_a_node_of_the_previous_release_keeps_verifying_while_the_current_migrate_runs(
        tmp_path: Path) -> None:
    old = previous_release()
    with fresh_postgres_database() as current_url:
        url = current_url
        env = env_for(url, tmp_path)
        # the store as the previous release left it: dropped and migrated by that release
        subprocess.run(["psql", url.replace("+psycopg", ""), "-q", "-c",
                        "DROP SCHEMA public CASCADE; CREATE SCHEMA public"], check=True,
                       capture_output=True)
        subprocess.run([str(old), "migrate"], env=env, check=True, capture_output=True)
        seeded = json.loads(subprocess.run([str(old), "demo", "--seed-only", "--json"],
                                           env=env, check=True, capture_output=True,
                                           text=True).stdout)
        port = free_port()
        log = tmp_path / "old-node.log"
        with log.open("wb") as output:
            node = subprocess.Popen([str(old), "serve", "--port", str(port)], env=env,
                                    stdout=output, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert node.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            admin = {"Authorization": f"Bearer {seeded['admin']['token']}"}
            member = {"Authorization": f"Bearer {seeded['member']['token']}"}
            answers: Counter[int] = Counter()
            stop = threading.Event()

            def verify_continuously() -> None:
                with httpx.Client(base_url=base, timeout=5) as http:
                    while not stop.is_set():
                        answers[http.get("/auth/request", headers=admin).status_code] += 1

            checker = threading.Thread(target=verify_continuously, daemon=True)
            checker.start()
            pending = subprocess.run([TALLYKEY, "migrate", "--check"], env=env,
                                     capture_output=True, text=True)
            migrated = subprocess.run([TALLYKEY, "migrate"], env=env, capture_output=True,
                                      text=True, timeout=300)
            assert migrated.returncode == 0, migrated.stderr
            during = sum(answers.values())
            # after the migration: the old node still verifies, and follows changes made
            # by the current release
            revoked = subprocess.run([TALLYKEY, "tokens", "revoke",
                                      seeded["member"]["token"][:20]], env=env,
                                     capture_output=True, text=True, timeout=60)
            assert revoked.returncode == 0, revoked.stderr
            deadline = time.monotonic() + 10
            while httpx.get(f"{base}/auth/request", headers=member).status_code != 401:
                assert time.monotonic() < deadline, "the old node missed a revocation"
                time.sleep(0.1)
            time.sleep(1)  # a second more of verification after the migration
            stop.set()
            checker.join(10)
        finally:
            node.terminate()
            node.wait(timeout=20)
        assert set(answers) == {204}, (answers, log.read_text()[-2000:])
        assert during > 0 and sum(answers.values()) > during
        print(f"pending before: {pending.stdout.strip()!r}; {sum(answers.values())} "
              f"verifications by {PREVIOUS}, all 204")
