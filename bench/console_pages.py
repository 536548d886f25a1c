"""How fast the console's main pages answer with 10,000 tokens in one account.

Seeds a temporary SQLite store through the real services (the demo seed, then 10,000
tokens issued by `TokenService.issue` over 200 days of a moving clock, some revoked,
some expired), starts `tallykey serve` on it, signs in through the login form, and loads
each page ~20 times. Prints median and p95 per page; the target is < 100 ms each.

    .venv/bin/python bench/console_pages.py [--tokens 10000] [--loads 20]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from tallykey.actor import Actor
from tallykey.clock import FrozenClock
from tallykey.demo.seed import ADMIN, seed
from tallykey.runtime import Runtime
from tallykey.settings import Settings
from tallykey.tokens.requests import TokenDraft

TARGET_MS = 100.0
TALLYKEY = str(Path(sys.executable).with_name("tallykey"))
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KINDS_SCOPES = (("personal", ["employees:read"]), ("application", ["employees:read"]))
PRESETS = (7, 30, 60, 90, 365)


def seed_tokens(data_dir: Path, count: int) -> str:
    """The demo account plus `count` tokens; returns the id of one live token."""
    settings = Settings(data_dir=data_dir)
    start = datetime.now(UTC) - timedelta(days=200)
    clock = FrozenClock(start)
    runtime = Runtime.build(settings, clock)
    runtime.ensure_schema()
    seed(runtime, "http://127.0.0.1")
    account = runtime.accounts.find_account("demo")
    admin = runtime.accounts.find_user(account.id, ADMIN.email)
    actor = Actor(account.id, admin.id, admin.role, admin.email, "192.0.2.10", "bench")
    step = timedelta(days=199) / count
    began = time.perf_counter()
    last_id = ""
    for number in range(count):
        kind, scopes = KINDS_SCOPES[number % 2]
        issued = runtime.tokens.issue(actor, TokenDraft(
            name=f"Integration {number:05d}", kind=kind, scopes=scopes,
            description=f"bench token {number}", expires_in_days=PRESETS[number % 5],
            target="Excel" if number % 3 == 0 else None))
        if number % 20 == 0:
            runtime.tokens.revoke(actor, issued.token.id, "bench: rotated out")
        else:
            last_id = issued.token.id
        clock.advance(step)
    runtime.close()
    print(f"seeded {count} tokens in {time.perf_counter() - began:.1f} s")
    return last_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sign_in(client: httpx.Client) -> None:
    page = client.get("/console/login")
    found = CSRF.search(page.text)
    assert found, "no login form"
    answer = client.post("/console/login", data={
        "csrf_token": found.group(1), "email": ADMIN.email, "password": ADMIN.password})
    assert answer.status_code == 303, answer.text


def measure(client: httpx.Client, path: str, loads: int) -> tuple[float, float]:
    for _ in range(2):  # warm up caches and the connection
        client.get(path)
    timings = []
    for _ in range(loads):
        began = time.perf_counter()
        answer = client.get(path)
        timings.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, f"{path}: {answer.status_code}"
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
    return statistics.median(timings), p95


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tallykey-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        token_id = seed_tokens(data_dir, args.tokens)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYKEY_")}
        env["TALLYKEY_DATA_DIR"] = str(data_dir)
        port = free_port()
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen([TALLYKEY, "serve", "--port", str(port)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=base, timeout=30) as client:
                sign_in(client)
                first = client.get("/console/tokens").text
                cursor = re.search(r"after=([A-Za-z0-9_-]+)", first)
                pages = [
                    "/console/tokens",
                    f"/console/tokens?after={cursor.group(1) if cursor else ''}",
                    "/console/tokens?q=Integration+0999&status=all",
                    "/console/tokens?kind=application",
                    "/console/tokens?status=all",
                    "/console/tokens/inactive",
                    "/console/tokens/new",
                    f"/console/tokens/{token_id}",
                    "/console/audit",
                    "/console/audit?action=token.revoked",
                    "/console/users",
                    "/console/account",
                    "/console/outbox",
                ]
                print(f"{'page':<52} {'median ms':>10} {'p95 ms':>8}")
                slow = 0
                for path in pages:
                    median, p95 = measure(client, path, args.loads)
                    flag = "" if p95 < TARGET_MS else "  over target"
                    slow += p95 >= TARGET_MS
                    print(f"{path[:52]:<52} {median:>10.1f} {p95:>8.1f}{flag}")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=15)
            log.close()
    print(f"target: every page < {TARGET_MS:.0f} ms; {slow} page(s) over")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
