"""Usage analytics (SPEC §16) on a large store: a PostgreSQL database of the benchmark's own
with 1,000,000 `token_usage` rows (two accounts; the measured one has most of them), then
the time of `monitor.analytics.verifications` — the query the API, the CLI and the
console run, SQL and grouping in Python together — per group_by, by day over 30 days and
by hour over 7 days. Prints one JSON object; the database is dropped afterwards.

    .venv/bin/python bench/analytics.py [--rows 1000000] [--tokens 1000] [--rounds 5]
        [--url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from sqlalchemy.engine import make_url

from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.identities.service import IdentityDraft
from tallykey.monitor import analytics
from tallykey.runtime import Runtime
from tallykey.settings import Settings, normalise_database_url
from tallykey.tokens.requests import TokenDraft

NOW = datetime(2030, 3, 1, 12, 30, tzinfo=UTC)
HOUR = NOW.replace(minute=0)
#: Refusal reasons written beside `allowed` for some tokens and hours.
REASONS = ("rate_limited", "insufficient_scope", "usage_exhausted")


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def seed(rt: Runtime, database: Database, tokens: int, rows: int) -> dict[str, object]:
    """Two accounts (90 % of the tokens in the measured one), 50 identities, 5
    workspaces; then about `rows` usage rows (every token, every hour back from now: 40
    days for a million rows and 1,000 tokens) in one INSERT … SELECT over
    generate_series."""
    started = time.perf_counter()
    acme = rt.accounts.create_account("acme", "Acme", "eu1")
    other = rt.accounts.create_account("globex", "Globex", "eu1")
    owners = {}
    for account in (acme, other):
        operator = Actor.operator(account.id)
        user = rt.accounts.create_user(operator, f"admin@{account.slug}.test", role="admin")
        owners[account.id] = Actor(account.id, user.id, "admin", user.email)
    workspaces = [rt.accounts.create_workspace(acme.id, f"ws{n}", f"WS {n}").id
                  for n in range(5)]
    identities = [rt.identities.create(owners[acme.id], IdentityDraft(
        external_id=f"cust_{n}")).id for n in range(50)]
    ours = int(tokens * 0.9)
    for number in range(tokens):
        account = acme if number < ours else other
        rt.tokens.issue(owners[account.id], TokenDraft(name=f"t{number}",
                                                       expires_in_days=365))
    # a bulk load: straight through psycopg, without the app's statement deadline
    with psycopg.connect(libpq(database.url)) as connection:
        ids = [r[0] for r in connection.execute(
            "SELECT id FROM tokens WHERE account_id = %s ORDER BY name", (acme.id,))]
        for index, token_id in enumerate(ids):
            connection.execute(
                "UPDATE tokens SET identity_id = %s, workspace_id = %s WHERE id = %s",
                (identities[index % len(identities)] if index % 5 else None,
                 workspaces[index % len(workspaces)], token_id))
        # every token and hour `allowed`, and one refusal reason for 1 in 24 of them:
        # as many hours back from now as make about `rows` rows
        hours = max(1, round(rows / tokens / (1 + 1 / 24)))
        connection.execute("""
            INSERT INTO token_usage (token_id, hour, outcome, count)
            SELECT t.id, h.hour, 'allowed', 1 + abs(hashtext(t.id || h.hour::text)) %% 50
            FROM tokens t
            CROSS JOIN generate_series(%(start)s, %(end)s, interval '1 hour') AS h(hour)
            UNION ALL
            SELECT t.id, h.hour,
                   (%(reasons)s::text[])[1 + abs(hashtext(h.hour::text || t.id)) %% 3],
                   1 + abs(hashtext(t.id || h.hour::text || 'n')) %% 5
            FROM tokens t
            CROSS JOIN generate_series(%(start)s, %(end)s, interval '1 hour') AS h(hour)
            WHERE abs(hashtext(t.id || h.hour::text || 'r')) %% 24 = 0""", {
            "start": HOUR - timedelta(hours=hours - 1), "end": HOUR,
            "reasons": list(REASONS)})
        connection.execute("ANALYZE token_usage")
        connection.execute("ANALYZE tokens")
        written = connection.execute("SELECT count(*) FROM token_usage").fetchone()
        measured = connection.execute(
            "SELECT count(*) FROM token_usage u JOIN tokens t ON t.id = u.token_id "
            "WHERE t.account_id = %s", (acme.id,)).fetchone()
        assert written is not None and measured is not None
    return {"account": acme.id, "owner": owners[acme.id], "identity": identities[1],
            "rows": written[0],
            "rows_of_measured_account": measured[0], "tokens": tokens,
            "days_of_usage": round(hours / 24, 1),
            "seconds_to_seed": round(time.perf_counter() - started, 1)}


def timed(rt: Runtime, actor: Actor, rounds: int, identity_id: str | None = None,
          **params: str) -> dict[str, object]:
    window = replace(analytics.window(NOW, **params), identity_id=identity_id)
    samples, series, buckets = [], 0, 0
    for _ in range(rounds):
        start = time.perf_counter()
        with rt.database.reading() as session:
            found = analytics.verifications(session, actor, window)
        samples.append((time.perf_counter() - start) * 1000)
        series, buckets = len(found), sum(len(s.buckets) for s in found)
    return {"median_ms": round(statistics.median(samples), 1),
            "max_ms": round(max(samples), 1), "series": series, "buckets": buckets}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--keep", action="store_true",
                        help="keep the database (its name is printed) for EXPLAIN")
    parser.add_argument("--url", default=os.environ.get(
        "TALLYKEY_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    server = normalise_database_url(args.url)
    name = f"tallykey_bench_analytics_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = psycopg.connect(libpq(server), autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server).set(database=name).render_as_string(hide_password=False)
        database = Database(url)
        migrate.upgrade(database)
        with TemporaryDirectory() as tmp:
            rt = Runtime.build(Settings(database_url=url, data_dir=Path(tmp), region="eu1"),
                               FrozenClock(NOW))
            try:
                seeded = seed(rt, database, args.tokens, args.rows)
                actor = seeded.pop("owner")
                assert isinstance(actor, Actor)
                results = {}
                for group_by in analytics.GROUPS:
                    results[f"day_30d_{group_by}"] = timed(
                        rt, actor, args.rounds, interval="day", group_by=group_by,
                        since=(NOW - timedelta(days=29)).date().isoformat())
                for group_by in (analytics.OUTCOME, analytics.TOKEN):
                    results[f"hour_7d_{group_by}"] = timed(
                        rt, actor, args.rounds, interval="hour", group_by=group_by,
                        since=(NOW - timedelta(days=7)).isoformat())
                # the console's identity page: one identity's tokens, by outcome
                results["day_30d_one_identity"] = timed(
                    rt, actor, args.rounds, identity_id=str(seeded["identity"]),
                    interval="day", group_by="outcome")
            finally:
                rt.close()
        database.dispose()
        print(json.dumps({"database": "postgresql", **{k: v for k, v in seeded.items()
                                                       if k not in ("account",
                                                                    "identity")},
                          "results": results}, indent=2))
    finally:
        if args.keep:
            print(f"kept database {name}")
        else:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
