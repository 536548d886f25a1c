"""Upgrades through the real command: `tallykey migrate --check` (0 at head, 1 with the
pending revisions listed), and `serve` refusing, in one line, a schema behind head on a
shared store or one from a newer release."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tallykey.db.engine import Database
from tallykey.db.migrate import head_revision
from tallykey.settings import normalise_database_url

from .conftest import fresh_postgres_database, revision_before_head

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    with fresh_postgres_database() as url:
        database = Database(url)
        try:  # fresh_postgres_database migrates; start from an empty schema instead
            with database.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
        finally:
            database.dispose()
        yield url


def tallykey(url: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env.update(TALLYKEY_DATABASE_URL=url, TALLYKEY_DATA_DIR=str(tmp / "data"))
    return subprocess.run([TALLYKEY, *args], env=env, capture_output=True, text=True,
                          timeout=120)


def set_revision(url: str, revision: str) -> None:
    database = Database(normalise_database_url(url))
    try:
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"),
                               {"r": revision})
    finally:
        database.dispose()


@pytest.mark.postgres
def test_migrate_check_lists_pending_revisions_then_passes_at_head(
        empty_postgres: str, tmp_path: Path) -> None:
    pending = tallykey(empty_postgres, tmp_path, "migrate", "--check")
    assert pending.returncode == 1, pending.stderr
    assert "pending revision(s)" in pending.stdout and "0001: initial schema" in pending.stdout
    refused = tallykey(empty_postgres, tmp_path, "serve", "--port", "1")
    assert refused.returncode == 1 and "listening" not in refused.stdout
    line = refused.stderr.strip()
    assert len(line.splitlines()) == 1 and "Run 'tallykey migrate'" in line, line
    done = tallykey(empty_postgres, tmp_path, "migrate")
    assert done.returncode == 0 and "schema upgraded from empty" in done.stdout
    at_head = tallykey(empty_postgres, tmp_path, "migrate", "--check")
    assert at_head.returncode == 0 and "schema at head" in at_head.stdout
    set_revision(empty_postgres, revision_before_head())
    behind = tallykey(empty_postgres, tmp_path, "migrate", "--check")
    assert behind.returncode == 1
    assert [line.strip().split(":")[0] for line in behind.stdout.splitlines()[1:]] == [
        head_revision(empty_postgres)]


def test_serve_and_migrate_refuse_a_schema_from_a_newer_release(
        database_url: str, tmp_path: Path) -> None:
    set_revision(database_url, "9999_from_the_future")
    for command in (["serve", "--port", "1"], ["migrate"], ["migrate", "--check"]):
        result = tallykey(database_url, tmp_path, *command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        line = result.stderr.strip()
        assert len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert "9999_from_the_future" in line and "newer release" in line, line
