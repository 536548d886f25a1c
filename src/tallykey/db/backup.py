"""`tallykey backup PATH`: an online, consistent copy of the embedded SQLite store.

SQLite's online backup API copies the database as of one read transaction (in WAL mode
writers go on meanwhile), into a temporary file beside PATH that is checked and then
renamed, so PATH is either absent or a complete store. A shared PostgreSQL store is backed
up with `pg_dump` instead (docs/operations.md)."""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from tallykey.db.engine import Database
from tallykey.errors import ValidationFailed


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    revision: str | None


def backup_sqlite(database: Database, target: Path) -> BackupResult:
    """Copy the store to `target` (which must not exist); `ValidationFailed` for a
    PostgreSQL store or an existing target."""
    url = make_url(database.url)
    if url.get_backend_name() != "sqlite":
        raise ValidationFailed(
            "tallykey backup copies the embedded SQLite store; this store is PostgreSQL.",
            "Back it up with pg_dump (docs/operations.md).")
    if target.exists():
        raise ValidationFailed(f"{target} exists already; nothing was written.",
                               "Name a new file: backups are never overwritten.")
    if not target.parent.is_dir():
        raise ValidationFailed(f"the directory {target.parent} does not exist.")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    source = database.raw_connection(autocommit=True)
    try:
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy)  # one step: a snapshot as of one read transaction
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            checked = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if checked != "ok":
                raise ValidationFailed(f"the copy failed its integrity check ({checked}).")
            row = copy.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            copy.close()
        os.replace(partial, target)
    finally:
        source.close()
        partial.unlink(missing_ok=True)
    return BackupResult(target, target.stat().st_size, row[0] if row else None)
