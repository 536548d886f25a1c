"""Identities across nodes (SPEC §16): three real server processes on one PostgreSQL (and
one Redis for rate limits) of the test's own. Two tokens of one identity, hammered
through `/auth/request` on every node, spend one pool of 50 credits: exactly 50 pass.
The identity's rate limit is one counter for all its tokens on all nodes, and a change
to the identity reaches every node before the PATCH answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..redisserver import RedisServer, running_redis
from .conftest import Server, manage, running_cluster

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    yield from running_redis()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
          ) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("identities"), 3,
                         TALLYKEY_REDIS_URL=redis.url, TALLYKEY_AUTH_FAIL_LIMIT="0") as live:
        yield live


def identity(node: Server, **fields: Any) -> dict[str, Any]:
    made = manage(node, "POST", "/api/v1/identities", json=fields)
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def token_of(node: Server, identity_id: str) -> str:
    made = manage(node, "POST", "/api/v1/tokens", json={
        "name": "of an identity", "kind": "application", "scopes": ["employees:read"],
        "expires_in_days": 3, "identity_id": identity_id})
    assert made.status_code == 201, made.text
    assert made.json()["identity_id"] == identity_id
    return str(made.json()["token"])


def hammer(nodes: list[Server], tokens: list[str], clients: int, each: int
           ) -> dict[int, int]:
    """`clients` threads, each on one node with one of `tokens` (taking turns), each
    sending `each` requests to `/auth/request`: the statuses counted."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(index: int) -> None:
        node, token = nodes[index % len(nodes)], tokens[index % len(tokens)]
        with httpx.Client(base_url=node.base_url, timeout=10) as http:
            for _ in range(each):
                answer = http.get("/auth/request",
                                  headers={"Authorization": f"Bearer {token}"})
                with lock:
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_two_tokens_of_one_identity_spend_one_pool_of_50_through_three_nodes(
        nodes: list[Server]) -> None:
    pool = identity(nodes[0], external_id="cust_pool", credits={"remaining": 50})
    tokens = [token_of(nodes[1], pool["id"]), token_of(nodes[2], pool["id"])]
    statuses = hammer(nodes, tokens, clients=18, each=10)
    assert statuses == {204: 50, 429: 18 * 10 - 50}
    shown = manage(nodes[2], "GET", f"/api/v1/identities/{pool['id']}").json()
    assert shown["credits"]["remaining"] == 0 and shown["tokens"] == 2
    refused = httpx.post(f"{nodes[0].base_url}/api/v1/verify", json={"token": tokens[0]},
                         timeout=10).json()
    assert refused["reason"] == "usage_exhausted"


def test_credits_added_to_the_identity_reach_every_node_before_the_answer(
        nodes: list[Server]) -> None:
    pool = identity(nodes[0], external_id="cust_topup", credits={"remaining": 0},
                    metadata={"plan": "pro"})
    tokens = [token_of(nodes[0], pool["id"]), token_of(nodes[0], pool["id"])]
    for node in nodes:  # every node caches the tokens' verdicts (and refuses them)
        for token in tokens:
            assert httpx.get(f"{node.base_url}/auth/request", timeout=10, headers={
                "Authorization": f"Bearer {token}"}).status_code == 429
    patched = manage(nodes[1], "PATCH", f"/api/v1/identities/{pool['id']}",
                     json={"credits": {"remaining": 6}, "metadata": {"plan": "max"}})
    assert patched.status_code == 200, patched.text
    propagation = patched.json()["propagation"]
    assert propagation["complete"] is True
    assert sorted(propagation["confirmed"]) == ["node1", "node2", "node3"]
    answers = [httpx.post(f"{node.base_url}/api/v1/verify", json={"token": token},
                          timeout=10).json() for node in nodes for token in tokens]
    assert [a["allowed"] for a in answers] == [True] * 6
    assert {a["identity"]["metadata"]["plan"] for a in answers} == {"max"}
    assert sorted(a["identity_credits_remaining"] for a in answers) == [0, 1, 2, 3, 4, 5]


def test_an_identity_rate_limit_is_one_counter_for_its_tokens_on_all_nodes(
        nodes: list[Server]) -> None:
    limited = identity(nodes[0], external_id="cust_rate", rate_limits=[
        {"name": "default", "limit": 40, "per_seconds": 30 * 86_400}])
    tokens = [token_of(nodes[0], limited["id"]), token_of(nodes[1], limited["id"])]
    started = time.time()
    statuses = hammer(nodes, tokens, clients=12, each=6)
    assert statuses == {204: 40, 429: 12 * 6 - 40}, time.time() - started
    answer = httpx.get(f"{nodes[2].base_url}/auth/request", timeout=10,
                       headers={"Authorization": f"Bearer {tokens[1]}"})
    assert answer.status_code == 429
    assert "identity" in answer.json()["message"]
