"""Many nodes on one PostgreSQL: for each cluster size, `tallykey demo --serve-only`
nodes on one database of a PostgreSQL cluster of the bench's own (tests/pgcluster.py:
`initdb` on a free port, `max_connections = 200`, removed afterwards; so other users of
the machine's server neither count nor run out of connections), first directly, then
through PgBouncer in transaction mode (Debian's `pgbouncer`; left out when it is not
installed).

Per size: the revoke call's time until it is acknowledged by every node (p50/p99 over N
revocations of freshly verified tokens, each through the next node; every answer must be
`complete`), the PostgreSQL connections of the bench database (pg_stat_activity, most
seen), feed reads per second (index and sequential scans of `verdict_changes` over an
idle window, from pg_stat_user_tables) and RSS per node (the node's process tree).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import _libpq  # noqa: E402
from tests.e2e.conftest import Server, free_port, server_env  # noqa: E402
from tests.pgbouncer import pgbouncer, pgbouncer_binary  # noqa: E402
from tests.pgcluster import postgres_cluster  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and its descendants (MB), from /proc."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines()
                          if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return round(total / 1024, 1)


class Watch:
    """The bench database seen directly: its connections and feed reads."""

    def __init__(self, direct: str) -> None:
        self.connection = psycopg.connect(_libpq(direct), autocommit=True)
        self.most = 0

    def connections(self) -> int:
        row = self.connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchone()
        count = int(row[0]) if row else 0
        self.most = max(self.most, count)
        return count

    def feed_scans(self) -> int:
        self.connection.execute("SELECT pg_stat_clear_snapshot()")
        row = self.connection.execute(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'verdict_changes'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        self.connection.close()


@contextmanager
def cluster(tmp: Path, direct: str, through: str, size: int) -> Iterator[list[Server]]:
    with ExitStack() as stack:
        seeder = Server(env=server_env(tmp, direct), port=0, log_path=tmp / "seed.log")
        seeded = json.loads(seeder.cli("demo", "--seed-only", "--json").stdout)
        servers = []
        for number in range(size):
            server = Server(env=server_env(tmp, through, TALLYKEY_NODE_NAME=f"node{number + 1}",
                                           TALLYKEY_PROPAGATION_TIMEOUT="10"),
                            port=free_port(), log_path=tmp / f"node{number + 1}.log")
            server.seeded = seeded
            stack.callback(server.stop)
            server.start()
            servers.append(server)
        yield servers


def measure(direct: str, through: str, size: int, revokes: int, window: float) -> dict[str, Any]:
    watch = Watch(direct)
    with tempfile.TemporaryDirectory() as directory, \
            cluster(Path(directory), direct, through, size) as nodes:
        admin = {"Authorization": f"Bearer {nodes[0].seeded['admin']['token']}"}
        clients = [httpx.Client(base_url=node.base_url, timeout=30) for node in nodes]
        try:
            times, incomplete = [], 0
            for round_ in range(revokes):
                made = clients[0].post("/api/v1/tokens", headers=admin, json={
                    "name": f"scale {round_}", "expires_in_days": 1})
                made.raise_for_status()
                bearer = {"Authorization": f"Bearer {made.json()['token']}"}
                for client in clients:  # cached on every node
                    assert client.get("/core/v3/info", headers=bearer).status_code == 200
                watch.connections()
                by = clients[round_ % size]
                began = time.perf_counter()
                answer = by.post(f"/api/v1/tokens/{made.json()['id']}/revoke", headers=admin)
                times.append((time.perf_counter() - began) * 1000)
                answer.raise_for_status()
                incomplete += not answer.json()["propagation"]["complete"]
                for client in clients:
                    assert client.get("/core/v3/info", headers=bearer).status_code == 401
                watch.connections()
            before, started = watch.feed_scans(), time.monotonic()
            while time.monotonic() - started < window:
                watch.connections()
                time.sleep(0.2)
            time.sleep(1.1)  # backends flush their statistics at most once a second
            reads = (watch.feed_scans() - before) / (time.monotonic() - started)
            idle = watch.connections()
            rss = [tree_rss_mb(node.process.pid) for node in nodes if node.process]
        finally:
            for client in clients:
                client.close()
            most = watch.most
            watch.close()
    return {"nodes": size, "revokes": revokes, "incomplete": incomplete,
            "revoke_p50_ms": round(statistics.median(times), 1),
            "revoke_p99_ms": round(percentile(times, 0.99), 1),
            "pg_connections_most": most, "pg_connections_idle": idle,
            "pg_connections_per_node": round(most / size, 1),
            "feed_reads_per_s": round(reads, 1),
            "feed_reads_per_s_per_node": round(reads / size, 1),
            "rss_mb_per_node": round(statistics.mean(rss), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1,4,16", help="cluster sizes, comma-separated")
    parser.add_argument("--revokes", type=int, default=20, help="revocations per size")
    parser.add_argument("--window", type=float, default=5.0,
                        help="seconds of the idle window that counts feed reads")
    parser.add_argument("--no-pgbouncer", action="store_true")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[str, Any] = {"direct": [], "pgbouncer": []}
    for size in sizes:
        with postgres_cluster() as server:
            results["direct"].append(measure(server.url, server.url, size, args.revokes,
                                             args.window))
    if not args.no_pgbouncer and pgbouncer_binary():
        for size in sizes:
            with postgres_cluster() as server, pgbouncer(server.url) as through:
                results["pgbouncer"].append(measure(server.url, through, size, args.revokes,
                                                    args.window))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
