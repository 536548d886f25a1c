"""Build a benchmark store quickly: a real account and user through the services, then
tokens bulk-inserted (real, checksummed tokens we keep, plus filler rows that only occupy
the index), so a million-token store takes seconds, not hours."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tallykey.actor import Actor
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens import format as token_format

SCOPES = json.dumps(["employees:read", "employees:write"])
BATCH = 20_000


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def build(data_dir: Path, total: int, real: int) -> tuple[Settings, list[str]]:
    """A SQLite store with `total` tokens, `real` of which are returned as strings."""
    settings = Settings(data_dir=data_dir, region="eu1", auth_fail_limit=0)
    database = Database(settings.resolved_database_url)
    migrate.upgrade(database)
    database.dispose()
    runtime = Runtime.build(settings)
    account = runtime.accounts.create_account("bench", "Bench", "eu1")
    user = runtime.accounts.create_user(Actor.operator(account.id), "bench@bench.example",
                                        role="admin")
    runtime.close()
    now = datetime.now(UTC)
    created, expires = _stamp(now), _stamp(now + timedelta(days=90))
    tokens = [token_format.generate("eu1") for _ in range(real)]
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")

    def rows(start: int, stop: int) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        token_rows, secret_rows = [], []
        for index in range(start, stop):
            token_id = str(uuid.UUID(int=index + 1))
            if index < real:
                public_id, secret_hash = tokens[index].public_id, tokens[index].secret_hash
            else:
                public_id = f"{index:012x}"
                secret_hash = hashlib.sha256(os.urandom(32)).hexdigest()
            token_rows.append((token_id, account.id, "personal", "eu1", public_id,
                               f"bench {index}", "", SCOPES, "[]", user.id, user.id,
                               created, created, expires))
            secret_rows.append((token_id, secret_hash, 1, created))
        return token_rows, secret_rows

    for start in range(0, total, BATCH):
        token_rows, secret_rows = rows(start, min(total, start + BATCH))
        connection.executemany(
            "INSERT INTO tokens (id, account_id, kind, region, public_id, name, description,"
            " scopes, ip_allowlist, owner_id, created_by_id, created_at, updated_at,"
            " expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", token_rows)
        connection.executemany(
            "INSERT INTO token_secrets (token_id, secret_hash, generation, created_at)"
            " VALUES (?,?,?,?)", secret_rows)
        connection.commit()
    connection.execute("ANALYZE")
    connection.close()
    return settings, [str(t) for t in tokens]
