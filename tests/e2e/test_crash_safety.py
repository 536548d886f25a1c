"""Crash safety: `tallykey serve` is killed with SIGKILL, again and again, in the middle
of a mixed load of token creations, revocations and verifications; after every restart
the store is intact and every answer the server gave still holds.

- the store passes its integrity checks (SQLite `PRAGMA integrity_check` and
  `foreign_key_check`; on both backends: every secret has its token, every token has
  exactly one current secret and its creation in the audit trail, every revoked token
  its revocation) and `tallykey audit verify` finds the audit hash chains intact;
- every token whose creation was acknowledged (201) exists, and works unless a
  revocation was attempted;
- every acknowledged revocation (200) holds: the token is listed as revoked and refused
  on `/core/v3/info`.

The load runs in a thread against 127.0.0.1 only, bounded in requests and time.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from .conftest import Server, running_server

KILLS = 10
MAX_REQUESTS_PER_ROUND = 400
ROUND_SECONDS = 5.0

#: Each query counts rows that break an invariant; all must be 0.
CONSISTENCY = {
    "secret without its token": """
        SELECT count(*) FROM token_secrets s LEFT JOIN tokens t ON t.id = s.token_id
        WHERE t.id IS NULL""",
    "token without a secret": """
        SELECT count(*) FROM tokens t WHERE NOT EXISTS (
            SELECT 1 FROM token_secrets s WHERE s.token_id = t.id)""",
    "token with two current secrets": """
        SELECT count(*) FROM (SELECT token_id FROM token_secrets WHERE retires_at IS NULL
                              GROUP BY token_id HAVING count(*) > 1) doubled""",
    "token without its creation in the audit trail": """
        SELECT count(*) FROM tokens t WHERE NOT EXISTS (
            SELECT 1 FROM audit_events a WHERE a.target_id = t.id
            AND a.action = 'token.created')""",
    "revoked token without its revocation in the audit trail": """
        SELECT count(*) FROM tokens t WHERE t.revoked_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM audit_events a WHERE a.target_id = t.id
            AND a.action = 'token.revoked')""",
    "token of a missing account or owner": """
        SELECT count(*) FROM tokens t LEFT JOIN accounts a ON a.id = t.account_id
        LEFT JOIN users u ON u.id = t.owner_id
        WHERE a.id IS NULL OR (t.owner_id IS NOT NULL AND u.id IS NULL)""",
}


@dataclass
class Ledger:
    """What the server acknowledged, as the client saw it."""

    created: dict[str, str] = field(default_factory=dict)  # token id -> token
    revoked: set[str] = field(default_factory=set)
    revoke_attempted: set[str] = field(default_factory=set)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(server: Server, ledger: Ledger, stop: threading.Event, seed: int) -> None:
    """Creates, revokes and verifies until the server dies or the round is over."""
    chance = random.Random(seed)
    headers = {"Authorization": f"Bearer {server.seeded['admin']['token']}"}
    deadline = time.monotonic() + ROUND_SECONDS
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=5) as http:
        for _ in range(MAX_REQUESTS_PER_ROUND):
            if stop.is_set() or time.monotonic() > deadline:
                return
            roll = chance.random()
            try:
                with ledger.lock:
                    ledger.requests += 1
                    live = sorted(set(ledger.created) - ledger.revoke_attempted)
                if roll < 0.4 or not live:
                    answer = http.post("/api/v1/tokens", json={
                        "name": f"crash {chance.randrange(10**9)}", "expires_in_days": 7,
                        "scopes": ["employees:read"]})
                    if answer.status_code == 201:
                        with ledger.lock:
                            ledger.created[answer.json()["id"]] = answer.json()["token"]
                elif roll < 0.6:
                    victim = chance.choice(live)
                    with ledger.lock:
                        ledger.revoke_attempted.add(victim)
                    answer = http.post(f"/api/v1/tokens/{victim}/revoke", json={})
                    if answer.status_code == 200:
                        with ledger.lock:
                            ledger.revoked.add(victim)
                else:
                    token = ledger.created[chance.choice(live)]
                    http.get("/core/v3/info", headers={"Authorization": f"Bearer {token}"})
            except httpx.TransportError:
                return  # the server is gone: whatever was in flight was not acknowledged


def check_store(server: Server, backend: str) -> None:
    if backend == "sqlite":
        path = Path(server.env["TALLYKEY_DATA_DIR"]) / "tallykey.db"
        with sqlite3.connect(path) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
        url = f"sqlite:///{path}"
    else:
        url = server.env["TALLYKEY_DATABASE_URL"]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            broken = {name: connection.execute(text(query)).scalar_one()
                      for name, query in CONSISTENCY.items()}
    finally:
        engine.dispose()
    assert not any(broken.values()), broken


def check_acknowledged(server: Server, ledger: Ledger, fresh: set[str]) -> None:
    """Every acknowledged token is listed (revoked ones as revoked); revoked ones are
    refused; those created since the last restart and never revoked still work."""
    headers = {"Authorization": f"Bearer {server.seeded['admin']['token']}"}
    status: dict[str, str] = {}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=10) as http:
        cursor = None
        while True:
            page = http.get("/api/v1/tokens", params={"limit": 200, **(
                {"after": cursor} if cursor else {})}).json()
            status.update({t["id"]: t["status"] for t in page["items"]})
            if not (cursor := page["next_cursor"]):
                break
        lost = set(ledger.created) - set(status)
        assert not lost, f"acknowledged tokens lost: {sorted(lost)}"
        unrevoked = {t for t in ledger.revoked if status[t] != "revoked"}
        assert not unrevoked, f"acknowledged revocations undone: {sorted(unrevoked)}"
        for token_id in ledger.revoked | (fresh - ledger.revoke_attempted):
            answer = http.get("/core/v3/info", headers={
                "Authorization": f"Bearer {ledger.created[token_id]}"})
            expected = 401 if token_id in ledger.revoked else 200
            assert answer.status_code == expected, (token_id, answer.text)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def crashing_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with running_server(tmp_path, request.param) as server:
        yield server


def test_sigkill_under_load_loses_nothing_acknowledged(crashing_server: Server) -> None:
    server = crashing_server
    backend = "sqlite" if "TALLYKEY_DATABASE_URL" not in server.env else "postgresql"
    ledger = Ledger()
    chance = random.Random(7)
    for round_number in range(KILLS):
        known = set(ledger.created)
        stop = threading.Event()
        worker = threading.Thread(target=load, args=(server, ledger, stop, round_number))
        worker.start()
        time.sleep(chance.uniform(0.3, 1.5))
        assert server.process is not None and server.process.poll() is None
        server.process.kill()  # SIGKILL: no shutdown hook, no flush, no goodbye
        server.process.wait(timeout=10)
        stop.set()
        worker.join(timeout=30)
        assert not worker.is_alive()
        server.start()
        check_store(server, backend)
        server.cli("audit", "verify")  # the audit hash chains are intact
        check_acknowledged(server, ledger, set(ledger.created) - known)
    print(f"{backend}: {KILLS} kills, {ledger.requests} requests, {len(ledger.created)} "
          f"creations and {len(ledger.revoked)} revocations acknowledged, all intact")
    assert len(ledger.created) >= KILLS and ledger.revoked, (
        "the load did too little to prove anything")
