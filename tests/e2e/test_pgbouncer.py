"""Three nodes through a real PgBouncer in transaction mode (where LISTEN does not reach
the node, prepared statements and session settings do not survive a statement): the
pooler is detected, the feed is polled, and a revocation under traffic still holds on
every node once answered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import psycopg
import pytest

from tallykey.db.engine import Database

from ..conftest import _libpq, fresh_postgres_database
from ..pgbouncer import pgbouncer, require_pgbouncer
from .conftest import Server, assert_no_secrets, free_port, server_env
from .test_scale_out import admin, change_under_traffic, new_token

pytestmark = [pytest.mark.postgres, pytest.mark.serial]


class Bounced:
    def __init__(self, direct: str, through: str, servers: list[Server]) -> None:
        self.direct, self.through, self.servers = direct, through, servers


@pytest.fixture(scope="module")
def bounced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bounced]:
    require_pgbouncer()
    tmp = tmp_path_factory.mktemp("pgbouncer")
    with ExitStack() as stack:
        direct = stack.enter_context(fresh_postgres_database())
        through = stack.enter_context(pgbouncer(direct))
        seeder = Server(env=server_env(tmp, through), port=0, log_path=tmp / "seed.log")
        seeded = json.loads(seeder.cli("demo", "--seed-only", "--json").stdout)
        servers = []
        for number in range(3):
            server = Server(env=server_env(tmp, through, TALLYKEY_NODE_NAME=f"node{number + 1}"),
                            port=free_port(), log_path=tmp / f"node{number + 1}.log")
            server.seeded = seeded
            server.start()
            stack.callback(assert_no_secrets, server)
            stack.callback(server.stop)
            servers.append(server)
        yield Bounced(direct, through, servers)


def test_the_pooler_is_detected_and_the_direct_server_is_not(bounced: Bounced) -> None:
    through, direct = Database(bounced.through), Database(bounced.direct)
    try:
        assert through.pooled and not direct.pooled
        with through.reading() as session:  # more than psycopg's prepare threshold
            for _ in range(12):
                session.connection().exec_driver_sql("SELECT 1")
    finally:
        through.dispose()
        direct.dispose()


def test_a_pooler_that_drops_the_options_parameter_is_detected_too(bounced: Bounced) -> None:
    with pgbouncer(bounced.direct, ignore_options=True) as through:
        database = Database(through)
        try:
            assert database.pooled
            with database.reading() as session:
                assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1
        finally:
            database.dispose()
    for pooler, pooled in (("none", False), ("transaction", True)):
        configured = Database(bounced.direct, pooler=pooler)
        assert configured.pooled is pooled
        configured.dispose()


def test_no_node_listens_and_misses_load_through_the_pooler(bounced: Bounced) -> None:
    with psycopg.connect(_libpq(bounced.direct), autocommit=True) as connection:
        listening = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tallykey-listener'").fetchone()
    assert listening == (0,)
    for _ in range(4):  # cache misses on every node: each a fresh lookup statement
        token = new_token(bounced.servers[0])["token"]
        for server in bounced.servers:
            answer = httpx.get(f"{server.base_url}/core/v3/info",
                               headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert answer.status_code == 200, answer.text


def test_a_revocation_under_traffic_holds_on_every_node_once_answered(
        bounced: Bounced) -> None:
    nodes = bounced.servers
    made = new_token(nodes[0])
    traffic, answered, answer = change_under_traffic(
        nodes, made["token"], lambda: httpx.post(
            f"{nodes[1].base_url}/api/v1/tokens/{made['id']}/revoke",
            headers=admin(nodes[1]), timeout=30))
    assert answer.status_code == 200, answer.text
    propagation = answer.json()["propagation"]
    assert propagation["complete"] and sorted(propagation["confirmed"]) == [
        "node1", "node2", "node3"]
    later = traffic.after(answered)
    assert {index for _, index, _ in later} == {0, 1, 2}
    accepted = [sample for sample in later if sample[2] != 401]
    assert accepted == [], accepted[:5]


def test_the_node_logs_show_no_pooler_errors(bounced: Bounced) -> None:
    for server in bounced.servers:
        log = Path(server.log_path).read_text(errors="replace")
        for symptom in ("prepared statement", "unsupported startup parameter",
                        "Traceback"):
            assert symptom not in log, (server.log_path, symptom)
