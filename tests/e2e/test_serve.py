"""`tallykey serve --workers N`: several processes on one store, each verifying."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .conftest import TALLYKEY, free_port, server_env


@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_serve_with_two_workers(tmp_path: Path, server: str) -> None:
    """Both HTTP servers: two workers verify, revocation reaches both, /auth/request
    answers, and SIGTERM stops them."""
    env = server_env(tmp_path, None)
    seeded = json.loads(subprocess.run([TALLYKEY, "demo", "--seed-only", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    port = free_port()
    process = subprocess.Popen([TALLYKEY, "serve", "--port", str(port), "--workers", "2",
                                "--server", server],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        # /healthz answered from the first worker up; the revocation below waits for the
        # nodes that hold a lease, so let the second worker join the node list first.
        store = Path(env["TALLYKEY_DATA_DIR"]) / "tallykey.db"
        while time.monotonic() < deadline and _nodes(store) < 2:
            time.sleep(0.2)
        assert _nodes(store) == 2, "the second worker never joined the node list"
        headers = {"Authorization": f"Bearer {seeded['admin']['token']}"}
        with httpx.Client(base_url=base) as client:
            statuses = {client.get("/auth/request", headers=headers).status_code
                        for _ in range(40)}
            demo_api = client.get("/core/v3/info", headers=headers)  # only under `demo`
            proxied = client.get("/auth/request", headers=headers)
            made = client.post("/api/v1/tokens", headers=headers, json={
                "name": "multi", "expires_in_days": 7}).json()
            mine = {"Authorization": f"Bearer {made['token']}"}
            assert client.get("/auth/request", headers=mine).status_code == 204
            revoked = client.post(f"/api/v1/tokens/{made['id']}/revoke", headers=headers)
            after = {client.get("/auth/request", headers=mine).status_code for _ in range(40)}
        assert statuses == {204}
        assert demo_api.status_code == 404
        assert proxied.status_code == 204 and proxied.headers["Tallykey-Scopes"]
        assert len(revoked.json()["propagation"]["confirmed"]) == 2  # both workers
        assert after == {401}
    finally:
        process.terminate()
        assert process.wait(timeout=20) is not None  # SIGTERM stops every worker


def _nodes(store: Path) -> int:
    """The nodes in the store's node list (each worker joins it with a lease)."""
    with contextlib.closing(sqlite3.connect(store, timeout=5)) as connection:
        return int(connection.execute("SELECT count(*) FROM nodes").fetchone()[0])
