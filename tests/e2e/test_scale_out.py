"""Three nodes on one PostgreSQL: a change made through one node is in force on every node
for every request that starts after the change's answer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from ..conftest import _libpq
from .conftest import Server, running_cluster, within_one_minute

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), 3) as nodes:
        yield nodes


class Traffic:
    """Requests with one token to every node, each noting when it started and its status."""

    def __init__(self, nodes: list[Server], token: str, path: str = "/core/v3/info") -> None:
        self.nodes, self.token, self.path = nodes, token, path
        self.samples: list[tuple[float, int, int]] = []  # (start, node index, status)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hammer, args=(i,), daemon=True)
                         for i in range(len(nodes))]

    def _hammer(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.nodes[index].base_url, timeout=10) as client:
            deadline = time.monotonic() + 60  # bounded, whatever happens
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                status = client.get(self.path, headers=headers).status_code
                self.samples.append((started, index, status))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 30  # until every node has answered at least once
        while (len({index for _, index, _ in list(self.samples)}) < len(self.nodes)
               and time.monotonic() < deadline):
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def after(self, moment: float) -> list[tuple[float, int, int]]:
        return [s for s in self.samples if s[0] > moment]


def admin(node: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.seeded['admin']['token']}"}


def new_token(node: Server, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "cluster")
    body.setdefault("expires_in_days", 7)
    response = httpx.post(f"{node.base_url}/api/v1/tokens", json=body, headers=admin(node))
    assert response.status_code == 201, response.text
    return dict(response.json())


def change_under_traffic(nodes: list[Server], token: str,
                         change: Callable[[], httpx.Response]) -> tuple[Traffic, float,
                                                                        httpx.Response]:
    with Traffic(nodes, token) as traffic:
        assert {s[2] for s in traffic.samples} == {200}
        answer = change()
        answered = time.monotonic()
    return traffic, answered, answer


def test_revocation_holds_on_every_node_once_answered(cluster: list[Server]) -> None:
    made = new_token(cluster[0])
    traffic, answered, answer = change_under_traffic(
        cluster, made["token"], lambda: httpx.post(
            f"{cluster[0].base_url}/api/v1/tokens/{made['id']}/revoke", headers=admin(
                cluster[0])))
    assert answer.status_code == 200
    propagation = answer.json()["propagation"]
    assert propagation["complete"] and sorted(propagation["confirmed"]) == [
        "node1", "node2", "node3"]
    later = traffic.after(answered)
    assert {index for _, index, _ in later} == {0, 1, 2}
    assert all(status == 401 for *_, status in later), later[:5]


def test_user_deactivation_holds_on_every_node_once_answered(cluster: list[Server]) -> None:
    node = cluster[1]
    users = httpx.get(f"{node.base_url}/api/v1/users", headers=admin(node)).json()
    member = next(u for u in users if u["role"] == "member")
    token = node.seeded["member"]["token"]
    traffic, answered, answer = change_under_traffic(
        cluster, token, lambda: httpx.patch(f"{node.base_url}/api/v1/users/{member['id']}",
                                            json={"active": False}, headers=admin(node)))
    try:
        assert answer.status_code == 200
        assert "unconfirmed=0" in answer.headers["tallykey-propagation"]
        later = traffic.after(answered)
        assert later and all(status == 401 for *_, status in later)
    finally:
        httpx.patch(f"{node.base_url}/api/v1/users/{member['id']}", json={"active": True},
                    headers=admin(node))


def test_suspension_and_resumption_hold_on_every_node_once_answered(
        cluster: list[Server]) -> None:
    made = new_token(cluster[0])
    traffic, answered, answer = change_under_traffic(
        cluster, made["token"], lambda: httpx.post(
            f"{cluster[1].base_url}/api/v1/tokens/{made['id']}/suspend", headers=admin(
                cluster[1])))
    assert answer.status_code == 200, answer.text
    propagation = answer.json()["propagation"]
    assert propagation["complete"] and sorted(propagation["confirmed"]) == [
        "node1", "node2", "node3"]
    later = traffic.after(answered)
    assert {index for _, index, _ in later} == {0, 1, 2}
    assert all(status == 401 for *_, status in later), later[:5]
    refused = httpx.get(f"{cluster[2].base_url}/core/v3/info",
                        headers={"Authorization": f"Bearer {made['token']}"})
    assert refused.json()["error"] == "token_suspended"

    with Traffic(cluster, made["token"]) as traffic:
        resumed = httpx.post(f"{cluster[2].base_url}/api/v1/tokens/{made['id']}/resume",
                             headers=admin(cluster[2]))
        answered = time.monotonic()
    assert resumed.status_code == 200 and resumed.json()["propagation"]["complete"]
    later = traffic.after(answered)
    assert {index for _, index, _ in later} == {0, 1, 2}
    assert all(status == 200 for *_, status in later), later[:5]


def test_a_renewed_token_works_on_every_node_and_its_old_secret_stops_after_the_grace(
        cluster: list[Server]) -> None:
    made = new_token(cluster[0])
    answer = httpx.post(f"{cluster[0].base_url}/api/v1/tokens/{made['id']}/renew",
                        json={"expires_in_days": 30, "grace_seconds": 2},
                        headers=admin(cluster[0]))
    assert answer.status_code == 201, answer.text
    successor = answer.json()

    def statuses(token: str) -> list[int]:
        return [httpx.get(f"{node.base_url}/core/v3/info",
                          headers={"Authorization": f"Bearer {token}"}).status_code
                for node in cluster]

    assert statuses(made["token"]) == [200, 200, 200]  # within the grace
    assert statuses(successor["token"]) == [200, 200, 200]
    deadline = time.monotonic() + 15
    while statuses(made["token"]) != [401, 401, 401]:
        assert time.monotonic() < deadline, "the renewed token's secret still works"
        time.sleep(0.1)
    assert statuses(successor["token"]) == [200, 200, 200]


def test_allowlist_change_holds_on_every_node_once_answered(cluster: list[Server]) -> None:
    made = new_token(cluster[2])
    traffic, answered, answer = change_under_traffic(
        cluster, made["token"], lambda: httpx.patch(
            f"{cluster[2].base_url}/api/v1/tokens/{made['id']}",
            json={"ip_allowlist": ["203.0.113.0/24"]}, headers=admin(cluster[2])))
    assert answer.status_code == 200
    later = traffic.after(answered)
    assert later and all(status == 403 for *_, status in later)


def test_a_node_whose_listener_was_cut_still_stops_within_the_ttl(cluster: list[Server]
                                                                  ) -> None:
    made = new_token(cluster[0])
    headers = {"Authorization": f"Bearer {made['token']}"}
    for node in cluster:
        assert httpx.get(f"{node.base_url}/core/v3/info", headers=headers).status_code == 200
    database = cluster[0].env["TALLYKEY_DATABASE_URL"]
    with psycopg.connect(_libpq(database), autocommit=True) as connection:
        cut = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'tallykey-listener' AND datname = current_database()"
        ).fetchall()
    assert len(cut) == 3
    revoked_at = time.monotonic()
    response = httpx.post(f"{cluster[0].base_url}/api/v1/tokens/{made['id']}/revoke",
                          headers=admin(cluster[0]))
    assert response.status_code == 200
    for node in cluster:
        while httpx.get(f"{node.base_url}/core/v3/info", headers=headers).status_code == 200:
            assert time.monotonic() - revoked_at < 5.0, f"{node.base_url} still accepts"
            time.sleep(0.05)


def test_failed_attempts_are_limited_across_nodes(tmp_path_factory: pytest.TempPathFactory
                                                  ) -> None:
    with running_cluster(tmp_path_factory.mktemp("limited"), 2,
                         TALLYKEY_AUTH_FAIL_LIMIT="6") as nodes:
        bad = {"Authorization": "Bearer tlk_eu1_" + "A" * 61}

        def burst(attempt: int) -> list[httpx.Response]:
            # the limit counts per minute: a burst inside one, from a network of its own
            transport = httpx.HTTPTransport(local_address=f"127.0.{attempt}.1")
            with httpx.Client(transport=transport) as http:
                for _ in range(4):
                    for node in nodes:
                        http.get(f"{node.base_url}/core/v3/info", headers=bad)
                time.sleep(2.5)  # two heartbeats: every node has shared and learned the totals
                return [http.get(f"{node.base_url}/core/v3/info", headers=bad)
                        for node in nodes]

        for throttled in within_one_minute(burst):
            assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) > 0
        good = {"Authorization": f"Bearer {nodes[0].seeded['admin']['token']}"}
        other_ip = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        assert other_ip.get(f"{nodes[1].base_url}/core/v3/info", headers=good
                            ).status_code == 200
        other_ip.close()
