"""Imported keys (SPEC §16): one `POST /api/v1/tokens/import` of 10,000 keys on SQLite
(the real app in-process, JSON in and out), then the cache-hit time of an imported key
next to a native token's, in the same run and the same verifier. Prints one JSON object.

    .venv/bin/python bench/imports.py [--keys 10000] [--rounds 200000]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from starlette.testclient import TestClient

from tallykey.actor import Actor
from tallykey.auth.verifier import Verifier
from tallykey.clock import SystemClock
from tallykey.db import migrate
from tallykey.db.engine import Database
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

IP = "127.0.0.1"


def timed(call: object, rounds: int) -> dict[str, float]:
    samples = []
    clock = time.perf_counter_ns
    for _ in range(rounds):
        start = clock()
        call()  # type: ignore[operator]
        samples.append((clock() - start) / 1000)
    ordered = sorted(samples)
    return {"median_us": round(statistics.median(ordered), 2),
            "p99_us": round(ordered[int(len(ordered) * 0.99) - 1], 2), "n": len(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/tallykey.db"
        database = Database(url)
        migrate.upgrade(database)
        database.dispose()
        rt = Runtime.build(Settings(database_url=url, data_dir=Path(tmp), region="eu1"),
                           SystemClock())
        try:
            account = rt.accounts.create_account("acme", "Acme", "eu1")
            admin = rt.accounts.create_user(Actor.operator(account.id), "admin@acme.test",
                                            role="admin")
            actor = Actor(account.id, admin.id, "admin", admin.email, IP)
            manager = rt.tokens.issue(actor, TokenDraft(
                name="automation", expires_in_days=30,
                scopes=["tokens:manage", "employees:read"])).value
            keys = ["legacy_live_" + secrets.token_urlsafe(24) for _ in range(args.keys)]
            body = json.dumps({"keys": [{"key": key, "name": f"legacy {n}",
                                         "expires_in_days": 90, "scopes": ["employees:read"]}
                                        for n, key in enumerate(keys)]})
            with TestClient(create_app(rt)) as api:
                started = time.perf_counter()
                answer = api.post("/api/v1/tokens/import", content=body, headers={
                    "Authorization": f"Bearer {manager}", "Content-Type": "application/json"})
                seconds = time.perf_counter() - started
                assert answer.status_code == 200, answer.text[:500]
                assert answer.json()["created"] == args.keys
                started = time.perf_counter()
                again = api.post("/api/v1/tokens/import", content=body, headers={
                    "Authorization": f"Bearer {manager}", "Content-Type": "application/json"})
                repeat_seconds = time.perf_counter() - started
                assert again.json()["existing"] == args.keys
            verifier = Verifier(settings=rt.settings, database=rt.database,
                                background=False)
            native, imported = f"Bearer {manager}", f"Bearer {keys[0]}"
            for header in (native, imported):
                assert verifier.verify(header, IP, ("employees:read",)).allowed
            result = {
                "import": {"keys": args.keys, "body_bytes": len(body),
                           "seconds": round(seconds, 3),
                           "repeat_seconds": round(repeat_seconds, 3)},
                "cache_hit": {
                    "native": timed(lambda: verifier.verify(native, IP, ("employees:read",)),
                                    args.rounds),
                    "imported": timed(lambda: verifier.verify(imported, IP,
                                                              ("employees:read",)),
                                      args.rounds),
                },
            }
            verifier.close()
        finally:
            rt.close()
    print(json.dumps(result), file=sys.stdout)


if __name__ == "__main__":
    main()
