"""Three nodes (each with its notification thread) and two `tallykey worker` processes on
one PostgreSQL: every notice reaches a real SMTP server exactly once."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..notify.conftest import Recorder, SmtpServer
from .conftest import TALLYKEY, free_port, running_cluster

pytestmark = pytest.mark.postgres
TOKENS = 30


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer("127.0.0.1", free_port(), Recorder())
    server.start()
    yield server
    server.stop()


def test_notices_are_delivered_exactly_once_by_many_senders(
        tmp_path: Path, smtp: SmtpServer) -> None:
    with running_cluster(tmp_path, 3, TALLYKEY_SMTP_URL=smtp.url,
                         TALLYKEY_WORKER_INTERVAL="0.2") as nodes:
        workers = [subprocess.Popen([TALLYKEY, "worker", "--interval", "0.2"],
                                    env=nodes[0].env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(2)]
        try:
            admin = {"Authorization": f"Bearer {nodes[0].seeded['admin']['token']}"}
            made = []
            for number in range(TOKENS):
                node = nodes[number % 3]
                answer = httpx.post(f"{node.base_url}/api/v1/tokens", headers=admin,
                                    json={"name": f"fan-out {number}", "expires_in_days": 7})
                assert answer.status_code == 201
                made.append(answer.json()["name"])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                subjects = [str(r.message["Subject"]) for r in smtp.received]
                if sum(1 for s in subjects if "fan-out" in s) >= TOKENS:
                    break
                time.sleep(0.2)
            time.sleep(1.5)  # a duplicate, if any, would arrive now
        finally:
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=20)
    per_token = Counter(str(r.message["Subject"]) for r in smtp.received
                        if "fan-out" in str(r.message["Subject"]))
    assert len(per_token) == TOKENS, f"missing: {TOKENS - len(per_token)}"
    assert set(per_token.values()) == {1}, [s for s, n in per_token.items() if n > 1]
    assert all(r.rcpt_tos == ["admin@demo.example"] for r in smtp.received
               if "fan-out" in str(r.message["Subject"]))
