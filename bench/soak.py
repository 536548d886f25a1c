"""`make soak`: a bounded load run against a real `tallykey serve` on 127.0.0.1.

Steady paced load (default 500 requests/s for 60 s after a 10 s warm-up): mostly
verification (80% `/auth/request`, 19% `/core/v3/info`), with occasional management calls
(list, create, revoke). It stops by itself. The server's memory (VmRSS from /proc) is
sampled every second. Passes when no request failed (a transport error or any status
but the expected one) and the average RSS of the last third of the measured run is
within 10% of the first third's. Prints a short report and
exits non-zero on failure.

    .venv/bin/python bench/soak.py [--rate 500] [--seconds 60] [--warmup 10]
    TALLYKEY_DATABASE_URL=postgresql+psycopg://... .venv/bin/python bench/soak.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

TALLYKEY = str(Path(sys.executable).with_name("tallykey"))
CONCURRENCY = 32
MANAGEMENT_SHARE = 0.01
#: Verification as reverse proxies ask for it (`/auth/request`); the rest of the verify
#: traffic goes through the demo platform API (`/core/v3/info`).
VERIFY_VIA_PROXY_SHARE = 0.8
MAX_RSS_DRIFT = 0.10


@dataclass
class Tally:
    sent: int = 0
    errors: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while not stop.wait(1.0):
        samples.append((time.monotonic() - start, rss_kib(pid)))


async def one_request(http: httpx.AsyncClient, chance: random.Random, admin: dict[str, str],
                      tokens: list[str], created: list[str], tally: Tally,
                      measured: bool) -> None:
    roll = chance.random()
    if roll < MANAGEMENT_SHARE / 3:
        kind, expected = "create", 201
        call = http.post("/api/v1/tokens", headers=admin, json={
            "name": f"soak {chance.randrange(10**9)}", "expires_in_days": 7,
            "scopes": ["employees:read"]})
    elif roll < 2 * MANAGEMENT_SHARE / 3 and created:
        kind, expected = "revoke", 200
        call = http.post(f"/api/v1/tokens/{created.pop()}/revoke", headers=admin, json={})
    elif roll < MANAGEMENT_SHARE:
        kind, expected = "list", 200
        call = http.get("/api/v1/tokens", headers=admin, params={"limit": 20})
    elif roll < VERIFY_VIA_PROXY_SHARE:
        kind, expected = "auth_request", 204
        call = http.get("/auth/request", headers={
            "Authorization": f"Bearer {chance.choice(tokens)}"})
    else:
        kind, expected = "info", 200
        call = http.get("/core/v3/info", headers={
            "Authorization": f"Bearer {chance.choice(tokens)}"})
    started = time.perf_counter()
    try:
        answer = await call
    except httpx.HTTPError as error:
        tally.errors.append(f"{kind}: {error!r}")
        return
    if measured:
        tally.latencies_ms.append((time.perf_counter() - started) * 1000)
        tally.sent += 1
        tally.by_kind[kind] = tally.by_kind.get(kind, 0) + 1
    if answer.status_code != expected:
        tally.errors.append(f"{kind}: {answer.status_code} {answer.text[:200]}")
    elif kind == "create":
        created.append(answer.json()["id"])


async def drive(base_url: str, seeded: dict[str, object], rate: float, warmup: float,
                seconds: float, tally: Tally) -> float:
    """Paced load: request n is due at t0 + n / rate, and none is sent after the end
    (a server or client that falls behind sends as fast as it can, never longer).
    Returns when the measured run began (monotonic)."""
    admin_token = seeded["admin"]["token"]  # type: ignore[index]
    member_token = seeded["member"]["token"]  # type: ignore[index]
    admin = {"Authorization": f"Bearer {admin_token}"}
    tokens = [admin_token, member_token]
    created: list[str] = []
    chance = random.Random(1)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as http:
        gate = asyncio.Semaphore(CONCURRENCY)
        pending: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        measured_from = start + warmup
        end = measured_from + seconds
        number = 0
        while (due := start + number / rate) < end and time.monotonic() < end:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            task = asyncio.create_task(one_request(
                http, chance, admin, tokens, created, tally, due >= measured_from))
            task.add_done_callback(lambda _t: gate.release())
            pending.add(task)
            task.add_done_callback(pending.discard)
            number += 1
        await asyncio.gather(*pending)
    return measured_from


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured duration")
    parser.add_argument("--warmup", type=float, default=10.0, help="unmeasured warm-up")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tallykey-soak-") as tmp:
        env = {k: v for k, v in os.environ.items() if k.startswith("TALLYKEY_DATABASE")
               or not k.startswith("TALLYKEY_")}
        env.update(TALLYKEY_DATA_DIR=str(Path(tmp) / "data"), TALLYKEY_AUTH_FAIL_LIMIT="0")
        if "TALLYKEY_DATABASE_URL" in env:
            subprocess.run([TALLYKEY, "migrate"], env=env, check=True, capture_output=True)
        seeded = json.loads(subprocess.run(
            [TALLYKEY, "demo", "--seed-only", "--json"], env=env, check=True,
            capture_output=True, text=True).stdout)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log = (Path(tmp) / "server.log").open("wb")
        server = subprocess.Popen([TALLYKEY, "demo", "--serve-only", "--port", str(port)],
                                  env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the server did not start", file=sys.stderr)
                    return 2
                time.sleep(0.1)
            samples: list[tuple[float, int]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, samples))
            sampler.start()
            tally = Tally()
            began = time.monotonic()
            measured_from = asyncio.run(drive(base_url, seeded, args.rate, args.warmup,
                                              args.seconds, tally))
            elapsed = time.monotonic() - measured_from
            stop.set()
            sampler.join()
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    offset = measured_from - began
    measured = [kib for at, kib in samples if at >= offset]
    third = max(1, len(measured) // 3)
    first, last = statistics.mean(measured[:third]), statistics.mean(measured[-third:])
    drift = (last - first) / first
    latencies = sorted(tally.latencies_ms)
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    backend = "PostgreSQL" if "TALLYKEY_DATABASE_URL" in os.environ else "SQLite"
    print(f"soak on {backend}: {tally.sent} requests in {elapsed:.1f} s "
          f"({tally.sent / elapsed:.0f}/s, target {args.rate:.0f}/s) after {args.warmup:.0f} s "
          "warm-up")
    print("  mix: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items())))
    print(f"  latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(f"  errors: {len(tally.errors)}" + (f" (first: {tally.errors[0]})"
                                               if tally.errors else ""))
    print(f"  server RSS: first third {first / 1024:.1f} MiB, last third {last / 1024:.1f} "
          f"MiB ({drift:+.1%}; limit ±{MAX_RSS_DRIFT:.0%}); peak "
          f"{max(measured) / 1024:.1f} MiB over {len(measured)} samples")
    if tally.sent / elapsed < 0.9 * args.rate:
        print("  note: below the target rate: the client and the server share this "
              "machine's cores (busy, or too few); the pacing then sends as fast as it can")
    ok = not tally.errors and abs(drift) <= MAX_RSS_DRIFT
    print("  result: " + ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
