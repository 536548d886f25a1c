"""Migrations: idempotent, and they produce exactly the schema the models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.schema.tables import metadata


def test_migrations_match_the_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        database.dispose()
    assert differences == []


def test_migrate_is_idempotent(database_url: str) -> None:
    database = Database(database_url)
    try:
        head = migrate.head_revision(database_url)
        assert migrate.upgrade(database) == (head, head)
        assert migrate.current_revision(database) == head
    finally:
        database.dispose()


def test_a_fresh_sqlite_store_is_created_in_its_data_dir(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'tallykey.db'}"
    database = Database(url)
    try:
        before, after = migrate.upgrade(database)
        assert before is None and after == migrate.head_revision(url)
        with database.engine.connect() as connection:
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
        assert mode == "wal"
    finally:
        database.dispose()
