"""Imported keys (SPEC §16) on two nodes of one PostgreSQL: 1,000 keys in foreign formats,
imported through one node, verify on every node; revoked through the other node, each is
refused on every node at once and stays refused after the caches' TTL."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import Server, manage, running_cluster

pytestmark = pytest.mark.postgres

KEYS = 1_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("imports"), 2) as nodes:
        yield nodes


def foreign(number: int) -> str:
    style = number % 3
    if style == 0:
        return "legacy_live_" + secrets.token_urlsafe(24)
    if style == 1:
        return secrets.token_hex(24)
    return f"acme.{number}." + secrets.token_urlsafe(20)


def statuses(node: Server, keys: list[str]) -> list[int]:
    """Each key's answer on `node`, in order (four clients at once, as an integration's
    workers would send them)."""
    def part(start: int) -> list[int]:
        with httpx.Client(base_url=node.base_url, timeout=10) as client:
            return [client.get("/auth/request", headers={"Authorization": f"Bearer {key}"}
                               ).status_code for key in keys[start:start + 250]]

    with ThreadPoolExecutor(4) as pool:
        return [status for part_of in pool.map(part, range(0, len(keys), 250))
                for status in part_of]


def reasons(node: Server, keys: list[str]) -> set[str]:
    with httpx.Client(base_url=node.base_url, timeout=10) as client:
        return {client.get("/auth/request", headers={"Authorization": f"Bearer {key}"}
                           ).json()["reason"] for key in keys}


def test_a_thousand_imported_keys_verify_revoke_and_stay_revoked_on_every_node(
        cluster: list[Server]) -> None:
    first, second = cluster
    keys = [foreign(n) for n in range(KEYS)]
    body = {"keys": [{"key": key, "name": f"legacy {n}", "expires_in_days": 30}
                     for n, key in enumerate(keys)]}
    answer = manage(first, "POST", "/api/v1/tokens/import", json=body)
    assert answer.status_code == 200, answer.text
    made = answer.json()
    assert made["created"] == KEYS
    ids = [item["id"] for item in made["keys"]]
    for node in cluster:
        assert statuses(node, keys) == [204] * KEYS

    def revoke(token_id: str) -> int:
        return manage(second, "POST", f"/api/v1/tokens/{token_id}/revoke").status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(revoke, ids)) == {200}
    for node in cluster:
        assert statuses(node, keys) == [401] * KEYS
        assert reasons(node, keys[:50]) == {"revoked"}
    time.sleep(6)  # past every cache's TTL: the store says the same
    for node in cluster:
        assert statuses(node, keys) == [401] * KEYS
    again = manage(second, "POST", "/api/v1/tokens/import", json=body).json()
    assert again["existing"] == KEYS and [k["id"] for k in again["keys"]] == ids
    assert statuses(first, keys[:100]) == [401] * 100
