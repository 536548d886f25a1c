"""Three real server processes on one PostgreSQL and one Redis of the test's own: a rate
limit of 100 per 10 s hammered through `/auth/request` on every node by many clients
admits exactly 100; credits hammered the same way never go below zero."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ..redisserver import RedisServer, running_redis
from .conftest import Server, running_cluster

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    yield from running_redis()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
          ) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("limits"), 3,
                         TALLYKEY_REDIS_URL=redis.url, TALLYKEY_AUTH_FAIL_LIMIT="0") as live:
        yield live


def issue(node: Server, **fields: object) -> str:
    admin = node.seeded["admin"]["token"]
    made = httpx.post(f"{node.base_url}/api/v1/tokens", headers={
        "Authorization": f"Bearer {admin}"}, json={"name": "metered", "expires_in_days": 3,
                                                   **fields}, timeout=10)
    assert made.status_code == 201, made.text
    return str(made.json()["token"])


def hammer(nodes: list[Server], token: str, clients: int, each: int
           ) -> dict[int, int]:
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(index: int) -> None:
        node = nodes[index % len(nodes)]
        with httpx.Client(base_url=node.base_url, timeout=10) as http:
            for _ in range(each):
                status = http.get("/auth/request",
                                  headers={"Authorization": f"Bearer {token}"}).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return statuses


def test_a_limit_shared_by_three_nodes_admits_exactly_its_count(nodes: list[Server]) -> None:
    token = issue(nodes[0], rate_limits=[{"name": "default", "limit": 100,
                                          "per_seconds": 10}])
    while time.time() % 10 > 1:  # the whole run inside one 10-second window
        time.sleep(0.05)
    window = int(time.time() // 10)
    statuses = hammer(nodes, token, clients=24, each=20)
    assert int(time.time() // 10) == window, "the run straddled two windows"
    assert statuses == {204: 100, 429: 24 * 20 - 100}


def test_credits_hammered_through_three_nodes_never_go_below_zero(
        nodes: list[Server]) -> None:
    token = issue(nodes[1], credits={"remaining": 90})
    statuses = hammer(nodes, token, clients=18, each=10)
    assert statuses == {204: 90, 429: 18 * 10 - 90}
    answer = httpx.post(f"{nodes[2].base_url}/api/v1/verify", json={"token": token},
                        timeout=10).json()
    assert answer["error"] == "usage_exhausted"
