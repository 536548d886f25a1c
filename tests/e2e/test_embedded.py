"""The embedded verifier: `examples/protected_app.py` served by uvicorn on the same store
as the CLI; a revocation made with the CLI stops it too."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import Server, free_port, running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("embedded"), "sqlite") as server:
        yield server


@pytest.fixture(scope="module")
def example(store: Server) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.protected_app:app", "--port", str(port)],
        cwd=ROOT, env=store.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(base + "/reports", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_the_middleware_and_the_dependency_protect_the_app(store: Server, example: str
                                                           ) -> None:
    admin = {"Authorization": f"Bearer {store.seeded['admin']['token']}"}
    member = {"Authorization": f"Bearer {store.seeded['member']['token']}"}
    ok = httpx.get(example + "/reports", headers=admin)
    assert ok.status_code == 200 and ok.json()["account"] == "demo"
    assert ok.headers["tallykey-token-expires"]
    missing = httpx.get(example + "/reports")
    assert missing.status_code == 401 and missing.headers["www-authenticate"]
    assert httpx.get(example + "/reports", headers=member).status_code == 200
    export = httpx.post(example + "/reports/export", headers=member)
    assert export.status_code == 403 and export.json()["scope"] == "employees:write"
    assert export.json()["error"] == "insufficient_scope" and "detail" not in export.json()
    assert 'error="insufficient_scope"' in export.headers["www-authenticate"]
    assert httpx.post(example + "/reports/export", headers=admin).status_code == 200


def test_a_cli_revocation_stops_the_embedded_check(store: Server, example: str) -> None:
    made = store.cli("tokens", "create", "-a", "demo", "--user", "admin@demo.example",
                     "--name", "embedded", "--days", "7", "--json")
    import json

    token = json.loads(made.stdout)
    headers = {"Authorization": f"Bearer {token['token']}"}
    assert httpx.get(example + "/reports", headers=headers).status_code == 200
    store.cli("tokens", "revoke", token["id"])
    deadline = time.monotonic() + 2
    status = 200
    while time.monotonic() < deadline and status == 200:
        status = httpx.get(example + "/reports", headers=headers).status_code
        time.sleep(0.01)
    assert status == 401
