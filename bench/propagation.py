"""Time from a revocation's commit to the last of three nodes refusing the token.

Three `tallykey serve` nodes on one PostgreSQL (TALLYKEY_TEST_DATABASE_URL or the local
server; a database of its own, dropped afterwards), propagation acknowledgement turned off
(TALLYKEY_PROPAGATION_TIMEOUT=0) so the raw push is measured. For each of N tokens: warm
every node's cache, revoke through node 1, and poll all nodes until each refuses.

"after_commit" runs from the commit, as seen by a LISTEN connection of the benchmark's own
(PostgreSQL delivers NOTIFY at commit; the nodes hear the same notification), to the last
node's first refusal. "after_answer" runs from the revoke call's answer. Prints one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import _libpq  # noqa: E402
from tests.e2e.conftest import Server, running_cluster  # noqa: E402


def first_refusal(client: httpx.Client, headers: dict[str, str], deadline: float) -> float:
    while time.time() < deadline:
        if client.get("/core/v3/info", headers=headers).status_code == 401:
            return time.time()
    raise TimeoutError("a node still accepts a revoked token")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


class CommitWatcher:
    """Notes the wall-clock time of every change notification (= every commit)."""

    def __init__(self, database_url: str) -> None:
        self.times: list[float] = []
        self._connection = psycopg.connect(_libpq(database_url), autocommit=True)
        self._connection.execute("LISTEN tallykey_changes")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in self._connection.notifies(timeout=0.2):
                self.times.append(time.time())

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._connection.close()


def measure(nodes: list[Server], rounds: int) -> dict[str, object]:
    admin = {"Authorization": f"Bearer {nodes[0].seeded['admin']['token']}"}
    watcher = CommitWatcher(nodes[0].env["TALLYKEY_DATABASE_URL"])
    clients = [httpx.Client(base_url=node.base_url, timeout=10) for node in nodes]
    from_answer, from_commit = [], []
    with ThreadPoolExecutor(len(nodes)) as pool:
        for number in range(rounds):
            made = clients[0].post("/api/v1/tokens", headers=admin, json={
                "name": f"propagation {number}", "expires_in_days": 1}).json()
            headers = {"Authorization": f"Bearer {made['token']}"}
            for client in clients:
                assert client.get("/core/v3/info", headers=headers).status_code == 200
            seen = len(watcher.times)
            clients[0].post(f"/api/v1/tokens/{made['id']}/revoke", headers=admin)
            answered = time.time()
            refused = list(pool.map(first_refusal, clients, [headers] * len(clients),
                                    [answered + 10] * len(clients)))
            while len(watcher.times) == seen:
                time.sleep(0.001)
            from_answer.append((max(refused) - answered) * 1000)
            from_commit.append((max(refused) - watcher.times[seen]) * 1000)
    for client in clients:
        client.close()
    watcher.close()

    def stats(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(statistics.median(values), 2),
                "p99_ms": round(percentile(values, 0.99), 2),
                "max_ms": round(max(values), 2)}

    return {"nodes": len(nodes), "revocations": rounds,
            "after_commit": stats(from_commit), "after_answer": stats(from_answer)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_cluster(
            Path(tmp), 3, TALLYKEY_PROPAGATION_TIMEOUT="0") as nodes:
        print(json.dumps(measure(nodes, args.rounds)))


if __name__ == "__main__":
    main()
