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


def hammer_both(nodes: list[Server], tokens: list[str], clients: int, each: int
                ) -> dict[int, int]:
    """`hammer`, the clients taking turns with the secrets in `tokens`."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(index: int) -> None:
        node, token = nodes[index % len(nodes)], tokens[index % len(tokens)]
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


def renew(node: Server, token: str) -> str:
    """Renew the application token `token` (grace one hour): the successor's secret."""
    admin = node.seeded["admin"]["token"]
    headers = {"Authorization": f"Bearer {admin}"}
    listed = httpx.get(f"{node.base_url}/api/v1/tokens", headers=headers,
                       params={"limit": 200}, timeout=10).json()["items"]
    token_id = next(item["id"] for item in listed if token.startswith(item["prefix"]))
    renewed = httpx.post(f"{node.base_url}/api/v1/tokens/{token_id}/renew", headers=headers,
                         json={"expires_in_days": 3, "grace_seconds": 3600}, timeout=10)
    assert renewed.status_code == 201, renewed.text
    return str(renewed.json()["token"])


def test_renewed_and_successor_secrets_share_one_balance_across_nodes(
        nodes: list[Server]) -> None:
    """Issue #25 (11): the renewed token's secret, in its grace, and its successor's spend
    one balance, whichever of three nodes they reach, however many at once."""
    token = issue(nodes[0], kind="application", scopes=["employees:read"],
                  credits={"remaining": 60})
    successor = renew(nodes[1], token)
    statuses = hammer_both(nodes, [token, successor], clients=18, each=8)
    assert statuses == {204: 60, 429: 18 * 8 - 60}


def test_a_renewal_does_not_restart_a_shared_window(nodes: list[Server]) -> None:
    """Issue #25 (11): a rate limit counted through Redis goes on counting the successor
    in the window of the token it renews."""
    token = issue(nodes[0], kind="application", scopes=["employees:read"],
                  rate_limits=[{"name": "default", "limit": 40,
                                "per_seconds": 30 * 86_400}])
    first = hammer(nodes, token, clients=6, each=5)
    assert first == {204: 30}
    successor = renew(nodes[2], token)
    statuses = hammer_both(nodes, [token, successor], clients=12, each=5)
    assert statuses == {204: 10, 429: 12 * 5 - 10}


def test_a_renewal_in_the_middle_of_spending_keeps_the_balance_exact(
        nodes: list[Server]) -> None:
    """The renewal lands while three nodes spend the old secret's credits: no spend is
    lost to the renewed token or counted twice (exactly the balance is admitted)."""
    token = issue(nodes[0], kind="application", scopes=["employees:read"],
                  credits={"remaining": 150})
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    started = threading.Event()
    secrets = [token]

    def client(index: int, secret: str) -> None:
        with httpx.Client(base_url=nodes[index % len(nodes)].base_url, timeout=10) as http:
            for _ in range(20):
                status = http.get("/auth/request",
                                  headers={"Authorization": f"Bearer {secret}"}).status_code
                with lock:
                    statuses[status] = statuses.get(status, 0) + 1
                    if statuses.get(204, 0) >= 30:
                        started.set()
    threads = [threading.Thread(target=client, args=(i, token)) for i in range(12)]
    for thread in threads:
        thread.start()
    assert started.wait(60)
    secrets.append(renew(nodes[1], token))
    late = [threading.Thread(target=client, args=(i, secrets[1])) for i in range(12)]
    for thread in late:
        thread.start()
    for thread in threads + late:
        thread.join(timeout=120)
    assert statuses == {204: 150, 429: 24 * 20 - 150}
