"""Plans across nodes (SPEC §16): three real server processes on one PostgreSQL (and one
Redis, so the nodes share rate-limit counts) of the test's own. A token on a plan of
100 requests per 60 s passes on every node; the plan is changed to 5 per 60 s; once the
PATCH answers `propagation.complete`, every node enforces the new limit: a burst through
all three nodes passes exactly 5 (a changed limit counts afresh, shared by the nodes
through Redis; see docs/deployment.md#plans)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..redisserver import RedisServer, running_redis
from .conftest import Server, manage, running_cluster

pytestmark = pytest.mark.postgres

WINDOW = 60


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    yield from running_redis()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory, redis: RedisServer
          ) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("plans"), 3,
                         TALLYKEY_REDIS_URL=redis.url, TALLYKEY_AUTH_FAIL_LIMIT="0") as live:
        yield live


def created(node: Server, path: str, **fields: Any) -> dict[str, Any]:
    made = manage(node, "POST", path, json=fields)
    assert made.status_code == 201, made.text
    return made.json()  # type: ignore[no-any-return]


def request(node: Server, token: str) -> httpx.Response:
    return httpx.get(f"{node.base_url}/auth/request", timeout=10,
                     headers={"Authorization": f"Bearer {token}"})


def wait_for_room_in_window(room: float) -> None:
    """Wait until at least `room` seconds are left in the current rate-limit window, so
    a burst is counted in one window (at most `room` seconds of waiting)."""
    while WINDOW - time.time() % WINDOW < room:
        time.sleep(0.2)


def test_a_plan_change_is_enforced_by_every_node_once_answered(nodes: list[Server]) -> None:
    plan = created(nodes[0], "/api/v1/plans", name="metered", rate_limits=[
        {"name": "default", "limit": 100, "per_seconds": WINDOW}])
    token = created(nodes[1], "/api/v1/tokens", name="on a plan", kind="application",
                    scopes=["employees:read"], expires_in_days=3, plan_id=plan["id"])
    assert token["plan_id"] == plan["id"]
    for node in nodes:  # every node caches the verdict under the old limit
        for _ in range(3):
            answer = request(node, token["token"])
            assert answer.status_code == 204, answer.text
            assert answer.headers["RateLimit-Limit"] == "100"
    patched = manage(nodes[2], "PATCH", f"/api/v1/plans/{plan['id']}", json={
        "rate_limits": [{"name": "default", "limit": 5, "per_seconds": WINDOW}]})
    assert patched.status_code == 200, patched.text
    propagation = patched.json()["propagation"]
    assert propagation["complete"] is True
    assert sorted(propagation["confirmed"]) == ["node1", "node2", "node3"]
    wait_for_room_in_window(20)
    began = time.time() // WINDOW
    answers = [request(nodes[i % 3], token["token"]) for i in range(15)]
    assert time.time() // WINDOW == began  # one window: the count below is exact
    passed = [a for a in answers if a.status_code == 204]
    assert len(passed) == 5, [a.status_code for a in answers]
    assert {a.headers["RateLimit-Limit"] for a in passed} == {"5"}
    refused = [a for a in answers if a.status_code != 204]
    assert {a.status_code for a in refused} == {429}
    assert {a.json()["reason"] for a in refused} == {"rate_limited"}
    for node in nodes:  # every node refuses now
        assert request(node, token["token"]).status_code == 429


def test_deleting_a_plan_with_detach_reaches_every_node(nodes: list[Server]) -> None:
    plan = created(nodes[0], "/api/v1/plans", name="tiny", rate_limits=[
        {"name": "default", "limit": 1, "per_seconds": 30 * 86_400}])
    token = created(nodes[0], "/api/v1/tokens", name="tiny", kind="application",
                    scopes=["employees:read"], expires_in_days=3, plan_id="tiny")
    statuses = [request(node, token["token"]).status_code for node in nodes]
    assert sorted(statuses) == [204, 429, 429]
    in_use = manage(nodes[1], "DELETE", f"/api/v1/plans/{plan['id']}")
    assert in_use.status_code == 409, in_use.text
    gone = manage(nodes[1], "DELETE", f"/api/v1/plans/{plan['id']}?detach=true")
    assert gone.status_code == 200, gone.text
    assert gone.json()["propagation"]["complete"] is True
    assert gone.json()["detached_tokens"] == [token["id"]]
    assert [request(node, token["token"]).status_code for node in nodes] == [204] * 3
