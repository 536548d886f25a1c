"""Containment on three real nodes sharing one PostgreSQL (SPEC §17): with `contain:
suspend`, a token used from a burst of new networks (behind the trusted proxy, by
`X-Forwarded-For`) is suspended by the node whose flush raised the alert; once that
suspension is acknowledged by every node, no node accepts a request with the token; an
administrator resumes it from the token's console page, and it works again everywhere."""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from ..conftest import _libpq
from .conftest import Server, running_cluster

pytestmark = pytest.mark.postgres

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BASELINE = "198.51.100.7"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    # Every test client connects from 127.0.0.1: it plays the trusted proxy.
    with running_cluster(tmp_path_factory.mktemp("contain"), 3,
                         TALLYKEY_TRUSTED_PROXIES="127.0.0.1/32") as nodes:
        yield nodes


def admin(node: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.seeded['admin']['token']}"}


class Traffic:
    """`/auth/request` with one token on every node, from addresses `source()` picks;
    each request notes when it started (monotonic), the node and the status."""

    def __init__(self, nodes: list[Server], token: str) -> None:
        self.nodes, self.token = nodes, token
        self.samples: list[tuple[float, int, int]] = []
        self.addresses = itertools.cycle([BASELINE])
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hammer, args=(i,), daemon=True)
                         for i in range(len(nodes))]

    def source(self) -> str:
        with self.lock:
            return next(self.addresses)

    def _hammer(self, index: int) -> None:
        with httpx.Client(base_url=self.nodes[index].base_url, timeout=10) as client:
            deadline = time.monotonic() + 90  # bounded, whatever happens
            while not self._stop.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                status = client.get("/auth/request", headers={
                    "Authorization": f"Bearer {self.token}",
                    "X-Forwarded-For": self.source()}).status_code
                self.samples.append((started, index, status))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def after(self, moment: float) -> list[tuple[float, int, int]]:
        return [s for s in list(self.samples) if s[0] > moment]


def audit_entry(node: Server, token_id: str, action: str) -> dict[str, Any] | None:
    with psycopg.connect(_libpq(node.env["TALLYKEY_DATABASE_URL"])) as connection:
        row = connection.execute(
            "SELECT actor_type, details FROM audit_events WHERE target_id = %s "
            "AND action = %s ORDER BY id DESC LIMIT 1", (token_id, action)).fetchone()
    return None if row is None else {"actor_type": row[0], **row[1]}


def wait_for(what: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_a_burst_of_new_networks_is_contained_on_every_node_and_resumed_in_the_console(
        cluster: list[Server]) -> None:
    policy = httpx.patch(f"{cluster[0].base_url}/api/v1/account", json={"contain": "suspend"},
                         headers=admin(cluster[0]))
    assert policy.status_code == 200 and policy.json()["contain"] == "suspend"
    made = httpx.post(f"{cluster[1].base_url}/api/v1/tokens", headers=admin(cluster[1]),
                      json={"name": "crm sync", "expires_in_days": 7,
                            "scopes": ["employees:read"]})
    assert made.status_code == 201, made.text
    token, token_id = made.json()["token"], made.json()["id"]
    with Traffic(cluster, token) as traffic:
        time.sleep(2.5)  # the baseline network, written by every node's flushes
        baseline = list(traffic.samples)
        assert {index for _, index, _ in baseline} == {0, 1, 2}
        assert {status for *_, status in baseline} == {204}
        burst = [f"203.0.{n}.9" for n in range(100, 140)]
        with traffic.lock:
            traffic.addresses = itertools.cycle(burst)
        contained = wait_for(lambda: audit_entry(cluster[0], token_id, "token.contained"))
        acknowledged = time.monotonic()  # the suspension was acknowledged before this
        time.sleep(1.0)
    assert contained["actor_type"] == "system" and contained["alert"] == "new_network"
    assert contained["complete"] is True
    assert sorted(contained["confirmed"]) == ["node1", "node2", "node3"]
    suspended = audit_entry(cluster[0], token_id, "token.suspended")
    assert suspended is not None and suspended["actor_type"] == "system"
    assert suspended["reason"] == "contained"
    later = traffic.after(acknowledged)
    assert {index for _, index, _ in later} == {0, 1, 2}
    assert all(status == 401 for *_, status in later), later[:5]
    for node in cluster:  # and from the old network too
        refused = httpx.get(f"{node.base_url}/auth/request", headers={
            "Authorization": f"Bearer {token}", "X-Forwarded-For": BASELINE})
        assert refused.status_code == 401
        assert refused.headers["tallykey-reason"] == "suspended"
    shown = httpx.get(f"{cluster[2].base_url}/api/v1/tokens/{token_id}",
                      headers=admin(cluster[2])).json()
    assert shown["status"] == "suspended"

    # The administrator resumes it from the token's console page (the mail's link).
    with httpx.Client(base_url=cluster[2].base_url, timeout=10) as browser:
        login = browser.get("/console/login")
        signed = browser.post("/console/login", data={
            "csrf_token": CSRF.search(login.text).group(1),  # type: ignore[union-attr]
            "email": cluster[2].seeded["admin"]["email"],
            "password": cluster[2].seeded["admin"]["password"], "next": "/console/tokens"})
        assert signed.status_code == 303, signed.text
        page = browser.get(f"/console/tokens/{token_id}")
        assert page.status_code == 200 and "tallykey containment" in page.text
        assert f"/console/tokens/{token_id}/resume" in page.text
        resumed = browser.post(f"/console/tokens/{token_id}/resume", data={
            "csrf_token": CSRF.search(page.text).group(1)})  # type: ignore[union-attr]
        assert resumed.status_code == 303
        assert "nodes=3%2F3" in resumed.headers["location"], resumed.headers["location"]
    for node in cluster:  # a network it was seen from: accepted again on every node
        again = httpx.get(f"{node.base_url}/auth/request", headers={
            "Authorization": f"Bearer {token}", "X-Forwarded-For": BASELINE})
        assert again.status_code == 204
    resumed_entry = audit_entry(cluster[0], token_id, "token.resumed")
    assert resumed_entry is not None and resumed_entry["actor_type"] == "user"
    with psycopg.connect(_libpq(cluster[0].env["TALLYKEY_DATABASE_URL"])) as connection:
        mails = connection.execute(
            "SELECT recipient, body FROM outbox_messages WHERE event = 'token.contained' "
            "AND channel = 'email'").fetchall()
    assert cluster[0].seeded["admin"]["email"] in [recipient for recipient, _ in mails]
    assert "resume the token" in mails[0][1] and token not in mails[0][1]
