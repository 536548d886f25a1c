"""First run on a store shared by several nodes: of the real `tallykey serve` processes
started together on one empty store, exactly one prints the one-time set-up link; the
others say that set-up is pending and where the link is. `--new-setup-link` replaces a
lost link (the old one stops working). `claim_link` under concurrent callers issues
one link."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from threading import Barrier

import httpx
import pytest

from tallykey.accounts import bootstrap
from tallykey.runtime import Runtime

from .conftest import fresh_postgres_database
from .e2e.conftest import Server, free_port, server_env

LINK = re.compile(r"http://\S+(/console/setup/[A-Za-z0-9_-]+)")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    with ExitStack() as stack:
        url = (stack.enter_context(fresh_postgres_database())
               if request.param == "postgresql" else None)
        env = server_env(tmp_path, url)
        Server(env=env, port=0, log_path=tmp_path / "migrate.log").cli("migrate")
        yield env


def test_only_one_of_the_nodes_started_together_prints_the_link(
        store: dict[str, str], tmp_path: Path) -> None:
    nodes = [Server(env=store, port=free_port(), log_path=tmp_path / f"node{n}.log",
                    command=("serve",)) for n in range(3)]
    with ExitStack() as stack:
        for node in nodes:
            stack.callback(node.stop)
        with ThreadPoolExecutor(len(nodes)) as pool:
            list(pool.map(Server.start, nodes))
        logs = [node.log_path.read_text() for node in nodes]
        links = [found.group(1) for log in logs if (found := LINK.search(log))]
        assert len(links) == 1, logs
        pending = [log for log in logs if "set-up is pending" in log]
        assert len(pending) == 2, logs
        for log in pending:
            assert "/console/setup/" not in log and "--new-setup-link" in log
        assert httpx.get(nodes[0].base_url + links[0], timeout=10).status_code == 200

        replacing = Server(env=store, port=free_port(), log_path=tmp_path / "new.log",
                           command=("serve",), serve_args=("--new-setup-link",))
        stack.callback(replacing.stop)
        replacing.start()
        found = LINK.search(replacing.log_path.read_text())
        assert found and found.group(1) != links[0]
        assert httpx.get(nodes[1].base_url + links[0], timeout=10).status_code == 410
        assert httpx.get(nodes[1].base_url + found.group(1), timeout=10).status_code == 200


def test_claim_link_issues_one_link_to_concurrent_callers(rt: Runtime) -> None:
    callers = 6
    barrier = Barrier(callers)

    def claim(_: int) -> bootstrap.FirstRun | None:
        barrier.wait()
        return bootstrap.claim_link(rt.accounts, "http://node")

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(claim, range(callers)))
    assert all(answer is not None for answer in answers)
    printed = [a.link for a in answers if a is not None and a.link]
    assert len(printed) == 1
    key = printed[0].rsplit("/", 1)[1]
    assert bootstrap.link_is_valid(rt.accounts, key)
    later = bootstrap.claim_link(rt.accounts, "http://node")
    assert later is not None and later.link is None
    assert later.expires_at - later.issued_at == bootstrap.LINK_LIFETIME
