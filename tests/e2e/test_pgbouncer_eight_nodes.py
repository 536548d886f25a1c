"""Eight `tallykey serve` nodes (one worker each) behind one PgBouncer in transaction mode,
on a PostgreSQL cluster of the test's own: every node polls the feed through the pooler,
and several revocations, each through a different node while every node verifies the
tokens through `/auth/request`, are acknowledged by all eight, after which no node
accepts the revoked token. PostgreSQL sees only PgBouncer's pool, however many
connections the nodes open."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from ..pgbouncer import pgbouncer, pools, require_pgbouncer
from ..pgcluster import PostgresCluster, postgres_cluster, wait_until
from .conftest import Server, assert_no_secrets, free_port, server_env

pytestmark = [pytest.mark.postgres, pytest.mark.serial]

NODES = 8
#: PgBouncer's server connections for the one (database, user) pair of the nodes.
POOL_SIZE = 20
REVOKED = 4  # tokens revoked under traffic, each through another node
KEPT = 1  # a token nobody revokes: it must keep working everywhere
#: Eight nodes start at once on two cores (about 4 s of CPU each), on a loaded machine.
START_SECONDS = 300
#: Each client thread's pause after a request: steady traffic on every node, lean enough
#: for eight nodes and the test on two cores.
PACE_SECONDS = 0.005
NAMES = [f"node{number + 1}" for number in range(NODES)]


@dataclass
class Fleet:
    cluster: PostgresCluster
    through: str
    nodes: list[Server]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_pgbouncer()
    tmp = tmp_path_factory.mktemp("eight")
    with ExitStack() as stack:
        cluster = stack.enter_context(postgres_cluster())
        through = stack.enter_context(pgbouncer(cluster.url, pool_size=POOL_SIZE))
        seeder = Server(env=server_env(tmp, through), port=0, log_path=tmp / "seed.log")
        seeded = json.loads(seeder.cli("demo", "--seed-only", "--json").stdout)
        nodes = [Server(env=server_env(tmp, through, TALLYKEY_NODE_NAME=name),
                        port=free_port(), log_path=tmp / f"{name}.log", command=("serve",),
                        seeded=seeded) for name in NAMES]
        for node in nodes:
            stack.callback(assert_no_secrets, node)
            stack.callback(node.stop)
        with ThreadPoolExecutor(NODES) as starting:  # together, each given time to start
            list(starting.map(lambda node: node.start(timeout=START_SECONDS), nodes))
        yield Fleet(cluster, through, nodes)


class Traffic:
    """Every token to every node through `/auth/request`, one client thread per node,
    each request noting when it started: (start, node, token, status). Stops by itself
    after `limit` seconds at the latest."""

    def __init__(self, nodes: list[Server], tokens: list[str], limit: float = 90) -> None:
        self.nodes, self.tokens, self.limit = nodes, tokens, limit
        self.samples: list[tuple[float, int, int, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._hammer, args=(index,), daemon=True)
                         for index in range(len(nodes))]

    def _hammer(self, node: int) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(base_url=self.nodes[node].base_url, timeout=10) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                for index, token in enumerate(self.tokens):
                    started = time.monotonic()
                    status = client.get("/auth/request",
                                        headers={"Authorization": f"Bearer {token}"}
                                        ).status_code
                    self.samples.append((started, node, index, status))
                    time.sleep(PACE_SECONDS)

    def seen(self, node: int, token: int, after: float) -> bool:
        return any(s[1] == node and s[2] == token and s[0] > after
                   for s in reversed(self.samples))

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


class PoolWatch:
    """PgBouncer's pool of the nodes' database, sampled every 0.2 s while in use: the
    most client connections (the nodes'), server connections (PostgreSQL's) and the
    longest any client waited for a server connection."""

    def __init__(self, through: str) -> None:
        self.through = through
        self.clients = self.servers = self.waited = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        deadline = time.monotonic() + 300  # bounded, whatever happens
        while not self._stop.wait(0.2) and time.monotonic() < deadline:
            for pool in pools(self.through):
                if pool["database"] != "tallykey":
                    continue
                self.clients = max(self.clients, int(str(pool["cl_active"]))
                                   + int(str(pool["cl_waiting"])))
                self.servers = max(self.servers, sum(int(str(pool[key])) for key in (
                    "sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")))
                self.waited = max(self.waited, int(str(pool["maxwait"])))

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def _admin(node: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.seeded['admin']['token']}"}


def _revoke(node: Server, token_id: str) -> httpx.Response:
    """Revoke through `node`; a `503 store_unavailable` (a statement past its deadline
    on an overloaded machine: nothing changed) is tried again after its Retry-After, as
    its hint says."""
    for _ in range(3):
        answer = httpx.post(f"{node.base_url}/api/v1/tokens/{token_id}/revoke",
                            headers=_admin(node), timeout=30)
        if answer.status_code != 503:
            break
        time.sleep(float(answer.headers.get("retry-after", "2")))
    return answer


def _server_connections(cluster: PostgresCluster) -> int:
    """Backends on the nodes' database, but this one: what PgBouncer opened."""
    with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=tallykey",
                         autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchone()
    return int(row[0]) if row else 0


def test_revocations_through_different_nodes_hold_on_all_eight_once_answered(
        fleet: Fleet) -> None:
    nodes = fleet.nodes
    made = [httpx.post(f"{nodes[0].base_url}/api/v1/tokens", headers=_admin(nodes[0]),
                       json={"name": f"fleet {index}", "expires_in_days": 1}, timeout=30)
            for index in range(REVOKED + KEPT)]
    assert [answer.status_code for answer in made] == [201] * (REVOKED + KEPT)
    tokens = [answer.json() for answer in made]
    answers: list[tuple[int, float, httpx.Response]] = []
    most_connections = 0
    with PoolWatch(fleet.through) as watch, \
            Traffic(nodes, [token["token"] for token in tokens]) as traffic:
        began = time.monotonic()
        # every token accepted on every node first: cached everywhere, traffic flowing
        wait_until(lambda: all(traffic.seen(node, index, began) for node in range(NODES)
                               for index in range(len(tokens))), timeout=120, step=0.1)
        assert {s[3] for s in traffic.samples} == {204}, traffic.samples[:5]
        for index in range(REVOKED):
            by = nodes[(2 * index + 1) % NODES]  # node2, node4, node6, node8
            answer = _revoke(by, tokens[index]["id"])
            answers.append((index, time.monotonic(), answer))
            most_connections = max(most_connections, _server_connections(fleet.cluster))
        # requests of every token start on every node after the last answer
        last = answers[-1][1]
        wait_until(lambda: all(traffic.seen(node, index, last) for node in range(NODES)
                               for index in range(len(tokens))), timeout=120, step=0.1)
    for index, answered, answer in answers:
        assert answer.status_code == 200, answer.text
        propagation = answer.json()["propagation"]
        assert propagation["complete"], propagation
        assert sorted(propagation["confirmed"]) == NAMES, propagation
        later = [s for s in traffic.samples if s[2] == index and s[0] > answered]
        assert {s[1] for s in later} == set(range(NODES))
        accepted = [s for s in later if s[3] != 401]
        assert accepted == [], (tokens[index]["id"], accepted[:5])
    kept = [s[3] for s in traffic.samples if s[2] == REVOKED]
    assert kept and set(kept) == {204}
    # PostgreSQL saw PgBouncer's pool only, and no node waited a second for it
    assert most_connections <= POOL_SIZE
    assert 0 < watch.servers <= POOL_SIZE and watch.clients >= NODES, vars(watch)
    assert watch.waited == 0, vars(watch)


def test_postgresql_sees_only_the_pool_and_no_node_listens(fleet: Fleet) -> None:
    with psycopg.connect(f"host=127.0.0.1 port={fleet.cluster.port} user=postgres "
                         "dbname=tallykey", autocommit=True) as connection:
        listening = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tallykey-listener'").fetchone()
        leased = connection.execute(
            "SELECT count(DISTINCT label) FROM nodes WHERE lease_until > clock_timestamp()"
        ).fetchone()
    assert listening == (0,)
    assert leased == (NODES,)
    assert _server_connections(fleet.cluster) <= POOL_SIZE
    for node in fleet.nodes:
        health = httpx.get(f"{node.base_url}/healthz", timeout=10).json()
        assert health["status"] == "ok", (node.env["TALLYKEY_NODE_NAME"], health)


def test_the_node_logs_show_no_pooler_or_pool_errors(fleet: Fleet) -> None:
    for node in fleet.nodes:
        log = Path(node.log_path).read_text(errors="replace")
        for symptom in ("prepared statement", "unsupported startup parameter", "Traceback",
                        "QueuePool limit", "no more connections"):
            assert symptom not in log, (node.log_path, symptom)
