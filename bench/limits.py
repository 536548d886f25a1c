"""Key controls' cost (SPEC §13), side by side in one run: the verify cache hit of a
token without controls, with a rate limit far from its limit (in process, and shared
through a Redis server of the run's own), and with usage credits; then `/auth/request`
throughput of `tallykey serve` (wrk, 127.0.0.1) for the same three tokens. Prints a
table on stderr and one JSON object on stdout."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from store import build
from throughput import BIN, Variant, free_port, serving, wrk
from verification import IP, summary, timed

from tallykey.auth.verifier import Verifier
from tallykey.settings import Settings
from tallykey.tokens import format as token_format

#: Far from the limit: a billion per hour.
FAR = json.dumps([{"name": "default", "limit": 1_000_000_000, "per_seconds": 3600,
                   "shared": None}])


def control(settings: Settings, tokens: list[str]) -> dict[str, str]:
    """Give tokens[1] a rate limit and tokens[2] credits; name the three tokens."""
    path = settings.resolved_database_url.removeprefix("sqlite:///")
    connection = sqlite3.connect(path)
    for token, column, value in ((tokens[1], "rate_limits", FAR),
                                 (tokens[2], "credits_remaining", 10**12)):
        connection.execute(f"UPDATE tokens SET {column} = ? WHERE public_id = ?",  # noqa: S608
                           (value, token_format.parse(token).public_id))
    connection.commit()
    connection.close()
    return {"plain": tokens[0], "rate_limited": tokens[1], "credits": tokens[2]}


@contextmanager
def redis_server() -> Iterator[str | None]:
    """A Redis server of the run's own on a free port (None without redis-server)."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def hits(settings: Settings, tokens: dict[str, str], rounds: int) -> dict[str, object]:
    verifier = Verifier(settings=settings, background=False)
    result: dict[str, object] = {}
    try:
        for name, token in tokens.items():
            header = f"Bearer {token}"
            verifier.verify(header, IP)
            result[name] = summary(timed(lambda h=header: verifier.verify(  # type: ignore[misc]
                h, IP, ("employees:read",)), rounds if name != "credits" else max(rounds // 20, 1)))
    finally:
        verifier.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url:
        settings, made = build(Path(tmp) / "store", 1000, 1000)
        tokens = control(settings, made)
        result["verify_hit"] = hits(settings, tokens, args.rounds)
        if redis_url is not None:
            shared = settings.model_copy(update={"redis_url": redis_url})
            result["verify_hit_redis"] = hits(
                shared, {"rate_limited": tokens["rate_limited"]}, args.rounds)
        env = {**os.environ, "TALLYKEY_DATA_DIR": str(settings.data_dir),
               "TALLYKEY_AUTH_FAIL_LIMIT": "0"}
        http: dict[str, object] = {}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        variant = Variant("auth_request", [str(BIN / "tallykey"), "serve", "--port", str(port)],
                          f"{base}/auth/request?scope=employees:read", f"{base}/healthz")
        with serving(variant, env):
            for name, token in tokens.items():
                http[name] = wrk(variant, token, args.seconds, args.connections)
        result["auth_request"] = http
    hit = result["verify_hit"]  # type: ignore[assignment]
    base = hit["plain"]["median_us"]  # type: ignore[index]
    rows = [(f"verify hit, {name}", f"{hit[name]['median_us']} µs "  # type: ignore[index]
             f"(+{round(hit[name]['median_us'] - base, 2)} µs)") for name in hit]  # type: ignore[index, union-attr]
    if "verify_hit_redis" in result:
        shared_hit = result["verify_hit_redis"]["rate_limited"]  # type: ignore[index]
        rows.append(("verify hit, rate limit through Redis", f"{shared_hit['median_us']} µs "
                     f"median, {shared_hit['mean_us']} µs mean (one lease per ≤100)"))
    for name, measured in http.items():
        rows.append((f"/auth/request, {name}", f"{measured['rps']:,} req/s, p99 "  # type: ignore[index]
                     f"{measured['p99_ms']} ms"))  # type: ignore[index]
    width = max(len(row[0]) for row in rows)
    print("\n".join(f"{n.ljust(width)}  {v}" for n, v in rows), file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
