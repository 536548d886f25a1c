"""`tallykey serve --workers N`: several processes on one store, each verifying."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx

from .conftest import TALLYKEY, free_port, server_env


def test_serve_with_two_workers(tmp_path: Path) -> None:
    env = server_env(tmp_path, None)
    seeded = json.loads(subprocess.run([TALLYKEY, "demo", "--seed-only", "--json"], env=env,
                                       capture_output=True, text=True, check=True).stdout)
    port = free_port()
    process = subprocess.Popen([TALLYKEY, "serve", "--port", str(port), "--workers", "2"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        headers = {"Authorization": f"Bearer {seeded['admin']['token']}"}
        with httpx.Client(base_url=base) as client:
            statuses = {client.get("/core/v3/info", headers=headers).status_code
                        for _ in range(40)}
            made = client.post("/api/v1/tokens", headers=headers, json={
                "name": "multi", "expires_in_days": 7}).json()
            mine = {"Authorization": f"Bearer {made['token']}"}
            assert client.get("/core/v3/info", headers=mine).status_code == 200
            revoked = client.post(f"/api/v1/tokens/{made['id']}/revoke", headers=headers)
            after = {client.get("/core/v3/info", headers=mine).status_code for _ in range(40)}
        assert statuses == {200}
        assert len(revoked.json()["propagation"]["confirmed"]) == 2  # both workers
        assert after == {401}
    finally:
        process.terminate()
        process.wait(timeout=20)
