"""`Idempotency-Key` on the management API's create and rotate: one secret per key, the
first answer replayed to the same caller, a different request with the same key refused,
keys scoped to account and user, and the stored answer unreadable without the caller's
own credential."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.testclient import TestClient

from tallykey.accounts.permissions import SCOPES
from tallykey.notify.models import OutboxMessage
from tallykey.runtime import Runtime
from tallykey.server.app import create_app
from tallykey.tokens.idempotency import IdempotentRequest
from tallykey.tokens.models import Token, TokenSecret
from tallykey.tokens.requests import TokenDraft

from ..conftest import World
from ..e2e.conftest import leaked_tokens


@pytest.fixture
def api(rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(rt), base_url="http://testserver",
                    client=("127.0.0.1", 40000)) as client:
        yield client


def management_token(world: World, actor: Any) -> dict[str, str]:
    issued = world.rt.tokens.issue(actor, TokenDraft(
        name="automation", expires_in_days=30, scopes=sorted(SCOPES)))
    return {"Authorization": f"Bearer {issued.value}"}


def count(rt: Runtime, model: Any, *where: Any) -> int:
    with rt.database.reading() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_a_repeated_create_answers_the_same_token_and_issues_nothing(
        api: TestClient, world: World, rt: Runtime) -> None:
    headers = {**management_token(world, world.as_admin), "Idempotency-Key": "crm-1"}
    body = {"name": "CRM", "expires_in_days": 30, "scopes": ["employees:read"]}
    first = api.post("/api/v1/tokens", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    mails = count(rt, OutboxMessage)
    again = api.post("/api/v1/tokens", json=body, headers=headers)
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert count(rt, Token, Token.name == "CRM") == 1
    assert count(rt, OutboxMessage) == mails

    other = api.post("/api/v1/tokens", json={**body, "name": "CRM 2"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["error"] == "idempotency_key_reused"
    assert "different request" in other.json()["message"]
    assert count(rt, Token, Token.name == "CRM 2") == 0

    # the stored answer is sealed: no token in the table, only a ciphertext
    with rt.database.reading() as session:
        stored = session.scalars(select(IdempotentRequest)).all()
    dumped = " ".join(repr(vars(row)) for row in stored)
    assert first.json()["token"] not in dumped and not leaked_tokens(dumped)


def test_keys_are_scoped_to_the_user_and_the_account(
        api: TestClient, world: World, rt: Runtime) -> None:
    body = {"name": "Shared key", "expires_in_days": 7}
    acme = api.post("/api/v1/tokens", json=body, headers={
        **management_token(world, world.as_admin), "Idempotency-Key": "same"})
    globex = api.post("/api/v1/tokens", json=body, headers={
        **management_token(world, world.as_other_admin), "Idempotency-Key": "same"})
    assert acme.status_code == globex.status_code == 201
    assert acme.json()["id"] != globex.json()["id"]
    assert "idempotent-replayed" not in globex.headers
    # the same admin with another credential cannot read the first answer back
    second_token = management_token(world, world.as_admin)
    replay = api.post("/api/v1/tokens", json=body, headers={**second_token,
                                                             "Idempotency-Key": "same"})
    assert replay.status_code == 422 and "other credentials" in replay.json()["message"]
    assert count(rt, Token, Token.name == "Shared key") == 2


def test_a_failed_create_frees_its_key_and_bad_keys_are_refused(
        api: TestClient, world: World, rt: Runtime) -> None:
    headers = {**management_token(world, world.as_admin), "Idempotency-Key": "retry-me"}
    refused = api.post("/api/v1/tokens", json={"name": "x", "expires_in_days": 9999},
                       headers=headers)
    assert refused.status_code == 422 and refused.json()["field"] == "expires_at"
    fixed = api.post("/api/v1/tokens", json={"name": "x", "expires_in_days": 30},
                     headers=headers)
    assert fixed.status_code == 201
    empty = api.post("/api/v1/tokens", json={"name": "y", "expires_in_days": 30},
                     headers={**headers, "Idempotency-Key": " "})
    assert empty.status_code == 422 and "Idempotency-Key" in empty.json()["message"]
    assert count(rt, Token, Token.name == "y") == 0


def test_concurrent_repeats_create_one_token(api: TestClient, world: World,
                                             rt: Runtime) -> None:
    headers = {**management_token(world, world.as_admin), "Idempotency-Key": "race"}
    body = {"name": "Raced", "expires_in_days": 30}
    answers: list[Any] = []

    def send() -> None:
        answers.append(api.post("/api/v1/tokens", json=body, headers=headers))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(a.status_code for a in answers) == [201] * 4, [a.text for a in answers]
    assert len({a.json()["token"] for a in answers}) == 1
    assert count(rt, Token, Token.name == "Raced") == 1


def test_a_repeated_rotate_rotates_once(api: TestClient, world: World, rt: Runtime) -> None:
    headers = management_token(world, world.as_admin)
    made = api.post("/api/v1/tokens", json={"name": "Rotated", "expires_in_days": 30},
                    headers=headers).json()
    keyed = {**headers, "Idempotency-Key": "rotate-1"}
    first = api.post(f"/api/v1/tokens/{made['id']}/rotate", json={"grace_seconds": 60},
                     headers=keyed)
    again = api.post(f"/api/v1/tokens/{made['id']}/rotate", json={"grace_seconds": 60},
                     headers=keyed)
    assert first.status_code == again.status_code == 200
    assert first.json()["token"] == again.json()["token"] != made["token"]
    assert count(rt, TokenSecret, TokenSecret.token_id == made["id"]) == 2
    different = api.post(f"/api/v1/tokens/{made['id']}/rotate", json={"grace_seconds": 0},
                         headers=keyed)
    assert different.status_code == 422
    assert different.json()["error"] == "idempotency_key_reused"
