"""The audit hash chain: appends link up (also concurrently), and editing, deleting or
reordering a row makes the real `tallykey audit verify` fail at that row."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from tallykey.actor import Actor
from tallykey.audit import chain, trail
from tallykey.audit.models import AuditEvent
from tallykey.clock import FrozenClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

from ..conftest import World

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))


def cli(database_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
    env.update({"TALLYKEY_DATABASE_URL": database_url,
                "TALLYKEY_DATA_DIR": str(tmp_path / "data")})
    return subprocess.run([TALLYKEY, *args], env=env, capture_output=True, text=True,
                          timeout=60)


def some_history(rt: Runtime, world: World) -> list[int]:
    """Entries in two accounts; returns acme's entry ids, oldest first."""
    for number in range(3):
        issued = rt.tokens.issue(world.as_admin, TokenDraft(name=f"t{number}",
                                                           expires_in_days=30))
        rt.tokens.rotate(world.as_admin, issued.token.id, 0)
    rt.tokens.issue(world.as_other_admin, TokenDraft(name="g", expires_in_days=30))
    with rt.database.reading() as session:
        return list(session.scalars(select(AuditEvent.id).where(
            AuditEvent.account_id == world.acme_id).order_by(AuditEvent.id)))


def test_entries_link_up_per_account(rt: Runtime, world: World) -> None:
    ids = some_history(rt, world)
    with rt.database.reading() as session:
        rows = list(session.scalars(select(AuditEvent).where(AuditEvent.id.in_(ids))
                                    .order_by(AuditEvent.seq)))
    assert [r.seq for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0].prev_hash == chain.GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
    report = chain.verify(rt.database)
    assert report.intact and report.chains == 2
    assert report.entries == rt.database.engine.connect().execute(
        text("SELECT count(*) FROM audit_events")).scalar()


def test_verify_cli_counts_an_intact_trail(rt: Runtime, world: World, database_url: str,
                                           tmp_path: Path) -> None:
    some_history(rt, world)
    result = cli(database_url, tmp_path, "audit", "verify")
    assert result.returncode == 0, result.stderr
    assert "audit trail intact" in result.stdout


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_tampering_is_found_at_that_row(rt: Runtime, world: World, database_url: str,
                                        tmp_path: Path, tamper: str) -> None:
    ids = some_history(rt, world)
    victim = ids[3]
    with rt.database.engine.begin() as connection:
        if tamper == "edit":
            connection.execute(text("UPDATE audit_events SET actor_label = 'someone else' "
                                    "WHERE id = :id"), {"id": victim})
            expected = victim
        elif tamper == "delete":
            connection.execute(text("DELETE FROM audit_events WHERE id = :id"),
                               {"id": victim})
            expected = ids[4]
        else:  # swap two neighbours' places in the table
            nxt = ids[4]
            for old, new in ((victim, -1), (nxt, victim), (-1, nxt)):
                connection.execute(text("UPDATE audit_events SET id = :new WHERE id = :old"),
                                   {"old": old, "new": new})
            expected = victim
    result = cli(database_url, tmp_path, "audit", "verify")
    assert result.returncode == 1, result.stdout
    assert f"first broken entry: {expected}" in result.stderr
    # The other account's chain is untouched.
    assert chain.verify(rt.database, world.globex_id).intact


def test_deleting_the_newest_entries_is_found(rt: Runtime, world: World) -> None:
    ids = some_history(rt, world)
    with rt.database.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": ids[-1]})
    report = chain.verify(rt.database)
    assert not report.intact
    assert report.first is not None and report.first.entry_id == ids[-2]


def test_concurrent_appends_form_one_chain(rt: Runtime, world: World) -> None:
    """Writers racing on one account (threads here; nodes in production) never fork the
    chain: the head row is locked before the previous hash is read."""
    actor = world.as_admin
    assert isinstance(actor, Actor)
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for item in range(15):
                with rt.database.transaction() as session:
                    trail.record(session, actor=actor, action="test.concurrent",
                                 at=rt.clock.now(), details={"writer": number, "item": item})
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert chain.verify(rt.database).intact
    with rt.database.reading() as session:
        count = len(list(session.scalars(select(AuditEvent.id).where(
            AuditEvent.action == "test.concurrent"))))
    assert count == 60


def test_export_writes_csv_and_json_lines(rt: Runtime, world: World, database_url: str,
                                          tmp_path: Path) -> None:
    some_history(rt, world)
    result = cli(database_url, tmp_path, "audit", "export", "--format", "jsonl",
                 "--account", "globex")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows and {r["account_id"] for r in rows} == {world.globex_id}
    assert rows[0]["prev_hash"] == chain.GENESIS and rows[0]["seq"] == 1
    later = (rt.clock.now() + timedelta(days=1)).date().isoformat()
    result = cli(database_url, tmp_path, "audit", "export", "--format", "csv",
                 "--since", later)
    assert result.returncode == 0 and result.stdout.splitlines() == [
        "id,occurred_at,account_id,action,actor_type,actor_id,actor_label,target_type,"
        "target_id,ip,details,chain,seq,prev_hash,hash"]
    result = cli(database_url, tmp_path, "audit", "export", "--format", "xml")
    assert result.returncode == 1 and "csv or jsonl" in result.stderr


def test_the_migration_chains_older_entries(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = Database(url)
    try:
        from alembic import command

        config = migrate.alembic_config(url)
        with database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0006")
        with database.engine.begin() as connection:
            for number in range(3):
                connection.execute(text(
                    "INSERT INTO audit_events (account_id, occurred_at, action, actor_type, "
                    "actor_label, details) VALUES (NULL, :at, 'old.entry', 'operator', '', "
                    ":details)"), {"at": f"2030-01-01 12:00:0{number}.000000",
                                   "details": json.dumps({"n": number})})
        migrate.upgrade(database)
        assert chain.verify(database).intact
        assert chain.verify(database).entries == 3
        runtime = Runtime.build(Settings(database_url=url), FrozenClock())
        with runtime.database.transaction() as session:
            session.add(AuditEvent(account_id=None, occurred_at=runtime.clock.now(),
                                   action="new.entry", actor_type="operator"))
        assert chain.verify(runtime.database).entries == 4
        assert chain.verify(runtime.database).intact
        runtime.close()
    finally:
        database.dispose()
