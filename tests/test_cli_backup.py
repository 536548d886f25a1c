"""Backups under write load, restored into a fresh store (docs/operations.md): SQLite
with `tallykey backup PATH`, PostgreSQL with `pg_dump`/`pg_restore`. After the restore
tokens verify, revoked ones stay revoked, retrievable secrets decrypt with the same KEK,
and `tallykey audit verify` passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tallykey.accounts.service import PolicyChanges
from tallykey.auth.verifier import Verifier
from tallykey.runtime import Runtime
from tallykey.settings import Settings, normalise_database_url
from tallykey.tokens.requests import TokenDraft

from .conftest import World, _libpq, fresh_postgres_database

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))
KEK = "k1:" + "B" * 43 + "="
IP = "198.51.100.7"


def tallykey(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    full.update(env)
    return subprocess.run([TALLYKEY, *args], env=full, capture_output=True, text=True,
                          timeout=120)


def draft(name: str) -> TokenDraft:
    return TokenDraft(name=name, kind="application", scopes=["employees:read"],
                      target="Excel", expires_in_days=30)


class Scenario:
    """Tokens made before the backup, and a writer that keeps issuing and revoking
    while it runs."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.world = World(rt)
        rt.accounts.update_policies(self.world.as_admin, PolicyChanges(
            retrievable_application_tokens=True))
        self.kept = rt.tokens.issue(self.world.as_admin, draft("kept"))
        revoked = rt.tokens.issue(self.world.as_admin, draft("revoked"))
        rt.tokens.revoke(self.world.as_admin, revoked.token.id, "test")
        self.revoked = revoked
        self.stop = threading.Event()
        self.written = 0
        self.errors: list[BaseException] = []

    def write(self) -> None:
        try:
            while not self.stop.is_set() and self.written < 400:
                issued = self.rt.tokens.issue(self.world.as_admin, draft(f"load {self.written}"))
                self.rt.tokens.revoke(self.world.as_admin, issued.token.id, "load")
                self.written += 1
        except BaseException as error:  # reported by the test
            self.errors.append(error)

    @contextmanager
    def under_load(self) -> Iterator[None]:
        writer = threading.Thread(target=self.write, daemon=True)
        writer.start()
        try:
            yield
        finally:
            self.stop.set()
            writer.join(30)
        assert not self.errors, self.errors

    def check_restored(self, settings: Settings, env: dict[str, str]) -> None:
        restored = Runtime.build(settings)
        verifier = Verifier(settings=settings, database=restored.database,
                            clock=restored.clock, background=False)
        try:
            assert verifier.verify(f"Bearer {self.kept.value}", IP).allowed
            refused = verifier.verify(f"Bearer {self.revoked.value}", IP)
            assert not refused.allowed and refused.reason == "revoked"
            again = restored.tokens.retrieve_secret(self.world.as_admin, self.kept.token.id)
            assert again.value == self.kept.value  # decrypted with the same KEK
        finally:
            verifier.close()
            restored.close()
        audit = tallykey(env, "audit", "verify")
        assert audit.returncode == 0, audit.stdout + audit.stderr


def settings_for(tmp: Path, url: str | None) -> Settings:
    return Settings(data_dir=tmp, database_url=url, kek=KEK, argon2_profile="CHEAPEST")


def env_for(tmp: Path, url: str | None) -> dict[str, str]:
    env = {"TALLYKEY_DATA_DIR": str(tmp), "TALLYKEY_KEK": KEK,
           "TALLYKEY_ARGON2_PROFILE": "CHEAPEST"}
    if url:
        env["TALLYKEY_DATABASE_URL"] = url
    return env


def test_sqlite_backup_under_write_load_restores_into_a_fresh_store(tmp_path: Path) -> None:
    live_dir, restore_dir = tmp_path / "live", tmp_path / "restored"
    rt = Runtime.build(settings_for(live_dir, None))
    rt.ensure_schema()
    scenario = Scenario(rt)
    target = tmp_path / "backups" / "tallykey-backup.db"
    target.parent.mkdir()
    try:
        with scenario.under_load():
            wait_for(lambda: scenario.written >= 5)
            heads = tallykey(env_for(live_dir, None), "audit", "heads", "--json")
            made = tallykey(env_for(live_dir, None), "backup", str(target))
            during = scenario.written
        assert heads.returncode == 0, heads.stderr
        (tmp_path / "heads.json").write_text(heads.stdout)  # saved before the backup
        assert made.returncode == 0, made.stderr
        assert "backed up the store" in made.stdout
        assert scenario.written > during or scenario.written >= 5
        again = tallykey(env_for(live_dir, None), "backup", str(target))
        assert again.returncode != 0 and "exists already" in again.stderr  # never overwritten
    finally:
        rt.close()
    restore_dir.mkdir()
    shutil.copy(target, restore_dir / "tallykey.db")  # the restore: one file in place
    scenario.check_restored(settings_for(restore_dir, None), env_for(restore_dir, None))
    saved = tallykey(env_for(restore_dir, None), "audit", "verify", "--heads",
                     str(tmp_path / "heads.json"))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert "every saved head present and unchanged" in " ".join(saved.stdout.split())


def test_backup_of_a_postgresql_store_says_to_use_pg_dump(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        result = tallykey(env_for(tmp_path, url), "backup", str(tmp_path / "x.db"))
    assert result.returncode == 1 and "pg_dump" in result.stderr
    assert not (tmp_path / "x.db").exists()


@pytest.mark.postgres
def test_postgresql_pg_dump_under_write_load_restores_into_a_fresh_database(
        tmp_path: Path) -> None:
    pg_dump, pg_restore = shutil.which("pg_dump"), shutil.which("pg_restore")
    if not pg_dump or not pg_restore:
        pytest.skip("pg_dump/pg_restore are not installed (postgresql-client)")
    with fresh_postgres_database() as live, empty_database() as fresh:
        rt = Runtime.build(settings_for(tmp_path, normalise_database_url(live)))
        scenario = Scenario(rt)
        dump = tmp_path / "tallykey.dump"
        try:
            with scenario.under_load():
                wait_for(lambda: scenario.written >= 5)
                subprocess.run([pg_dump, "--format=custom", "--file", str(dump),
                                _libpq(live)], check=True, timeout=120)
        finally:
            rt.close()
        subprocess.run([pg_restore, "--no-owner", "--exit-on-error", "--dbname",
                        _libpq(fresh), str(dump)], check=True, timeout=120)
        check = tallykey(env_for(tmp_path, fresh), "migrate", "--check")
        assert check.returncode == 0, check.stdout + check.stderr
        scenario.check_restored(settings_for(tmp_path, normalise_database_url(fresh)),
                                env_for(tmp_path, fresh))


@contextmanager
def empty_database() -> Iterator[str]:
    """A new database with nothing in it (the target of pg_restore)."""
    with fresh_postgres_database() as url:
        admin = psycopg.connect(_libpq(url), autocommit=True, connect_timeout=3)
        try:
            admin.execute("DROP SCHEMA public CASCADE")
            admin.execute("CREATE SCHEMA public")
        finally:
            admin.close()
        yield make_url(url).render_as_string(hide_password=False)


def wait_for(condition: Callable[[], Any], seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
