"""Build a benchmark store quickly: a real account and user through the services, then
tokens bulk-inserted (real, checksummed tokens we keep, plus filler rows that only occupy
the index), so a million-token store takes seconds, not hours. SQLite (`build`) or a
fresh PostgreSQL database (`build_postgres`, filler made by `generate_series`)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

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


def _account_and_user(settings: Settings) -> tuple[str, str]:
    database = Database(settings.resolved_database_url)
    migrate.upgrade(database)
    database.dispose()
    runtime = Runtime.build(settings)
    account = runtime.accounts.create_account("bench", "Bench", "eu1")
    user = runtime.accounts.create_user(Actor.operator(account.id), "bench@bench.example",
                                        role="admin")
    runtime.close()
    return account.id, user.id


def build(data_dir: Path, total: int, real: int) -> tuple[Settings, list[str]]:
    """A SQLite store with `total` tokens, `real` of which are returned as strings."""
    settings = Settings(data_dir=data_dir, region="eu1", auth_fail_limit=0)
    account_id, user_id = _account_and_user(settings)
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
            token_rows.append((token_id, account_id, "personal", "eu1", public_id,
                               f"bench {index}", "", SCOPES, "[]", user_id, user_id,
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


@contextmanager
def build_postgres(server_url: str, data_dir: Path, total: int, real: int
                   ) -> Iterator[tuple[Settings, list[str]]]:
    """A fresh PostgreSQL database on `server_url` (any database of that server, e.g.
    `postgresql://postgres@127.0.0.1:5432/postgres`) with `total` tokens, `real` of them
    returned as strings; dropped on exit."""
    server = make_url(server_url).set(drivername="postgresql")
    name = f"tallykey_bench_{os.getpid()}_{total}"
    admin = server.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    url = server.set(database=name)
    try:
        settings = Settings(data_dir=data_dir, region="eu1", auth_fail_limit=0,
                            database_url=url.set(drivername="postgresql+psycopg")
                            .render_as_string(hide_password=False))
        account_id, user_id = _account_and_user(settings)
        tokens = [token_format.generate("eu1") for _ in range(real)]
        now = datetime.now(UTC)
        expires = now + timedelta(days=90)
        with psycopg.connect(url.render_as_string(hide_password=False)) as connection:
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO tokens (id, account_id, kind, region, public_id, name,"
                    " description, scopes, ip_allowlist, owner_id, created_by_id, created_at,"
                    " updated_at, expires_at) VALUES (%s,%s,'personal','eu1',%s,%s,'',"
                    "%s::json,'[]'::json,%s,%s,%s,%s,%s)",
                    [(str(uuid.UUID(int=n + 1)), account_id, t.public_id, f"bench {n}",
                      SCOPES, user_id, user_id, now, now, expires)
                     for n, t in enumerate(tokens)])
                cursor.executemany(
                    "INSERT INTO token_secrets (token_id, secret_hash, generation, created_at)"
                    " VALUES (%s,%s,1,%s)",
                    [(str(uuid.UUID(int=n + 1)), t.secret_hash, now)
                     for n, t in enumerate(tokens)])
                cursor.execute(
                    "INSERT INTO tokens (id, account_id, kind, region, public_id, name,"
                    " description, scopes, ip_allowlist, owner_id, created_by_id, created_at,"
                    " updated_at, expires_at) SELECT 'f' || lpad(g::text, 35, '0'), %s,"
                    " 'personal', 'eu1', 'f' || lpad(g::text, 15, '0'), 'bench ' || g, '',"
                    " %s::json, '[]'::json, %s, %s, %s, %s, %s"
                    " FROM generate_series(%s::int, %s::int) AS g",
                    (account_id, SCOPES, user_id, user_id, now, now, expires, real + 1, total))
                cursor.execute(
                    "INSERT INTO token_secrets (token_id, secret_hash, generation, created_at)"
                    " SELECT 'f' || lpad(g::text, 35, '0'),"
                    " encode(sha256(('filler ' || g)::bytea), 'hex'), 1, %s"
                    " FROM generate_series(%s::int, %s::int) AS g",
                    (now, real + 1, total))
            connection.commit()
            connection.autocommit = True
            connection.execute("VACUUM ANALYZE tokens")
            connection.execute("VACUUM ANALYZE token_secrets")
        yield settings, [str(t) for t in tokens]
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
