"""Archiving a workspace on a cluster: three nodes on one PostgreSQL; once the archive
answers, no node lets the workspace's tokens through (the guarantee of a revocation)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server, running_cluster
from .test_scale_out import admin, change_under_traffic, new_token

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    with running_cluster(tmp_path_factory.mktemp("ws-cluster"), 3) as nodes:
        yield nodes


def test_archiving_a_workspace_stops_its_tokens_on_every_node(cluster: list[Server]
                                                              ) -> None:
    first, second = cluster[0], cluster[1]
    made = httpx.post(f"{first.base_url}/api/v1/workspaces", headers=admin(first),
                      json={"slug": "branch", "name": "Branch"})
    assert made.status_code == 201, made.text
    pinned = new_token(first, kind="application", scopes=["employees:read"],
                       workspace="branch")
    elsewhere = new_token(first, kind="application", scopes=["employees:read"],
                          workspace="hq")
    traffic, answered, answer = change_under_traffic(
        cluster, pinned["token"], lambda: httpx.delete(
            f"{second.base_url}/api/v1/workspaces/branch", headers=admin(second)))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tokens_stopped"] == 1
    assert body["propagation"]["complete"]
    assert sorted(body["propagation"]["confirmed"]) == ["node1", "node2", "node3"]
    later = traffic.after(answered)
    assert {index for _, index, _ in later} == {0, 1, 2}
    assert all(status == 401 for *_, status in later), later[:5]
    for node in cluster:
        stopped = httpx.get(f"{node.base_url}/core/v3/info",
                            headers={"Authorization": f"Bearer {pinned['token']}"})
        assert stopped.status_code == 401 and "archived" in stopped.json()["message"]
        still = httpx.get(f"{node.base_url}/core/v3/info",
                          headers={"Authorization": f"Bearer {elsewhere['token']}"})
        assert still.status_code == 200
