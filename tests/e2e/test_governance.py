"""The inactivity policy end to end (SPEC §17): a running `tallykey serve` accepts a
token; the token is dated back past the account's `revoke_inactive_days` in the store;
one real `tallykey worker --once` revokes it (`revoke_reason: "inactive"`); the running
server then refuses it, told through the change feed like any revocation."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from tallykey.db.engine import Database
from tallykey.settings import normalise_database_url
from tallykey.tokens.models import Token

from .conftest import Server, manage, new_token, running_server


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    # the server's own embedded worker passes once at start, then leaves it to the CLI's
    with running_server(tmp_path, request.param, TALLYKEY_WORKER_INTERVAL="3600") as live:
        yield live


def store(server: Server) -> Database:
    url = server.env.get("TALLYKEY_DATABASE_URL") or \
        f"sqlite:///{server.env['TALLYKEY_DATA_DIR']}/tallykey.db"
    return Database(normalise_database_url(url))


def verify(server: Server, token: str) -> dict[str, object]:
    answer = httpx.post(f"{server.base_url}/api/v1/verify", json={"token": token}, timeout=10)
    return dict(answer.json())


def test_the_worker_revokes_a_token_unused_past_the_limit_and_the_server_refuses_it(
        served: Server) -> None:
    policy = manage(served, "PATCH", "/api/v1/account", json={"revoke_inactive_days": 30})
    assert policy.status_code == 200 and policy.json()["revoke_inactive_days"] == 30
    made = new_token(served, name="forgotten integration")
    assert verify(served, made["token"])["status"] == 200  # accepted, and cached

    long_ago = datetime.now(UTC) - timedelta(days=45)
    database = store(served)
    try:
        deadline = time.monotonic() + 20  # the use is recorded by the usage flush
        while manage(served, "GET", f"/api/v1/tokens/{made['id']}").json()[
                "last_used_at"] is None:
            assert time.monotonic() < deadline, "the use was never recorded"
            time.sleep(0.2)
        with database.transaction() as session:
            session.execute(update(Token).where(Token.id == made["id"]).values(
                created_at=long_ago, last_used_at=long_ago))
    finally:
        database.dispose()

    ran = json.loads(served.cli("worker", "--once").stdout)
    assert ran["revoked_inactive"] == 1
    shown = manage(served, "GET", f"/api/v1/tokens/{made['id']}").json()
    assert shown["status"] == "revoked" and shown["revoke_reason"] == "inactive"

    deadline = time.monotonic() + 10
    while (verdict := verify(served, made["token"]))["status"] == 200:
        assert time.monotonic() < deadline, "the running server still accepts the token"
        time.sleep(0.1)
    assert verdict["status"] == 401 and verdict["reason"] == "revoked"
    audit = manage(served, "GET", "/api/v1/audit",
                   params={"target_id": made["id"], "action": "token.revoked"}).json()
    assert [e["details"]["reason"] for e in audit["items"]] == ["inactive"]
    assert json.loads(served.cli("worker", "--once").stdout)["revoked_inactive"] == 0
